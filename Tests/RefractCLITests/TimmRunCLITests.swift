import Foundation
import RefractTensor
import XCTest

/// `refract decompose`, `export` and `ablate` on timm runs (Tests/Fixtures/timm), and the commands
/// that need CLIP space refusing them.
extension CLITests {
    struct ComponentsJSON: Decodable {
        struct Entry: Decodable { var name: String; var official: String?; var kind: String; var block: Int?; var head: Int? }
        var convention: String
        var components: [Entry]
    }

    /// A labelled folder of the four fixture images: img0, img1 → class `a`, img2, img3 → class `b`.
    func labelledImages(_ a: String, _ b: String) throws -> String {
        let data = scratch.appendingPathComponent("labelled-\(a)-\(b)")
        for (label, images) in [(a, ["img0_40x32.png", "img1_32x48.png"]), (b, ["img2_64x64.png", "img3_33x31.png"])] {
            let dir = data.appendingPathComponent(label)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for image in images {
                try FileManager.default.copyItem(at: Self.models.appendingPathComponent("inputs/\(image)"), to: dir.appendingPathComponent(image))
            }
        }
        return data.path
    }

    func testTimmDecomposeAndExportMatchTheReferences() throws {
        for (name, convention, start, tokens) in [("swin-tiny", "faithful", 0, "3"), ("deit-tiny", "balasubramanian2024", 1, nil),
                                                  ("dinov2-reg-tiny", "faithful", 1, "1")] {
            let run = path(scratch, "\(name)-run"), out = path(scratch, "\(name)-export")
            var args = ["decompose", "--model", path(Self.timm, name), "--output", run, "--convention", convention,
                        "--from-block", "\(start)", path(Self.models, "inputs")]
            if let tokens { args += ["--tokens", tokens] }
            let r = try refract(args)
            XCTAssertEqual(r.status, 0, r.stderr)
            let e = try refract(["export", "--run", run, "--output", out])
            XCTAssertEqual(e.status, 0, e.stderr)
            let listing = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: URL(fileURLWithPath: path(scratch, "\(name)-export/components.json"))))
            let reference = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: Self.timm.appendingPathComponent(
                "expected/\(name)/\(convention)/from\(start)/components.json")))
            XCTAssertEqual(listing.components.map(\.name), reference.components.map(\.name), name)
            XCTAssertEqual(listing.components.map(\.official), reference.components.map(\.official), name)
            let got = try NPY.read(URL(fileURLWithPath: path(scratch, "\(name)-export/components.npy"))).tensor
            let want = try NPY.read(Self.timm.appendingPathComponent("expected/\(name)/\(convention)/from\(start)/components.npy")).tensor
            XCTAssertEqual(got.shape, want.shape, name)
            let scale = want.data.map(abs).max()!
            let worst = zip(got.data, want.data).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(name) \(convention): max difference \(worst)")
            if let tokens {
                let t = try NPY.read(URL(fileURLWithPath: path(scratch, "\(name)-export/tokens.\(tokens).npy"))).tensor
                let ref = try NPY.read(Self.timm.appendingPathComponent("expected/\(name)/faithful/tokens_block\(tokens).npy")).tensor
                XCTAssertEqual(t.shape, ref.shape, name)
                XCTAssertLessThanOrEqual(zip(t.data, ref.data).map { abs($0 - $1) }.max()!, 2e-5 * ref.data.map(abs).max()!, name)
            }
        }
        // The same run resumed is refused with other options, and a finished run is not redone.
        let again = try refract(["decompose", "--model", path(Self.timm, "swin-tiny"), "--output", path(scratch, "swin-tiny-run"),
                                 "--from-block", "3", "--resume", path(Self.models, "inputs")])
        XCTAssertNotEqual(again.status, 0)
    }

    func testCLIPRunsExportTheirComponentsToo() throws {
        let run = path(scratch, "clip-run"), out = path(scratch, "clip-export")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", run, path(Self.models, "inputs")]).status, 0)
        XCTAssertEqual(try refract(["export", "--run", run, "--output", out]).status, 0)
        let listing = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: URL(fileURLWithPath: path(scratch, "clip-export/components.json"))))
        let components = try NPY.read(URL(fileURLWithPath: path(scratch, "clip-export/components.npy"))).tensor   // [N, C, D']
        let embedding = try NPY.read(URL(fileURLWithPath: path(scratch, "clip-export/embedding.npy"))).tensor     // [N, D']
        let n = components.shape[0], c = components.shape[1], d = components.shape[2]
        XCTAssertEqual(listing.components.count, c)
        XCTAssertEqual(listing.components.first?.name, "init")
        XCTAssertEqual(listing.components.last?.name, "readout_bias")
        for i in 0..<n {
            for j in 0..<d {
                var sum: Float = 0
                for k in 0..<c { sum += components.data[(i * c + k) * d + j] }
                XCTAssertEqual(sum, embedding.data[i * d + j], accuracy: 1e-4)
            }
        }
    }

    func testTimmAblationUsesTheHeadAndMeans() throws {
        // Labels the head gets right for img0 (class 6) and wrong for the others: baseline top-1 25%.
        let data = try labelledImages("6", "1")
        let run = path(scratch, "ablate-run"), out = path(scratch, "ablate-out")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.timm, "swin-tiny"), "--output", run, "--from-block", "3", data]).status, 0)
        let r = try refract(["ablate", "--run", run, "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Report: Decodable { struct Study: Decodable { var id: String; var top1: Double; var top5: Double }; var studies: [Study]; var curve: String? }
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: path(scratch, "ablate-out/ablation.json"))))
        XCTAssertEqual(report.studies.map(\.id), ["baseline", "init", "last_1_blocks", "last_2_blocks", "last_3_blocks"])
        XCTAssertEqual(report.studies[0].top1, 25, accuracy: 1e-9)
        XCTAssertNotNil(report.curve)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path(scratch, "ablate-out/ablation.png")))
        // Every block ablated: what is left is init, the means and the constants; checked from the export.
        let e = path(scratch, "ablate-export")
        XCTAssertEqual(try refract(["export", "--run", run, "--output", e]).status, 0)
        let comps = try NPY.read(URL(fileURLWithPath: e + "/components.npy")).tensor
        let listing = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: URL(fileURLWithPath: e + "/components.json")))
        let n = comps.shape[0], c = comps.shape[1], d = comps.shape[2]
        let logitsRef = try NPY.read(Self.timm.appendingPathComponent("expected/swin-tiny/logits.npy")).tensor
        XCTAssertEqual(logitsRef.shape[0], n)
        var correct = 0
        let head = try SafetensorsPeek.tensors(Self.timm.appendingPathComponent("swin-tiny/model.safetensors").path, ["head.fc.weight", "head.fc.bias"])
        for i in 0..<n {
            var x = [Float](repeating: 0, count: d)
            for k in 0..<c {
                let ablated = listing.components[k].block != nil && listing.components[k].kind != "init"
                for j in 0..<d {
                    if ablated {
                        var mean: Float = 0
                        for m in 0..<n { mean += comps.data[(m * c + k) * d + j] }
                        x[j] += mean / Float(n)
                    } else {
                        x[j] += comps.data[(i * c + k) * d + j]
                    }
                }
            }
            let classes = head[1].count
            let logits = (0..<classes).map { o in (0..<d).reduce(head[1][o]) { $0 + head[0][o * d + $1] * x[$1] } }
            let label = i < 2 ? 6 : 1
            if logits.indices.allSatisfy({ logits[$0] <= logits[label] }) { correct += 1 }
        }
        XCTAssertEqual(report.studies.last!.top1, 100 * Double(correct) / Double(n), accuracy: 1e-9)
    }

    func testCommandsThatNeedCLIPSpaceRefuseTimmRuns() throws {
        let run = path(scratch, "deit-run")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.timm, "deit-tiny"), "--output", run, path(Self.models, "inputs")]).status, 0)
        let texts = path(scratch, "pool.txt")
        try "a dog\na cat".write(toFile: texts, atomically: true, encoding: .utf8)
        // Without an alignment (--align), the commands that compare components with texts refuse, naming it.
        for args in [["textspan", "--run", run, "--descriptions", texts, "--output", path(scratch, "ts")],
                     ["heads", "--run", run, "--text", "a dog"],
                     ["retrieve", "--run", run, "--text", "a dog", "--components", "mlp.0", "--output", path(scratch, "rt")]] {
            assertFailure(try refract(args), mentions: [run, "CompAlign", "--align", args[0]])
        }
        // A CLIP run's head selection is not a timm run's.
        assertFailure(try refract(["retrieve", "--run", run, "--index", "0", "--heads", "0.0", "--output", path(scratch, "rt")]),
                      mentions: ["--components"])
        // Options that belong to the other family.
        assertFailure(try refract(["decompose", "--model", path(Self.timm, "deit-tiny"), "--output", path(scratch, "x"),
                                   "--convention", "gandelsman2024", path(Self.models, "inputs")]), mentions: ["gandelsman2024"])
        assertFailure(try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", path(scratch, "y"),
                                   "--from-block", "1", path(Self.models, "inputs")]), mentions: ["--from-block"])
        assertFailure(try refract(["decompose", "--model", path(Self.timm, "deit-tiny"), "--output", path(scratch, "z"),
                                   "--from-block", "3", path(Self.models, "inputs")]), mentions: ["--from-block 3"])
        assertFailure(try refract(["decompose", "--model", path(Self.timm, "deit-tiny"), "--output", path(scratch, "w"),
                                   "--convention", "balasubramanian2024", "--tokens", "1", path(Self.models, "inputs")]), mentions: ["faithful"])
        assertFailure(try refract(["ablate", "--run", path(scratch, "dino-none"), "--output", path(scratch, "ab")]), mentions: ["dino-none"])
    }
}

/// Reads named float32 tensors straight from a safetensors file (tests only).
enum SafetensorsPeek {
    static func tensors(_ path: String, _ names: [String]) throws -> [[Float]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        return names.map { name in
            let entry = header[name] as! [String: Any]
            let offsets = entry["data_offsets"] as! [Int]
            let bytes = data.subdata(in: (8 + n + offsets[0])..<(8 + n + offsets[1]))
            return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
    }
}

import RefractTimm

extension CLITests {
    /// A random-weight MaxViT (two stages, a shortcut conv, block and grid attention): classify,
    /// decompose in both conventions, export, and the faithful components sum to the representation.
    func testMaxViTRunsEndToEnd() throws {
        let model = scratch.appendingPathComponent("maxvit")
        try TimmModel.writeRandomCheckpoint(architecture: "maxvit_tiny_tf_224", modelArgs: [
            "img_size": 64, "embed_dim": [16, 32], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 24,
            "num_classes": 10, "transformer_dim_head": 8], to: model, seed: 4)
        let c = try refract(["classify", "--model", model.path, "--top-k", "2", path(Self.models, "inputs")])
        XCTAssertEqual(c.status, 0, c.stderr)
        for convention in ["faithful", "balasubramanian2024"] {
            let run = path(scratch, "maxvit-\(convention)"), out = path(scratch, "maxvit-\(convention)-npy")
            var args = ["decompose", "--model", model.path, "--output", run, "--convention", convention, "--from-block", "1"]
            if convention == "faithful" { args += ["--tokens", "2"] }
            let r = try refract(args + [path(Self.models, "inputs")])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(try refract(["export", "--run", run, "--output", out]).status, 0)
            let listing = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/components.json")))
            let components = try NPY.read(URL(fileURLWithPath: out + "/components.npy")).tensor
            let representation = try NPY.read(URL(fileURLWithPath: out + "/representation.npy")).tensor
            let n = components.shape[0], k = components.shape[1], d = components.shape[2]
            XCTAssertTrue(listing.components.contains { $0.name == "conv.1" && $0.official == "layer:(02, 03), conv" }, "\(listing.components.map(\.name))")
            XCTAssertTrue(listing.components.contains { $0.name == "attn.2.grid.3" && $0.official == "layer:00, attn_head:03" })
            XCTAssertEqual(listing.components.contains { $0.name == "shortcut_bias.1" }, convention == "faithful")
            var worst: Float = 0, scale: Float = 0
            for i in 0..<n {
                for j in 0..<d {
                    var sum: Float = 0
                    for m in 0..<k { sum += components.data[(i * k + m) * d + j] }
                    worst = max(worst, abs(sum - representation.data[i * d + j]))
                    scale = max(scale, abs(representation.data[i * d + j]))
                }
            }
            if convention == "faithful" {
                XCTAssertLessThanOrEqual(worst, 1e-5 * scale)
                let tokens = try NPY.read(URL(fileURLWithPath: out + "/tokens.2.window.npy")).tensor
                XCTAssertEqual(tokens.shape, [n, 4, 8, 8, d])   // 4 heads on stage 1 (an 8×8 grid)
            } else {
                XCTAssertLessThanOrEqual(worst, 0.2 * scale)    // off by design (the value path's LayerNorm)
            }
        }
    }
}

extension CLITests {
    /// MaxViT's ablation goes part by part in the official order (grid MLP, grid attention, window
    /// MLP, window attention, MBConv), through the model's nonlinear head.
    func testMaxViTAblationGoesPartByPart() throws {
        let model = scratch.appendingPathComponent("maxvit-ablate")
        try TimmModel.writeRandomCheckpoint(architecture: "maxvit_tiny_tf_224", modelArgs: [
            "img_size": 64, "embed_dim": [16, 32], "depths": [1, 2], "stem_width": 8, "head_hidden_size": 24,
            "num_classes": 10, "transformer_dim_head": 8], to: model, seed: 6)
        let data = try labelledImages("2", "7")
        let run = path(scratch, "maxvit-ablate-run"), out = path(scratch, "maxvit-ablate-out")
        XCTAssertEqual(try refract(["decompose", "--model", model.path, "--output", run, "--from-block", "1", data]).status, 0)
        let r = try refract(["ablate", "--run", run, "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Report: Decodable { struct Study: Decodable { var id: String }; var studies: [Study] }
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/ablation.json")))
        XCTAssertEqual(Array(report.studies.map(\.id).prefix(7)),
                       ["baseline", "init", "block_2_grid_mlp", "block_2_grid_attention", "block_2_window_mlp", "block_2_window_attention", "block_2_mbconv"])
        XCTAssertEqual(report.studies.count, 2 + 5 * 2)
    }
}
