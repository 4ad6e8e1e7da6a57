import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractStore
import RefractTensor
import RefractTextSpan
import XCTest
@testable import RefractRetrieve

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

/// Retrieval against brute force over the full `attn` tensor, on synthetic and real (tiny-model) runs.
final class RetrievalTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-retrieve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    // MARK: Fixtures

    static let layers = 3, heads = 4, width = 8

    /// 23 images in shards of 5, image 6 skipped, image 9 a copy of image 2 (tied scores), `attn`
    /// [3, 4, 8] of pseudo-random values with a per-image bias (so dot and cosine rank differently).
    func syntheticRun(_ dtype: StoreDType, name: String = "run") throws -> StoreReader {
        let l = Self.layers, h = Self.heads, d = Self.width, n = 23
        let header = StoreHeader(
            model: StoreModelInfo(id: "test/model", layout: "openclip", weightsSHA256: String(repeating: "ef", count: 32), weightFiles: []),
            convention: "faithful",
            dimensions: ["layers": l, "heads": h, "embedDim": d],
            tensors: [StoreTensorSpec(name: "attn", shape: [l, h, d], dtype: dtype)],
            images: (0..<n).map { StoreImage(path: "/data/img-\($0).png", label: $0 % 3 == 0 ? nil : "class \($0 % 3)") },
            shardSize: 5)
        let writer = try StoreWriter.open(at: scratch.appendingPathComponent(name), header: header, constants: [:],
                                          createdBy: "test", resume: false)
        func value(_ i: Int, _ k: Int) -> Float {
            let src = i == 9 ? 2 : i
            return sin(Float(src * 97 + k) * 0.61) * (1 + Float(src % 4)) + 0.05 * Float(src)
        }
        for (s, range) in writer.shardRanges.enumerated() {
            let idx = range.filter { $0 != 6 }
            let rows = Tensor(shape: [idx.count, l, h, d], data: idx.flatMap { i in (0..<(l * h * d)).map { value(i, $0) } })
            let skipped = range.contains(6) ? [SkippedImage(index: 6, path: "/data/img-6.png", error: "unreadable")] : []
            try writer.writeShard(s, imageIndices: idx, rows: ["attn": rows], skipped: skipped)
        }
        try writer.finish()
        return try StoreReader(run: scratch.appendingPathComponent(name))
    }

    func tinyModel() throws -> CLIP {
        let dir = fixtures.appendingPathComponent("openclip-tiny")
        return try CLIP(location: ModelLocation(directory: dir, layout: .openCLIP, modelId: dir.path))
    }

    var inputImages: [URL] {
        let inputs = fixtures.appendingPathComponent("inputs")
        return ((try? FileManager.default.contentsOfDirectory(atPath: inputs.path)) ?? []).filter { $0.hasSuffix(".png") }.sorted()
            .map { inputs.appendingPathComponent($0) }
    }

    /// A run of the tiny model over `images` (CSV list with labels), shards of 2.
    func tinyRun(_ clip: CLIP, images: [URL], dtype: StoreDType, name: String) throws -> StoreReader {
        var csv = "path,label\n"
        for (i, url) in images.enumerated() { csv += "\(url.path),\(["cat", "dog", "bird"][i % 3])\n" }
        let list = scratch.appendingPathComponent("\(name).csv")
        try csv.write(to: list, atomically: true, encoding: .utf8)
        var options = DecomposeRunOptions()
        options.shardSize = 2
        options.dtype = dtype
        let run = scratch.appendingPathComponent(name)
        _ = try DecomposeRun.run(model: clip, dataset: try ImageDataset.load([list.path]), output: run, options: options)
        return try StoreReader(run: run)
    }

    // MARK: Brute force

    /// Every row's head-set vector from a full read of `attn` (float32, heads added in order).
    func bruteVectors(_ reader: StoreReader, _ heads: [HeadID]) throws -> [[Float]] {
        let attn = try reader.tensor("attn")                                              // [N, L, H, D']
        let (l, h, d) = (attn.shape[1], attn.shape[2], attn.shape[3])
        return (0..<reader.rowCount).map { r in
            var v = [Float](repeating: 0, count: d)
            for id in heads {
                let o = ((r * l + id.layer) * h + id.head) * d
                for j in 0..<d { v[j] += attn.data[o + j] }
            }
            return v
        }
    }

    /// Rows and scores, best first (ties by row), excluding `exclude`.
    func bruteRanking(_ vectors: [[Float]], query: [Float], metric: RetrievalMetric, exclude: Int?) -> [(row: Int, score: Double)] {
        func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        let qn = dot(query, query).squareRoot()
        var out = [(row: Int, score: Double)]()
        for (r, v) in vectors.enumerated() where r != exclude {
            let s = dot(query, v)
            out.append((r, metric == .dot ? s : s / (qn * dot(v, v).squareRoot())))
        }
        return out.sorted { $0.score != $1.score ? $0.score > $1.score : $0.row < $1.row }
    }

    func assertSameRanking(_ report: RetrievalReport, _ expected: [(row: Int, score: Double)], top: Int,
                           reader: StoreReader, file: StaticString = #filePath, line: UInt = #line) {
        let want = Array(expected.prefix(top))
        XCTAssertEqual(report.results.map(\.row), want.map(\.row), "ranks", file: file, line: line)
        XCTAssertEqual(report.results.map(\.rank), Array(1...want.count), file: file, line: line)
        for (hit, w) in zip(report.results, want) {
            XCTAssertEqual(hit.score, w.score, accuracy: 1e-9 * max(1, abs(w.score)), "row \(w.row)", file: file, line: line)
            XCTAssertEqual(hit.path, reader.rowImages[hit.row].path, file: file, line: line)
            XCTAssertEqual(hit.label, reader.rowImages[hit.row].label, file: file, line: line)
            XCTAssertEqual(hit.imageIndex, reader.rowImageIndices[hit.row], file: file, line: line)
        }
    }

    // MARK: Image queries from the run

    func checkRowQueries(_ dtype: StoreDType) throws {
        let reader = try syntheticRun(dtype)
        XCTAssertEqual(reader.rowCount, 22)
        XCTAssertEqual(reader.shardRows.count, 5)
        for heads in [[HeadID(layer: 2, head: 3), HeadID(layer: 1, head: 0)], [HeadID(layer: 0, head: 2)],
                      (0..<4).map { HeadID(layer: 1, head: $0) }] {
            let vectors = try bruteVectors(reader, heads)
            for metric in RetrievalMetric.allCases {
                for (row, top) in [(2, 21), (0, 5), (21, 1), (10, 40)] {
                    let report = try Retrieval.search(reader, query: .row(row),
                                                      options: RetrievalOptions(heads: heads, top: top, metric: metric))
                    let expected = bruteRanking(vectors, query: vectors[row], metric: metric, exclude: row)
                    assertSameRanking(report, expected, top: top, reader: reader)
                    XCTAssertFalse(report.results.contains { $0.row == row }, "the query row is left out")
                    XCTAssertEqual(report.query.row, row)
                    XCTAssertEqual(report.query.source, "run")
                    XCTAssertEqual(report.candidates, 21)
                    XCTAssertEqual(report.metric, metric.rawValue)
                    XCTAssertEqual(report.heads, heads.map(\.description))
                }
            }
        }
        // Row 2 and row 8 (image 9, a copy of image 2) have the same vector: cosine 1 at rank 1 for row 2.
        let report = try Retrieval.search(reader, query: .row(2), options: RetrievalOptions(heads: [HeadID(layer: 0, head: 0)], top: 3))
        XCTAssertEqual(report.results[0].row, 8)
        XCTAssertEqual(report.results[0].imageIndex, 9)
        XCTAssertEqual(report.results[0].score, 1, accuracy: 1e-12)
        // The dot and cosine rankings differ on this data (the check above compares something).
        let heads = [HeadID(layer: 2, head: 3)]
        let cos = try Retrieval.search(reader, query: .row(5), options: RetrievalOptions(heads: heads, top: 21, metric: .cosine))
        let dot = try Retrieval.search(reader, query: .row(5), options: RetrievalOptions(heads: heads, top: 21, metric: .dot))
        XCTAssertNotEqual(cos.results.map(\.row), dot.results.map(\.row))
    }

    func testRowQueriesMatchBruteForceFloat32() throws { try checkRowQueries(.float32) }
    func testRowQueriesMatchBruteForceFloat16() throws { try checkRowQueries(.float16) }

    /// `HeadContributions.forEachHead` reads its groups with strided reads: every group size gives the
    /// full read's values.
    func testHeadContributionsFromStridedReadsMatchFullRead() throws {
        let reader = try syntheticRun(.float16)
        let attn = try reader.tensor("attn")                                              // [22, 3, 4, 8]
        let (n, l, h, d) = (attn.shape[0], attn.shape[1], attn.shape[2], attn.shape[3])
        let heads = [HeadID(layer: 2, head: 1), HeadID(layer: 0, head: 0), HeadID(layer: 1, head: 3),
                     HeadID(layer: 0, head: 3), HeadID(layer: 2, head: 2)]
        for perGroup in [1, 2, 3, 5] {
            var seen = [HeadID]()
            try HeadContributions.forEachHead(reader, heads: heads, budgetBytes: perGroup * n * d * 4) { id, c in
                seen.append(id)
                XCTAssertEqual(c.shape, [n, d])
                for r in 0..<n {
                    let o = ((r * l + id.layer) * h + id.head) * d
                    XCTAssertEqual(Array(c.data[(r * d)..<((r + 1) * d)]), Array(attn.data[o..<(o + d)]), "\(id) row \(r) group \(perGroup)")
                }
            }
            XCTAssertEqual(seen, heads)
        }
    }

    func testTiesAreOrderedByRow() {
        let vectors = Tensor(shape: [5, 2], data: [1, 0, 0, 1, 2, 0, 1, 0, -1, 0])                  // [5, 2]
        let cos = Retrieval.rank(vectors, query: [1, 0], metric: .cosine, top: 5)
        XCTAssertEqual(cos.map(\.row), [0, 2, 3, 1, 4])
        XCTAssertEqual(cos.map(\.score), [1, 1, 1, 0, -1])
        let dot = Retrieval.rank(vectors, query: [1, 0], metric: .dot, top: 2, excluding: 2)
        XCTAssertEqual(dot.map(\.row), [0, 3])
        // A zero vector scores 0 under cosine; NaN goes last.
        let odd = Tensor(shape: [3, 2], data: [0, 0, .nan, 1, -1, 0])
        XCTAssertEqual(Retrieval.rank(odd, query: [1, 0], metric: .cosine, top: 3).map(\.row), [0, 2, 1])
        // The partial selection (small top over many rows) agrees with a full sort.
        let many = Tensor(shape: [400, 2], data: (0..<800).map { Float(($0 * 7919) % 13) - 6 })
        XCTAssertEqual(Retrieval.rank(many, query: [0.3, 1], metric: .dot, top: 10).map(\.row),
                       Array(Retrieval.rank(many, query: [0.3, 1], metric: .dot, top: 400).prefix(10)).map(\.row))
    }

    // MARK: Image files

    func testImageFileOfTheRunUsesItsStoredRow() throws {
        let clip = try tinyModel()
        let images = inputImages
        let reader = try tinyRun(clip, images: images, dtype: .float32, name: "run")
        let heads = [HeadID(layer: 1, head: 2), HeadID(layer: 0, head: 1)]
        // The same file through a symbolic link and a path with "..": still row 2.
        let link = scratch.appendingPathComponent("link.png")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: images[2])
        let dotted = images[2].deletingLastPathComponent().appendingPathComponent("../inputs/\(images[2].lastPathComponent)").path
        for path in [images[2].path, link.path, dotted] {
            XCTAssertFalse(Retrieval.needsModel(.image(path), reader: reader), path)
            let report = try Retrieval.search(reader, query: .image(path), options: RetrievalOptions(heads: heads, top: 10))
            XCTAssertEqual(report.query.row, 2, path)
            XCTAssertEqual(report.query.source, "run")
            XCTAssertTrue(report.query.note.contains("row 2 of the run"), report.query.note)
            let byRow = try Retrieval.search(reader, query: .row(2), options: RetrievalOptions(heads: heads, top: 10))
            XCTAssertEqual(report.results, byRow.results)
        }
        XCTAssertTrue(Retrieval.needsModel(.text("x"), reader: reader))
        XCTAssertFalse(Retrieval.needsModel(.row(0), reader: reader))
    }

    /// An image not in the run, decomposed on the fly, scores as it does when it is stored in a run of
    /// its own (float16: rounded as stored).
    func checkOnTheFly(_ dtype: StoreDType) throws {
        let clip = try tinyModel()
        let images = inputImages
        XCTAssertEqual(images.count, 4)
        let reader = try tinyRun(clip, images: Array(images.prefix(3)), dtype: dtype, name: "run")
        let other = try tinyRun(clip, images: [images[3]], dtype: dtype, name: "other")
        XCTAssertTrue(Retrieval.needsModel(.image(images[3].path), reader: reader))
        let heads = [HeadID(layer: 1, head: 3), HeadID(layer: 1, head: 0), HeadID(layer: 0, head: 2)]
        let vectors = try bruteVectors(reader, heads)
        let stored = try bruteVectors(other, heads)[0]
        for metric in RetrievalMetric.allCases {
            let report = try Retrieval.search(reader, query: .image(images[3].path),
                                              options: RetrievalOptions(heads: heads, top: 3, metric: metric), model: clip)
            XCTAssertEqual(report.query.source, "decomposed")
            XCTAssertNil(report.query.row)
            XCTAssertEqual(report.candidates, 3)
            let expected = bruteRanking(vectors, query: stored, metric: metric, exclude: nil)
            XCTAssertEqual(report.results.map(\.row), expected.map(\.row))
            for (hit, e) in zip(report.results, expected) {
                XCTAssertEqual(hit.score, e.score, accuracy: 1e-5 * max(1, abs(e.score)), "\(metric) row \(e.row)")
            }
        }
        let onTheFly = try Retrieval.decomposedVector(images[3].path, reader: reader, model: clip, heads: heads)
        for (a, b) in zip(onTheFly, stored) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b))) }
    }

    func testImageNotInTheRunIsDecomposedFloat32() throws { try checkOnTheFly(.float32) }
    func testImageNotInTheRunIsDecomposedFloat16() throws { try checkOnTheFly(.float16) }

    // MARK: Text queries

    func testTextQueryMatchesBruteForce() throws {
        let clip = try tinyModel()
        for dtype in [StoreDType.float32, .float16] {
            let reader = try tinyRun(clip, images: inputImages + inputImages.prefix(2), dtype: dtype, name: "run-\(dtype)")
            XCTAssertEqual(reader.shardRows.count, 3)
            let heads = [HeadID(layer: 1, head: 1), HeadID(layer: 1, head: 2)]
            let t = Ops.l2Normalized(clip.encodeTexts(["a photo of a dog"])).data                // [D']
            let vectors = try bruteVectors(reader, heads)
            for metric in RetrievalMetric.allCases {
                let report = try Retrieval.search(reader, query: .text("  a photo of a dog\n"),
                                                  options: RetrievalOptions(heads: heads, top: 4, metric: metric), model: clip)
                XCTAssertEqual(report.query.text, "a photo of a dog")
                XCTAssertEqual(report.query.norm, 1, accuracy: 1e-6)
                XCTAssertEqual(report.candidates, 6)
                assertSameRanking(report, bruteRanking(vectors, query: t, metric: metric, exclude: nil), top: 4, reader: reader)
            }
        }
    }

    // MARK: Errors

    func assertRetrievalError<T>(_ body: @autoclosure () throws -> T, _ parts: [String],
                                 file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { e in
            let text = "\(e)"
            for p in parts { XCTAssertTrue(text.contains(p), "'\(text)' does not mention '\(p)'", file: file, line: line) }
        }
    }

    func testBadRequests() throws {
        let reader = try syntheticRun(.float32)
        let h = [HeadID(layer: 0, head: 0)]
        assertRetrievalError(try Retrieval.search(reader, query: .row(22), options: RetrievalOptions(heads: h)),
                             [reader.run.path, "index 22", "22 rows", "0...21"])
        assertRetrievalError(try Retrieval.search(reader, query: .row(-1), options: RetrievalOptions(heads: h)), ["index -1"])
        assertRetrievalError(try Retrieval.search(reader, query: .row(0), options: RetrievalOptions(heads: [HeadID(layer: 3, head: 0)])),
                             ["head 3.0 does not exist", "layers 0...2", "heads 0...3"])
        assertRetrievalError(try Retrieval.search(reader, query: .row(0), options: RetrievalOptions(heads: [])), ["no heads"])
        assertRetrievalError(try Retrieval.search(reader, query: .row(0), options: RetrievalOptions(heads: h, top: 0)), ["top"])
        assertRetrievalError(try Retrieval.search(reader, query: .text("a dog"), options: RetrievalOptions(heads: h)), ["needs the run's model"])
        assertRetrievalError(try Retrieval.search(reader, query: .text("  "), options: RetrievalOptions(heads: h)), ["empty"])
        assertRetrievalError(try Retrieval.search(reader, query: .image("/nowhere/x.png"), options: RetrievalOptions(heads: h)),
                             ["/nowhere/x.png", "not in the run"])

        // A run without a per-head attn tensor.
        let header = StoreHeader(
            model: StoreModelInfo(id: "m", layout: "openclip", weightsSHA256: String(repeating: "0", count: 64), weightFiles: []),
            convention: "faithful", dimensions: ["layers": 1, "heads": 1, "embedDim": 2],
            tensors: [StoreTensorSpec(name: "embedding", shape: [2])], images: [StoreImage(path: "a.png")], shardSize: 1)
        let url = scratch.appendingPathComponent("plain")
        let writer = try StoreWriter.open(at: url, header: header, constants: [:], createdBy: "test", resume: false)
        try writer.writeShard(0, imageIndices: [0], rows: ["embedding": Tensor(shape: [1, 2], data: [1, 2])], skipped: [])
        try writer.finish()
        assertRetrievalError(try Retrieval.search(try StoreReader(run: url), query: .row(0), options: RetrievalOptions(heads: h)),
                             [url.appendingPathComponent("manifest.json").path, "not a decomposition run", "embedding[2]"])

        // A zero query vector.
        let zeros = Tensor(shape: [2, 2], data: [0, 0, 1, 1])
        XCTAssertEqual(Retrieval.rank(zeros, query: [0, 0], metric: .cosine, top: 2).map(\.score), [0, 0])
    }
}
