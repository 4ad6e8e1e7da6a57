import Foundation
import RefractStore
import RefractTensor
import XCTest

/// `tensor(_:rowList:)`: rows in any order, repeated, across shards and storage types, as the
/// contiguous reads give them.
final class RowListTests: XCTestCase {
    func testRowListsMatchContiguousReads() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rowlist-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        for dtype in [StoreDType.float32, .float16] {
            let run = dir.appendingPathComponent(dtype.rawValue)
            let header = StoreHeader(model: StoreModelInfo(id: "m", layout: "timm", weightsSHA256: String(repeating: "d", count: 64), weightFiles: []),
                                     convention: "faithful", dimensions: [:], options: .object([:]),
                                     tensors: [StoreTensorSpec(name: "x", shape: [2, 3], dtype: dtype)],
                                     images: (0..<10).map { StoreImage(path: "/i/\($0).png") }, shardSize: 4)
            let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "test", resume: false)
            for (s, range) in writer.shardRanges.enumerated() {
                let values = range.flatMap { r in (0..<6).map { Float(r * 10 + $0) + 0.25 } }
                try writer.writeShard(s, imageIndices: Array(range), rows: ["x": Tensor(shape: [range.count, 2, 3], data: values)], skipped: [])
            }
            try writer.finish()
            let reader = try StoreReader(run: run)
            let all = try reader.tensor("x")
            let rows = [9, 0, 4, 4, 3, 7, 0]
            let got = try reader.tensor("x", rowList: rows)
            XCTAssertEqual(got.shape, [7, 2, 3])
            for (k, r) in rows.enumerated() {
                XCTAssertEqual(Array(got.data[(k * 6)..<((k + 1) * 6)]), Array(all.data[(r * 6)..<((r + 1) * 6)]), "\(dtype) row \(r)")
            }
            XCTAssertEqual(try reader.tensor("x", rowList: []).shape, [0, 2, 3])
            XCTAssertThrowsError(try reader.tensor("x", rowList: [10]))
            XCTAssertThrowsError(try reader.tensor("x", rowList: [-1]))
        }
    }
}
