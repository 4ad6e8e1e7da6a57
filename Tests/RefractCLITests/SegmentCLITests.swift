import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractTensor
import XCTest

/// refract heatmap / segment, run as a user would.
extension CLITests {
    func testHeatmapWritesFiguresAndMapsThatAddUp() throws {
        let out = scratch.appendingPathComponent("heatmaps")
        let image = path(Self.models, "inputs/img0_40x32.png")
        let texts = ["a photo of a cat", "a red apple"]
        let r = try refract(["heatmap", "--model", tinyModel, "--text", texts[0], "--text", texts[1], "--output", out.path,
                             image, path(Self.models, "inputs/img2_64x64.png")], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        for stem in ["img0_40x32", "img2_64x64"] {
            XCTAssertEqual(try ImageDecoder.probe(contentsOf: out.appendingPathComponent("\(stem).png")).format, .png)
        }
        let maps = try NPY.read(out.appendingPathComponent("img0_40x32.npy")).tensor
        XCTAssertEqual(maps.shape, [2, 4, 4])
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("heatmap.json"))) as! [String: Any]
        XCTAssertEqual(json["heads"] as? String, "all")
        XCTAssertEqual(json["convention"] as? String, "faithful")
        XCTAssertEqual(json["texts"] as? [String], texts)
        XCTAssertEqual((json["weightsSHA256"] as? String)?.count, 64)
        let files = json["files"] as! [[String: Any]]
        XCTAssertEqual(files.map { $0["png"] as! String }, ["img0_40x32.png", "img2_64x64.png"])
        let classTerms = (files[0]["classTokenTerms"] as! [NSNumber]).map(\.doubleValue)
        // Σ map + class-token term = (Σ over every head of attn) · t, from an independent decomposition.
        let dir = Self.models.appendingPathComponent("openclip-tiny")
        let clip = try CLIP(location: ModelLocation(directory: dir, layout: .openCLIP, modelId: "openclip-tiny"))
        let directions = Ops.l2Normalized(clip.encodeTexts(texts))                                           // [2, D']
        let decomposition = try CLIPDecomposer(tower: clip.vision).decompose(try clip.preprocessFiles([URL(fileURLWithPath: image)])[0])
        for k in 0..<2 {
            var want = 0.0, scale = 0.0
            for l in 0..<2 { for h in 0..<4 {
                for (j, v) in decomposition.attention(layer: l, head: h).enumerated() {
                    want += Double(v) * Double(directions.data[k * 24 + j]); scale += abs(Double(v))
                }
            } }
            let got = maps.data[(k * 16)..<((k + 1) * 16)].reduce(0.0) { $0 + Double($1) } + classTerms[k]
            XCTAssertEqual(got, want, accuracy: 1e-5 * scale, "text \(k)")
        }
        // One head, and a contrast file.
        let contrast = path(scratch, "contrast.txt")
        try "a photo\nan image\n".write(toFile: contrast, atomically: true, encoding: .utf8)
        let one = scratch.appendingPathComponent("one")
        let r2 = try refract(["heatmap", "--model", tinyModel, "--text", "dog", "--contrast", contrast, "--heads", "1.3",
                              "--convention", "gandelsman2024", "--output", one.path, image], environment: cacheEnvironment)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        let json2 = try JSONSerialization.jsonObject(with: Data(contentsOf: one.appendingPathComponent("heatmap.json"))) as! [String: Any]
        XCTAssertEqual(json2["heads"] as? String, "1.3")
        XCTAssertEqual((json2["contrast"] as? [String: Any])?["texts"] as? Int, 2)
        XCTAssertEqual(try NPY.read(one.appendingPathComponent("img0_40x32.npy")).shape, [1, 4, 4])
    }

    func testHeatmapBadInputs() throws {
        let image = path(Self.models, "inputs/img0_40x32.png")
        let out = path(scratch, "h")
        assertFailure(try refract(["heatmap", "--model", tinyModel, "--output", out, image]), mentions: ["--text"])
        assertFailure(try refract(["heatmap", "--model", tinyModel, "--text", "x", "--heads", "5.0", "--output", out, image],
                                  environment: cacheEnvironment), mentions: ["5.0", "does not exist"])
        assertFailure(try refract(["heatmap", "--model", tinyModel, "--text", "x", "--heads", "1.1", "--layers", "all",
                                   "--output", out, image]), mentions: ["not both"])
        assertFailure(try refract(["heatmap", "--model", tinyModel, "--text", "x", "--output", out, path(scratch, "missing.png")],
                                  environment: cacheEnvironment), mentions: ["missing.png"])
        assertFailure(try refract(["heatmap", "--model", tinyModel, "--text", "x", "--convention", "fair", "--output", out, image]),
                      mentions: ["faithful or gandelsman2024"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing is written when the inputs are bad")
    }

    /// A folder dataset (images/ + masks/) made from the fixture images with rectangular masks.
    func makeSegmentationFolder() throws -> URL {
        let root = scratch.appendingPathComponent("segdata")
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("images"), withIntermediateDirectories: true)
        try fm.createDirectory(at: root.appendingPathComponent("masks"), withIntermediateDirectories: true)
        for name in ["img0_40x32", "img1_32x48", "img2_64x64", "img3_33x31"] {
            let src = Self.models.appendingPathComponent("inputs/\(name).png")
            try fm.copyItem(at: src, to: root.appendingPathComponent("images/\(name).png"))
            let image = try ImageDecoder.decode(contentsOf: src)
            var pixels = [UInt8](repeating: 0, count: image.width * image.height * 3)
            for y in (image.height / 4)..<(3 * image.height / 4) {
                for x in (image.width / 3)..<image.width { for c in 0..<3 { pixels[(y * image.width + x) * 3 + c] = 255 } }
            }
            try PNGEncoder.write(RGBImage(width: image.width, height: image.height, pixels: pixels),
                                 to: root.appendingPathComponent("masks/\(name).png"))
        }
        return root
    }

    func testSegmentFolderDatasetWritesMetricsAndResumes() throws {
        let data = try makeSegmentationFolder()
        let out = path(scratch, "seg")
        let args = ["segment", "--model", tinyModel, "--dataset", data.path, "--output", out,
                    "--classes", path(Self.models, "inputs/classes.txt"), "--templates", path(Self.models, "inputs/templates.txt"),
                    "--save-images", "2"]
        var r = try refract(args, environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("images 4  pixel accuracy"), r.stdout)
        XCTAssertTrue(r.stdout.contains("published"), r.stdout)
        let metrics = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "metrics.json")))) as! [String: Any]
        XCTAssertEqual(metrics["images"] as? Int, 4)
        XCTAssertEqual(metrics["convention"] as? String, "gandelsman2024")
        XCTAssertEqual(metrics["alignment"] as? String, "exact")
        XCTAssertEqual(metrics["dataset"] as? String, data.path)
        for key in ["pixelAccuracy", "mIoU", "mAP", "foregroundIoU"] {
            let v = (metrics[key] as? NSNumber)?.doubleValue ?? -1
            XCTAssertTrue(v >= 0 && v <= 100, "\(key) = \(v)")
        }
        let totals = metrics["totals"] as! [String: Any]
        XCTAssertEqual((totals["labelled"] as? NSNumber)?.intValue, 4 * 32 * 32)
        let csv = try String(contentsOfFile: path(URL(fileURLWithPath: out), "per_image.csv"), encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 5)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path(URL(fileURLWithPath: out), "overlays")).count, 2)
        // Again into the same directory: refused without --resume; with it, the same numbers.
        assertFailure(try refract(args, environment: cacheEnvironment), mentions: ["--resume"])
        r = try refract(args + ["--resume"], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try String(contentsOfFile: path(URL(fileURLWithPath: out), "per_image.csv"), encoding: .utf8), csv)
        assertFailure(try refract(args + ["--resume", "--align", "gandelsman2024"], environment: cacheEnvironment),
                      mentions: ["other settings"])
    }

    func testSegmentBadInputs() throws {
        let out = path(scratch, "seg")
        assertFailure(try refract(["segment", "--model", tinyModel, "--dataset", path(scratch, "nowhere"), "--output", out]),
                      mentions: ["nowhere"])
        let data = try makeSegmentationFolder()
        assertFailure(try refract(["segment", "--model", tinyModel, "--dataset", data.path, "--output", out, "--align", "crop"]),
                      mentions: ["exact or gandelsman2024"])
        assertFailure(try refract(["segment", "--model", tinyModel, "--dataset", data.path, "--output", out, "--limit", "0"]),
                      mentions: ["--limit"])
        try FileManager.default.removeItem(at: data.appendingPathComponent("masks/img1_32x48.png"))
        assertFailure(try refract(["segment", "--model", tinyModel, "--dataset", data.path, "--output", out]),
                      mentions: ["img1_32x48"])
    }

    /// A damaged .mat on which libhdf5 1.10.8 crashed (a NULL memcpy, found by fuzzing when
    /// Refract read .mat files with libhdf5) is refused naming the file, with nothing written; a
    /// damaged but readable file is refused too, and an intact file still runs.
    func testDamagedMatFilesAreRefusedByName() throws {
        let fixtures = Self.models.deletingLastPathComponent().appendingPathComponent("segment")
        let crashing = fixtures.appendingPathComponent("hostile/libhdf5_null_memcpy.mat").path
        let out = path(scratch, "seg-hostile")
        let r = try refract(["segment", "--model", tinyModel, "--dataset", crashing, "--output", out])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(crashing) && r.stderr.contains("damaged"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let bad = fixtures.appendingPathComponent("data/bad_mask_values.mat").path
        assertFailure(try refract(["segment", "--model", tinyModel, "--dataset", bad, "--output", out]), mentions: [bad])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let good = fixtures.appendingPathComponent("data/gtsegs_ijcv.mat").path
        let ok = try refract(["segment", "--model", tinyModel, "--dataset", good, "--output", out, "--limit", "2",
                              "--classes", path(Self.models, "inputs/classes.txt"), "--templates", path(Self.models, "inputs/templates.txt")],
                             environment: cacheEnvironment)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("images 2  pixel accuracy"), ok.stdout)
    }
}
