import Foundation
import XCTest
import RefractTensor
@testable import RefractCheckpoint

final class TensorLoaderTests: XCTestCase {
    private func makeFile(_ dir: URL, _ name: String, _ tensors: [(String, [Int])], dtype: SafetensorsDType = .f32) throws -> URL {
        var w = SafetensorsWriter()
        for (key, shape) in tensors {
            let n = shape.reduce(1, *)
            try w.add(key, float32: (0..<n).map { Float($0) }, shape: shape, as: dtype)
        }
        let url = dir.appendingPathComponent(name)
        try w.write(to: url)
        return url
    }

    func testTakeIgnoreFinish() throws {
        let dir = try makeTempDirectory(self)
        let url = try makeFile(dir, "model.safetensors", [("w", [2, 3]), ("b", [3]), ("opt", [1])])
        var w = SafetensorsWriter()
        try w.add("position_ids", int64: [0, 1, 2], shape: [1, 3])
        try w.add("logit_scale", float32: [4.6], shape: [])
        let url2 = dir.appendingPathComponent("extra.safetensors")
        try w.write(to: url2)

        let loader = try TensorLoader(files: [url, url2])
        XCTAssertEqual(try loader.take("w", shape: [2, 3]).data, [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(try loader.takeIfPresent("b", shape: [3])?.data, [0, 1, 2])
        XCTAssertNil(try loader.takeIfPresent("nope", shape: [3]))
        XCTAssertEqual(try loader.takeInt64("position_ids", shape: [1, 3]), [0, 1, 2])
        XCTAssertEqual(loader.unusedKeys, ["logit_scale", "opt"])
        loader.ignore("opt")
        loader.ignore("not-there")
        loader.ignoreAll { $0.hasPrefix("logit") }
        XCTAssertNoThrow(try loader.finish())
    }

    func testHalfWeightsAreWidened() throws {
        let dir = try makeTempDirectory(self)
        let url = try makeFile(dir, "h.safetensors", [("w", [4, 4])], dtype: .f16)
        let loader = try TensorLoader(files: [url])
        XCTAssertEqual(try loader.take("w", shape: [4, 4]).data, (0..<16).map { Float($0) })
        try loader.finish()
    }

    func testMissingTensor() throws {
        let dir = try makeTempDirectory(self)
        let url = try makeFile(dir, "model.safetensors", [("vision_model.embeddings.class_embedding", [8])])
        let loader = try TensorLoader(files: [url])
        assertCheckpointError(try loader.take("visual.embeddings.class_embedding", shape: [8]),
                              contains: ["missing tensor 'visual.embeddings.class_embedding'", url.path,
                                         "vision_model.embeddings.class_embedding"]) {
            if case .missingTensor = $0 { return true } else { return false }
        }
    }

    func testWrongShapeShowsExpectedAndActual() throws {
        let dir = try makeTempDirectory(self)
        let url = try makeFile(dir, "model.safetensors", [("proj", [4, 3])])
        let loader = try TensorLoader(files: [url])
        assertCheckpointError(try loader.take("proj", shape: [3, 4]),
                              contains: [url.path, "'proj'", "expected shape [3, 4], found [4, 3]"]) {
            $0 == .shapeMismatch(path: url.path, key: "proj", expected: [3, 4], actual: [4, 3])
        }
        assertCheckpointError(try loader.takeInt64("proj", shape: [1]), contains: ["expected shape [1], found [4, 3]"])
    }

    func testUnusedTensorsListEveryKeyWithItsFile() throws {
        let dir = try makeTempDirectory(self)
        let a = try makeFile(dir, "a.safetensors", [("used", [1]), ("left.one", [1])])
        let b = try makeFile(dir, "b.safetensors", [("left.two", [2])])
        let loader = try TensorLoader(files: [a, b])
        _ = try loader.take("used", shape: [1])
        assertCheckpointError(try loader.finish(), contains: ["2 unused tensors", "\(a.path): 'left.one'", "\(b.path): 'left.two'"]) {
            $0 == .unusedTensors([.init(key: "left.one", path: a.path), .init(key: "left.two", path: b.path)])
        }
    }

    func testDuplicateKeyAcrossFiles() throws {
        let dir = try makeTempDirectory(self)
        let a = try makeFile(dir, "a.safetensors", [("w", [1])])
        let b = try makeFile(dir, "b.safetensors", [("w", [1])])
        assertCheckpointError(try TensorLoader(files: [a, b]), contains: ["'w'", a.path, b.path])
    }

    // MARK: Non-finite weights

    func testNaNAndInfinityAreRefusedWithKeyIndexAndValue() throws {
        let dir = try makeTempDirectory(self)
        for dtype: SafetensorsDType in [.f32, .f16, .bf16] {
            for (bad, text) in [(Float.nan, "NaN"), (.infinity, "+infinity"), (-.infinity, "-infinity")] {
                var values = (0..<24).map { Float($0) }
                values[13] = bad
                values[20] = .nan                                           // only the first is reported
                var w = SafetensorsWriter()
                try w.add("blocks.0.fc1.weight", float32: values, shape: [4, 6], as: dtype)
                try w.add("fine", float32: [1, 2], shape: [2], as: dtype)
                let url = dir.appendingPathComponent("bad-\(dtype.rawValue)-\(text).safetensors")
                try w.write(to: url)
                let loader = try TensorLoader(files: [url])
                XCTAssertEqual(try loader.take("fine", shape: [2]).data, [1, 2])
                assertCheckpointError(try loader.take("blocks.0.fc1.weight", shape: [4, 6]),
                                      contains: [url.path, "'blocks.0.fc1.weight'", "holds \(text)", "flat index 13",
                                                 "[2, 1]", "[4, 6]"]) {
                    if case .invalidEntry = $0 { return true } else { return false }
                }
                XCTAssertEqual(loader.unusedKeys, ["blocks.0.fc1.weight"], "a refused tensor is not marked used")
            }
        }
        // A float32 value beyond float16's range becomes infinity when stored as F16: refused on load.
        var w = SafetensorsWriter()
        try w.add("big", float32: [1, 1e6], shape: [2], as: .f16)
        let url = dir.appendingPathComponent("overflow.safetensors")
        try w.write(to: url)
        assertCheckpointError(try TensorLoader(files: [url]).take("big"), contains: ["'big'", "+infinity", "flat index 1"])
    }

    func testFloatElementCountComesFromTheHeaders() throws {
        let dir = try makeTempDirectory(self)
        let url = try makeFile(dir, "m.safetensors", [("w", [2, 3]), ("b", [3])], dtype: .f16)
        var w = SafetensorsWriter()
        try w.add("position_ids", int64: [0, 1, 2], shape: [1, 3])
        try w.add("s", float32: [1], shape: [])
        let url2 = dir.appendingPathComponent("extra.safetensors")
        try w.write(to: url2)
        let loader = try TensorLoader(files: [url, url2])
        XCTAssertEqual(loader.floatElementCount, 6 + 3 + 1)
        XCTAssertEqual(loader.path(of: "s"), url2.path)
        XCTAssertNil(loader.path(of: "nope"))
    }

    // MARK: Sharded checkpoints

    private func writeIndex(_ dir: URL, _ map: [String: String]) throws -> URL {
        let body = map.keys.sorted().map { "\"\($0)\": \"\(map[$0]!)\"" }.joined(separator: ", ")
        let url = dir.appendingPathComponent("model.safetensors.index.json")
        try Data("{\"metadata\": {\"total_size\": 0}, \"weight_map\": {\(body)}}".utf8).write(to: url)
        return url
    }

    func testShardedIndex() throws {
        let dir = try makeTempDirectory(self)
        _ = try makeFile(dir, "model-00001-of-00002.safetensors", [("a", [2]), ("b", [3])])
        _ = try makeFile(dir, "model-00002-of-00002.safetensors", [("c", [4])])
        let index = try writeIndex(dir, ["a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                                         "c": "model-00002-of-00002.safetensors"])
        let loader = try TensorLoader(indexFile: index)
        XCTAssertEqual(loader.keys, ["a", "b", "c"])
        XCTAssertEqual(try loader.take("c", shape: [4]).data, [0, 1, 2, 3])
        _ = try loader.take("a", shape: [2])
        assertCheckpointError(try loader.finish(), contains: ["model-00001-of-00002.safetensors", "'b'"])
        _ = try loader.take("b", shape: [3])
        try loader.finish()

        // The index and the shards must agree.
        let wrong = try writeIndex(dir, ["a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                                         "c": "model-00002-of-00002.safetensors"])
        assertCheckpointError(try TensorLoader(indexFile: wrong), contains: [wrong.path, "'a'"]) {
            if case .invalidIndex = $0 { return true } else { return false }
        }
        let incomplete = try writeIndex(dir, ["a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"])
        assertCheckpointError(try TensorLoader(indexFile: incomplete), contains: [incomplete.path, "'b'"])
        let missingShard = try writeIndex(dir, ["a": "model-00001-of-00002.safetensors", "z": "model-00003-of-00003.safetensors"])
        assertCheckpointError(try TensorLoader(indexFile: missingShard), contains: ["model-00003-of-00003.safetensors", "cannot open"])
        let escape = try writeIndex(dir, ["a": "../outside.safetensors"])
        assertCheckpointError(try TensorLoader(indexFile: escape), contains: ["not a plain file name"])
        try Data("{\"weight_map\": 3}".utf8).write(to: escape)
        assertCheckpointError(try TensorLoader(indexFile: escape), contains: [escape.path, "weight_map"])
    }
}
