import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import RefractTokenizer

/// The BPE merge is O(n log n) in the word length (a heap of pair ranks over a linked list of
/// symbols) and gives exactly the reference's quadratic loop's result (`BPEModel.referenceMerge`,
/// open_clip's `bpe`), for CLIP's merge table and for arbitrary ones.
final class LongWordTests: XCTestCase {
    /// Deterministic pseudo-random numbers.
    private struct LCG {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    private func randomWord(_ n: Int, alphabet: [UInt8], seed: UInt64) -> [UInt8] {
        var rng = LCG(state: seed)
        return (0..<n).map { _ in alphabet[rng.next(alphabet.count)] }
    }

    func testHeapMergeEqualsTheReferenceOnCLIPsTable() throws {
        let model = try CLIPTokenizer.openCLIPDefault().model
        let lower = Array("abcdefghijklmnopqrstuvwxyz".utf8), ab = Array("ab".utf8)
        let mixed = Array("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_'.é".utf8)
        var words: [[UInt8]] = [[], Array("a".utf8), Array("hello".utf8), Array("photograph".utf8),
                                Array(repeating: UInt8(ascii: "a"), count: 777), Array(repeating: UInt8(ascii: "z"), count: 64)]
        for n in [2, 3, 5, 8, 13, 40, 100, 333, 1000, 2500] {
            for seed in 1...6 {
                words.append(randomWord(n, alphabet: lower, seed: UInt64(n * 31 + seed)))
                words.append(randomWord(n, alphabet: ab, seed: UInt64(n * 37 + seed)))
                words.append(randomWord(n, alphabet: mixed, seed: UInt64(n * 41 + seed)))
            }
        }
        for w in words {
            XCTAssertEqual(model.merge(w), model.referenceMerge(w), "word of \(w.count) bytes: \(String(decoding: w.prefix(40), as: UTF8.self))")
        }
    }

    /// Merge tables not in training order (a merge of a token ranked before the merge that makes
    /// it, repeated pairs, pairs that only appear after other merges): the heap still follows the
    /// reference step for step.
    func testHeapMergeEqualsTheReferenceOnArbitraryTables() throws {
        let (vocabulary, _) = try Fixtures.standardVocabulary()
        let byteSymbols = (0..<256).map { String(Character(ByteLevel.table[$0])) }
        for tableSeed in 1...8 {
            var rng = LCG(state: UInt64(tableSeed) * 7919)
            var vocab = [String: Int32]()
            for s in byteSymbols { vocab[s] = vocabulary[s]!; vocab[s + "</w>"] = vocabulary[s + "</w>"]! }
            var nextID: Int32 = 60_000
            let letters = ["a", "b", "c", "d"].map { byteSymbols[Int(UInt8(ascii: Unicode.Scalar($0)!))] }
            var tokens = letters + letters.map { $0 + "</w>" }
            var merges = [(String, String)]()
            for _ in 0..<60 {
                let left = tokens[rng.next(tokens.count)], right = tokens[rng.next(tokens.count)]
                guard !left.hasSuffix("</w>") else { continue }
                let merged = left + right
                if vocab[merged] == nil { vocab[merged] = nextID; nextID += 1; tokens.append(merged) }
                merges.append((left, right))
            }
            // Shuffle the ranks: merges now often come before the merges that make their parts.
            for i in stride(from: merges.count - 1, to: 0, by: -1) { merges.swapAt(i, rng.next(i + 1)) }
            let model = try BPEModel(vocabulary: vocab, merges: merges, path: "vocab", mergesPath: "merges")
            let alphabet = Array("abcd".utf8)
            for n in [1, 2, 3, 4, 7, 16, 50, 200, 600] {
                for seed in 1...5 {
                    let w = randomWord(n, alphabet: alphabet, seed: UInt64(tableSeed * 1000 + n * 10 + seed))
                    XCTAssertEqual(model.merge(w), model.referenceMerge(w), "table \(tableSeed), word \(String(decoding: w, as: UTF8.self))")
                }
            }
        }
    }

    /// CPU seconds of the calling thread (the machine may be busy; wall time would flake).
    private func cpuSeconds(_ body: () -> Void) -> Double {
        func now() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        }
        let start = now()
        body()
        return now() - start
    }

    /// A line that is one long word costs about linearly in its length, in both flavours: 4x the
    /// characters may cost at most 8x the time (the old loop cost 16x: 160 k characters took 14 s),
    /// and a 1 MB line finishes. Times are printed; docs/Tokenizer.md states them.
    func testOneLongWordLineCostsLinearTime() throws {
        let lower = Array("abcdefghijklmnopqrstuvwxyz".utf8)
        func line(_ n: Int) -> String { String(decoding: randomWord(n, alphabet: lower, seed: UInt64(n)), as: UTF8.self) }
        let small = line(100_000), large = line(400_000), huge = line(1_000_000)
        for flavour in CLIPTokenizerFlavour.allCases {
            let tokenizer = try CLIPTokenizer(flavour: flavour)
            _ = tokenizer.tokenize(line(1000))
            var rows = [[Int32]]()
            // Best of two: the fairest estimate of the cost on a shared machine.
            let t100 = min(cpuSeconds { rows.append(tokenizer.tokenize(small)) }, cpuSeconds { _ = tokenizer.tokenize(small) })
            let t400 = min(cpuSeconds { rows.append(tokenizer.tokenize(large)) }, cpuSeconds { _ = tokenizer.tokenize(large) })
            let t1M = cpuSeconds { rows.append(tokenizer.tokenize(huge)) }
            print(String(format: "one-word line (%@): 100 k chars %.3f s, 400 k %.3f s (x%.2f), 1 M %.3f s CPU",
                         flavour.rawValue, t100, t400, t400 / max(t100, 1e-6), t1M))
            XCTAssertLessThan(t400, 8 * max(t100, 0.005), "\(flavour): 4x the characters cost \(t400 / t100)x the time")
            XCTAssertLessThan(t1M, 60, "\(flavour): a 1 MB one-word line took \(t1M) s")
            for row in rows {
                XCTAssertEqual(row.count, CLIPTokenizer.defaultContextLength)
                XCTAssertEqual(row.first, Int32(tokenizer.startToken))
                XCTAssertEqual(row.last, Int32(tokenizer.endToken))
            }
        }
    }

    /// Long words are not cached (a file of distinct 1 MB lines must not grow the cache by a MB a
    /// line); short ones are.
    func testLongWordsAreNotCached() throws {
        let model = try CLIPTokenizer(flavour: .openCLIP).model
        var out = [Int32]()
        let before = model.cachedWordCount
        model.encodeWord(Array(repeating: UInt8(ascii: "q"), count: BPEModel.cachedWordLimit + 1), into: &out)
        XCTAssertEqual(model.cachedWordCount, before)
        model.encodeWord(Array("zqxjphotozqxj".utf8), into: &out)
        XCTAssertEqual(model.cachedWordCount, before + 1)
    }
}
