import Foundation
import RefractStore
import RefractTensor
import XCTest
@testable import RefractDecompose

/// The mean-ablation studies take their means from the shards' statistics (format version 2) and
/// from a pass over the data otherwise (version 1 runs, non-finite values): both agree.
final class RunStatisticsTests: XCTestCase {
    /// A CLIP-layout run of `n` images (L = 2, H = 3, D' = 5) with deterministic values, written in
    /// format `version`.
    func writeRun(_ dir: URL, version: Int, n: Int = 13, dtype: StoreDType = .float16, poison: Bool = false) throws -> StoreReader {
        let (l, h, d) = (2, 3, 5)
        let specs = [StoreTensorSpec(name: "pre", shape: [d], dtype: dtype), StoreTensorSpec(name: "mlp", shape: [l, d], dtype: dtype),
                     StoreTensorSpec(name: "attn", shape: [l, h, d], dtype: dtype), StoreTensorSpec(name: "attn_cls", shape: [l, h, d], dtype: dtype)]
        let header = StoreHeader(
            model: StoreModelInfo(id: "test/clip", layout: "openclip", weightsSHA256: String(repeating: "ab", count: 32), weightFiles: []),
            convention: "faithful", dimensions: ["layers": l, "heads": h, "embedDim": d], tensors: specs,
            images: (0..<n).map { StoreImage(path: "img-\($0).png") }, shardSize: 4)
        let writer = try StoreWriter.open(at: dir, header: header, constants: [:], createdBy: "test", resume: false, formatVersion: version)
        for (s, range) in writer.shardRanges.enumerated() {
            var rows: [String: Tensor] = [:]
            for spec in specs {
                let w = spec.elementCount
                var data = [Float](repeating: 0, count: range.count * w)
                for (r, i) in range.enumerated() {
                    for j in 0..<w { data[r * w + j] = Float(sin(Double(i * 31 + j * 7 + spec.name.count))) * 3 + Float(j % 3) * 100 }
                }
                if poison && s == 1 && spec.name == "mlp" { data[2] = .nan }
                rows[spec.name] = Tensor(shape: [range.count] + spec.shape, data: data)
            }
            try writer.writeShard(s, imageIndices: Array(range), rows: rows, skipped: [])
        }
        try writer.finish()
        return try StoreReader(run: dir)
    }

    func testMeansFromStatisticsEqualAPassOverTheData() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-stats-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let v2 = try writeRun(dir.appendingPathComponent("v2"), version: 2)
        let v1 = try writeRun(dir.appendingPathComponent("v1"), version: 1)
        XCTAssertTrue(v2.hasStatistics)
        XCTAssertFalse(v1.hasStatistics)
        XCTAssertNil(try v1.statistics(["pre"]))
        XCTAssertEqual(v1.manifest.formatVersion, 1)
        // The same stored values either way.
        XCTAssertEqual(try v1.tensor("attn").data, try v2.tensor("attn").data)
        let a = try MeanAblation.means(v2), b = try MeanAblation.means(v1)        // statistics; a pass
        func close(_ x: [Double], _ y: [Double], _ what: String) {
            XCTAssertEqual(x.count, y.count, what)
            for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-12 * max(1, abs(v)), what) }
        }
        close(a.pre, b.pre, "pre")
        close(a.mlpSum, b.mlpSum, "mlp")
        close(a.clsSum, b.clsSum, "cls")
        for layer in 0..<2 { close(a.attnLayer[layer], b.attnLayer[layer], "attn layer \(layer)") }
        // A non-finite value in a shard: no statistics are used, and the pass names the value.
        let bad = try writeRun(dir.appendingPathComponent("nan"), version: 2, poison: true)
        XCTAssertNil(try StoredValues.finiteStatistics(bad, ["mlp"]))
        XCTAssertThrowsError(try MeanAblation.means(bad)) { XCTAssertTrue("\($0)".contains("NaN") || "\($0)".contains("nan"), "\($0)") }
        // A part cannot be written as version 1.
        XCTAssertThrowsError(try StoreWriter.open(at: dir.appendingPathComponent("p"), header: v2.manifest.header, constants: [:],
                                                  createdBy: "t", resume: false, part: (0, 2), formatVersion: 1))
    }
}
