import Foundation
import RefractCheckpoint
import RefractStore
import RefractTensor
import XCTest

/// Out-of-bounds configs, non-finite weights, outputs that overflow and runs holding NaN, through
/// the binary: a non-zero exit, a message naming the file and the problem, and no output file.
extension CLITests {
    /// A copy of fixture model `name` (in the scratch folder) with `edit` applied to its config JSON
    /// and `weights` applied to its tensors.
    func hostileModel(_ name: String, config edit: ((inout [String: Any]) -> Void)? = nil,
                      weights: ((String, inout Tensor) -> Void)? = nil) throws -> URL {
        let dir = scratch.appendingPathComponent("model-\(UUID().uuidString.prefix(8))")
        try FileManager.default.copyItem(at: Self.models.appendingPathComponent(name), to: dir)
        let openCLIP = name.hasPrefix("openclip")
        if let edit {
            let url = dir.appendingPathComponent(openCLIP ? "open_clip_config.json" : "config.json")
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: url)
        }
        if let weights {
            let url = dir.appendingPathComponent(openCLIP ? "open_clip_model.safetensors" : "model.safetensors")
            let source = try SafetensorsFile(url: url)
            var w = SafetensorsWriter()
            for k in source.keys {
                var t = try source.floatTensor(k)
                weights(k, &t)
                try w.add(k, t)
            }
            try w.write(to: url)
        }
        return dir
    }

    func assertRefused(_ r: Run, mentions parts: [String], noFiles files: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(r.status, 0, "should fail: \(r.stderr)", file: file, line: line)
        for part in parts {
            XCTAssertTrue(r.stderr.contains(part), "'\(part)' missing from: \(r.stderr)", file: file, line: line)
        }
        for f in files {
            XCTAssertFalse(FileManager.default.fileExists(atPath: f), "\(f) should not exist", file: file, line: line)
        }
    }

    func testConfigOutOfBoundsIsRefusedWithFileKeyValueAndRange() throws {
        let model = try hostileModel("openclip-tiny") { json in
            var m = json["model_cfg"] as! [String: Any], v = m["vision_cfg"] as! [String: Any]
            v["layers"] = -1
            m["vision_cfg"] = v
            json["model_cfg"] = m
        }
        let out = path(scratch, "e.npy")
        let r = try refract(["embed-images", "--model", model.path, "--output", out, path(Self.models, "inputs")])
        assertRefused(r, mentions: [model.appendingPathComponent("open_clip_config.json").path,
                                    "model_cfg.vision_cfg.layers = -1", "1...256"],
                      noFiles: [out, out.replacingOccurrences(of: ".npy", with: ".paths.txt")])
        let eps = try hostileModel("hf-tiny") { json in
            var v = json["text_config"] as! [String: Any]
            v["layer_norm_eps"] = -1
            json["text_config"] = v
        }
        let texts = path(Self.models, "inputs/texts.txt")
        let r2 = try refract(["embed-texts", "--model", eps.path, "--texts", texts, "--output", out])
        assertRefused(r2, mentions: ["config.json", "text_config.layer_norm_eps = -1.0", "1e-12...1.0"], noFiles: [out])
    }

    func testMemoryBudgetRefusesTheModelBeforeLoading() throws {
        let out = path(scratch, "t.npy")
        let texts = path(Self.models, "inputs/texts.txt")
        let model = path(Self.models, "hf-tiny")
        var r = try refract(["embed-texts", "--model", model, "--texts", texts, "--output", out],
                            environment: ["REFRACT_MAX_MODEL_BYTES": "1M"])
        assertRefused(r, mentions: ["config.json", "1650785 parameters", "REFRACT_MAX_MODEL_BYTES=1M"], noFiles: [out])
        r = try refract(["embed-texts", "--model", model, "--texts", texts, "--output", out],
                        environment: ["REFRACT_MAX_MODEL_BYTES": "plenty"])
        assertRefused(r, mentions: ["REFRACT_MAX_MODEL_BYTES='plenty'"], noFiles: [out])
        r = try refract(["embed-texts", "--model", model, "--texts", texts, "--output", out],
                        environment: ["REFRACT_MAX_MODEL_BYTES": "64M"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testNaNWeightIsRefusedNamingTheTensorAndIndex() throws {
        let key = "vision_model.encoder.layers.1.mlp.fc2.weight"
        let model = try hostileModel("hf-tiny", weights: { k, t in if k == key { t.data[123] = .nan } })
        let out = path(scratch, "e.npy")
        let r = try refract(["embed-images", "--model", model.path, "--output", out, path(Self.models, "inputs")])
        assertRefused(r, mentions: [model.appendingPathComponent("model.safetensors").path, "'\(key)'", "NaN", "flat index 123"],
                      noFiles: [out, out.replacingOccurrences(of: ".npy", with: ".paths.txt")])
    }

    func testOverflowingEmbeddingsAreRefusedAndNothingIsWritten() throws {
        let model = try hostileModel("openclip-tiny", weights: { k, t in
            if k == "visual.proj" || k == "text_projection" { t.data = [Float](repeating: 3e38, count: t.count) }
        })
        let out = path(scratch, "e.npy")
        var r = try refract(["embed-images", "--model", model.path, "--output", out, path(Self.models, "inputs")])
        assertRefused(r, mentions: [path(Self.models, "inputs"), "image embedding", "overflowed float32"],
                      noFiles: [out, out.replacingOccurrences(of: ".npy", with: ".paths.txt")])
        let texts = path(Self.models, "inputs/texts.txt")
        r = try refract(["embed-texts", "--model", model.path, "--texts", texts, "--output", out])
        assertRefused(r, mentions: ["\(texts) line 1", "text embedding"], noFiles: [out])
        let classes = path(Self.models, "inputs/classes.txt")
        r = try refract(["classify", "--model", model.path, "--classes", classes, path(Self.models, "inputs")])
        assertRefused(r, mentions: ["'a photo of a", "text embedding"], noFiles: [])
        XCTAssertEqual(r.stdout, "", "nothing is reported")
        let run = path(scratch, "run")
        r = try refract(["decompose", "--model", model.path, "--output", run, try classFolders().path])
        assertRefused(r, mentions: ["'embedding'", "shard 0 was not written"], noFiles: [path(URL(fileURLWithPath: run), "shard-00000.safetensors")])
    }

    func testAblateAndHeadsRefuseARunHoldingNaN() throws {
        let good = path(scratch, "good")
        var r = try refract(["decompose", "--model", tinyModel, "--output", good, "--shard-size", "2", try classFolders().path])
        XCTAssertEqual(r.status, 0, r.stderr)
        // The same run rewritten with StoreWriter (valid, hashes and all) with one NaN in 'attn'.
        let reader = try StoreReader(run: URL(fileURLWithPath: good))
        let badURL = scratch.appendingPathComponent("bad")
        let writer = try StoreWriter.open(at: badURL, header: reader.manifest.header, constants: [:], createdBy: "test", resume: false)
        for (s, rows) in reader.shardRows.enumerated() {
            var tensors = [String: Tensor]()
            for spec in reader.tensorSpecs {
                var t = try reader.tensor(spec.name, rows: rows)
                if spec.name == "attn" && rows.contains(3) { t.data[(3 - rows.lowerBound) * spec.elementCount + 10] = .nan }
                tensors[spec.name] = t
            }
            try writer.writeShard(s, imageIndices: Array(reader.rowImageIndices[rows]), rows: tensors, skipped: [])
        }
        try writer.finish()
        let classes = path(scratch, "classes.txt")
        try "cat\ndog\n".write(toFile: classes, atomically: true, encoding: .utf8)
        let out = path(scratch, "ablation")
        r = try refract(["ablate", "--run", badURL.path, "--classes", classes, "--output", out])
        assertRefused(r, mentions: [badURL.appendingPathComponent("shard-00001.safetensors").path, "'attn'", "row 3", "NaN"],
                      noFiles: [path(URL(fileURLWithPath: out), "ablation.json")])
        XCTAssertFalse(r.stdout.contains("top-1"), r.stdout)
        r = try refract(["heads", "--run", badURL.path, "--text", "a photo of a cat", "--no-cache"])
        assertRefused(r, mentions: ["'attn'", "row 3", "NaN", "heads refuses"], noFiles: [])
        XCTAssertFalse(r.stdout.contains("variance"), r.stdout)
    }
}
