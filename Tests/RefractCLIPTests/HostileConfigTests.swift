import Foundation
import RefractCheckpoint
import RefractTensor
import XCTest
@testable import RefractCLIP

/// Config values out of bounds, non-finite weights and embeddings that overflow: each refused with
/// the file, the key (or tensor, or input) and the value, before anything is allocated or written.
final class HostileConfigTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func copyOf(_ name: String) throws -> URL {
        let dst = scratch.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent(name), to: dst)
        return dst
    }

    func load(_ dir: URL) throws -> CLIP {
        try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: "test"))
    }

    /// Sets `value` at the dotted `path` of a JSON file (`null` removes nothing: it sets JSON null).
    func edit(_ url: URL, _ path: String, _ value: Any) throws {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func set(_ obj: inout [String: Any], _ keys: ArraySlice<Substring>) {
            let k = String(keys.first!)
            if keys.count == 1 { obj[k] = value; return }
            var inner = obj[k] as? [String: Any] ?? [:]
            set(&inner, keys.dropFirst())
            obj[k] = inner
        }
        set(&json, path.split(separator: ".")[...])
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }

    /// Loading a copy of `model` with `key` set to `value` fails naming the file, the key, the value
    /// and (when given) the allowed range.
    func assertRefused(_ model: String, _ config: String, _ key: String, _ value: Any, mentions: [String],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try copyOf(model)
        let url = dir.appendingPathComponent(config)
        try edit(url, key, value)
        XCTAssertThrowsError(try load(dir), "\(key) = \(value)", file: file, line: line) { error in
            let text = "\(error)"
            for part in [url.path] + mentions {
                XCTAssertTrue(text.contains(part), "\(key) = \(value): '\(part)' missing from: \(text)", file: file, line: line)
            }
        }
    }

    // MARK: Config bounds

    func testOpenCLIPConfigValuesOutOfBounds() throws {
        let m = "openclip-tiny", c = "open_clip_config.json", v = "model_cfg.vision_cfg.", t = "model_cfg.text_cfg."
        let cases: [(String, Any, [String])] = [
            (v + "head_width", 0, ["model_cfg.vision_cfg.head_width = 0", "1...4096"]),
            (v + "head_width", -16, ["head_width = -16"]),
            (v + "patch_size", 0, ["model_cfg.vision_cfg.patch_size = 0", "1...1024"]),
            (v + "layers", -1, ["model_cfg.vision_cfg.layers = -1", "1...256"]),
            (v + "layers", 1_000_000_000, ["layers = 1000000000", "1...256"]),
            (v + "mlp_ratio", 1e30, ["model_cfg.vision_cfg.mlp_ratio = 1e+30", "0.0625...32.0"]),
            (v + "image_size", -32, ["model_cfg.vision_cfg.image_size = -32", "1...4096"]),
            (v + "image_size", 0, ["image_size = 0"]),
            (v + "image_size", 1 << 62, ["image_size = \(1 << 62)"]),
            (v + "image_size", 36, ["model_cfg.vision_cfg.image_size = 36", "a multiple of model_cfg.vision_cfg.patch_size (8)"]),
            (v + "width", 60, ["model_cfg.vision_cfg.width = 60", "a multiple of model_cfg.vision_cfg.head_width (16)"]),
            (v + "width", 1 << 40, ["model_cfg.vision_cfg.width", "1...16384"]),
            (v + "norm_kwargs", ["eps": -1.0], ["model_cfg.vision_cfg.norm_kwargs.eps = -1.0", "1e-12...1.0"]),
            (t + "heads", 0, ["model_cfg.text_cfg.heads = 0", "1...512"]),
            (t + "heads", 3, ["model_cfg.text_cfg.width = 32", "a multiple of model_cfg.text_cfg.heads (3)"]),
            (t + "layers", -3, ["model_cfg.text_cfg.layers = -3"]),
            (t + "context_length", 0, ["model_cfg.text_cfg.context_length = 0", "2...8192"]),
            (t + "vocab_size", -5, ["model_cfg.text_cfg.vocab_size = -5"]),
            (t + "mlp_ratio", 0.0, ["model_cfg.text_cfg.mlp_ratio = 0.0"]),
            ("model_cfg.embed_dim", 0, ["model_cfg.embed_dim = 0", "1...16384"]),
            ("preprocess_cfg.std", [0.2, 0.0, 0.2], ["preprocess_cfg.std[1] = 0.0", "0.001...1000.0"]),
            ("preprocess_cfg.mean", [0.5, 0.5], ["preprocess_cfg.mean", "3 numbers"]),
        ]
        for (key, value, mentions) in cases { try assertRefused(m, c, key, value, mentions: mentions) }
    }

    func testTransformersConfigValuesOutOfBounds() throws {
        let m = "hf-tiny", c = "config.json", v = "vision_config.", t = "text_config."
        let cases: [(String, Any, [String])] = [
            (v + "num_attention_heads", 0, ["vision_config.num_attention_heads = 0", "1...512"]),
            (v + "num_attention_heads", 5, ["vision_config.hidden_size = 48", "a multiple of vision_config.num_attention_heads (5)"]),
            (v + "patch_size", 0, ["vision_config.patch_size = 0", "1...1024"]),
            (v + "num_hidden_layers", -2, ["vision_config.num_hidden_layers = -2", "1...256"]),
            (v + "num_hidden_layers", 1_000_000_000, ["num_hidden_layers = 1000000000"]),
            (v + "image_size", -32, ["vision_config.image_size = -32", "1...4096"]),
            (v + "image_size", 1 << 62, ["vision_config.image_size = \(1 << 62)"]),
            (v + "image_size", 4096, ["vision_config.image_size / patch_size = 512", "1...128"]),
            (v + "intermediate_size", 0, ["vision_config.intermediate_size = 0", "1...131072"]),
            (v + "hidden_size", -48, ["vision_config.hidden_size = -48", "1...16384"]),
            (v + "layer_norm_eps", -1.0, ["vision_config.layer_norm_eps = -1.0", "1e-12...1.0"]),
            (t + "layer_norm_eps", 0.0, ["text_config.layer_norm_eps = 0.0"]),
            (t + "num_attention_heads", -2, ["text_config.num_attention_heads = -2"]),
            (t + "max_position_embeddings", 1, ["text_config.max_position_embeddings = 1", "2...8192"]),
            (t + "vocab_size", 1 << 40, ["text_config.vocab_size", "1...1048576"]),
            ("projection_dim", -24, ["projection_dim = -24", "1...16384"]),
        ]
        for (key, value, mentions) in cases { try assertRefused(m, c, key, value, mentions: mentions) }
        let cases2: [(String, Any, [String])] = [
            ("image_std", [0.3, 0.3, 0.0], ["image_std[2] = 0.0", "0.001...1000.0"]),
            ("image_mean", [0.5, 1e9, 0.5], ["image_mean[1] = 1000000000.0", "-1000.0...1000.0"]),
            ("size", ["shortest_edge": -7], ["size.shortest_edge = -7", "1...4096"]),
            ("crop_size", ["height": 0, "width": 0], ["crop_size.height = 0"]),
        ]
        for (key, value, mentions) in cases2 { try assertRefused(m, "preprocessor_config.json", key, value, mentions: mentions) }
    }

    /// The real configs of the fixture models still load, and the parameter count computed from the
    /// configuration alone is exactly what the checkpoints hold.
    func testFixtureConfigsLoadAndTheirParameterCountIsExact() throws {
        for name in ["openclip-tiny", "hf-tiny"] {
            let clip = try loadFixtureModel(name)
            let loader = try clip.location.makeTensorLoader()
            XCTAssertEqual(clip.architecture.parameterCount, loader.floatElementCount, name)
        }
    }

    /// ViT-bigG/14, the largest OpenCLIP model, is within every bound (about 2.5 billion parameters).
    func testViTbigG14ConfigIsWithinBounds() throws {
        let json = """
        {"model_cfg": {"embed_dim": 1280, "vision_cfg": {"image_size": 224, "layers": 48, "width": 1664, "head_width": 104,
         "mlp_ratio": 4.9231, "patch_size": 14}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280,
         "heads": 20, "layers": 32}}}
        """
        let cfg = try JSONDecoder().decode(OpenCLIPConfigFile.self, from: Data(json.utf8))
        let arch = try cfg.architecture(file: "bigG.json")
        XCTAssertEqual(arch.vision.heads, 16)
        XCTAssertEqual(arch.vision.mlpWidth, 8192)
        XCTAssertEqual(Double(arch.parameterCount), 2.54e9, accuracy: 0.03e9)
    }

    // MARK: Memory budget

    func testModelOverTheBudgetIsRefusedBeforeLoading() throws {
        // The limit comes from REFRACT_MAX_MODEL_BYTES (here 1 MiB; the tiny model needs 6.3 MiB as float32).
        setenv(ModelMemoryBudget.environmentVariable, "1M", 1)
        defer { unsetenv(ModelMemoryBudget.environmentVariable) }
        let dir = try copyOf("hf-tiny")
        XCTAssertThrowsError(try load(dir)) { e in
            let text = "\(e)"
            for part in [dir.appendingPathComponent("config.json").path, "1650785 parameters", "REFRACT_MAX_MODEL_BYTES=1M"] {
                XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)")
            }
        }
    }

    // MARK: Non-finite weights and outputs

    /// Rewrites `weights` in `dir` with `change` applied to tensor `key` (stored as float32).
    func rewrite(_ dir: URL, _ weights: String, _ key: String, _ change: (inout Tensor) -> Void) throws {
        let url = dir.appendingPathComponent(weights)
        let source = try SafetensorsFile(url: url)
        var w = SafetensorsWriter()
        for k in source.keys {
            var t = try source.floatTensor(k)
            if k == key { change(&t) }
            try w.add(k, t)
        }
        try w.write(to: url)
    }

    func testNonFiniteWeightIsRefusedWithTensorAndIndex() throws {
        for (model, weights, key) in [("openclip-tiny", "open_clip_model.safetensors", "visual.transformer.resblocks.1.mlp.c_fc.weight"),
                                      ("hf-tiny", "model.safetensors", "text_model.encoder.layers.0.self_attn.k_proj.weight")] {
            let dir = try copyOf(model)
            try rewrite(dir, weights, key) { $0.data[70] = .nan }
            XCTAssertThrowsError(try load(dir)) { e in
                let text = "\(e)"
                for part in [dir.appendingPathComponent(weights).path, "'\(key)'", "NaN", "flat index 70"] {
                    XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)")
                }
            }
        }
        let dir = try copyOf("openclip-tiny")
        try rewrite(dir, "open_clip_model.safetensors", "logit_scale") { $0.data[0] = 1000 }
        XCTAssertThrowsError(try load(dir)) { XCTAssertTrue("\($0)".contains("'logit_scale'") && "\($0)".contains("1000"), "\($0)") }
    }

    /// Finite weights so large that the forward pass overflows: embeddings are refused naming the input.
    func testOverflowingEmbeddingsAreRefusedNamingTheInput() throws {
        let dir = try copyOf("openclip-tiny")
        try rewrite(dir, "open_clip_model.safetensors", "visual.proj") { t in for i in t.data.indices { t.data[i] = 3e38 } }
        try rewrite(dir, "open_clip_model.safetensors", "text_projection") { t in for i in t.data.indices { t.data[i] = 3e38 } }
        let clip = try load(dir)
        let files = inputImages.map { fixtures.appendingPathComponent("inputs/\($0)") }
        XCTAssertThrowsError(try clip.encodeImageFiles(files, batchSize: 3)) { e in
            XCTAssertTrue(e is NonFiniteError, "\(type(of: e))")
            XCTAssertTrue("\(e)".contains(files[0].path) && "\(e)".contains("image embedding"), "\(e)")
        }
        XCTAssertThrowsError(try clip.encodeTextsChecked(["a dog", "a cat"], labels: ["line 1", "line 2"])) { e in
            XCTAssertTrue("\(e)".hasPrefix("line 1: the text embedding"), "\(e)")
        }
        XCTAssertThrowsError(try clip.zeroShotClassifier(classes: ["dog"])) { e in
            XCTAssertTrue("\(e)".contains("'a photo of a dog.'"), "\(e)")
        }
    }
}
