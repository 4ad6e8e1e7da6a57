import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

final class RoundTripTests: XCTestCase {
    /// 10 images in shards of 4 (ranges 0..<4, 4..<8, 8..<10), images 2 and 9 skipped.
    private func checkRoundTrip(dtype: StoreDType) throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 10, shardSize: 4, dtype: dtype, skipped: [2, 9])
        let writer = try fx.write(to: run)
        XCTAssertEqual(writer.shardRanges, [0..<4, 4..<8, 8..<10])
        XCTAssertTrue(writer.isComplete)

        let reader = try StoreReader(run: run)
        let rows = [0, 1, 3, 4, 5, 6, 7, 8]
        XCTAssertEqual(reader.rowCount, 8)
        XCTAssertEqual(reader.rowImageIndices, rows)
        XCTAssertEqual(reader.rowImages.map(\.path), rows.map { "images/img-\($0).jpg" })
        XCTAssertEqual(reader.shardRows, [0..<3, 3..<7, 7..<8])
        XCTAssertEqual(reader.manifest.skipped.map(\.index), [2, 9])
        XCTAssertEqual(reader.manifest.skipped.first?.error, "cannot decode: truncated JPEG")
        XCTAssertEqual(reader.manifest.shards.map(\.rows), [3, 4, 1])
        XCTAssertEqual(reader.manifest.shards.map(\.count), [4, 4, 2])
        XCTAssertEqual(reader.manifest, writer.manifest)
        XCTAssertEqual(reader.manifest.header, fx.header)
        XCTAssertEqual(reader.manifest.createdBy, "refract test")

        for name in ["attn", "mlp"] {
            let all = try reader.tensor(name)
            XCTAssertEqual(all, fx.expected(name, rows), name)
            // A row range that crosses the first two shards.
            let part = try reader.tensor(name, rows: 2..<6)
            XCTAssertEqual(part, fx.expected(name, Array(rows[2..<6])), name)
            XCTAssertEqual(try reader.tensor(name, rows: 5..<5).shape, [0] + fx.specs.first { $0.name == name }!.shape)
        }
        var seen: [Range<Int>] = []
        try reader.forEachShard(["mlp"]) { range, tensors in
            seen.append(range)
            XCTAssertEqual(Array(tensors.keys), ["mlp"])
            XCTAssertEqual(tensors["mlp"], fx.expected("mlp", Array(rows[range])))
        }
        XCTAssertEqual(seen, reader.shardRows)
        XCTAssertEqual(try reader.constant("beta"), fx.constants["beta"])
        try reader.verifyChecksums()

        assertStoreError(try reader.tensor("nope"), kind: .unknownName, contains: ["manifest.json", "'nope'", "attn, mlp"])
        assertStoreError(try reader.tensor("mlp", rows: 6..<9), kind: .invalidArgument, contains: ["6..<9", "8 rows"])
        assertStoreError(try reader.constant("gamma"), kind: .unknownName, contains: ["'gamma'"])
    }

    func testRoundTripFloat32() throws { try checkRoundTrip(dtype: .float32) }

    func testRoundTripFloat16() throws {
        try checkRoundTrip(dtype: .float16)
        // The fixture values really are changed by float16 storage, so the comparison above means something.
        let v = Fixture.value("attn", 3, 2)
        XCTAssertNotEqual(StoreDType.float16.rounded(v), v)
        XCTAssertEqual(StoreDType.float16.rounded(v), HalfPrecision.float(fromFloat16: HalfPrecision.float16Bits(from: v)))
    }

    /// Shards are strict safetensors files with the documented metadata, dtypes, order and index.
    func testShardFilesPassStrictValidation() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        // Shard 1 (4..<8) is skipped entirely: a shard with zero rows.
        let fx = Fixture(n: 10, shardSize: 4, dtype: .float16, skipped: [4, 5, 6, 7])
        let writer = try fx.write(to: run, runId: "run-1234")
        for (i, record) in writer.manifest.shards.enumerated() {
            let url = run.appendingPathComponent(record.file)
            XCTAssertEqual(record.file, String(format: "shard-%05d.safetensors", i))
            let file = try SafetensorsFile(url: url)
            XCTAssertEqual(file.metadata, ["format": "refract-contributions", "run_id": "run-1234", "shard": String(i)])
            let rows = record.rows
            // The tensors, their row index and (format version 2) each tensor's sum and sum of squares.
            XCTAssertEqual(Set(file.keys), ["image_index", "attn", "mlp", "sum:attn", "sum:mlp", "sumsq:attn", "sumsq:mlp"])
            if rows > 0 {  // data order: 8-byte types (I64, F64) first, then by name (empty tensors have no position)
                XCTAssertEqual(file.keys, ["image_index", "sum:attn", "sum:mlp", "sumsq:attn", "sumsq:mlp", "attn", "mlp"])
                XCTAssertEqual(file.tensors["image_index"]?.dataOffsets.lowerBound, 0)
            }
            XCTAssertEqual(file.tensors["image_index"]?.dtype, .i64)
            XCTAssertEqual(file.tensors["attn"]?.dtype, .f16)
            XCTAssertEqual(file.tensors["attn"]?.shape, [rows, 2, 3])
            XCTAssertEqual(file.tensors["mlp"]?.shape, [rows, 4])
            let expectedIndices = writer.shardRanges[i].filter { !fx.skipped.contains($0) }
            XCTAssertEqual(try file.int64Values("image_index"), expectedIndices.map { Int64($0) })
            XCTAssertEqual(try file.floatTensor("mlp"), fx.expected("mlp", expectedIndices))
            // The statistics are of the stored (float16-rounded) values, in float64.
            let stored = try file.floatTensor("attn")
            for (key, square) in [("sum:attn", false), ("sumsq:attn", true)] {
                XCTAssertEqual(file.tensors[key]?.dtype, .f64)
                XCTAssertEqual(file.tensors[key]?.shape, [2, 3])
                let values = try file.withRawBytes(key) { raw in (0..<6).map { raw.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) } }
                let expected = (0..<6).map { j in (0..<rows).reduce(0.0) { acc, r in
                    let v = Double(stored.data[r * 6 + j]); return acc + (square ? v * v : v) } }
                XCTAssertEqual(values, expected, key)
            }
            XCTAssertEqual(try SHA256.hexDigest(ofFileAt: url), record.sha256)
        }
        XCTAssertEqual(writer.manifest.shards.map(\.rows), [4, 0, 2])
        let constants = try SafetensorsFile(url: run.appendingPathComponent("constants.safetensors"))
        XCTAssertEqual(constants.metadata["run_id"], "run-1234")
        XCTAssertEqual(try constants.floatTensor("beta"), fx.constants["beta"])
        // No temporary files are left behind (the writer's lock file stays; it is harmless).
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: run.path).sorted(),
                       [".refract.lock", "constants.safetensors", "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors",
                        "shard-00002.safetensors"])
        let reader = try StoreReader(run: run)
        XCTAssertEqual(reader.rowImageIndices, [0, 1, 2, 3, 8, 9])
        XCTAssertEqual(try reader.tensor("attn"), fx.expected("attn", [0, 1, 2, 3, 8, 9]))
    }

    func testManifestIsSelfDescribing() throws {
        let run = try makeTempDirectory(self).appendingPathComponent("run")
        let fx = Fixture(n: 3, shardSize: 2)
        let writer = try fx.write(to: run, finish: false)
        let text = try String(contentsOf: run.appendingPathComponent("manifest.json"), encoding: .utf8)
        // Pretty-printed, sorted keys, explicit nulls, integers stay integers, no escaped slashes.
        XCTAssertTrue(text.contains("\"commit\" : null"), text)
        XCTAssertTrue(text.contains("\"label\" : null"), text)
        XCTAssertTrue(text.contains("\"batchSize\" : 8"), text)
        XCTAssertTrue(text.contains("\"path\" : \"images/img-0.jpg\""), text)
        XCTAssertTrue(text.contains("0.48145466"), text)
        XCTAssertTrue(text.contains("\"complete\" : false"), text)
        XCTAssertTrue(text.contains("\"formatVersion\" : 2"), text)
        XCTAssertTrue(text.contains("\"part\" : null"), text)
        XCTAssertTrue(text.contains("\"mergedFrom\" : null"), text)
        let keyOrder = ["\"classNames\"", "\"complete\"", "\"constants\"", "\"convention\"", "\"createdBy\"", "\"dimensions\"",
                        "\"format\"", "\"formatVersion\"", "\"images\"", "\"mergedFrom\"", "\"model\"", "\"options\"", "\"part\"",
                        "\"preprocessing\"", "\"runId\"", "\"shardSize\"", "\"shards\"", "\"skipped\"", "\"tensors\""]
        let positions = keyOrder.map { key in text.range(of: "\n  \(key)")?.lowerBound }
        XCTAssertFalse(positions.contains(nil), "top-level keys missing")
        XCTAssertEqual(positions.compactMap { $0 }, positions.compactMap { $0 }.sorted())
        XCTAssertTrue(text.hasSuffix("}\n"))
        XCTAssertEqual(UUID(uuidString: writer.manifest.runId) != nil, true)

        let decoded = try JSONDecoder().decode(StoreManifest.self, from: Data(text.utf8))
        XCTAssertEqual(decoded, writer.manifest)
        XCTAssertEqual(decoded.options["batchSize"]?.intValue, 8)
        XCTAssertEqual(decoded.preprocessing["resize"]?.stringValue, "bicubic")
    }

    func testJSONValueRoundTrip() throws {
        let value: JSONValue = ["a": 1, "b": 2.5, "c": true, "d": nil, "e": ["x", 3, false], "f": ["g": -7e-9]]
        let data = try JSONEncoder().encode(value)
        XCTAssertEqual(try JSONDecoder().decode(JSONValue.self, from: data), value)
        // A boolean is not a number and a number is not a boolean.
        XCTAssertEqual(try JSONDecoder().decode(JSONValue.self, from: Data("[true, 1, 0, false]".utf8)),
                       [true, 1, 0, false])
        XCTAssertEqual(String(decoding: try JSONEncoder().encode(JSONValue.number(3)), as: UTF8.self), "3")
    }

    func testEmptyInputList() throws {
        let dir = try makeTempDirectory(self)
        let run = dir.appendingPathComponent("run")
        let fx = Fixture(n: 0, shardSize: 4)
        let writer = try fx.write(to: run)
        XCTAssertEqual(writer.shardRanges, [])
        XCTAssertTrue(writer.isComplete)
        let reader = try StoreReader(run: run)
        XCTAssertEqual(reader.rowCount, 0)
        XCTAssertEqual(try reader.tensor("attn").shape, [0, 2, 3])
        try StoreExport.npy(reader, to: dir.appendingPathComponent("out"))
        XCTAssertEqual(try NPY.read(dir.appendingPathComponent("out/attn.npy")).shape, [0, 2, 3])
    }
}
