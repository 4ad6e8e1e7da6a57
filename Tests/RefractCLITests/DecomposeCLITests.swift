import Foundation
import RefractStore
import RefractTensor
import XCTest

/// refract decompose / export / ablate, run as a user would.
extension CLITests {
    var tinyModel: String { Self.models.appendingPathComponent("openclip-tiny").path }

    /// Two class folders of fixture images (2 + 3 images).
    func classFolders() throws -> URL {
        let inputs = Self.models.appendingPathComponent("inputs")
        let names = try FileManager.default.contentsOfDirectory(atPath: inputs.path).filter { $0.hasSuffix(".png") }.sorted()
        let root = scratch.appendingPathComponent("data")
        for (i, name) in (names + [names[0]]).enumerated() {
            let dir = root.appendingPathComponent(i < 2 ? "cat" : "dog")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: inputs.appendingPathComponent(name), to: dir.appendingPathComponent("\(i)-\(name)"))
        }
        return root
    }

    func testDecomposeExportAndAblate() throws {
        let data = try classFolders()
        let run = path(scratch, "run")
        var r = try refract(["decompose", "--model", tinyModel, "--output", run, "--tokens", "last:1", "--dtype", "float16", data.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("5 of 5 images"), r.stderr)
        let export = path(scratch, "export")
        r = try refract(["export", "--run", run, "--format", "npy", "--output", export])
        XCTAssertEqual(r.status, 0, r.stderr)
        let attn = try NPY.read(URL(fileURLWithPath: export).appendingPathComponent("attn.npy"))
        XCTAssertEqual(attn.shape, [5, 2, 4, 24])
        XCTAssertEqual(try NPY.read(URL(fileURLWithPath: export).appendingPathComponent("attn_tokens.npy")).shape, [5, 1, 4, 17, 24])
        let labels = try String(contentsOfFile: path(URL(fileURLWithPath: export), "labels.txt"), encoding: .utf8)
        XCTAssertEqual(labels.split(separator: "\n"), ["cat", "cat", "dog", "dog", "dog"])
        // Ablation with the run's own classes.
        let classes = path(scratch, "classes.txt")
        try "cat\ndog\n".write(toFile: classes, atomically: true, encoding: .utf8)
        let out = path(scratch, "ablation")
        r = try refract(["ablate", "--run", run, "--classes", classes, "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("attn_upto_1"), r.stdout)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "ablation.json")))) as! [String: Any]
        XCTAssertEqual((json["studies"] as! [[String: Any]]).count, 6)
        XCTAssertEqual(json["labelMapping"] as? String, "labels are class names")
        let csv = try String(contentsOfFile: path(URL(fileURLWithPath: out), "ablation.csv"), encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 7)
        let png = try Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "ablation.png")))
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        // Wrong number of classes (names that are not the run's labels): a clear error, non-zero exit.
        try "tench\ngoldfish\nshark\n".write(toFile: classes, atomically: true, encoding: .utf8)
        r = try refract(["ablate", "--run", run, "--classes", classes, "--output", path(scratch, "ablation2")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("3 classes, but the run has 2"), r.stderr)
    }

    func testKilledRunResumesToTheSameBits() throws {
        let data = try classFolders()
        let whole = path(scratch, "whole"), killed = path(scratch, "killed")
        let common = ["decompose", "--model", tinyModel, "--shard-size", "1", "--batch-size", "1", "--tokens", "all", data.path]
        var r = try refract(common + ["--output", whole])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try refract(common + ["--output", killed], environment: ["REFRACT_FAULT_AFTER_SHARDS": "2"])
        XCTAssertEqual(lastTerminationReason, .uncaughtSignal, "the run was killed: \(r.stderr)")
        // A killed run never looks finished.
        r = try refract(["export", "--run", killed, "--output", path(scratch, "e0")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("incomplete"), r.stderr)
        // Without --resume the directory is refused; with it the run completes.
        r = try refract(common + ["--output", killed])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--resume"), r.stderr)
        r = try refract(common + ["--output", killed, "--resume"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("3 written now"), r.stderr)
        // Bit for bit: every exported array is byte-identical.
        for (run, out) in [(whole, "e1"), (killed, "e2")] {
            XCTAssertEqual(try refract(["export", "--run", run, "--output", path(scratch, out)]).status, 0)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: path(scratch, "e1")).filter { $0.hasSuffix(".npy") }.sorted()
        XCTAssertTrue(files.contains("attn_tokens.npy"))
        for f in files {
            let a = try Data(contentsOf: URL(fileURLWithPath: path(scratch, "e1/\(f)")))
            let b = try Data(contentsOf: URL(fileURLWithPath: path(scratch, "e2/\(f)")))
            XCTAssertTrue(a == b, "\(f) differs after kill and resume")
        }
    }

    func testBadRunsAndMixedModelsAreRefused() throws {
        let data = try classFolders()
        let a = path(scratch, "a"), b = path(scratch, "b")
        XCTAssertEqual(try refract(["decompose", "--model", tinyModel, "--output", a, data.path]).status, 0)
        XCTAssertEqual(try refract(["decompose", "--model", Self.models.appendingPathComponent("hf-tiny").path,
                                    "--output", b, data.path]).status, 0)
        let classes = path(scratch, "classes.txt")
        try "cat\ndog\n".write(toFile: classes, atomically: true, encoding: .utf8)
        var r = try refract(["ablate", "--run", a, "--means-from", b, "--classes", classes, "--output", path(scratch, "x")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("different models"), r.stderr)
        // A corrupt and a foreign manifest: errors that name the file.
        let manifest = URL(fileURLWithPath: a).appendingPathComponent("manifest.json")
        for (content, expected) in [("{not json", "manifest.json"), ("{\"hello\": 1}", "manifest.json")] {
            try content.write(to: manifest, atomically: true, encoding: .utf8)
            r = try refract(["export", "--run", a, "--output", path(scratch, "y")])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: path(scratch, "y/manifest.json")))
        }
        // Bad options.
        r = try refract(["decompose", "--model", tinyModel, "--output", path(scratch, "c"), "--tokens", "7", data.path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("layer 7 does not exist"), r.stderr)
        r = try refract(["decompose", "--model", tinyModel, "--output", path(scratch, "c"), "--convention", "exact", data.path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("faithful, gandelsman2024 (CLIP) or balasubramanian2024 (timm)"), r.stderr)
    }
}
