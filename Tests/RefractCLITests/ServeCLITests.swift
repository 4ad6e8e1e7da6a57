import Foundation
import RefractTestSupport
import XCTest

/// `refract serve` as a user starts it: a timm run through its alignment (text and heatmaps in
/// the alignment's CLIP space), the warning for an address other than loopback, and a CLIP run
/// whose model cannot be found (served without text features, saying so).
extension CLITests {
    func testServeATimmRunThroughItsAlignment() throws {
        let (run, e, _) = try alignInputs()                                                // DeiT run (faithful) + tiny CLIP targets
        let align = path(scratch, "align")
        let clip = path(Self.models, "openclip-tiny")
        var r = try refract(["align", "--run", run, "--clip-embeddings", e, "--clip", clip, "--output", align] + Self.smallTraining)
        XCTAssertEqual(r.status, 0, r.stderr)
        let clock = TestClock(limit: 100)
        // Any address but loopback: served, with a warning.
        let server = try start(Self.binary, ["serve", "--run", run, "--align", align, "--host", "0.0.0.0", "--port", "0"],
                               environment: environment(unsetting: Self.proxyVariables), label: "refract serve (timm)")
        defer { stop(server) }
        let port = try waitForServeLine(server, clock: clock, host: "0.0.0.0").port
        let warning = (try? String(contentsOf: server.stderr, encoding: .utf8)) ?? ""
        XCTAssertTrue(warning.contains("warning: listening on 0.0.0.0"), warning)
        // A second server on the same address: a clear refusal, not a stack of NIO's words.
        r = try refract(["serve", "--run", run, "--no-text", "--host", "0.0.0.0", "--port", String(port)])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("cannot serve on 0.0.0.0:\(port): the address is already in use; choose another --port"), r.stderr)
        let info = try XCTUnwrap(try LoopbackHTTP.json(port: port, path: "/api/run").value as? [String: Any])
        XCTAssertEqual(info["family"] as? String, "timm")
        XCTAssertEqual(info["aligned"] as? Bool, true)
        XCTAssertEqual(info["text"] as? Bool, true)
        XCTAssertEqual(info["heatmaps"] as? Bool, true)
        XCTAssertEqual(info["componentCount"] as? Int, 20)
        let ranking = try LoopbackHTTP.json(port: port, path: "/api/rank?text=a%20photo%20of%20a%20dog&top=5")
        XCTAssertEqual(ranking.status, 200)
        let ranked = try XCTUnwrap((ranking.value as? [String: Any])?["components"] as? [[String: Any]])
        XCTAssertEqual(ranked.count, 5)
        // The contributions along a text sum to the aligned sum along it.
        let c = try XCTUnwrap(try LoopbackHTTP.json(port: port, path: "/api/images/1/contributions?text=dog").value as? [String: Any])
        let values = try XCTUnwrap(c["components"] as? [[String: Any]]).compactMap { $0["value"] as? Double }
        XCTAssertEqual(values.reduce(0, +), try XCTUnwrap(c["total"] as? Double), accuracy: 1e-9)
        // A heatmap of two heads, computed with the run's own model through the maps.
        let components = try XCTUnwrap((try LoopbackHTTP.json(port: port, path: "/api/components").value as? [String: Any])?["components"] as? [[String: Any]])
        let heads = components.filter { $0["kind"] as? String == "head" }.prefix(2).compactMap { $0["index"] as? Int }
        XCTAssertEqual(heads.count, 2)
        let heat = try LoopbackHTTP.get(port: port, path: "/api/images/0/heatmap?text=a%20dog&components=\(heads.map(String.init).joined(separator: ","))")
        XCTAssertEqual(heat.status, 200, heat.text)
        XCTAssertEqual(Array(heat.body.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        // Every component's page and neighbours answer (init, heads, MLPs, constants alike).
        for c in components {
            let k = try XCTUnwrap(c["index"] as? Int)
            XCTAssertEqual(try LoopbackHTTP.get(port: port, path: "/api/components/\(k)").status, 200, "\(c)")
            XCTAssertEqual(try LoopbackHTTP.get(port: port, path: "/api/components/\(k)/neighbors?row=0&top=2").status, 200, "\(c)")
        }
        let notHead = try XCTUnwrap(components.first { $0["kind"] as? String == "init" }?["index"] as? Int)
        XCTAssertEqual(try LoopbackHTTP.get(port: port, path: "/api/images/0/heatmap?text=dog&components=\(notHead)").status, 422)

        // A CLIP run whose model id no longer resolves (offline, not in the cache): served without
        // text, saying why; text requests are 409.
        let data = try classFolders()
        let moved = path(scratch, "model-moved")
        try FileManager.default.copyItem(atPath: tinyModel, toPath: moved)
        let clipRun = path(scratch, "clip-run")
        r = try refract(["decompose", "--model", moved, "--output", clipRun, data.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        try FileManager.default.removeItem(atPath: moved)
        let plain = try start(Self.binary, ["serve", "--run", clipRun, "--port", "0"], environment: environment(unsetting: Self.proxyVariables),
                              label: "refract serve (no model)")
        defer { stop(plain) }
        let port2 = try waitForServeLine(plain, clock: clock).port
        let note = (try? String(contentsOf: plain.stderr, encoding: .utf8)) ?? ""
        XCTAssertTrue(note.contains("no text model") && note.contains("--model"), note)
        let info2 = try XCTUnwrap(try LoopbackHTTP.json(port: port2, path: "/api/run").value as? [String: Any])
        XCTAssertEqual(info2["text"] as? Bool, false)
        XCTAssertEqual(try LoopbackHTTP.get(port: port2, path: "/api/rank?text=dog").status, 409)
        XCTAssertEqual(try LoopbackHTTP.get(port: port2, path: "/api/components/1").status, 200)
        // A part of a split run is refused (merge it first), with a clear message and a non-zero exit.
        let part = path(scratch, "part")
        XCTAssertEqual(try refract(["decompose", "--model", tinyModel, "--part", "0/2", "--shard-size", "1", "--output", part, data.path]).status, 0)
        r = try refract(["serve", "--run", part, "--port", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("refract merge"), r.stderr)
    }
}
