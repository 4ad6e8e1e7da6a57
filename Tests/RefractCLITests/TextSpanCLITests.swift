import Foundation
import RefractTensor
import XCTest

/// refract textspan / heads, run as a user would.
extension CLITests {
    func decomposedRun() throws -> String {
        let run = path(scratch, "ts-run")
        let r = try refract(["decompose", "--model", tinyModel, "--output", run, try classFolders().path])
        XCTAssertEqual(r.status, 0, r.stderr)
        return run
    }

    var cacheEnvironment: [String: String] { ["REFRACT_CACHE_DIR": path(scratch, "cache")] }

    func testTextSpanWritesReportsAndHeadsRanks() throws {
        let run = try decomposedRun()
        let pool = path(scratch, "pool.txt")
        try "a photo of a dog\na photo of a cat\n\nsnow\na photo of a dog\nnight\nwater\n<b>bold</b>\n".write(toFile: pool, atomically: true, encoding: .utf8)
        let classes = path(scratch, "classes.txt")
        try "cat\ndog\n".write(toFile: classes, atomically: true, encoding: .utf8)
        let out = path(scratch, "textspan")
        var r = try refract(["textspan", "--run", run, "--descriptions", pool, "--output", out, "--layers", "last:1",
                             "--per-head", "3", "--rank", "4", "--classes", classes], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("6 descriptions (computed)"), r.stderr)
        XCTAssertTrue(r.stdout.contains("L1.H0:"), r.stdout)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path(URL(fileURLWithPath: out), "textspan.json")))) as! [String: Any]
        let heads = json["heads"] as! [[String: Any]]
        XCTAssertEqual(heads.map { $0["name"] as! String }, ["L1.H0", "L1.H1", "L1.H2", "L1.H3"])
        XCTAssertEqual((heads[0]["descriptions"] as! [[String: Any]]).count, 3)
        let poolInfo = json["pool"] as! [String: Any]
        XCTAssertEqual(poolInfo["blank"] as? Int, 1)
        XCTAssertEqual(poolInfo["duplicates"] as? Int, 1)
        XCTAssertEqual(((json["accuracy"] as! [String: Any])["rows"] as! [Any]).count, 4)
        let html = try String(contentsOfFile: path(URL(fileURLWithPath: out), "textspan.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("L1.H3"))
        XCTAssertFalse(html.contains("<b>bold</b>"), "descriptions are escaped")
        XCTAssertTrue(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: out), "textspan.md")))
        // Second time: the embeddings come from the cache.
        r = try refract(["textspan", "--run", run, "--descriptions", pool, "--output", out, "--heads", "1.2,0.1",
                         "--per-head", "2", "--rank", "3"], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("(cache)"), r.stderr)
        // heads --text
        r = try refract(["heads", "--run", run, "--text", "a photo taken at night", "--top", "3", "--json"], environment: cacheEnvironment)
        XCTAssertEqual(r.status, 0, r.stderr)
        let ranking = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        XCTAssertEqual(ranking.count, 3)
        let variances = ranking.map { $0["variance"] as! Double }
        XCTAssertEqual(variances, variances.sorted(by: >))
    }

    func testTextSpanBadInputs() throws {
        let run = try decomposedRun()
        let pool = path(scratch, "pool.txt")
        try "snow\nnight\nwater\n".write(toFile: pool, atomically: true, encoding: .utf8)
        let empty = path(scratch, "empty.txt")
        try "\n\n".write(toFile: empty, atomically: true, encoding: .utf8)
        let out = path(scratch, "o")
        let cases: [([String], String)] = [
            (["--descriptions", empty], "no descriptions"),
            (["--descriptions", pool, "--per-head", "4"], "larger than the pool"),
            (["--descriptions", pool, "--heads", "5.0"], "does not exist"),
            (["--descriptions", pool, "--heads", "1.1", "--layers", "last:1"], "not both"),
            (["--descriptions", pool, "--heads", "1.1", "--per-head", "2", "--rank", "50"], "rank"),
        ]
        for (args, expected) in cases {
            let r = try refract(["textspan", "--run", run, "--output", out] + args, environment: cacheEnvironment)
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains(expected), "\(args): \(r.stderr)")
        }
        // Precomputed embeddings with a NaN, and with the wrong number of rows.
        let npy = path(scratch, "e.npy")
        var rows = [Float](repeating: 0.5, count: 3 * 24)
        rows[30] = .nan
        try NPY.write(Tensor(shape: [3, 24], data: rows), to: URL(fileURLWithPath: npy))
        var r = try refract(["textspan", "--run", run, "--output", out, "--descriptions", pool, "--heads", "1.1",
                             "--per-head", "2", "--text-embeddings", npy], environment: cacheEnvironment)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("non-finite"), r.stderr)
        try NPY.write(Tensor(shape: [2, 24], data: [Float](repeating: 0.5, count: 48)), to: URL(fileURLWithPath: npy))
        r = try refract(["textspan", "--run", run, "--output", out, "--descriptions", pool, "--heads", "1.1",
                         "--per-head", "2", "--text-embeddings", npy], environment: cacheEnvironment)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("rows must align"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path(URL(fileURLWithPath: out), "textspan.json")))
    }
}
