import Foundation
import RefractCheckpoint
import RefractDecompose
import RefractTensor
import RefractTestSupport
import RefractTimm
import XCTest

/// The timm decomposition against Tests/Fixtures/timm (scripts/fixtures/timm_models.py): faithful
/// components and per-token terms computed independently in float64, and the official code of
/// Balasubramanian et al. (vit-decompose bc54e2d) run on the same tiny models.
final class TimmDecompositionTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/timm", isDirectory: true)
    static let models = ["deit-tiny", "dino-tiny", "dinov2-tiny", "dinov2-reg-tiny", "dinov2-f16-tiny", "swin-tiny", "maxvit-tiny", "maxvit-pico"]

    struct ComponentsFile: Decodable {
        struct Entry: Decodable { var name: String; var official: String? }
        var components: [Entry]
        var from_block: Int
    }

    static func model(_ name: String) throws -> TimmModel {
        let dir = directory.appendingPathComponent(name)
        return try TimmModel(location: ModelLocation(directory: dir, layout: .timm, modelId: name))
    }

    static func expected(_ path: String) throws -> Tensor {
        try NPY.read(directory.appendingPathComponent("expected/\(path)")).tensor
    }

    /// The fixture's pixels, so that only the decomposition is compared.
    static func pixels(_ name: String) throws -> [Tensor] {
        let p = try expected("\(name)/pixels.npy")
        let s = p.shape[2], per = 3 * s * s
        return (0..<p.shape[0]).map { Tensor(shape: [3, s, s], data: Array(p.data[($0 * per)..<(($0 + 1) * per)])) }
    }

    static func starts(_ name: String, _ convention: String) throws -> [Int] {
        try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("expected/\(name)/\(convention)").path)
            .filter { $0.hasPrefix("from") }.compactMap { Int($0.dropFirst(4)) }.sorted()
    }

    func compare(_ name: String, convention: DecompositionConvention, folder: String) throws {
        let model = try Self.model(name)
        let pixels = try Self.pixels(name)
        let starts = try Self.starts(name, folder)
        XCTAssertFalse(starts.isEmpty, name)
        for start in starts {
            let base = "\(name)/\(folder)/from\(start)"
            let file = try JSONDecoder().decode(ComponentsFile.self,
                                                from: Data(contentsOf: Self.directory.appendingPathComponent("expected/\(base)/components.json")))
            let decomposer = try TimmDecomposer(model: model, convention: convention, fromBlock: start)
            // Names and order: Refract's names, and the official names in the official order.
            XCTAssertEqual(decomposer.components.map(\.name), file.components.map(\.name), base)
            XCTAssertEqual(decomposer.components.map(\.official), file.components.map(\.official), base)
            let batch = decomposer(pixels)
            let ref = try Self.expected("\(base)/components.npy")                         // [N, C, D]
            let n = ref.shape[0], c = ref.shape[1], d = ref.shape[2]
            // Each component row against its reference, with the tolerance scaled to the representation.
            let got = batch.values.reshaped([n * c, d]), want = ref.reshaped([n * c, d])
            let scale = try Self.expected("\(name)/features.npy").data.map(abs).max()!
            var worst: Float = 0
            for i in 0..<(n * c * d) { worst = max(worst, abs(got.data[i] - want.data[i])) }
            print("timm decomposition \(base): C = \(c), max |difference| \(worst) (representation scale \(scale))")
            XCTAssertLessThanOrEqual(worst, 2e-5 * scale, base)
            XCTAssertEqual(batch.representation.shape, [n, d])
            if convention == .faithful {
                // Exact: the components sum to the model's own output.
                assertParity(batch.sum(), batch.representation, .embeddings, "\(base) sum")
            }
        }
    }

    func testFaithfulMatchesTheIndependentFloat64Reference() throws {
        for name in Self.models { try compare(name, convention: .faithful, folder: "faithful") }
    }

    func testBalasubramanian2024MatchesTheOfficialCode() throws {
        for name in Self.models { try compare(name, convention: .balasubramanian2024, folder: "balasubramanian2024") }
    }

    func testPerTokenTermsArePlacedAndSumToTheirHead() throws {
        for name in Self.models {
            let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.appendingPathComponent("expected/\(name)/faithful").path)
                .filter { $0.hasPrefix("tokens_block") }
            for file in files {
                // tokens_block3.npy (ViT, Swin) or tokens_block1_window.npy (MaxViT: sub-block "1.window").
                let stem = String(file.dropFirst("tokens_block".count).dropLast(4))
                let key = stem.replacingOccurrences(of: "_", with: ".")
                let block = Int(stem.split(separator: "_")[0])!
                let decomposer = try TimmDecomposer(model: try Self.model(name), convention: .faithful, fromBlock: 0, tokenBlocks: [block])
                let batch = decomposer(try Self.pixels(name))
                let got = try XCTUnwrap(batch.tokens[key], "\(name) \(key): \(batch.tokens.keys.sorted())")
                let ref = try Self.expected("\(name)/faithful/\(file)")
                XCTAssertEqual(got.shape, ref.shape, file)
                let scale = ref.data.map(abs).max()!
                let worst = zip(got.data, ref.data).map { abs($0 - $1) }.max()!
                print("timm tokens \(name) \(file): max |difference| \(worst) (scale \(scale))")
                XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(name) \(file)")
                // Σ over tokens = the head's component.
                let n = ref.shape[0], h = ref.shape[1], d = ref.shape[ref.rank - 1], t = ref.count / (n * h * d)
                for i in 0..<n {
                    for head in 0..<h {
                        let slot = batch.components.firstIndex { $0.name == "attn.\(key).\(head)" }!
                        for j in 0..<d {
                            var sum: Float = 0
                            for k in 0..<t { sum += got.data[((i * h + head) * t + k) * d + j] }
                            let component = batch.values.data[(i * batch.components.count + slot) * d + j]
                            XCTAssertEqual(sum, component, accuracy: 1e-5 * scale, "\(name) block \(block) head \(head)")
                        }
                    }
                }
            }
        }
    }

    /// Architectures the fixtures do not cover (packed SwiGLU, average pooling with fc_norm, Swin
    /// with a 12-window), on random checkpoints: the faithful components sum to the representation.
    func testFaithfulSumsOnOtherArchitectures() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-timm-sum-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let cases: [(String, [String: Any])] = [
            ("vit_giant_patch14_reg4_dinov2", ["embed_dim": 24, "depth": 2, "num_heads": 2, "img_size": 28, "num_classes": 0]),
            ("vit_small_patch16_224", ["embed_dim": 24, "depth": 2, "num_heads": 2, "img_size": 32, "global_pool": "avg"]),
            ("vit_small_patch16_224", ["embed_dim": 24, "depth": 2, "num_heads": 2, "img_size": 32, "global_pool": "avg", "fc_norm": false]),
            ("swin_base_patch4_window12_384", ["embed_dim": 8, "depths": [2, 2], "num_heads": [2, 4], "img_size": 96]),
            ("maxvit_tiny_tf_224", ["img_size": 64, "embed_dim": [16, 32], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 24,
                                    "num_classes": 5, "transformer_dim_head": 8]),
            ("maxvit_tiny_tf_224", ["img_size": 64, "embed_dim": [16, 16], "depths": [2, 1], "stem_width": 16, "head_hidden_size": 24,
                                    "num_classes": 5, "transformer_dim_head": 8]),
        ]
        for (i, (arch, args)) in cases.enumerated() {
            let dir = scratch.appendingPathComponent("\(i)")
            try TimmModel.writeRandomCheckpoint(architecture: arch, modelArgs: args, to: dir, seed: UInt64(10 + i))
            let model = try TimmModel(location: ModelLocation(directory: dir, layout: .timm, modelId: arch))
            let s = model.preprocessing.imageSize
            let pixels = (0..<3).map { k in Tensor(shape: [3, s, s], data: (0..<(3 * s * s)).map { Float(sin(0.01 * Double($0 * (k + 1)))) }) }
            for start in [0, 1, 2] where start < TimmDecomposer.blockCount(model) {
                let batch = try TimmDecomposer(model: model, convention: .faithful, fromBlock: start)(pixels)
                assertParity(batch.sum(), batch.representation, .embeddings, "\(arch) \(args) from \(start) sum")
                assertParity(batch.representation, model.represent(pixels: pixels), .embeddings, "\(arch) representation")
            }
        }
    }

    /// MaxViT's per-token terms of block and grid attention, on the stage's real grid, sum to their heads.
    func testMaxViTTokensSumToTheirHeads() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-maxvit-tokens-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try TimmModel.writeRandomCheckpoint(architecture: "maxvit_tiny_tf_224", modelArgs: [
            "img_size": 64, "embed_dim": [16, 32], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 24,
            "num_classes": 5, "transformer_dim_head": 8], to: dir, seed: 21)
        let model = try TimmModel(location: ModelLocation(directory: dir, layout: .timm, modelId: "maxvit"))
        let pixels = (0..<2).map { k in Tensor(shape: [3, 64, 64], data: (0..<(3 * 64 * 64)).map { Float(cos(0.003 * Double($0 * (k + 2)))) }) }
        let batch = try TimmDecomposer(model: model, convention: .faithful, fromBlock: 0, tokenBlocks: [0, 2])(pixels)
        XCTAssertEqual(Set(batch.tokens.keys), ["0.window", "0.grid", "2.window", "2.grid"])
        let c = batch.components.count, d = batch.representation.shape[1]
        for (key, t) in batch.tokens {
            let h = t.shape[1], per = t.shape[2] * t.shape[3]
            for i in 0..<2 {
                for head in 0..<h {
                    let slot = batch.components.firstIndex { $0.name == "attn.\(key).\(head)" }!
                    for j in 0..<d {
                        var sum: Float = 0
                        for k in 0..<per { sum += t.data[((i * h + head) * per + k) * d + j] }
                        XCTAssertEqual(sum, batch.values.data[(i * c + slot) * d + j], accuracy: 1e-5, "\(key) head \(head)")
                    }
                }
            }
        }
    }
}
