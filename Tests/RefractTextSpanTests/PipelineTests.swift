import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import XCTest
@testable import RefractTextSpan

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

/// Pools, text-embedding cache, head reading and ranking, and TextSpan over a real (tiny) run.
final class PipelineTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-textspan-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func model() throws -> CLIP {
        let dir = fixtures.appendingPathComponent("openclip-tiny")
        return try CLIP(location: ModelLocation(directory: dir, layout: .openCLIP, modelId: dir.path))
    }

    /// A run of the tiny model over the 4 fixture images, labelled with classes.txt names (i % 5),
    /// each image listed `repeats` times.
    func makeRun(_ clip: CLIP, repeats: Int = 3) throws -> StoreReader {
        let inputs = fixtures.appendingPathComponent("inputs")
        let classes = try TextLists.readLines(inputs.appendingPathComponent("classes.txt"))
        let names = try FileManager.default.contentsOfDirectory(atPath: inputs.path).filter { $0.hasSuffix(".png") }.sorted()
        var csv = "path,label\n"
        for r in 0..<repeats { for (i, n) in names.enumerated() { csv += "\(inputs.appendingPathComponent(n).path),\(classes[(i + r) % 5])\n" } }
        let list = scratch.appendingPathComponent("list.csv")
        try csv.write(to: list, atomically: true, encoding: .utf8)
        var options = DecomposeRunOptions()
        options.shardSize = 5
        let run = scratch.appendingPathComponent("run")
        _ = try DecomposeRun.run(model: clip, dataset: try ImageDataset.load([list.path]), output: run, options: options)
        return try StoreReader(run: run)
    }

    func write(_ text: String, _ name: String) throws -> URL {
        let url = scratch.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func testPoolSkipsBlankAndRepeatedLines() throws {
        let pool = try DescriptionPool.load(try write("a dog\r\n\n  a cat \na dog\n\t\nsnow\n", "pool.txt"))
        XCTAssertEqual(pool.texts, ["a dog", "a cat", "snow"])
        XCTAssertEqual(pool.lines, [0, 2, 5])
        XCTAssertEqual(pool.lineCount, 6)
        XCTAssertEqual(pool.blank, 2)
        XCTAssertEqual(pool.duplicates, 1)
        XCTAssertThrowsError(try DescriptionPool.load(try write("\n \n", "empty.txt"))) {
            XCTAssertTrue("\($0)".contains("empty.txt") && "\($0)".contains("no descriptions"), "\($0)")
        }
        XCTAssertThrowsError(try DescriptionPool.load(scratch.appendingPathComponent("missing.txt")))
        let clip = try model()
        let long = try DescriptionPool.load(try write("short\n" + String(repeating: "word ", count: 100) + "\n", "long.txt"))
        XCTAssertEqual(long.truncatedCount(clip), 1)
    }

    func testTextEmbeddingsAreCachedAndPrecomputedRowsAlignWithLines() throws {
        let clip = try model()
        let pool = try DescriptionPool.load(try write("a dog\n\na cat\na dog\n", "pool.txt"))
        let cache = scratch.appendingPathComponent("cache")
        let (first, s1) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abc", cache: cache)
        XCTAssertEqual(s1, .computed)
        XCTAssertEqual(first.shape, [2, clip.architecture.embedDim])
        let direct = Ops.l2Normalized(clip.encodeTexts(["a dog", "a cat"]))
        XCTAssertEqual(first, direct)
        let (second, s2) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abc", cache: cache)
        XCTAssertEqual(s2, .cache)
        XCTAssertEqual(second, first)
        // Another model hash is another cache entry.
        XCTAssertEqual(try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abd", cache: cache).1, .computed)
        // Precomputed: one row per line of the file (4 lines), rows of blank/repeated lines ignored.
        let d = clip.architecture.embedDim
        var rows = [Float](repeating: 0, count: 4 * d)
        for j in 0..<d { rows[j] = Float(j + 1); rows[2 * d + j] = 2 }
        let npy = scratch.appendingPathComponent("e.npy")
        try NPY.write(Tensor(shape: [4, d], data: rows), to: npy)
        let (given, s3) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abc", cache: cache, precomputed: npy)
        XCTAssertEqual(s3, .file)
        XCTAssertEqual(given, Ops.l2Normalized(Tensor(shape: [2, d], data: Array(rows[0..<d]) + Array(rows[(2 * d)..<(3 * d)]))))
        try NPY.write(Tensor(shape: [3, d], data: [Float](repeating: 1, count: 3 * d)), to: npy)
        XCTAssertThrowsError(try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abc", cache: nil, precomputed: npy)) {
            XCTAssertTrue("\($0)".contains("3 rows") && "\($0)".contains("4 lines"), "\($0)")
        }
        rows[2 * d] = .nan
        try NPY.write(Tensor(shape: [4, d], data: rows), to: npy)
        XCTAssertThrowsError(try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "abc", cache: nil, precomputed: npy)) {
            XCTAssertTrue("\($0)".contains("non-finite"), "\($0)")
        }
    }

    func testHeadListsAndReadingHeadsInGroups() throws {
        XCTAssertEqual(try HeadID.parseList("11.3,10.7,-1.0,11.3", layers: 12, heads: 12),
                       [HeadID(layer: 10, head: 7), HeadID(layer: 11, head: 0), HeadID(layer: 11, head: 3)])
        for bad in ["12.0", "1.12", "3", "a.b", "1.2.3", ""] {
            XCTAssertThrowsError(try HeadID.parseList(bad, layers: 12, heads: 12), bad)
        }
        let clip = try model()
        let reader = try makeRun(clip)
        let attn = try reader.tensor("attn")                                             // [N, L, H, D']
        let (n, l, h, d) = (attn.shape[0], attn.shape[1], attn.shape[2], attn.shape[3])
        let heads = (0..<l).flatMap { layer in (0..<h).map { HeadID(layer: layer, head: $0) } }
        var seen = [HeadID]()
        // A budget of one head's bytes: every head is read in its own pass.
        try HeadContributions.forEachHead(reader, heads: heads, budgetBytes: n * d * 4) { id, c in
            seen.append(id)
            XCTAssertEqual(c.shape, [n, d])
            for r in 0..<n {
                let o = ((r * l + id.layer) * h + id.head) * d
                XCTAssertEqual(Array(c.data[(r * d)..<((r + 1) * d)]), Array(attn.data[o..<(o + d)]), "\(id) row \(r)")
            }
        }
        XCTAssertEqual(seen, heads)
    }

    func testRankingByTextVarianceMatchesBruteForce() throws {
        let clip = try model()
        let reader = try makeRun(clip)
        let attn = try reader.tensor("attn")
        let (n, l, h, d) = (attn.shape[0], attn.shape[1], attn.shape[2], attn.shape[3])
        let text = Ops.l2Normalized(clip.encodeTexts(["a photo of a dog"])).data
        let ranking = try HeadRanking.byTextVariance(reader, text: text.map { $0 * 3 })   // scale does not matter
        XCTAssertEqual(ranking.count, l * h)
        for r in ranking {
            var p = [Double](), total = 0.0
            var mean = [Double](repeating: 0, count: d)
            for i in 0..<n {
                let o = ((i * l + r.layer) * h + r.head) * d
                p.append((0..<d).reduce(0.0) { $0 + Double(attn.data[o + $1]) * Double(text[$1]) })
                for j in 0..<d { mean[j] += Double(attn.data[o + j]) / Double(n) }
            }
            for i in 0..<n {
                let o = ((i * l + r.layer) * h + r.head) * d
                for j in 0..<d { total += pow(Double(attn.data[o + j]) - mean[j], 2) / Double(n) }
            }
            let m = p.reduce(0, +) / Double(n)
            let variance = p.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(n)
            XCTAssertEqual(r.variance, variance, accuracy: 1e-5 * max(variance, 1e-6))
            XCTAssertEqual(r.fractionOfHead, variance / total, accuracy: 1e-4)
        }
        XCTAssertEqual(ranking.map(\.variance), ranking.map(\.variance).sorted(by: >))
        XCTAssertThrowsError(try HeadRanking.byTextVariance(reader, text: [1, 2, 3]))
    }

    func testTextSpanOverARunWithTheAccuracyCheck() throws {
        let clip = try model()
        // Four distinct images: the uncentred contributions of a head have rank 4, so a span of rank
        // 4 with 4 steps reconstructs each head exactly.
        let reader = try makeRun(clip, repeats: 1)
        let d = clip.architecture.embedDim
        let descriptions = (0..<(d + 6)).map { "a photo of thing number \($0)" }
        let pool = try DescriptionPool.load(try write(descriptions.joined(separator: "\n") + "\n", "pool.txt"))
        let (texts, _) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "x", cache: nil)
        let classes = try TextLists.readLines(fixtures.appendingPathComponent("inputs/classes.txt"))
        let inputs = AccuracyInputs(classifier: try clip.zeroShotClassifier(classes: classes).weights, classes: classes,
                                    classesFile: "classes.txt", templates: ZeroShotClassifier.defaultTemplates)
        var options = TextSpanRunOptions()
        options.heads = [HeadID(layer: 1, head: 2), HeadID(layer: 1, head: 0)]
        options.perHead = 4
        options.rank = 4
        let report = try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                         options: options, accuracy: inputs)
        XCTAssertEqual(report.heads.map(\.name), ["L1.H0", "L1.H2"])
        for head in report.heads {
            XCTAssertEqual(head.descriptions.count, 4)
            for s in head.descriptions { XCTAssertEqual(s.text, descriptions[s.line]) }
            XCTAssertEqual(head.descriptions.map(\.varianceExplained).reduce(0, +), head.descriptions.last!.cumulative, accuracy: 1e-9)
            XCTAssertEqual(head.descriptions.last!.cumulative, 1, accuracy: 1e-3, "the span explains all variance")
        }
        let acc = try XCTUnwrap(report.accuracy)
        XCTAssertEqual(acc.meanAblatedLayersBelow, 1)
        let byId = Dictionary(uniqueKeysWithValues: acc.rows.map { ($0.id, $0) })
        XCTAssertEqual(byId["textspan"]!.top1, byId["heads_raw"]!.top1, "an exact reconstruction changes nothing")
        // The baseline is the run's own zero-shot accuracy.
        let ablation = try MeanAblation.run(reader, classifier: inputs.classifier, classes: classes, classFile: "classes.txt")
        XCTAssertEqual(byId["baseline"]!.top1, ablation.studies[0].top1)
        XCTAssertEqual(byId["heads_raw"]!.top1, ablation.studies.first { $0.id == "attn_upto_0" }!.top1)
        // Default rank: the official 80, lowered to each head's own rank (4 images: rank 4).
        options.rank = nil
        options.perHead = 3
        let defaulted = try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                            options: options)
        XCTAssertEqual(defaulted.rank, 80)
        XCTAssertEqual(defaulted.heads.map(\.rank), [4, 4])
        // An explicit rank above a head's rank is an error that says the head's rank.
        options.rank = 10
        XCTAssertThrowsError(try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                                 options: options)) {
            XCTAssertTrue("\($0)".contains("rank 10 is larger than the rank of the contributions (4"), "\($0)")
        }
        // Bad inputs.
        options.rank = 4
        options.perHead = pool.count + 1
        XCTAssertThrowsError(try TextSpanRun.run(reader, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                                 options: options)) {
            XCTAssertTrue("\($0)".contains("larger than the pool"), "\($0)")
        }
    }
}
