import Foundation
import RefractTensor
import XCTest

/// `refract align` end to end: a timm run (DeiT fixture) aligned to a tiny CLIP, from an embeddings
/// file or from the model, killed and resumed, and its bad inputs.
extension CLITests {
    static let timmFixtures = root.appendingPathComponent("Tests/Fixtures/timm")

    /// A decomposed DeiT run over the labelled fixture images and the tiny CLIP's embeddings of them.
    func alignInputs() throws -> (run: String, embeddings: String, data: String) {
        let data = try labelledImages("cat", "dog")
        let run = path(scratch, "deit-run"), e = path(scratch, "clip.npy")
        let d = try refract(["decompose", "--model", Self.timmFixtures.appendingPathComponent("deit-tiny").path, "--output", run, data])
        XCTAssertEqual(d.status, 0, d.stderr)
        let m = try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", e, data])
        XCTAssertEqual(m.status, 0, m.stderr)
        return (run, e, data)
    }

    /// The options that make the 4-image run train for a while: batches of 1, many epochs.
    static let smallTraining = ["--batch-size", "1", "--epochs", "30", "--patience", "1000", "--learning-rate", "1e-2", "--held-out", "0.25"]

    func testAlignFromEmbeddingsAndFromTheModelAgree() throws {
        let (run, e, _) = try alignInputs()
        // The embeddings file describes its model.
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(scratch, "clip.model.json")))) as! [String: Any]
        XCTAssertEqual(info["format"] as? String, "refract-embeddings")
        XCTAssertEqual(info["rows"] as? Int, 4)
        let a = path(scratch, "align-e"), b = path(scratch, "align-m")
        let r1 = try refract(["align", "--run", run, "--clip-embeddings", e, "--clip", path(Self.models, "openclip-tiny"), "--output", a] + Self.smallTraining)
        XCTAssertEqual(r1.status, 0, r1.stderr)
        XCTAssertTrue(r1.stdout.contains("20 maps [32 -> 24]"), r1.stdout)
        XCTAssertTrue(r1.stdout.contains("zero-shot top-1 (2 classes)"), r1.stdout)
        XCTAssertTrue(r1.stdout.contains("held out: 1 images"), r1.stdout)
        let r2 = try refract(["align", "--run", run, "--clip", path(Self.models, "openclip-tiny"), "--output", b] + Self.smallTraining)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        struct Manifest: Decodable {
            struct Figures: Decodable { var meanCosine: Double; var meanCosineInitial: Double; var zeroShotTop1: Double? }
            struct Target: Decodable { struct Model: Decodable { var weightsSHA256: String }; var model: Model; var width: Int }
            var format: String; var components: [String]; var steps: Int; var figures: Figures; var target: Target; var mapsSHA256: String
        }
        func manifest(_ dir: String) throws -> Manifest {
            try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: dir).appendingPathComponent("manifest.json")))
        }
        let m1 = try manifest(a), m2 = try manifest(b)
        XCTAssertEqual(m1.format, "refract-alignment")
        XCTAssertEqual(m1.components.count, 20)
        XCTAssertEqual(m1.steps, 90)                       // 3 training images × 30 epochs
        XCTAssertEqual(m1.target.width, 24)
        XCTAssertGreaterThan(m1.figures.meanCosine, m1.figures.meanCosineInitial)
        XCTAssertNotNil(m1.figures.zeroShotTop1)
        // The same targets either way (embed-images and align's own embedding agree), so the same maps.
        XCTAssertEqual(m1.target.model.weightsSHA256, m2.target.model.weightsSHA256)
        XCTAssertEqual(m1.mapsSHA256, m2.mapsSHA256)
        let maps = try Data(contentsOf: URL(fileURLWithPath: a).appendingPathComponent("maps.safetensors"))
        XCTAssertGreaterThan(maps.count, 20 * 32 * 24 * 4)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: a), "loss.png")))
    }

    func testAlignKilledAndResumedEndsWithTheSameMaps() throws {
        let (run, e, _) = try alignInputs()
        let whole = path(scratch, "whole"), killed = path(scratch, "killed")
        let base = ["align", "--run", run, "--clip-embeddings", e, "--checkpoint-every", "10"] + Self.smallTraining
        XCTAssertEqual(try refract(base + ["--output", whole]).status, 0)
        let k = try refract(base + ["--output", killed], environment: ["REFRACT_FAULT_AFTER_CHECKPOINTS": "3"])
        XCTAssertNotEqual(k.status, 0)
        XCTAssertEqual(lastTerminationReason, .uncaughtSignal)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: killed), "manifest.json")))
        let again = try refract(base + ["--output", killed])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--resume"), again.stderr)
        let r = try refract(base + ["--output", killed, "--resume"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try Data(contentsOf: URL(fileURLWithPath: whole).appendingPathComponent("maps.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: killed).appendingPathComponent("maps.safetensors"))
        XCTAssertEqual(a, b, "resumed maps differ from an uninterrupted run's")
    }

    func testAlignRefusesBadInputs() throws {
        let (run, e, data) = try alignInputs()
        func refused(_ args: [String], _ fragments: [String], line: UInt = #line) throws {
            let r = try refract(["align", "--run", run, "--output", path(scratch, "out-\(UUID().uuidString)")] + args)
            XCTAssertNotEqual(r.status, 0, line: line)
            for f in fragments { XCTAssertTrue(r.stderr.contains(f), "missing '\(f)' in: \(r.stderr)", line: line) }
            XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr, line: line)
        }
        // No targets.
        try refused([], ["--clip-embeddings"])
        // Embeddings of another image list (three of the four images).
        let three = path(scratch, "three.npy")
        let dir = URL(fileURLWithPath: data)
        let files = try FileManager.default.subpathsOfDirectory(atPath: data).filter { $0.hasSuffix(".png") }.sorted()
        XCTAssertEqual(try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", three]
                                   + files.prefix(3).map { dir.appendingPathComponent($0).path }).status, 0)
        try refused(["--clip-embeddings", three], ["three.npy", "no embedding of the run's image"])
        // An array whose length is not its paths list's.
        let e4 = try NPY.read(URL(fileURLWithPath: e)).tensor
        let short = path(scratch, "short.npy")
        try NPY.write(Tensor(shape: [3, e4.shape[1]], data: Array(e4.data[0..<(3 * e4.shape[1])])), to: URL(fileURLWithPath: short))
        try FileManager.default.copyItem(atPath: path(scratch, "clip.paths.txt"), toPath: path(scratch, "short.paths.txt"))
        try refused(["--clip-embeddings", short, "--clip", path(Self.models, "openclip-tiny")], ["short.npy", "do not belong together"])
        // No description and no --clip: the CLIP model is unknown.
        try refused(["--clip-embeddings", short], ["short.model.json", "unknown"])
        // NaN in the targets.
        var nan = e4
        nan.data[5] = .nan
        let bad = path(scratch, "nan.npy")
        try NPY.write(nan, to: URL(fileURLWithPath: bad))
        try FileManager.default.copyItem(atPath: path(scratch, "clip.paths.txt"), toPath: path(scratch, "nan.paths.txt"))
        try FileManager.default.copyItem(atPath: path(scratch, "clip.model.json"), toPath: path(scratch, "nan.model.json"))
        try refused(["--clip-embeddings", bad], ["nan.npy", "NaN"])
        // timm features are not CLIP targets.
        let feats = path(scratch, "feats.npy")
        XCTAssertEqual(try refract(["embed-images", "--model", Self.timmFixtures.appendingPathComponent("deit-tiny").path, "--output", feats, data]).status, 0)
        try refused(["--clip-embeddings", feats], ["timm model"])
        // A CLIP run is already in CLIP space.
        let clipRun = path(scratch, "clip-run")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", clipRun, data]).status, 0)
        let r = try refract(["align", "--run", clipRun, "--clip-embeddings", e, "--output", path(scratch, "o-clip")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("CLIP run"), r.stderr)
        // Out-of-range options.
        try refused(["--clip-embeddings", e, "--held-out", "1"], ["--held-out"])
        try refused(["--clip-embeddings", e, "--batch-size", "0"], ["--batch-size"])
    }

    /// textspan and heads read a timm run through --align; without it, or with another CLIP, they refuse.
    func testTextSpanAndHeadsReadAnAlignedRun() throws {
        let (run, e, data) = try alignInputs()
        let align = path(scratch, "align")
        XCTAssertEqual(try refract(["align", "--run", run, "--clip-embeddings", e, "--output", align] + Self.smallTraining).status, 0)
        let pool = path(scratch, "pool.txt")
        try "a red thing\na blue thing\na photo of a dog\na photo of a cat\nsomething green\nan animal\n".write(toFile: pool, atomically: true, encoding: .utf8)
        let out = path(scratch, "ts")
        let t = try refract(["textspan", "--run", run, "--align", align, "--descriptions", pool, "--output", out, "--per-head", "2"])
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.stdout.contains("attn.2.3: "), t.stdout)
        XCTAssertTrue(t.stdout.contains("readout_bias: (the contributions are the same"), t.stdout)
        struct Report: Decodable {
            struct Head: Decodable { var component: String?; var descriptions: [Step] }
            struct Step: Decodable { var text: String }
            struct Align: Decodable { var mapsSHA256: String }
            var heads: [Head]; var alignment: Align?
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("textspan.json")))
        XCTAssertEqual(report.heads.count, 20, "every component labelled")
        XCTAssertEqual(report.heads.first?.component, "init")
        XCTAssertNotNil(report.alignment)
        XCTAssertEqual(report.heads.first { $0.component == "mlp.1" }?.descriptions.count, 2)
        // A chosen few.
        let few = try refract(["textspan", "--run", run, "--align", align, "--descriptions", pool, "--output", path(scratch, "ts2"),
                               "--per-head", "1", "--components", "mlp.2,attn.0.1"])
        XCTAssertEqual(few.status, 0, few.stderr)
        XCTAssertEqual(few.stdout.split(separator: "\n").filter { $0.hasPrefix("attn.0.1:") || $0.hasPrefix("mlp.2:") }.count, 2, few.stdout)
        let h = try refract(["heads", "--run", run, "--align", align, "--text", "a photo of a dog", "--top", "3"])
        XCTAssertEqual(h.status, 0, h.stderr)
        XCTAssertTrue(h.stdout.contains("components by variance along"), h.stdout)
        XCTAssertEqual(h.stdout.split(separator: "\n").count, 4, h.stdout)
        // retrieve: a text through the alignment, a row by the unaligned components.
        let rt = try refract(["retrieve", "--run", run, "--components", "mlp.2,attn.2.1", "--align", align, "--text", "a photo of a dog",
                              "--top", "2", "--output", path(scratch, "rt")])
        XCTAssertEqual(rt.status, 0, rt.stderr)
        XCTAssertTrue(rt.stdout.contains("compared with the components aligned into its space"), rt.stdout)
        // The components of a score report's ranking (the paper's retrieval by top-scored components).
        let sc = try refract(["score", "--run", run, "--align", align, "--property", "animal", "--texts", "a dog,a cat",
                              "--output", path(scratch, "score")])
        XCTAssertEqual(sc.status, 0, sc.stderr)
        let rs = try refract(["retrieve", "--run", run, "--score", path(scratch, "score"), "--top-components", "3", "--align", align,
                              "--text", "a photo of a dog", "--output", path(scratch, "rs")])
        XCTAssertEqual(rs.status, 0, rs.stderr)
        XCTAssertTrue(rs.stderr.contains("components from"), rs.stderr)
        let ri = try refract(["retrieve", "--run", run, "--components", "mlp.2", "--index", "1", "--output", path(scratch, "ri")])
        XCTAssertEqual(ri.status, 0, ri.stderr)
        XCTAssertTrue(ri.stdout.contains("unaligned"), ri.stdout)
        // Refusals.
        func refused(_ args: [String], _ fragment: String, line: UInt = #line) throws {
            let r = try refract(args)
            XCTAssertNotEqual(r.status, 0, line: line)
            XCTAssertTrue(r.stderr.contains(fragment), "missing '\(fragment)' in: \(r.stderr)", line: line)
        }
        try refused(["heads", "--run", run, "--text", "a dog"], "give it with --align")
        try refused(["retrieve", "--run", run, "--components", "mlp.2", "--text", "a dog", "--output", path(scratch, "x")], "give it with --align")
        try refused(["retrieve", "--run", run, "--heads", "2.1", "--index", "0", "--output", path(scratch, "x")], "--components")
        try refused(["textspan", "--run", run, "--align", align, "--descriptions", pool, "--output", path(scratch, "x"), "--components", "mlp.9"],
                    "no component 'mlp.9'")
        try refused(["textspan", "--run", run, "--align", align, "--descriptions", pool, "--output", path(scratch, "x"), "--layers", "all"],
                    "--components")
        try refused(["heads", "--run", run, "--align", align, "--text", "a dog", "--model", path(Self.models, "hf-tiny")], "alignment's CLIP")
        let clipRun = path(scratch, "clip-run")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", clipRun, data]).status, 0)
        try refused(["heads", "--run", clipRun, "--align", align, "--text", "a dog"], "already in CLIP space")
        // An alignment of another run (another decomposition of the same model).
        let other = path(scratch, "deit-from1")
        XCTAssertEqual(try refract(["decompose", "--model", Self.timmFixtures.appendingPathComponent("deit-tiny").path, "--output", other,
                                    "--from-block", "1", data]).status, 0)
        try refused(["heads", "--run", other, "--align", align, "--text", "a dog"], "another decomposition")
    }

    /// Waterbirds for a timm run end to end: decompose a metadata list, probe on its training split,
    /// align, then spurious with the components chosen by score(spurious) − score(core).
    func testWaterbirdsWithAProbeAndScoredComponents() throws {
        let data = scratch.appendingPathComponent("wb")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let sources = ["img0_40x32.png", "img1_32x48.png", "img2_64x64.png", "img3_33x31.png"]
        var csv = "img_filename,y,split,place\n"
        for i in 0..<12 {
            try FileManager.default.copyItem(at: Self.models.appendingPathComponent("inputs/\(sources[i % 4])"),
                                             to: data.appendingPathComponent("bird\(i).png"))
            csv += "bird\(i).png,\(i % 2),\(i < 6 ? 0 : (i < 9 ? 1 : 2)),\((i / 2) % 2)\n"
        }
        let meta = data.appendingPathComponent("metadata.csv")
        try csv.write(to: meta, atomically: true, encoding: .utf8)
        let run = path(scratch, "wb-run")
        let d = try refract(["decompose", "--model", Self.timmFixtures.appendingPathComponent("deit-tiny").path, "--output", run, meta.path])
        XCTAssertEqual(d.status, 0, d.stderr)
        let probe = path(scratch, "probe")
        let p = try refract(["probe", "--run", run, "--output", probe, "--where", "split=0", "--label-column", "y", "--classes", "landbird,waterbird",
                             "--epochs", "5"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertTrue(p.stdout.contains("Linear(32, 2) on representation of 6 rows"), p.stdout)
        let e = path(scratch, "wb-clip.npy")
        XCTAssertEqual(try refract(["embed-images", "--model", path(Self.models, "openclip-tiny"), "--output", e, data.path]).status, 0)
        let align = path(scratch, "wb-align")
        let a = try refract(["align", "--run", run, "--clip-embeddings", e, "--output", align, "--epochs", "2", "--batch-size", "4"])
        XCTAssertEqual(a.status, 0, a.stderr)
        let out = path(scratch, "wb-spurious")
        let r = try refract(["spurious", "--run", run, "--metadata", meta.path, "--probe", probe, "--align", align,
                             "--ablate-by-text", "location", "--top", "3", "--split", "val,test", "--random-draws", "2", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("base ") && r.stdout.contains("ablated ") && r.stdout.contains("random components"), r.stdout)
        struct Report: Decodable {
            struct Selection: Decodable { var rule: String; var keys: [Double]? }
            struct Evaluation: Decodable { var images: Int }
            var components: [String]; var selection: Selection; var evaluation: Evaluation
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("spurious.json")))
        XCTAssertEqual(report.components.count, 3)
        XCTAssertEqual(report.selection.rule, "score")
        XCTAssertEqual(report.evaluation.images, 6)
        // Chosen by name; the same probe; refusals.
        XCTAssertEqual(try refract(["spurious", "--run", run, "--metadata", meta.path, "--probe", probe, "--ablate", "mlp.2,attn.2.0",
                                    "--output", path(scratch, "wb2")]).status, 0)
        let noProbe = try refract(["spurious", "--run", run, "--metadata", meta.path, "--classes", "landbird,waterbird", "--ablate", "mlp.2",
                                   "--output", path(scratch, "wb3")])
        XCTAssertNotEqual(noProbe.status, 0)
        XCTAssertTrue(noProbe.stderr.contains("--probe"), noProbe.stderr)
    }

    /// DINO has no head: its layer-ablation curve is classified by a probe trained on the run.
    func testLayerAblationOfAHeadlessModelThroughAProbe() throws {
        let data = try labelledImages("cat", "dog")
        let run = path(scratch, "dino-run"), probe = path(scratch, "dino-probe")
        XCTAssertEqual(try refract(["decompose", "--model", Self.timmFixtures.appendingPathComponent("dino-tiny").path, "--output", run, data]).status, 0)
        let headless = try refract(["ablate", "--run", run, "--output", path(scratch, "a0")])
        XCTAssertNotEqual(headless.status, 0)
        XCTAssertTrue(headless.stderr.contains("--probe"), headless.stderr)
        let p = try refract(["probe", "--run", run, "--output", probe, "--epochs", "50", "--learning-rate", "0.05"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertTrue(p.stdout.contains("training accuracy: 100.00%"), p.stdout)
        let a = try refract(["ablate", "--run", run, "--probe", probe, "--output", path(scratch, "a1")])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertTrue(a.stdout.contains("100.00%"), a.stdout)                     // nothing ablated: the probe's own training accuracy
        XCTAssertNotEqual(try refract(["ablate", "--run", run, "--probe", probe, "--classes", "x", "--output", path(scratch, "a2")]).status, 0)
    }
}
