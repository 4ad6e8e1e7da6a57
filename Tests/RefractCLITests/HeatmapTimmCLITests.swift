import Foundation
import RefractTensor
import XCTest

/// `refract heatmap` of a timm model through an alignment: DeiT fixture decomposed, aligned to the
/// tiny CLIP, drawn; the maps summed over every token against the run's stored components through
/// the alignment's maps; bad inputs refused.
extension CLITests {
    /// maps.safetensors' `weights` [C, d, D], read by hand (header length, JSON header, float32 data).
    func alignmentWeights(_ dir: String) throws -> (shape: [Int], values: [Float]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir).appendingPathComponent("maps.safetensors"))
        let n = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        let w = header["weights"] as! [String: Any]
        XCTAssertEqual(w["dtype"] as? String, "F32")
        let shape = w["shape"] as! [Int], offsets = w["data_offsets"] as! [Int]
        let bytes = data.subdata(in: (8 + n + offsets[0])..<(8 + n + offsets[1]))
        let values = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(values.count, shape.reduce(1, *))
        return (shape, values)
    }

    /// A DeiT run, its alignment to openclip-tiny, and two of its images.
    func timmHeatmapInputs() throws -> (run: String, align: String, images: [String]) {
        let (run, e, data) = try alignInputs()
        let align = path(scratch, "align")
        let a = try refract(["align", "--run", run, "--clip-embeddings", e, "--clip", path(Self.models, "openclip-tiny"), "--output", align]
                            + Self.smallTraining)
        XCTAssertEqual(a.status, 0, a.stderr)
        return (run, align, [data + "/cat/img0_40x32.png", data + "/dog/img2_64x64.png"])
    }

    func testTimmHeatmapSumsToTheAlignedComponents() throws {
        let (run, align, images) = try timmHeatmapInputs()
        let deit = Self.timmFixtures.appendingPathComponent("deit-tiny").path
        let out = path(scratch, "heat")
        let r = try refract(["heatmap", "--model", deit, "--align", align, "--text", "a cat", "--text", "a dog", "--no-cache",
                             "--output", out] + images)
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Report: Decodable {
            struct File: Decodable { var image: String; var npy: String; var png: String; var prefixTokenTerms: [[Float]]; var totals: [Double] }
            struct Model: Decodable { var id: String; var weightsSHA256: String }
            struct Alignment: Decodable { var directory: String; var mapsSHA256: String; var fromBlock: Int }
            var model: Model; var clipModel: Model; var alignment: Alignment; var components: [String]; var grid: Int; var prefixTokens: Int
            var texts: [String]; var files: [File]; var family: String; var convention: String
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("heatmap.json")))
        XCTAssertEqual(report.family, "vit")
        XCTAssertEqual(report.convention, "faithful")
        XCTAssertEqual(report.components, (0..<3).flatMap { b in (0..<4).map { "attn.\(b).\($0)" } })   // every head: 3 blocks x 4
        XCTAssertEqual(report.grid, 4)
        XCTAssertEqual(report.prefixTokens, 1)
        XCTAssertEqual(report.texts, ["a cat", "a dog"])
        XCTAssertEqual(report.alignment.fromBlock, 0)
        XCTAssertEqual(report.files.count, 2)
        XCTAssertEqual(report.model.weightsSHA256.count, 64)

        // t: the texts' normalised embeddings by the alignment's CLIP.
        let textsFile = scratch.appendingPathComponent("texts.txt")
        try "a cat\na dog\n".write(to: textsFile, atomically: true, encoding: .utf8)
        let tPath = path(scratch, "t.npy")
        let et = try refract(["embed-texts", "--model", path(Self.models, "openclip-tiny"), "--texts", textsFile.path, "--output", tPath])
        XCTAssertEqual(et.status, 0, et.stderr)
        let t = try NPY.read(URL(fileURLWithPath: tPath)).tensor                                         // [2, 24]
        // x_c: the run's stored components of the same images.
        let exported = path(scratch, "export")
        XCTAssertEqual(try refract(["export", "--run", run, "--output", exported]).status, 0)
        let x = try NPY.read(URL(fileURLWithPath: exported).appendingPathComponent("components.npy")).tensor  // [N, C, d]
        let rows = try String(contentsOfFile: path(URL(fileURLWithPath: exported), "images.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let (shape, w) = try alignmentWeights(align)                                                      // [C, d, D]
        let c = shape[0], d = shape[1], e = shape[2]
        XCTAssertEqual(x.shape.dropFirst().map { $0 }, [c, d])
        let names = try JSONDecoder().decode(ComponentsJSON.self, from: Data(contentsOf: URL(fileURLWithPath: exported).appendingPathComponent("components.json")))
            .components.map(\.name)
        for file in report.files {
            let row = try XCTUnwrap(rows.firstIndex { URL(fileURLWithPath: $0).standardizedFileURL.path == URL(fileURLWithPath: file.image).standardizedFileURL.path },
                                    file.image)
            let maps = try NPY.read(URL(fileURLWithPath: out).appendingPathComponent(file.npy)).tensor
            XCTAssertEqual(maps.shape, [2, 4, 4])
            XCTAssertTrue(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: out), file.png)))
            for k in 0..<2 {
                var expected = 0.0, scale = 0.0
                for name in report.components {
                    let ci = names.firstIndex(of: name)!
                    for a in 0..<d {
                        var wt = 0.0
                        for b in 0..<e { wt += Double(w[(ci * d + a) * e + b]) * Double(t.data[k * e + b]) }
                        let v = Double(x.data[(row * c + ci) * d + a]) * wt
                        expected += v; scale += abs(v)
                    }
                }
                // Σ over every token (patch map + class token) = (Σ_c x_c·W_c)·t, within 1e-5 of Σ|terms|.
                let mapSum = maps.data[(k * 16)..<((k + 1) * 16)].reduce(0) { $0 + Double($1) }
                    + file.prefixTokenTerms[k].reduce(0) { $0 + Double($1) }
                XCTAssertEqual(file.totals[k], expected, accuracy: 1e-5 * scale, "\(file.image) text \(k)")
                XCTAssertEqual(mapSum, expected, accuracy: 1e-5 * scale, "\(file.image) text \(k)")
                XCTAssertGreaterThan(scale, 0)
            }
        }

        // Chosen heads, a wildcard and --top-heads over the run: the report says which.
        let chosen = path(scratch, "heat-chosen")
        let r2 = try refract(["heatmap", "--model", deit, "--align", align, "--text", "a cat", "--components", "attn.2.1,attn.1.*",
                              "--no-cache", "--output", chosen, images[0]])
        XCTAssertEqual(r2.status, 0, r2.stderr)
        let r2report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: chosen).appendingPathComponent("heatmap.json")))
        XCTAssertEqual(r2report.components, ["attn.2.1", "attn.1.0", "attn.1.1", "attn.1.2", "attn.1.3"])
        let top = path(scratch, "heat-top")
        let r3 = try refract(["heatmap", "--model", deit, "--align", align, "--text", "a cat", "--text", "a dog", "--top-heads", "3",
                              "--run", run, "--no-cache", "--output", top, images[0]])
        XCTAssertEqual(r3.status, 0, r3.stderr)
        XCTAssertTrue(r3.stderr.contains("top heads by variance_explained"), r3.stderr)
        let topJSON = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: top).appendingPathComponent("heatmap.json"))) as! [String: Any]
        XCTAssertEqual((topJSON["components"] as? [String])?.count, 3)
        let scores = (topJSON["selection"] as? [String: Any])?["varianceExplained"] as? [Double]
        XCTAssertEqual(scores?.count, 3)
        if let scores { XCTAssertEqual(scores, scores.sorted(by: >)) }
    }

    func testTimmHeatmapRefusals() throws {
        let (_, align, images) = try timmHeatmapInputs()
        let deit = Self.timmFixtures.appendingPathComponent("deit-tiny").path
        let base = ["heatmap", "--text", "a cat", "--no-cache"]
        func out(_ name: String) -> [String] { ["--output", path(scratch, name)] }
        // A timm model without --align.
        let noAlign = try refract(base + ["--model", deit] + out("h1") + images)
        assertFailure(noAlign, mentions: ["timm model", "--align", "refract align"])
        // An alignment of another model.
        let other = try refract(base + ["--model", Self.timmFixtures.appendingPathComponent("dino-tiny").path, "--align", align] + out("h2") + images)
        assertFailure(other, mentions: ["an alignment of", "refract align"])
        // Components without per-token terms, and unknown ones.
        for (name, words) in [("mlp.2", ["mlp.2", "no per-token terms", "attention heads"]), ("attn_bias.1", ["attn_bias.1", "no per-token terms"]),
                              ("init", ["init", "no per-token terms"]), ("attn.7.0", ["attn.7.0", "not a component"])] {
            let r = try refract(base + ["--model", deit, "--align", align, "--components", name] + out("h3") + images)
            assertFailure(r, mentions: words)
        }
        // A text tower whose weights are not the alignment's CLIP.
        let clip = try refract(base + ["--model", deit, "--align", align, "--clip", path(Self.models, "hf-tiny")] + out("h4") + images)
        assertFailure(clip, mentions: ["--clip", "weights sha256", "pass --clip with that CLIP model"])
        // --align with a CLIP model; --top-heads without --run; --heads for a timm model; another convention.
        assertFailure(try refract(base + ["--model", path(Self.models, "openclip-tiny"), "--align", align] + out("h5") + images),
                      mentions: ["--align is for timm models"])
        assertFailure(try refract(base + ["--model", deit, "--align", align, "--top-heads", "2"] + out("h6") + images), mentions: ["--run"])
        assertFailure(try refract(base + ["--model", deit, "--align", align, "--heads", "1.1"] + out("h7") + images), mentions: ["--components"])
        assertFailure(try refract(base + ["--model", deit, "--align", align, "--convention", "balasubramanian2024"] + out("h8") + images),
                      mentions: ["--convention", "faithful"])
        for name in ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: path(scratch, name)), "\(name) written by a refused run")
        }
    }
}
