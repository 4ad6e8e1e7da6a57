import Foundation
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractExplore
@testable import RefractServe

/// Shorthands for the shared loopback client (RefractTestSupport's LoopbackHTTP).
func rawHTTP(port: Int, _ request: String, body: [UInt8] = []) throws -> LoopbackHTTP.Response {
    try LoopbackHTTP.exchange(port: port, request: request, body: body)
}

func get(_ port: Int, _ path: String) throws -> LoopbackHTTP.Response {
    try LoopbackHTTP.get(port: port, path: path)
}

/// The port a started server listens on.
final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int?
    func set(_ p: Int) { lock.lock(); value = p; lock.unlock() }
    var port: Int? { lock.lock(); defer { lock.unlock() }; return value }
}

final class StatusList: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Int]
    init(count: Int) { items = Array(repeating: 0, count: count) }
    func set(_ i: Int, _ v: Int) { lock.lock(); items[i] = v; lock.unlock() }
    var values: [Int] { lock.lock(); defer { lock.unlock() }; return items }
}

final class ServerTests: XCTestCase {
    /// Synchronous on purpose: the test's own blocking socket calls must not occupy Swift
    /// concurrency's threads, which the server's handlers run on (on a 1-core machine, one).
    func testPagesAPIAndHostileRequestsOverHTTP() throws {
        try BLAS.load()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try ExplorerFixture.model()
        let reader = try ExplorerFixture.run(in: dir, model: model)
        let explorer = try Explorer(reader: reader, alignment: nil, textspan: nil, clip: model, heatmaps: true)
        let box = PortBox()
        let server = Task { try await ExplorerServer.run(explorer, host: "127.0.0.1", port: 0) { box.set($0) } }
        defer { server.cancel() }
        var waited = 0
        while box.port == nil && waited < 1000 { usleep(10_000); waited += 1 }
        let port = try XCTUnwrap(box.port)

        // The pages: the document, its script and style, from this server only (no CDN, no external fonts).
        for (path, type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
            let r = try get(port, path)
            XCTAssertEqual(r.status, 200, path)
            XCTAssertTrue(r.headers.lowercased().contains("content-type: \(type)"), r.headers)
            XCTAssertTrue(r.headers.lowercased().contains("content-security-policy: default-src 'self'"), r.headers)
            let text = String(decoding: r.body, as: UTF8.self)
            XCTAssertFalse(text.isEmpty)
            // The one absolute URL allowed is SVG's namespace name, which is never fetched.
            let stripped = text.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
            for external in ["http://", "https://", "//cdn", "@import", "fonts.googleapis"] {
                XCTAssertFalse(stripped.contains(external), "\(path) refers to \(external)")
            }
        }
        XCTAssertTrue(String(decoding: try get(port, "/").body, as: UTF8.self).contains("/app.js"))

        // The API answers what the explorer answers.
        let run = try get(port, "/api/run")
        XCTAssertEqual(run.status, 200)
        XCTAssertEqual(try JSONDecoder().decode(ExplorerRunInfo.self, from: Data(run.body)), explorer.runInfo())
        let rank = try get(port, "/api/rank?text=a%20photo%20of%20a%20dog&top=3")
        XCTAssertEqual(rank.status, 200, String(decoding: rank.body, as: UTF8.self))
        XCTAssertEqual(try JSONDecoder().decode(ExplorerRanking.self, from: Data(rank.body)),
                       try explorer.rank(text: "a photo of a dog", top: 3))
        let post = try rawHTTP(port: port, "POST /api/rank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 29\r\nConnection: close\r\n\r\n",
                               body: Array(#"{"text": "a red car", "top": 2}"#.utf8.prefix(29)))
        XCTAssertEqual(post.status, 400, "a truncated body is malformed JSON")
        let good = #"{"text": "a red car", "top": 2}"#
        let post2 = try rawHTTP(port: port, "POST /api/rank HTTP/1.1\r\nHost: x\r\nContent-Length: \(good.utf8.count)\r\nConnection: close\r\n\r\n",
                                body: Array(good.utf8))
        XCTAssertEqual(post2.status, 200, String(decoding: post2.body, as: UTF8.self))
        let image = try get(port, "/api/images/1/image")
        XCTAssertEqual(image.status, 200)
        XCTAssertEqual(Array(image.body.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        XCTAssertTrue(image.headers.lowercased().contains("content-type: image/png"))
        let heads = explorer.componentList().components.filter { $0.kind == "head" }.prefix(2).map { String($0.index) }.joined(separator: ",")
        let heat = try get(port, "/api/images/0/heatmap?text=a%20dog&components=\(heads)")
        XCTAssertEqual(heat.status, 200, String(decoding: heat.body, as: UTF8.self))

        // Hostile requests: each a 4xx with a JSON message (API) and never a crash.
        let hostile: [(String, Int)] = [
            ("/../../etc/passwd", 404), ("/api/images/..%2F..%2Fetc%2Fpasswd/image", 400), ("/api/images/1/../../../etc/passwd", 404),
            ("/api/images/99999999999999999999999999/image", 400), ("/api/images/-1", 404), ("/api/images/4/image", 404),
            ("/api/components/abc", 400), ("/api/components/1000000", 404), ("/api/components/3/neighbors?row=0&top=999999999", 400),
            ("/api/components/3/neighbors?row=x", 400), ("/api/components/3/neighbors", 400), ("/api/rank?top=3", 400),
            ("/api/rank?text=dog&top=-5", 400), ("/api/rank?text=%20%20", 400), ("/api/images/0/heatmap?text=dog&components=1,,2", 400),
            ("/api/images/0/heatmap?text=dog&components=999", 404), ("/api/nothing/here", 404),
            ("/api/rank?text=" + String(repeating: "x", count: 3000) + "&top=3", 413),
        ]
        for (path, status) in hostile {
            let r = try get(port, path)
            XCTAssertEqual(r.status, status, "\(path): \(String(decoding: r.body, as: UTF8.self))")
            if path.hasPrefix("/api/") {
                let json = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]
                XCTAssertNotNil(json?["error"] as? String, "\(path): \(String(decoding: r.body, as: UTF8.self))")
            }
        }
        let big = [UInt8](repeating: 0x61, count: ExplorerServer.maxBody + 10)
        let tooBig = try rawHTTP(port: port, "POST /api/rank HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.count)\r\nConnection: close\r\n\r\n", body: big)
        XCTAssertEqual(tooBig.status, 413)
        XCTAssertEqual(try rawHTTP(port: port, "DELETE /api/run HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status / 100, 4)
        XCTAssertEqual(try rawHTTP(port: port, "garbage\r\n\r\n").status / 100, 4, "a malformed request line")

        // Many requests at once, then the server still answers.
        let statuses = StatusList(count: 24)
        DispatchQueue.concurrentPerform(iterations: 24) { i in
            statuses.set(i, (try? get(port, i % 2 == 0 ? "/api/rank?text=dog\(i)&top=5" : "/api/images/\(i % 4)").status) ?? -1)
        }
        XCTAssertEqual(statuses.values, [Int](repeating: 200, count: 24))
        XCTAssertEqual(try get(port, "/api/run").status, 200)
    }
}
