import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

final class ExportTests: XCTestCase {
    func testExportRoundTripThroughNPY() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        let fx = Fixture(n: 11, shardSize: 4, dtype: .float16, skipped: [0, 7])
        try fx.write(to: run)
        let reader = try StoreReader(run: run)
        let out = dir.appendingPathComponent("exports/npy")  // parent created as needed
        try StoreExport.npy(reader, to: out)

        let rows = [1, 2, 3, 4, 5, 6, 8, 9, 10]
        XCTAssertEqual(reader.rowImageIndices, rows)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(),
                       ["attn.npy", "beta.npy", "classes.txt", "image_index.npy", "images.txt", "labels.txt",
                        "manifest.json", "mlp.npy"])
        for name in ["attn", "mlp"] {
            let array = try NPY.read(out.appendingPathComponent("\(name).npy"))
            let expected = fx.expected(name, rows)
            guard case let .float32(shape, values) = array else { return XCTFail("\(name).npy is not float32") }
            XCTAssertEqual(shape, expected.shape)
            XCTAssertEqual(values, expected.data)
        }
        XCTAssertEqual(try NPY.read(out.appendingPathComponent("beta.npy")), .float32(shape: [4], values: fx.constants["beta"]!.data))
        XCTAssertEqual(try NPY.read(out.appendingPathComponent("image_index.npy")), .int64(shape: [9], values: rows.map { Int64($0) }))
        let images = try String(contentsOf: out.appendingPathComponent("images.txt"), encoding: .utf8)
        XCTAssertEqual(images, rows.map { "images/img-\($0).jpg\n" }.joined())
        let labels = try String(contentsOf: out.appendingPathComponent("labels.txt"), encoding: .utf8)
        XCTAssertEqual(labels, rows.map { (fx.header.images[$0].label ?? "") + "\n" }.joined())
        XCTAssertTrue(labels.contains("cat\n") && labels.contains("dog\n") && labels.contains("\n\n"))
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("classes.txt"), encoding: .utf8), "cat\ndog\n")
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("manifest.json")),
                       try Data(contentsOf: run.appendingPathComponent("manifest.json")))
        // The .npy files are byte-identical to what RefractTensor's NPY writer produces.
        XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("mlp.npy")), NPY.encode(.float32(shape: [9, 4], values: fx.expected("mlp", rows).data)))
        // No temporary directory is left beside the target.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.deletingLastPathComponent().path), ["npy"])
    }

    func testExportOfSelectedTensorsWithoutLabels() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        // Images 0 and 3 are the only unlabelled ones of the fixture; keep only them.
        let fx = Fixture(n: 4, shardSize: 2, skipped: [1, 2])
        try fx.write(to: run)
        let out = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)  // empty: accepted
        try StoreExport.npy(try StoreReader(run: run), to: out, names: ["mlp"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(),
                       ["beta.npy", "classes.txt", "image_index.npy", "images.txt", "manifest.json", "mlp.npy"])
        XCTAssertEqual(try NPY.read(out.appendingPathComponent("mlp.npy")).tensor, fx.expected("mlp", [0, 3]))
        assertStoreError(try StoreExport.npy(try StoreReader(run: run), to: dir.appendingPathComponent("x"), names: ["nope"]),
                         kind: .unknownName, contains: ["'nope'"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x").path))
    }

    func testExportRefusesNonEmptyTarget() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        try Fixture(n: 4, shardSize: 2).write(to: run)
        let reader = try StoreReader(run: run)
        let out = dir.appendingPathComponent("out")
        try StoreExport.npy(reader, to: out)
        assertStoreError(try StoreExport.npy(reader, to: out), kind: .exists, contains: [out.path, "not empty"])
        let file = dir.appendingPathComponent("file.npy")
        try Data().write(to: file)
        assertStoreError(try StoreExport.npy(reader, to: file), kind: .exists, contains: [file.path, "not a directory"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["file.npy", "out", "run"])
    }

    func testFailedExportLeavesNothing() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        try Fixture(n: 8, shardSize: 2).write(to: run)
        let reader = try StoreReader(run: run)
        // A shard disappears after the reader opened the run: the export fails naming it, and
        // neither the target nor a temporary directory remains.
        let shard = run.appendingPathComponent("shard-00003.safetensors")
        try FileManager.default.removeItem(at: shard)
        let out = dir.appendingPathComponent("out")
        assertStoreError(try StoreExport.npy(reader, to: out), kind: .missingFile, contains: [shard.path])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["run"])
    }
}
