import Foundation
import RefractTensor
import XCTest

/// refract spurious, run as a user would, on a small Waterbirds-like layout.
extension CLITests {
    /// A layout dir with 8 fixture-image copies in bird folders, metadata.csv (plus a row not in the
    /// run) and a decomposition run of the 8 images; returns (run, metadata).
    func waterbirdsRun() throws -> (run: String, metadata: String) {
        let root = scratch.appendingPathComponent("wb")
        let inputs = Self.models.appendingPathComponent("inputs")
        let pngs = ["img0_40x32.png", "img1_32x48.png", "img2_64x64.png", "img3_33x31.png"]
        var meta = "img_filename,y,split,place,place_filename\n", list = "img_filename\n"
        for k in 0..<8 {
            let name = "\(k % 2 == 0 ? "001.Sparrow" : "002.Gull")/b\(k).png"
            try FileManager.default.createDirectory(at: root.appendingPathComponent(name).deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: inputs.appendingPathComponent(pngs[(k * 3) % 4]), to: root.appendingPathComponent(name))
            meta += "\(name),\(k % 2),\(k < 6 ? 2 : 1),\((k / 2) % 2),x.jpg\n"
            list += "\(name)\n"
        }
        meta += "003.Other/missing.png,0,2,1,x.jpg\n"
        try meta.write(to: root.appendingPathComponent("metadata.csv"), atomically: true, encoding: .utf8)
        try list.write(to: root.appendingPathComponent("list.csv"), atomically: true, encoding: .utf8)
        let run = path(scratch, "wb-run")
        let r = try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", run, path(root, "list.csv")])
        XCTAssertEqual(r.status, 0, r.stderr)
        return (run, path(root, "metadata.csv"))
    }

    func testSpuriousWritesReportForExplicitAndTextChosenHeads() throws {
        let (run, metadata) = try waterbirdsRun()
        let out = path(scratch, "spurious")
        var r = try refract(["spurious", "--run", run, "--metadata", metadata, "--classes", "landbird,waterbird", "--ablate", "1.3,0.2",
                             "--random-draws", "3", "--seed", "5", "--split", "test", "--output", out], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("heads: 0.2, 1.3"), r.stdout)
        XCTAssertTrue(r.stdout.contains("worst group"), r.stdout)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "spurious.json")))) as! [String: Any]
        XCTAssertEqual(json["classes"] as? [String], ["landbird", "waterbird"])
        let evaluation = json["evaluation"] as! [String: Any]
        XCTAssertEqual(evaluation["images"] as? Int, 6)
        XCTAssertEqual(evaluation["split"] as? String, "test")
        XCTAssertEqual(evaluation["metadataRowsNotInRun"] as? Int, 1)
        XCTAssertEqual(evaluation["runImagesOutsideSplit"] as? Int, 2)
        XCTAssertEqual(evaluation["imagesPerGroup"] as? [String: Int],
                       ["landbird on land": 2, "waterbird on land": 2, "landbird on water": 1, "waterbird on water": 1])
        let settings = json["settings"] as! [[String: Any]]
        XCTAssertEqual(settings.map { $0["id"] as! String }, ["base", "ablated"])
        let random = json["random"] as! [String: Any]
        XCTAssertEqual((random["draws"] as! [Any]).count, 3)
        XCTAssertEqual(random["seed"] as? Int, 5)
        let md = try String(contentsOfFile: path(URL(fileURLWithPath: out), "spurious.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("| base |"), md)
        XCTAssertTrue(md.contains("ViT-B-16"), md)

        // Same seed, same draws; by text, with the paper ablations and a class file.
        let first = try Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "spurious.json")))
        r = try refract(["spurious", "--run", run, "--metadata", metadata, "--classes", "landbird,waterbird", "--ablate", "1.3,0.2",
                         "--random-draws", "3", "--seed", "5", "--split", "test", "--output", out], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "spurious.json"))), first)
        let classes = path(scratch, "birds.txt")
        try "landbird\nwaterbird\n".write(toFile: classes, atomically: true, encoding: .utf8)
        let out2 = path(scratch, "spurious-text")
        r = try refract(["spurious", "--run", run, "--metadata", metadata, "--classes", classes, "--ablate-by-text", "water",
                         "--top", "2", "--paper-ablations", "--output", out2], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let j2 = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out2), "spurious.json")))) as! [String: Any]
        let heads = j2["heads"] as! [[String: Any]]
        XCTAssertEqual(heads.count, 2)
        XCTAssertTrue(heads.allSatisfy { ($0["reason"] as! String).contains("along \"water\"") }, "\(heads)")
        XCTAssertEqual((j2["selection"] as! [String: Any])["method"] as? String, "text-variance")
        XCTAssertEqual((j2["settings"] as! [[String: Any]]).map { $0["id"] as! String }, ["base", "paper_ablations", "ablated"])
        XCTAssertEqual((j2["evaluation"] as! [String: Any])["images"] as? Int, 8)

        // By TextSpan descriptions.
        let pool = path(scratch, "pool.txt")
        try "a lake\na forest\nthe beach\na red bird\n".write(toFile: pool, atomically: true, encoding: .utf8)
        let ts = path(scratch, "ts")
        r = try refract(["textspan", "--run", run, "--descriptions", pool, "--output", ts, "--layers", "all", "--per-head", "2", "--rank", "3"],
                        environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let out3 = path(scratch, "spurious-ts")
        r = try refract(["spurious", "--run", run, "--metadata", metadata, "--classes", "landbird,waterbird", "--ablate-by-text", "water",
                         "--textspan", ts, "--top", "3", "--random-draws", "0", "--output", out3], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let j3 = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out3), "spurious.json")))) as! [String: Any]
        XCTAssertEqual((j3["heads"] as! [[String: Any]]).count, 3)
        XCTAssertEqual((j3["selection"] as! [String: Any])["method"] as? String, "textspan")
        XCTAssertNil(j3["random"])
    }

    func testSpuriousBadInputs() throws {
        let (run, metadata) = try waterbirdsRun()
        let out = path(scratch, "bad-out")
        let noY = path(scratch, "noy.csv")
        try "img_filename,split,place\na.png,2,0\n".write(toFile: noY, atomically: true, encoding: .utf8)
        let textY = path(scratch, "texty.csv")
        let original = try String(contentsOfFile: metadata, encoding: .utf8).components(separatedBy: "\n")
        var rows = original
        rows[3] = rows[3].replacingOccurrences(of: "001.Sparrow/b2.png,0,", with: "001.Sparrow/b2.png,landbird,")
        try rows.joined(separator: "\n").write(toFile: textY, atomically: true, encoding: .utf8)
        let partial = path(URL(fileURLWithPath: metadata).deletingLastPathComponent(), "partial.csv")
        try original.prefix(5).joined(separator: "\n").appending("\n").write(toFile: partial, atomically: true, encoding: .utf8)
        let base = ["spurious", "--run", run, "--output", out]
        let cases: [([String], [String])] = [
            (["--metadata", noY, "--classes", "a,b", "--ablate", "1.1"], ["noy.csv", "missing column y"]),
            (["--metadata", textY, "--classes", "a,b", "--ablate", "1.1"], ["texty.csv:4", "not an integer"]),
            (["--metadata", partial, "--classes", "a,b", "--ablate", "1.1"], ["partial.csv", "4 images of", "have no row", "b4.png"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate", "4.1"], ["head 4.1 does not exist"]),
            (["--metadata", metadata, "--classes", "landbird,waterbird,seabird", "--ablate", "1.1"], ["3 classes", "exactly 2"]),
            (["--metadata", metadata, "--classes", "a,b"], ["--ablate or --ablate-by-text"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate", "1.1", "--ablate-by-text", "water"], ["--ablate or --ablate-by-text"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate", "1.1", "--split", "holdout"], ["holdout"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate", "1.1", "--split", "train"], ["train split"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate-by-text", "water", "--top", "9"], ["9 heads asked for", "only 8"]),
            (["--metadata", metadata, "--classes", "a,b", "--ablate-by-text", "water", "--textspan", path(scratch, "nope")], ["nope", "no such file"]),
        ]
        for (args, mentions) in cases {
            assertFailure(try refract(base + args, environment: cacheEnvironment), mentions: mentions)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing is written on failure")
    }
}
