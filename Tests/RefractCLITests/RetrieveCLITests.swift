import Foundation
import RefractStore
import RefractTensor
import XCTest

/// refract retrieve, run as a user would, on a tiny decomposition run.
extension CLITests {
    func retrievalJSON(_ dir: String) throws -> [String: Any] {
        let url = URL(fileURLWithPath: path(URL(fileURLWithPath: dir), "retrieval.json"))
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    }

    func testRetrieveWritesJSONAndContactSheet() throws {
        let run = try decomposedRun()                     // rows: cat/0, cat/1, dog/2, dog/3, dog/4 (a copy of 0)
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: run), "manifest.json")))) as! [String: Any]
        let images = (manifest["images"] as! [[String: Any]]).map { $0["path"] as! String }
        XCTAssertEqual(images.count, 5)

        // A row of the run.
        let out = path(scratch, "ret")
        var r = try refract(["retrieve", "--run", run, "--index", "1", "--heads", "1.2,0.3", "--top", "3", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        var json = try retrievalJSON(out)
        XCTAssertEqual(json["formatVersion"] as? Int, 1)
        XCTAssertEqual(json["heads"] as? [String], ["0.3", "1.2"])
        XCTAssertEqual(json["metric"] as? String, "cosine")
        XCTAssertEqual(json["weightsSHA256"] as? String, (manifest["model"] as! [String: Any])["weightsSHA256"] as? String)
        XCTAssertEqual(json["convention"] as? String, "faithful")
        XCTAssertEqual(json["candidates"] as? Int, 4)
        var query = json["query"] as! [String: Any]
        XCTAssertEqual(query["row"] as? Int, 1)
        XCTAssertEqual(query["label"] as? String, "cat")
        var results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["rank"] as! Int }, [1, 2, 3])
        XCTAssertFalse(results.contains { $0["row"] as! Int == 1 })
        let scores = results.map { $0["score"] as! Double }
        XCTAssertEqual(scores, scores.sorted(by: >))
        XCTAssertEqual(results.map { $0["path"] as! String }, results.map { images[$0["row"] as! Int] })
        var html = try String(contentsOfFile: path(URL(fileURLWithPath: out), "retrieval.html"), encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, 4, "query + 3 thumbnails")
        XCTAssertTrue(html.contains("Retrieval by heads 0.3, 1.2"))
        XCTAssertTrue(r.stdout.contains("  1. ") && r.stdout.contains("row "), r.stdout)

        // A file of the run: its row, left out; its copy (row 4) comes first with cosine 1.
        r = try refract(["retrieve", "--run", run, "--image", images[0], "--heads", "1.0", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        json = try retrievalJSON(out)
        query = json["query"] as! [String: Any]
        XCTAssertEqual(query["source"] as? String, "run")
        XCTAssertEqual(query["row"] as? Int, 0)
        results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.count, 4, "top 15 of the 4 other rows")
        XCTAssertEqual(results[0]["row"] as? Int, 4)
        XCTAssertEqual(results[0]["score"] as! Double, 1, accuracy: 1e-6)
        XCTAssertTrue(r.stdout.contains("row 0 of the run"), r.stdout)

        // A file that is not in the run (the fixture the copies were made from): decomposed; its copies first.
        let inputs = Self.models.appendingPathComponent("inputs")
        let original = inputs.appendingPathComponent(URL(fileURLWithPath: images[2]).lastPathComponent.split(separator: "-", maxSplits: 1)[1].description)
        r = try refract(["retrieve", "--run", run, "--image", original.path, "--heads", "1.0,1.3", "--top", "2", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        json = try retrievalJSON(out)
        query = json["query"] as! [String: Any]
        XCTAssertEqual(query["source"] as? String, "decomposed")
        XCTAssertNil(query["row"] as? Int)
        results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results[0]["row"] as? Int, 2)
        XCTAssertEqual(results[0]["score"] as! Double, 1, accuracy: 1e-5)

        // A text, by dot product; a missing source image gets a placeholder, not a crash.
        try FileManager.default.removeItem(atPath: images[3])
        r = try refract(["retrieve", "--run", run, "--text", "a photo of a dog", "--metric", "dot", "--heads", "1.1",
                         "--top", "5", "--output", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        json = try retrievalJSON(out)
        XCTAssertEqual(json["metric"] as? String, "dot")
        XCTAssertEqual((json["query"] as! [String: Any])["text"] as? String, "a photo of a dog")
        XCTAssertEqual((json["results"] as! [[String: Any]]).count, 5)
        html = try String(contentsOfFile: path(URL(fileURLWithPath: out), "retrieval.html"), encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, 4)
        XCTAssertTrue(html.contains("image not available"))
        XCTAssertTrue(html.contains(images[3]))
    }

    func testRetrieveBadInputs() throws {
        let run = try decomposedRun()
        let out = path(scratch, "bad-out")
        let cases: [([String], [String])] = [
            (["--index", "0", "--heads", "5.0"], ["head 5.0 does not exist", "layers 0...1"]),
            (["--index", "0", "--heads", "1.x"], ["LAYER.HEAD"]),
            (["--index", "5", "--heads", "1.0"], [run, "index 5 is outside the run's 5 rows"]),
            (["--heads", "1.0"], ["give a query"]),
            (["--index", "0", "--text", "a dog", "--heads", "1.0"], ["not several"]),
            (["--index", "0", "--heads", "1.0", "--metric", "euclid"], ["--metric must be cosine or dot"]),
            (["--index", "0", "--heads", "1.0", "--top", "0"], ["--top 0 is out of range: allowed 1...100000"]),
            (["--image", path(scratch, "nothing.png"), "--heads", "1.0"], ["nothing.png"]),
        ]
        for (args, parts) in cases {
            let r = try refract(["retrieve", "--run", run, "--output", out] + args)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            for p in parts { XCTAssertTrue(r.stderr.contains(p), "\(args): '\(p)' not in \(r.stderr)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing written on failure")

        // Not a decomposition run; an incomplete run.
        let header = StoreHeader(
            model: StoreModelInfo(id: "m", layout: "openclip", weightsSHA256: String(repeating: "0", count: 64), weightFiles: []),
            convention: "faithful", dimensions: ["layers": 1, "heads": 1, "embedDim": 2],
            tensors: [StoreTensorSpec(name: "embedding", shape: [2])],
            images: [StoreImage(path: "a.png"), StoreImage(path: "b.png")], shardSize: 1)
        let plain = path(scratch, "plain")
        let writer = try StoreWriter.open(at: URL(fileURLWithPath: plain), header: header, constants: [:], createdBy: "test", resume: false)
        try writer.writeShard(0, imageIndices: [0], rows: ["embedding": Tensor(shape: [1, 2], data: [1, 2])], skipped: [])
        var r = try refract(["retrieve", "--run", plain, "--index", "0", "--heads", "0.0", "--output", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains(plain) && r.stderr.contains("incomplete"), r.stderr)
        try writer.writeShard(1, imageIndices: [1], rows: ["embedding": Tensor(shape: [1, 2], data: [3, 4])], skipped: [])
        try writer.finish()
        r = try refract(["retrieve", "--run", plain, "--index", "0", "--heads", "0.0", "--output", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("manifest.json") && r.stderr.contains("not a decomposition run"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
