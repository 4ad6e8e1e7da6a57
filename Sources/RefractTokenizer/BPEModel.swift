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

    /// Words up to this many bytes are cached; longer ones (rare, and possibly hostile: a 1 MB line
    /// with no space) are merged each time, so the cache never holds more than
    /// `cacheLimit * cachedWordLimit` bytes of keys.
    static let cachedWordLimit = 256

    /// Appends the BPE ids of one pre-tokenized word (given as its UTF-8 bytes) to `output`.
    func encodeWord(_ bytes: [UInt8], into output: inout [Int32]) {
        guard !bytes.isEmpty else { return }
        let cacheable = bytes.count <= Self.cachedWordLimit
        if cacheable {
            lock.lock()
            let hit = cache[bytes]
            lock.unlock()
            if let hit {
                output.append(contentsOf: hit)
                return
            }
        }
        let ids = merge(bytes)
        if cacheable {
            lock.lock()
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[bytes] = ids
            lock.unlock()
        }
        output.append(contentsOf: ids)
    }

    /// Words in the cache now.
    var cachedWordCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return cache.count
    }

    // MARK: Merging

    /// The byte-level symbols of a word, the last one with the end-of-word mark.
    private func symbols(_ bytes: [UInt8]) -> [Int32] {
        var word = [Int32]()
        word.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() {
            word.append(i == bytes.count - 1 ? byteSymbolEnd[Int(b)] : byteSymbol[Int(b)])
        }
        return word
    }

    @inline(__always)
    private func pairValue(_ left: Int32, _ right: Int32) -> UInt64? {
        merges[UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))]
    }

    /// open_clip's `SimpleTokenizer.bpe`, in O(n log n) for a word of n bytes: repeatedly take the
    /// best-ranked adjacent pair and merge every occurrence of it, left to right without overlap.
    /// (tokenizers' priority-queue merge gives the same result for merge tables in training order,
    /// as CLIP's is.)
    ///
    /// The symbols are a linked list; a min-heap holds (rank, position) for every adjacent pair
    /// with a rank. One step pops the best rank r and every other entry of rank r (all the same
    /// pair, since a rank names one pair; popped in position order), then merges each occurrence
    /// still present, left to right, exactly as the reference's scan does; the pairs the merges
    /// form are pushed and wait for a later step. Entries made stale by a merge are recognised on
    /// pop (the pair now at that position has another rank, or the position is gone). The result
    /// is identical to `referenceMerge` (the reference's quadratic loop) for every merge table.
    func merge(_ bytes: [UInt8]) -> [Int32] {
        let n = bytes.count
        if n <= 1 { return symbols(bytes) }
        precondition(n < Int(UInt32.max), "a word of \(n) bytes is longer than the merge positions can address")
        var id = symbols(bytes)
        var next = [Int32](unsafeUninitializedCapacity: n) { b, c in
            for i in 0..<n { b[i] = i == n - 1 ? -1 : Int32(i + 1) }
            c = n
        }
        var prev = [Int32](unsafeUninitializedCapacity: n) { b, c in
            for i in 0..<n { b[i] = Int32(i - 1) }
            c = n
        }
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        heap.reserve(n)
        for i in 0..<(n - 1) {
            if let v = pairValue(id[i], id[i + 1]) { heap.push(v & 0xFFFF_FFFF_0000_0000 | UInt64(i)) }
        }
        var batch = [Int]()
        while let top = heap.pop() {
            let rank = top >> 32
            let p0 = Int(top & 0xFFFF_FFFF)
            // Stale: the position was merged away, is now last, or holds another pair.
            guard alive[p0], next[p0] >= 0, let v0 = pairValue(id[p0], id[Int(next[p0])]), v0 >> 32 == rank else { continue }
            let left = id[p0], right = id[Int(next[p0])]
            let merged = Int32(bitPattern: UInt32(truncatingIfNeeded: v0))
            batch.removeAll(keepingCapacity: true)
            batch.append(p0)
            while let t = heap.peek, t >> 32 == rank {
                _ = heap.pop()
                let p = Int(t & 0xFFFF_FFFF)
                if p != batch[batch.count - 1] { batch.append(p) }
            }
            // Left to right, as the reference scans: an occurrence whose left symbol was consumed
            // by the previous merge is gone (not alive); every other one is untouched so far.
            for p in batch {
                guard alive[p], next[p] >= 0 else { continue }
                let q = Int(next[p])
                guard id[p] == left, id[q] == right else { continue }
                id[p] = merged
                alive[q] = false
                let after = next[q]
                next[p] = after
                if after >= 0 { prev[Int(after)] = Int32(p) }
                let before = prev[p]
                if before >= 0, let v = pairValue(id[Int(before)], merged) { heap.push(v & 0xFFFF_FFFF_0000_0000 | UInt64(before)) }
                if after >= 0, let v = pairValue(merged, id[Int(after)]) { heap.push(v & 0xFFFF_FFFF_0000_0000 | UInt64(p)) }
            }
        }
        var out = [Int32]()
        var i = 0
        while i >= 0 {
            out.append(id[i])
            i = Int(next[i])
        }
        return out
    }

    /// The reference's loop as written (quadratic in the word length): rescan every pair for the
    /// best rank, then rebuild the word merging every occurrence. Kept to check `merge` against.
    func referenceMerge(_ bytes: [UInt8]) -> [Int32] {
        var word = symbols(bytes)
        var scratch = [Int32]()
        scratch.reserveCapacity(word.count)
        while word.count > 1 {
            var bestRank = UInt64.max
            var bestMerged: Int32 = 0
            var bestLeft: Int32 = 0
            var bestRight: Int32 = 0
            for i in 0..<(word.count - 1) {
                if let value = pairValue(word[i], word[i + 1]), value >> 32 < bestRank {
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

/// A binary min-heap of packed (rank << 32 | position) keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func reserve(_ n: Int) { items.reserveCapacity(n) }

    var peek: UInt64? { items.first }

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= x { break }
            items[i] = items[parent]
            i = parent
        }
        items[i] = x
    }

    mutating func pop() -> UInt64? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return top }
        var i = 0
        let n = items.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var c = l
            if l + 1 < n && items[l + 1] < items[l] { c = l + 1 }
            if items[c] >= last { break }
            items[i] = items[c]
            i = c
        }
        items[i] = last
        return top
    }
}
