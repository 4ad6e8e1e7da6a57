import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

final class ReaderErrorTests: XCTestCase {
    private func makeRun(_ fx: Fixture = Fixture(n: 10, shardSize: 4, skipped: [5]), finish: Bool = true) throws -> URL {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        try fx.write(to: run, finish: finish)
        return run
    }

    private func editManifest(_ run: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = run.appendingPathComponent("manifest.json")
        var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }

    func testIncompleteRunIsRefusedUnlessAllowed() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 16, shardSize: 4, skipped: [2])
        try fx.write(to: run, shards: 0..<2)
        assertStoreError(try StoreReader(run: run), kind: .incomplete,
                         contains: [run.path, "incomplete (2 of 4 shards", "--resume"])
        let reader = try StoreReader(run: run, allowIncomplete: true)
        XCTAssertFalse(reader.isComplete)
        XCTAssertEqual(reader.rowCount, 7)
        XCTAssertEqual(try reader.tensor("mlp"), fx.expected("mlp", [0, 1, 3, 4, 5, 6, 7]))
    }

    func testMissingRunAndMissingManifest() throws {
        let dir = try makeTempDirectory(self)
        let none = dir.appendingPathComponent("none")
        assertStoreError(try StoreReader(run: none), kind: .missingFile, contains: [none.path, "does not exist"])
        assertStoreError(try StoreReader(run: dir), kind: .missingFile, contains: ["\(dir.path)/manifest.json", "missing"])
    }

    func testCorruptManifest() throws {
        let run = try makeRun()
        let manifest = run.appendingPathComponent("manifest.json")
        let original = try Data(contentsOf: manifest)
        try original.prefix(original.count / 2).write(to: manifest)
        assertStoreError(try StoreReader(run: run), kind: .corruptManifest, contains: [manifest.path, "not valid JSON"])
        try Data().write(to: manifest)
        assertStoreError(try StoreReader(run: run), kind: .corruptManifest, contains: [manifest.path])
    }

    func testForeignJSONIsNotAManifest() throws {
        let run = try makeRun()
        let manifest = run.appendingPathComponent("manifest.json")
        try Data(#"{"architectures": ["CLIPModel"], "model_type": "clip"}"#.utf8).write(to: manifest)
        assertStoreError(try StoreReader(run: run), kind: .foreignFile, contains: [manifest.path, "not a refract run manifest"])
        try Data(#"[1, 2, 3]"#.utf8).write(to: manifest)
        assertStoreError(try StoreReader(run: run), kind: .foreignFile, contains: [manifest.path, "not a refract run manifest"])
        try Data(#"{"format": "something-else", "formatVersion": 1}"#.utf8).write(to: manifest)
        assertStoreError(try StoreReader(run: run), kind: .foreignFile, contains: [manifest.path, "something-else"])
    }

    func testNewerFormatVersionIsRefusedClearly() throws {
        let run = try makeRun()
        try editManifest(run) { $0["formatVersion"] = 3 }
        assertStoreError(try StoreReader(run: run), kind: .unsupportedVersion,
                         contains: ["manifest.json", "format version 3", "newer refract"])
    }

    func testManifestWithMissingOrWrongFields() throws {
        let run = try makeRun()
        try editManifest(run) { $0["shards"] = nil }
        assertStoreError(try StoreReader(run: run), kind: .corruptManifest, contains: ["manifest.json", "'shards'"])

        let run2 = try makeRun()
        try editManifest(run2) { m in
            var tensors = m["tensors"] as! [[String: Any]]
            tensors[0]["dtype"] = "bfloat16"
            m["tensors"] = tensors
        }
        assertStoreError(try StoreReader(run: run2), kind: .corruptManifest, contains: ["manifest.json", "tensors[0].dtype"])

        let run3 = try makeRun()
        try editManifest(run3) { m in
            var shards = m["shards"] as! [[String: Any]]
            shards[1]["rows"] = 4  // image 5 is skipped, so shard 1 has 3 rows
            m["shards"] = shards
        }
        assertStoreError(try StoreReader(run: run3), kind: .invalidManifest, contains: ["manifest.json", "shards[1]"])

        let run4 = try makeRun()
        try editManifest(run4) { m in m["complete"] = true; m["shards"] = Array((m["shards"] as! [Any]).prefix(2)) }
        assertStoreError(try StoreReader(run: run4), kind: .invalidManifest, contains: ["manifest.json", "complete", "2 of 3"])
    }

    func testMissingShard() throws {
        let run = try makeRun()
        let shard = run.appendingPathComponent("shard-00001.safetensors")
        try FileManager.default.removeItem(at: shard)
        assertStoreError(try StoreReader(run: run), kind: .missingFile, contains: [shard.path, "missing", "shard 1 of 3"])
    }

    func testTruncatedShard() throws {
        let run = try makeRun()
        let shard = run.appendingPathComponent("shard-00002.safetensors")
        let data = try Data(contentsOf: shard)
        try data.prefix(data.count - 10).write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path])
        try data.prefix(5).write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "too short"])
        try Data().write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "empty"])
    }

    func testShardFromAnotherRunOrWithWrongShape() throws {
        let run = try makeRun()
        let other = try makeRun()
        let shard = run.appendingPathComponent("shard-00000.safetensors")
        try FileManager.default.removeItem(at: shard)
        try FileManager.default.copyItem(at: other.appendingPathComponent("shard-00000.safetensors"), to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "belongs to run"])

        // A shard written by hand with the right metadata but a wrong per-image shape.
        let manifest = try ManifestFile.load(run: run)
        var w = SafetensorsWriter(metadata: ["format": "refract-contributions", "run_id": manifest.runId, "shard": "0"])
        try w.add("image_index", int64: [0, 1, 2, 3], shape: [4])
        try w.add("attn", Tensor(zeros: [4, 3, 2]))
        try w.add("mlp", Tensor(zeros: [4, 4]))
        try w.write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "'attn'", "[4, 3, 2]", "[4, 2, 3]"])

        // Right shapes but float16 where the manifest says float32.
        w = SafetensorsWriter(metadata: ["format": "refract-contributions", "run_id": manifest.runId, "shard": "0"])
        try w.add("image_index", int64: [0, 1, 2, 3], shape: [4])
        try w.add("attn", Tensor(zeros: [4, 2, 3]), as: .f16)
        try w.add("mlp", Tensor(zeros: [4, 4]))
        try w.write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "'attn'", "F16"])

        // Right layout but image_index rows that are not the manifest's.
        w = SafetensorsWriter(metadata: ["format": "refract-contributions", "run_id": manifest.runId, "shard": "0"])
        try w.add("image_index", int64: [0, 1, 3, 2], shape: [4])
        try w.add("attn", Tensor(zeros: [4, 2, 3]))
        try w.add("mlp", Tensor(zeros: [4, 4]))
        for (name, shape) in [("attn", [2, 3]), ("mlp", [4])] {      // the shard's statistics (format version 2)
            for key in ["sum:", "sumsq:"] {
                try w.addRaw(key + name, dtype: .f64, shape: shape, bytes: [UInt8](repeating: 0, count: 8 * shape.reduce(1, *)))
            }
        }
        try w.write(to: shard)
        assertStoreError(try StoreReader(run: run), kind: .invalidShard, contains: [shard.path, "image_index", "row 2"])
    }

    func testChecksumMismatchIsFoundOnDemand() throws {
        let run = try makeRun()
        let shard = run.appendingPathComponent("shard-00001.safetensors")
        var data = try Data(contentsOf: shard)
        data[data.count - 1] ^= 0x40  // flips a bit of the last float: the header stays valid
        try data.write(to: shard)
        let reader = try StoreReader(run: run)
        assertStoreError(try reader.verifyChecksums(), kind: .checksumMismatch, contains: [shard.path, "SHA-256"])
    }

    func testRequireCompatible() throws {
        let a = try makeRun()
        let b = try makeRun(Fixture(n: 3, shardSize: 2))  // other images, same model and tensors
        let ra = try StoreReader(run: a), rb = try StoreReader(run: b)
        try ra.requireCompatible(with: rb)

        var fx = Fixture(n: 3, shardSize: 2)
        fx.weightsSHA256 = String(repeating: "0f", count: 32)
        let c = try makeRun(fx)
        let rc = try StoreReader(run: c)
        assertStoreError(try ra.requireCompatible(with: rc), kind: .incompatibleRuns,
                         contains: ["runs of different models", a.path, c.path, fx.weightsSHA256])

        let d = try makeRun(Fixture(n: 3, shardSize: 2, dtype: .float16))  // storage type alone does not matter
        try ra.requireCompatible(with: try StoreReader(run: d))
    }
}
