import Foundation
import XCTest
import RefractCheckpoint
import RefractTensor
@testable import RefractStore

/// A fresh temporary directory, removed when the test ends.
func makeTempDirectory(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("refract-store-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.resolvingSymlinksInPath()
}

/// Asserts that `body` throws a `StoreError` of `kind` whose description contains every fragment.
@discardableResult
func assertStoreError<T>(_ body: @autoclosure () throws -> T, kind: StoreError.Kind? = nil, contains fragments: [String],
                         file: StaticString = #filePath, line: UInt = #line) -> StoreError? {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let e as StoreError {
        let text = e.description
        for f in fragments where !text.contains(f) {
            XCTFail("error '\(text)' does not mention '\(f)'", file: file, line: line)
        }
        if let kind { XCTAssertEqual(e.kind, kind, "unexpected kind for '\(text)'", file: file, line: line) }
        return e
    } catch {
        XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
    }
    return nil
}

/// A small synthetic run: `n` images, tensors `attn` [2, 3] and `mlp` [4], constant `beta` [4].
struct Fixture {
    var n: Int
    var shardSize: Int
    var dtype: StoreDType = .float32
    /// Input indices that are "unreadable".
    var skipped: Set<Int> = []
    var weightsSHA256 = String(repeating: "ab", count: 32)
    var batchSize = 8

    var specs: [StoreTensorSpec] {
        [StoreTensorSpec(name: "attn", shape: [2, 3], dtype: dtype, description: "per layer and head"),
         StoreTensorSpec(name: "mlp", shape: [4], dtype: dtype, description: "per layer")]
    }

    var header: StoreHeader {
        StoreHeader(
            model: StoreModelInfo(id: "test/model", layout: "openclip", commit: nil, weightsSHA256: weightsSHA256,
                                  weightFiles: ["open_clip_model.safetensors"]),
            preprocessing: ["size": 224, "mean": [0.48145466, 0.4578275, 0.40821073], "resize": "bicubic"],
            convention: "faithful",
            dimensions: ["layers": 2, "heads": 3, "width": 4],
            options: ["batchSize": .number(Double(batchSize)), "dtype": .string(dtype.rawValue), "tokenLayers": []],
            tensors: specs,
            constants: [StoreTensorSpec(name: "beta", shape: [4], dtype: .float32, description: "bias term")],
            images: (0..<n).map { i in
                StoreImage(path: "images/img-\(i).jpg", label: i % 3 == 0 ? nil : (i % 2 == 0 ? "cat" : "dog"),
                           columns: i == 1 ? ["split": "val"] : nil)
            },
            classNames: ["cat", "dog"],
            shardSize: shardSize)
    }

    var constants: [String: Tensor] { ["beta": Tensor(shape: [4], data: [0.5, -1.25, 3.0, 1e-3])] }

    /// The unrounded value of element `k` of tensor `name` for input image `i` (values chosen so
    /// float16 rounding changes most of them).
    static func value(_ name: String, _ i: Int, _ k: Int) -> Float {
        let base: Float = name == "attn" ? 0.123456789 : -7.654321
        return base * Float(i + 1) + Float(k) * 0.0123457 + Float(i * k) * 1e-4
    }

    func rows(_ name: String, _ indices: [Int]) -> Tensor {
        let spec = specs.first { $0.name == name }!
        let width = spec.elementCount
        var data: [Float] = []
        for i in indices { for k in 0..<width { data.append(Self.value(name, i, k)) } }
        return Tensor(shape: [indices.count] + spec.shape, data: data)
    }

    /// The values a reader must return for `name` over `indices` (rounded as stored).
    func expected(_ name: String, _ indices: [Int]) -> Tensor {
        var t = rows(name, indices)
        t.data = t.data.map(dtype.rounded)
        return t
    }

    func shardArguments(_ range: Range<Int>, header: StoreHeader) -> (indices: [Int], rows: [String: Tensor], skipped: [SkippedImage]) {
        let indices = range.filter { !skipped.contains($0) }
        let sk = range.filter { skipped.contains($0) }.map {
            SkippedImage(index: $0, path: header.images[$0].path, error: "cannot decode: truncated JPEG")
        }
        return (indices, ["attn": rows("attn", indices), "mlp": rows("mlp", indices)], sk)
    }

    /// Writes shards `shards` (all when nil) and finishes when all are written and `finish`.
    @discardableResult
    func write(to run: URL, shards: Range<Int>? = nil, finish: Bool = true, runId: String? = nil,
               resume: Bool = false) throws -> StoreWriter {
        let header = self.header
        let writer = try StoreWriter.open(at: run, header: header, constants: constants, createdBy: "refract test",
                                          resume: resume, runId: runId)
        let todo = shards ?? writer.completedShards..<writer.shardRanges.count
        for s in todo {
            let a = shardArguments(writer.shardRanges[s], header: header)
            try writer.writeShard(s, imageIndices: a.indices, rows: a.rows, skipped: a.skipped)
        }
        if finish && writer.completedShards == writer.shardRanges.count { try writer.finish() }
        return writer
    }
}

/// Every regular file under `dir` (relative path -> bytes), except the writer's lock file (its
/// text names the writing process and time).
func filesByName(_ dir: URL) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where name != RunLock.fileName {
        out[name] = try Data(contentsOf: dir.appendingPathComponent(name))
    }
    return out
}
