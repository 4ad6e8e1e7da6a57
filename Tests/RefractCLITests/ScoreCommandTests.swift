import Foundation
import RefractTensor
import XCTest

/// `refract score` run as a user would: a tiny CLIP run end to end, a timm run through `refract align`,
/// and the inputs it refuses (non-zero exit, a message naming the option or file, nothing written).
extension CLITests {
    func scoreJSON(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: dir), "score.json")))) as! [String: Any]
    }

    func testScoreOnACLIPRunWritesTheReport() throws {
        let data = try labelledImages("cat", "dog")
        let run = path(scratch, "clip-run")
        let d = try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", run, data])
        XCTAssertEqual(d.status, 0, d.stderr)
        let out = path(scratch, "score")
        let r = try refract(["score", "--run", run, "--property", "location", "--texts", "beach, forest,desert,sea",
                             "--against", "color=red,blue", "--top", "3", "--output", out], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("location: beach, forest, desert, sea"), r.stdout)
        XCTAssertTrue(r.stdout.contains("rank  component"), r.stdout)
        XCTAssertEqual(r.stdout.split(separator: "\n").filter { $0.hasPrefix("   1 ") || $0.hasPrefix("   2 ") || $0.hasPrefix("   3 ") }.count, 3, r.stdout)
        let j = try scoreJSON(out)
        XCTAssertEqual(j["format"] as? String, "refract-score")
        XCTAssertEqual(j["formatVersion"] as? Int, 1)
        XCTAssertEqual(j["templates"] as? Int, 80)
        XCTAssertEqual((j["property"] as! [String: Any])["texts"] as? [String], ["beach", "forest", "desert", "sea"])
        XCTAssertEqual(((j["against"] as! [[String: Any]]).first)?["name"] as? String, "color")
        XCTAssertNil(j["alignment"])
        XCTAssertEqual((j["run"] as! [String: Any])["images"] as? Int, 4)
        let components = j["components"] as! [[String: Any]]
        // The tiny CLIP: init, 2 layers × (4 heads, attn_bias, mlp), readout_bias.
        XCTAssertEqual(components.first?["name"] as? String, "init")
        XCTAssertEqual(components.map { $0["rank"] as! Int }.sorted(), Array(1...components.count))
        for c in components {
            let a = c["varianceAttributed"] as! Double, e = c["varianceExplained"] as! Double, key = c["key"] as! Double
            let other = (c["others"] as! [String: Double])["color"]!
            XCTAssertEqual(key, a - max(0, other), accuracy: 1e-12)
            XCTAssertTrue(a >= -1 && a <= 1 && e >= -1e-9 && e <= 1 + 1e-9, "\(c)")
        }
        let rankings = j["rankings"] as! [String: Any]
        XCTAssertEqual((rankings["key"] as! [String]).count, components.count)
        let html = try String(contentsOfFile: path(URL(fileURLWithPath: out), "score.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("<ol class=\"bars\">") && !html.contains("http"), html)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: out), "score.md")))

        // The same scores again (the text embeddings now from the cache).
        let first = components.map { $0["varianceAttributed"] as! Double }
        let again = path(scratch, "score-again")
        XCTAssertEqual(try refract(["score", "--run", run, "--property", "location", "--texts", "beach,forest,desert,sea",
                                    "--against", "color=red,blue", "--output", again], environment: cacheEnvironment).status, 0)
        XCTAssertEqual((try scoreJSON(again)["components"] as! [[String: Any]]).map { $0["varianceAttributed"] as! Double }, first)

        // Refused: nothing written, the option named.
        func refused(_ args: [String], _ parts: [String], line: UInt = #line) throws {
            let o = path(scratch, "refused-\(UUID().uuidString)")
            let r = try refract(["score", "--run", run, "--output", o] + args, environment: cacheEnvironment)
            assertFailure(r, mentions: parts, line: line)
            XCTAssertFalse(FileManager.default.fileExists(atPath: o), "wrote \(o)", line: line)
        }
        try refused(["--property", "location"], ["--texts"])
        try refused(["--property", "location", "--texts", ""], ["text 1", "empty"])
        try refused(["--property", "location", "--texts", "beach,,sea"], ["--texts", "text 2", "empty"])
        try refused(["--property", "location", "--texts", "beach,sea,beach"], ["--texts", "'beach' is listed twice", "texts 1 and 3"])
        try refused(["--property", " ", "--texts", "beach"], ["--property", "empty name"])
        try refused(["--property", "location", "--texts", "beach", "--against", "red,blue"], ["--against", "NAME=text1,text2"])
        try refused(["--property", "location", "--texts", "beach", "--against", "location=red"], ["given twice"])
        try refused(["--property", "location", "--texts", "beach", "--model", path(Self.models, "hf-tiny"), "--layout", "transformers"],
                    ["weights sha256", "pass --model with the run's model"])
        try refused(["--property", "location", "--texts", "beach", "--align", path(scratch, "no-such-alignment")], ["no-such-alignment", "refract align"])
    }

    func testScoreOnATimmRunNeedsItsAlignmentAndItsCLIP() throws {
        let (run, e, data) = try alignInputs()
        let out = path(scratch, "score-timm")
        // Without --align: refused, pointing at refract align.
        var r = try refract(["score", "--run", run, "--property", "animal", "--texts", "cat,dog", "--output", out], environment: cacheEnvironment)
        assertFailure(r, mentions: ["refract align", "--align", run])
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        let align = path(scratch, "align")
        let a = try refract(["align", "--run", run, "--clip-embeddings", e, "--output", align, "--max-steps", "3"])
        XCTAssertEqual(a.status, 0, a.stderr)
        // The text model defaults to the alignment's CLIP.
        r = try refract(["score", "--run", run, "--align", align, "--property", "animal", "--texts", "cat,dog", "--minus", "place=grass,water",
                         "--output", out], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try scoreJSON(out)
        let alignment = j["alignment"] as! [String: Any]
        XCTAssertEqual(alignment["path"] as? String, URL(fileURLWithPath: align).standardizedFileURL.path)
        XCTAssertEqual((j["minus"] as! [String: Any])["name"] as? String, "place")
        let components = j["components"] as! [[String: Any]]
        XCTAssertEqual(components.count, 20)
        for c in components {
            XCTAssertEqual(c["key"] as! Double, (c["varianceAttributed"] as! Double) - (c["others"] as! [String: Double])["place"]!, accuracy: 1e-12)
        }
        // Another CLIP's text tower is refused, naming the alignment; an alignment on a CLIP run too.
        r = try refract(["score", "--run", run, "--align", align, "--model", path(Self.models, "hf-tiny"), "--property", "animal", "--texts", "cat,dog"],
                        environment: cacheEnvironment)
        assertFailure(r, mentions: ["--model", "align/manifest.json", "pass --model with that CLIP model"])
        let clipRun = path(scratch, "clip-run")
        XCTAssertEqual(try refract(["decompose", "--model", path(Self.models, "openclip-tiny"), "--output", clipRun, data]).status, 0)
        r = try refract(["score", "--run", clipRun, "--align", align, "--property", "animal", "--texts", "cat,dog"], environment: cacheEnvironment)
        assertFailure(r, mentions: ["leave out --align", clipRun])
    }
}
