import Foundation

/// Byte-level BPE with CLIP's end-of-word marks: the vocabulary, the merge ranks and a per-word cache.
///
/// Immutable after construction except for the cache, which is guarded by a lock, so one model can be
/// shared by any number of threads.
final class BPEModel: @unchecked Sendable {
    /// Token string -> id.
    let tokenToID: [String: Int32]
    /// Id -> token string (ids need not be contiguous in a vocab.json).
    let idToToken: [Int32: String]
    /// Id of the one-character token for each byte, without and with the `</w>` end-of-word mark.
    private let byteSymbol: [Int32]
    private let byteSymbolEnd: [Int32]
    /// (left id << 32 | right id) -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    let mergeCount: Int

    private let lock = NSLock()
    private var cache: [[UInt8]: [Int32]] = [:]
    private static let cacheLimit = 100_000

    /// - Parameters:
    ///   - vocabulary: token -> id.
    ///   - merges: merge pairs in rank order.
    ///   - path: the file the vocabulary came from, for error messages.
    ///   - mergesPath: the file the merges came from, for error messages.
    init(vocabulary: [String: Int32], merges pairs: [(String, String)], path: String, mergesPath: String) throws {
        tokenToID = vocabulary
        var inverse: [Int32: String] = [:]
        inverse.reserveCapacity(vocabulary.count)
        for (token, id) in vocabulary { inverse[id] = token }
        idToToken = inverse

        var single = [Int32](repeating: -1, count: 256)
        var end = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let symbol = String(Character(ByteLevel.table[b]))
            guard let id = vocabulary[symbol] else {
                throw TokenizerError.missingToken(path: path, token: symbol, reason: "byte-level symbol for byte \(b)")
            }
            guard let idEnd = vocabulary[symbol + "</w>"] else {
                throw TokenizerError.missingToken(path: path, token: symbol + "</w>", reason: "byte-level symbol for byte \(b) at the end of a word")
            }
            single[b] = id
            end[b] = idEnd
        }
        byteSymbol = single
        byteSymbolEnd = end

        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(pairs.count)
        for (rank, (a, b)) in pairs.enumerated() {
            guard let ia = vocabulary[a] else {
                throw TokenizerError.missingToken(path: mergesPath, token: a, reason: "left part of merge \(rank + 1)")
            }
            guard let ib = vocabulary[b] else {
                throw TokenizerError.missingToken(path: mergesPath, token: b, reason: "right part of merge \(rank + 1)")
            }
            guard let merged = vocabulary[a + b] else {
                throw TokenizerError.missingToken(path: mergesPath, token: a + b, reason: "result of merge \(rank + 1)")
            }
            let key = UInt64(UInt32(bitPattern: ia)) << 32 | UInt64(UInt32(bitPattern: ib))
            // A repeated pair takes its last rank, as in both references (a dict / HashMap built in order).
            table[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
        }
        merges = table
        mergeCount = pairs.count
    }

    var vocabularySize: Int { tokenToID.count }

    /// Appends the BPE ids of one pre-tokenized word (given as its UTF-8 bytes) to `output`.
    func encodeWord(_ bytes: [UInt8], into output: inout [Int32]) {
        guard !bytes.isEmpty else { return }
        lock.lock()
        let hit = cache[bytes]
        lock.unlock()
        if let hit {
            output.append(contentsOf: hit)
            return
        }
        let ids = merge(bytes)
        lock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[bytes] = ids
        lock.unlock()
        output.append(contentsOf: ids)
    }

    /// open_clip's `SimpleTokenizer.bpe`: repeatedly merge every occurrence of the best-ranked adjacent pair.
    /// (tokenizers' priority-queue merge gives the same result for merge tables in training order, as CLIP's is.)
    private func merge(_ bytes: [UInt8]) -> [Int32] {
        var word = [Int32]()
        word.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() {
            word.append(i == bytes.count - 1 ? byteSymbolEnd[Int(b)] : byteSymbol[Int(b)])
        }
        var scratch = [Int32]()
        scratch.reserveCapacity(word.count)
        while word.count > 1 {
            var bestRank = UInt64.max
            var bestMerged: Int32 = 0
            var bestLeft: Int32 = 0
            var bestRight: Int32 = 0
            for i in 0..<(word.count - 1) {
                let key = UInt64(UInt32(bitPattern: word[i])) << 32 | UInt64(UInt32(bitPattern: word[i + 1]))
                if let value = merges[key], value >> 32 < bestRank {
                    bestRank = value >> 32
                    bestMerged = Int32(bitPattern: UInt32(truncatingIfNeeded: value))
                    bestLeft = word[i]
                    bestRight = word[i + 1]
                }
            }
            if bestRank == UInt64.max { break }
            scratch.removeAll(keepingCapacity: true)
            var i = 0
            while i < word.count {
                if i < word.count - 1 && word[i] == bestLeft && word[i + 1] == bestRight {
                    scratch.append(bestMerged)
                    i += 2
                } else {
                    scratch.append(word[i])
                    i += 1
                }
            }
            swap(&word, &scratch)
        }
        return word
    }
}
