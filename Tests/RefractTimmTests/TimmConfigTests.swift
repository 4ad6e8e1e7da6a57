import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor
import RefractTimm
import XCTest

/// Bad timm checkpoints: each refused with an error naming the file and what is wrong.
final class TimmConfigTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-timm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// A copy of a fixture model whose config.json is edited by `edit`.
    func copy(_ name: String, edit: (inout [String: Any]) -> Void = { _ in }) throws -> URL {
        let dir = scratch.appendingPathComponent(name + "-\(UUID().uuidString.prefix(6))")
        try FileManager.default.copyItem(at: TimmFixtures.directory.appendingPathComponent(name), to: dir)
        let configURL = dir.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        return dir
    }

    func load(_ dir: URL) throws -> TimmModel {
        try TimmModel(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: dir.path))
    }

    func refusal(_ dir: URL, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            _ = try load(dir)
            XCTFail("loaded", file: file, line: line)
            return ""
        } catch {
            return "\(error)"
        }
    }

    func testUnknownArchitectureListsTheSupportedOnes() throws {
        let dir = try copy("deit-tiny") { $0["architecture"] = "convnext_tiny" }
        let message = refusal(dir)
        XCTAssertTrue(message.contains(dir.appendingPathComponent("config.json").path), message)
        XCTAssertTrue(message.contains("convnext_tiny") && message.contains("vit_base_patch14_dinov2")
                      && message.contains("swin_base_patch4_window7_224"), message)
    }

    func testModelArgsThatContradictTheWeightsNameTheKey() throws {
        let dir = try copy("deit-tiny") { config in
            var args = config["model_args"] as! [String: Any]
            args["embed_dim"] = 48
            config["model_args"] = args
        }
        let message = refusal(dir)
        XCTAssertTrue(message.contains("model.safetensors") && message.contains("patch_embed.proj.weight"), message)

        let depth = try copy("dinov2-tiny") { config in
            var args = config["model_args"] as! [String: Any]
            args["depth"] = 2
            config["model_args"] = args
        }
        let unused = refusal(depth)
        XCTAssertTrue(unused.contains("blocks.2."), unused)   // weights of a third block left unused
    }

    func testUnsupportedOrMalformedArgumentsAreRefusedByName() throws {
        let cases: [(String, [String: Any], String)] = [
            ("deit-tiny", ["qk_norm": true], "model_args.qk_norm"),
            ("deit-tiny", ["num_heads": 5], "model_args.embed_dim"),
            ("deit-tiny", ["global_pool": "map"], "model_args.global_pool"),
            ("deit-tiny", ["frobnicate": 1], "model_args.frobnicate"),
            ("deit-tiny", ["depth": -3], "model_args.depth"),
            ("deit-tiny", ["mlp_ratio": 1e30], "model_args.mlp_ratio"),
            ("deit-tiny", ["img_size": [32, 48]], "model_args.img_size"),
            ("swin-tiny", ["ape": true], "model_args.ape"),
            ("swin-tiny", ["window_size": 3], "model_args.img_size"),
            ("swin-tiny", ["num_heads": [2, 4]], "model_args.depths"),
        ]
        for (model, change, key) in cases {
            let dir = try copy(model) { config in
                var args = config["model_args"] as! [String: Any]
                args.merge(change) { $1 }
                config["model_args"] = args
            }
            let message = refusal(dir)
            XCTAssertTrue(message.contains(key) && message.contains("config.json"), "\(change): \(message)")
        }
    }

    func testMissingPretrainedConfigAndBadPreprocessing() throws {
        let none = try copy("deit-tiny") { $0.removeValue(forKey: "pretrained_cfg") }
        XCTAssertTrue(refusal(none).contains("pretrained_cfg"), refusal(none))
        let crop = try copy("deit-tiny") { config in
            var cfg = config["pretrained_cfg"] as! [String: Any]
            cfg["crop_pct"] = 0
            config["pretrained_cfg"] = cfg
        }
        XCTAssertTrue(refusal(crop).contains("pretrained_cfg.crop_pct"), refusal(crop))
        let size = try copy("deit-tiny") { config in
            var cfg = config["pretrained_cfg"] as! [String: Any]
            cfg["input_size"] = [3, 48, 48]
            config["pretrained_cfg"] = cfg
        }
        XCTAssertTrue(refusal(size).contains("pretrained_cfg.input_size"), refusal(size))
    }

    func testPickleOnlyWeightsSayHowToConvert() throws {
        let dir = try copy("deit-tiny")
        try FileManager.default.moveItem(at: dir.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("pytorch_model.bin"))
        do {
            _ = try ModelLocation.detectLayout(in: dir)
            XCTFail("detected")
        } catch {
            XCTAssertTrue("\(error)".contains("pytorch_model.bin") && "\(error)".contains("safetensors"), "\(error)")
        }
    }

    func testForcedLayoutsAreChecked() throws {
        let timm = TimmFixtures.directory.appendingPathComponent("deit-tiny")
        XCTAssertThrowsError(try ModelLocation.detectLayout(in: timm, preferring: .transformers))
        XCTAssertThrowsError(try ModelLocation.detectLayout(in: TimmFixtures.root.appendingPathComponent("models/hf-tiny"), preferring: .timm))
        // A timm directory is not a CLIP model.
        XCTAssertThrowsError(try CLIP(location: ModelLocation(directory: timm, layout: .timm, modelId: "deit-tiny")))
    }

    func testHeadPredictionsAreTheSoftmaxOfTheLogits() {
        let logits = Tensor(shape: [1, 4], data: [1, 3, 3, -2])
        let top = HeadPredictions.top(logits: logits, topK: 3)[0]
        XCTAssertEqual(top.map(\.index), [1, 2, 0])  // ties by index
        let z = exp(1.0) + 2 * exp(3.0) + exp(-2.0)
        XCTAssertEqual(Double(top[0].probability), exp(3.0) / z, accuracy: 1e-6)
        XCTAssertEqual(Double(top[2].probability), exp(1.0) / z, accuracy: 1e-6)
    }

    /// MaxViT options Refract does not build, and sizes that do not partition, refused by name.
    func testBadMaxViTConfigs() throws {
        let base: [String: Any] = ["img_size": 64, "embed_dim": [16, 32], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 24,
                                   "num_classes": 4, "transformer_dim_head": 8]
        for (change, key) in [(["block_type": ["C", "T"]], "model_args.block_type"),
                              (["transformer_window_size": 2, "transformer_grid_size": 4], "model_args.transformer_grid_size"),
                              (["img_size": 48, "transformer_window_size": 4], "model_args.img_size"),
                              (["transformer_dim_head": 5], "model_args.embed_dim[0]"),
                              (["conv_attn_layer": "eca"], "model_args.conv_attn_layer")] as [([String: Any], String)] {
            let dir = scratch.appendingPathComponent("maxvit-\(UUID().uuidString.prefix(6))")
            // A valid checkpoint first, then its config made bad.
            try TimmModel.writeRandomCheckpoint(architecture: "maxvit_tiny_tf_224", modelArgs: base, to: dir)
            let url = dir.appendingPathComponent("config.json")
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            config["model_args"] = base.merging(change) { $1 }
            try JSONSerialization.data(withJSONObject: config).write(to: url)
            let message = refusal(dir)
            XCTAssertTrue(message.contains(key) && message.contains("config.json"), "\(change): \(message)")
        }
    }
}
