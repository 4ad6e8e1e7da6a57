import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

/// Strided reads (`slices`, `summedSlices`) against full reads of the same run.
final class SliceReadTests: XCTestCase {
    static let layers = 3, heads = 4, width = 5

    /// 11 images, shards of 4 (0..<4, 4..<8, 8..<11), images 1 and 9 skipped; `attn` [3, 4, 5] and
    /// `mlp` [3, 5] with values that float16 rounds.
    func makeRun(_ dtype: StoreDType) throws -> StoreReader {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let l = Self.layers, h = Self.heads, d = Self.width, n = 11
        let skipped: Set<Int> = [1, 9]
        let header = StoreHeader(
            model: StoreModelInfo(id: "test/model", layout: "openclip", weightsSHA256: String(repeating: "cd", count: 32), weightFiles: []),
            convention: "faithful",
            dimensions: ["layers": l, "heads": h, "embedDim": d],
            tensors: [StoreTensorSpec(name: "attn", shape: [l, h, d], dtype: dtype),
                      StoreTensorSpec(name: "mlp", shape: [l, d], dtype: dtype)],
            images: (0..<n).map { StoreImage(path: "img-\($0).png") },
            shardSize: 4)
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "test", resume: false)
        func value(_ i: Int, _ k: Int, _ salt: Float) -> Float { sin(Float(i * 131 + k) * 0.37 + salt) * Float(1 + k % 7) }
        for (s, range) in writer.shardRanges.enumerated() {
            let idx = range.filter { !skipped.contains($0) }
            let attn = Tensor(shape: [idx.count, l, h, d], data: idx.flatMap { i in (0..<(l * h * d)).map { value(i, $0, 0.1) } })
            let mlp = Tensor(shape: [idx.count, l, d], data: idx.flatMap { i in (0..<(l * d)).map { value(i, $0, 2.3) } })
            let sk = range.filter { skipped.contains($0) }.map { SkippedImage(index: $0, path: "img-\($0).png", error: "unreadable") }
            try writer.writeShard(s, imageIndices: idx, rows: ["attn": attn, "mlp": mlp], skipped: sk)
        }
        try writer.finish()
        return try StoreReader(run: run)
    }

    /// The whole tensor through `forEachShard`, float32 [N, ...].
    func fullRead(_ reader: StoreReader, _ name: String) throws -> Tensor {
        var data = [Float]()
        try reader.forEachShard([name]) { _, t in data += t[name]!.data }
        return Tensor(shape: [reader.rowCount] + (try reader.spec(name)).shape, data: data)
    }

    func check(_ dtype: StoreDType) throws {
        let reader = try makeRun(dtype)
        XCTAssertEqual(reader.rowCount, 9)
        XCTAssertEqual(reader.shardRows.count, 3)
        let l = Self.layers, h = Self.heads, d = Self.width
        let full = try fullRead(reader, "attn")                                          // [9, 3, 4, 5]
        let heads = [[2, 3], [0, 1], [2, 3], [1, 0]]

        let s = try reader.slices(of: "attn", indices: heads)                             // [9, 4, 5]
        XCTAssertEqual(s.shape, [9, heads.count, d])
        for r in 0..<9 {
            for (j, ih) in heads.enumerated() {
                let from = ((r * l + ih[0]) * h + ih[1]) * d
                XCTAssertEqual(Array(s.data[((r * heads.count + j) * d)..<((r * heads.count + j + 1) * d)]),
                               Array(full.data[from..<(from + d)]), "row \(r) slice \(ih)")
            }
        }

        // The sum, in the given order, in float32: exactly what adding the full read's slices gives.
        let summed = try reader.summedSlices(of: "attn", indices: heads)                  // [9, 5]
        XCTAssertEqual(summed.shape, [9, d])
        for r in 0..<9 {
            var acc = [Float](repeating: 0, count: d)
            for ih in heads {
                let from = ((r * l + ih[0]) * h + ih[1]) * d
                for j in 0..<d { acc[j] += full.data[from + j] }
            }
            XCTAssertEqual(Array(summed.data[(r * d)..<((r + 1) * d)]), acc, "row \(r)")
        }

        // A row range across shard boundaries, a one-component index (whole layers), a full index (scalars).
        func range(_ from: Int, _ count: Int) -> [Float] { Array(full.data[from..<(from + count)]) }
        let part = try reader.slices(of: "attn", indices: [[1, 2]], rows: 2..<8)           // [6, 1, 5]
        var expected = [Float]()
        for r in 2..<8 { expected += range(((r * l + 1) * h + 2) * d, d) }
        XCTAssertEqual(part, Tensor(shape: [6, 1, d], data: expected))
        let layer = try reader.slices(of: "attn", indices: [[2]])                          // [9, 1, 4, 5]
        XCTAssertEqual(layer.shape, [9, 1, h, d])
        expected = []
        for r in 0..<9 { expected += range((r * l + 2) * h * d, h * d) }
        XCTAssertEqual(layer.data, expected)
        let scalars = try reader.slices(of: "attn", indices: [[0, 0, 4], [2, 3, 0]])       // [9, 2]
        XCTAssertEqual(scalars.shape, [9, 2])
        expected = []
        for r in 0..<9 { expected += range(r * l * h * d + 4, 1) + range(((r * l + 2) * h + 3) * d, 1) }
        XCTAssertEqual(scalars.data, expected)
        XCTAssertEqual(try reader.slices(of: "attn", indices: [[0, 0]], rows: 4..<4).shape, [0, 1, d])

        // Another tensor of the same run.
        let mlpFull = try fullRead(reader, "mlp")                                         // [9, 3, 5]
        let mlp = try reader.summedSlices(of: "mlp", indices: [[0], [2]])                  // [9, 5]
        expected = []
        for r in 0..<9 {
            for j in 0..<d { expected.append(mlpFull.data[r * l * d + j] + mlpFull.data[(r * l + 2) * d + j]) }
        }
        XCTAssertEqual(mlp.data, expected)
    }

    func testSlicesMatchFullReadsFloat32() throws { try check(.float32) }

    func testSlicesMatchFullReadsFloat16() throws { try check(.float16) }

    /// Slices far apart in a row are read separately, close ones together; either way the values
    /// are the full read's, in the order asked.
    func testNearAndFarSlicesOfWideRows() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("wide")
        let d = 4096
        let header = StoreHeader(
            model: StoreModelInfo(id: "test/model", layout: "openclip", weightsSHA256: String(repeating: "cd", count: 32), weightFiles: []),
            convention: "faithful", dimensions: ["layers": 2, "heads": 3, "embedDim": d],
            tensors: [StoreTensorSpec(name: "attn", shape: [2, 3, d], dtype: .float32)],
            images: (0..<5).map { StoreImage(path: "img-\($0).png") }, shardSize: 2)
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "test", resume: false)
        for (s, range) in writer.shardRanges.enumerated() {
            let rows = Tensor(shape: [range.count, 2, 3, d], data: range.flatMap { i in (0..<(6 * d)).map { Float(i * 100_000 + $0) } })
            try writer.writeShard(s, imageIndices: Array(range), rows: ["attn": rows], skipped: [])
        }
        try writer.finish()
        let reader = try StoreReader(run: run)
        let indices = [[1, 2], [0, 0], [0, 1], [1, 2]]
        let plan = try reader.slicePlan("attn", indices: indices, rows: nil)
        let (runs, at, bytes) = StoreReader.readRuns(plan, elementBytes: 4)
        // [0,0] and [0,1] are adjacent (one run); [1,2] is 3 slices (48 KB) further (its own run, read once).
        XCTAssertEqual(runs.map(\.start), [0, 5 * d])
        XCTAssertEqual(runs.map(\.count), [2 * d, d])
        XCTAssertEqual(at, [8 * d, 0, 4 * d, 8 * d])
        XCTAssertEqual(bytes, 12 * d)
        let full = try fullRead(reader, "attn")                                          // [5, 2, 3, 4096]
        let s = try reader.slices(of: "attn", indices: indices)                           // [5, 4, 4096]
        var expected = [Float]()
        for r in 0..<5 { for ix in indices { let o = ((r * 2 + ix[0]) * 3 + ix[1]) * d; expected += full.data[o..<(o + d)] } }
        XCTAssertEqual(s.data, expected)
    }

    func testBadSliceRequests() throws {
        let reader = try makeRun(.float16)
        let run = reader.run.path
        assertStoreError(try reader.slices(of: "attn", indices: [[3, 0]]), kind: .invalidArgument,
                         contains: [run, "[3, 0]", "outside 'attn'", "axis 0 has 3 entries"])
        assertStoreError(try reader.slices(of: "attn", indices: [[0, -1]]), kind: .invalidArgument, contains: ["[0, -1]"])
        assertStoreError(try reader.summedSlices(of: "attn", indices: [[0, 1], [1]]), kind: .invalidArgument,
                         contains: ["different lengths"])
        assertStoreError(try reader.slices(of: "attn", indices: []), kind: .invalidArgument, contains: ["no slices"])
        assertStoreError(try reader.slices(of: "attn", indices: [[0, 0, 0, 0]]), kind: .invalidArgument, contains: ["1 to 3"])
        assertStoreError(try reader.slices(of: "attn", indices: [[0, 0]], rows: 5..<10), kind: .invalidArgument,
                         contains: ["5..<10", "9 rows"])
        assertStoreError(try reader.slices(of: "nope", indices: [[0]]), kind: .unknownName, contains: ["'nope'"])
    }

    /// A shard replaced after opening is caught by the header check of the read.
    func testShardChangedAfterOpenIsRefused() throws {
        let reader = try makeRun(.float32)
        let shard = reader.run.appendingPathComponent(reader.manifest.shards[1].file)
        try Data("not a safetensors file at all".utf8).write(to: shard)
        assertStoreError(try reader.summedSlices(of: "attn", indices: [[0, 0]]), kind: .invalidShard, contains: [shard.path])
        // Rows of the first shard only do not touch it.
        XCTAssertEqual(try reader.summedSlices(of: "attn", indices: [[0, 0]], rows: 0..<3).shape, [3, Self.width])
    }
}
