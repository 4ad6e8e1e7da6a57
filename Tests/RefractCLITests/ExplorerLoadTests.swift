import Foundation
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest

/// `refract serve` under load: a 50,000-image run (synthetic rows in the tiny CLIP model's layout,
/// written with the real StoreWriter) and wrk against the ranking endpoint, with one text and with
/// a new text on every request (as a user types). Bounded (two 3-second runs); fails on socket
/// errors or non-2xx answers, never on speed, which it prints. scripts/test.sh installs wrk; without
/// it the test is skipped.
extension CLITests {
    static let loadRows = 50_000

    func testExplorerRankingUnderLoad() throws {
        guard let wrk = Self.executable(named: ["wrk"]) else {
            throw XCTSkip("wrk is not installed (scripts/test.sh installs it: Debian package wrk)")
        }
        let clock = TestClock(limit: 90)

        // The layout of a real run of the tiny model, then 50,000 synthetic rows in it.
        let small = path(scratch, "small")
        let r = try refract(["decompose", "--model", tinyModel, "--output", small, try classFolders().path], timeout: clock.remaining)
        XCTAssertEqual(r.status, 0, r.stderr)
        guard r.status == 0 else { return }
        let big = scratch.appendingPathComponent("big")
        var started = Date()
        try Self.writeSyntheticRun(like: StoreReader(run: URL(fileURLWithPath: small)), rows: Self.loadRows, shardSize: 5000, to: big)
        let writeSeconds = Date().timeIntervalSince(started)

        started = Date()
        let server = try start(Self.binary, ["serve", "--run", big.path, "--model", tinyModel, "--port", "0"],
                               environment: environment(unsetting: Self.proxyVariables), label: "refract serve")
        defer { stop(server) }
        let (_, port) = try waitForServeLine(server, clock: clock, timeout: 60)
        let startSeconds = Date().timeIntervalSince(started)
        let info = try LoopbackHTTP.json(port: port, path: "/api/run").value as? [String: Any]
        XCTAssertEqual(info?["rows"] as? Int, Self.loadRows)
        XCTAssertEqual(info?["text"] as? Bool, true, "the text tower of --model is loaded")
        let probe = try LoopbackHTTP.get(port: port, path: "/api/rank?text=a%20photo%20of%20a%20dog&top=20")
        XCTAssertEqual(probe.status, 200, probe.text)
        print("explorer load test: wrote \(Self.loadRows) synthetic rows in \(String(format: "%.1f", writeSeconds)) s; "
              + "refract serve ready in \(String(format: "%.1f", startSeconds)) s")

        // One text over and over (the text's embedding cached), then a new text every request.
        let url = "http://127.0.0.1:\(port)/api/rank?text=a%20photo%20of%20a%20dog&top=20"
        let script = scratch.appendingPathComponent("typing.lua")
        try Self.typingScript.write(to: script, atomically: true, encoding: .utf8)
        for (label, extra) in [("one text", [String]()), ("a new text each request", ["-s", script.path])] {
            let run = try finish(try start(wrk, ["-t2", "-c8", "-d3s", "--latency"] + extra + [url],
                                           environment: environment(unsetting: Self.proxyVariables), label: "wrk (\(label))"),
                                 timeout: min(30, clock.remaining))
            XCTAssertEqual(run.status, 0, "wrk (\(label)): \(run.stderr)")
            let result = try XCTUnwrap(WrkResult(run.stdout), "wrk (\(label)) printed no figures: \(run.stdout) \(run.stderr)")
            print("explorer load test, /api/rank with \(label): \(result.requests) requests, "
                  + "\(String(format: "%.0f", result.requestsPerSecond)) requests/s, p50 \(result.p50), p99 \(result.p99)")
            XCTAssertGreaterThan(result.requests, 0, "wrk (\(label)): no request completed")
            XCTAssertNil(result.socketErrors, "wrk (\(label)): socket errors: \(run.stdout)")
            XCTAssertNil(result.non2xx, "wrk (\(label)): answers other than 2xx/3xx: \(run.stdout)")
        }

        // The server is still there and answers correctly after the load.
        let after = try LoopbackHTTP.json(port: port, path: "/api/rank?text=a%20red%20car&top=3")
        XCTAssertEqual(after.status, 200)
        XCTAssertEqual(((after.value as? [String: Any])?["components"] as? [Any])?.count, 3)
        XCTAssertTrue(server.process.isRunning)
        print("explorer load test: \(String(format: "%.1f", clock.elapsed)) s in all")
    }

    /// wrk's request(): a prefix of a sentence (as it grows while typed) plus the thread and a
    /// counter, so that every request carries a text the server has not embedded before.
    static let typingScript = """
        local sentence = "a photo of a dog playing in the snow"
        local threads = 0
        function setup(thread)
          threads = threads + 1
          thread:set("id", threads)
        end
        function init(args)
          counter = 0
        end
        function request()
          counter = counter + 1
          local n = counter % #sentence + 1
          local text = sentence:sub(1, n) .. " " .. id .. "-" .. counter
          return wrk.format("GET", "/api/rank?text=" .. (text:gsub(" ", "%%20")) .. "&top=20")
        end

        """

    /// A run with `rows` images in the layout of `like` (its model, dimensions, preprocessing,
    /// options and tensors), written with StoreWriter: deterministic pseudo-random rows (xorshift)
    /// for the components, the same `readout_bias` in every row (a constant, as in a real run),
    /// `embedding` their sum and `norm` its length. The image paths are synthetic: nothing reads them.
    static func writeSyntheticRun(like reader: StoreReader, rows: Int, shardSize: Int, to url: URL) throws {
        var header = reader.manifest.header
        let classes = header.classNames ?? ["a", "b"]
        header.images = (0..<rows).map {
            StoreImage(path: "/synthetic/explorer-load/image-\(String(format: "%05d", $0)).png", label: classes[$0 % classes.count])
        }
        header.shardSize = shardSize
        var constants = [String: Tensor]()
        for spec in header.constants { constants[spec.name] = try reader.constant(spec.name) }
        let writer = try StoreWriter.open(at: url, header: header, constants: constants, createdBy: "refract tests (synthetic)", resume: false)
        defer { writer.close() }
        let specs = header.tensors
        let width = header.dimensions["embedDim"] ?? 0
        let summed = ["pre", "mlp", "attn", "attn_bias", "readout_bias"]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        // One readout_bias for the whole run.
        var readout = [Float](repeating: 0, count: width)
        for j in 0..<width { readout[j] = Self.uniform(&state) * 0.05 }

        for (s, range) in header.shardRanges.enumerated() {
            let n = range.count
            var tensors = [String: Tensor]()
            for spec in specs where spec.name != "embedding" && spec.name != "norm" {
                let m = spec.elementCount
                var data = [Float](repeating: 0, count: n * m)
                if spec.name == "readout_bias" && m == width {
                    for i in 0..<n { data.replaceSubrange((i * m)..<((i + 1) * m), with: readout) }
                } else {
                    // Heads and MLPs of different sizes, so that the ranking has something to rank.
                    let scale: Float = spec.name == "attn_bias" ? 0.01 : 0.2
                    data.withUnsafeMutableBufferPointer { p in
                        for k in 0..<p.count { p[k] = Self.uniform(&state) * scale * Float(1 + (k % m) / max(width, 1) % 5) }
                    }
                }
                tensors[spec.name] = Tensor(shape: [n] + spec.shape, data: data)
            }
            if let e = specs.first(where: { $0.name == "embedding" }), e.elementCount == width {
                var sum = [Float](repeating: 0, count: n * width)
                for name in summed {
                    guard let t = tensors[name] else { continue }
                    let m = t.data.count / max(n, 1)
                    sum.withUnsafeMutableBufferPointer { out in
                        t.data.withUnsafeBufferPointer { x in
                            for i in 0..<n { for k in 0..<m { out[i * width + k % width] += x[i * m + k] } }
                        }
                    }
                }
                tensors["embedding"] = Tensor(shape: [n, width], data: sum)
                if specs.contains(where: { $0.name == "norm" }) {
                    tensors["norm"] = Tensor(shape: [n], data: (0..<n).map { i in
                        sum[(i * width)..<((i + 1) * width)].reduce(0) { $0 + $1 * $1 }.squareRoot()
                    })
                }
            }
            for spec in specs where tensors[spec.name] == nil {                 // any other layout: random rows
                var data = [Float](repeating: 0, count: n * spec.elementCount)
                data.withUnsafeMutableBufferPointer { p in for k in 0..<p.count { p[k] = Self.uniform(&state) } }
                tensors[spec.name] = Tensor(shape: [n] + spec.shape, data: data)
            }
            try writer.writeShard(s, imageIndices: Array(range), rows: tensors, skipped: [])
        }
        try writer.finish()
    }

    /// Uniform in [-1, 1) from xorshift64*.
    static func uniform(_ state: inout UInt64) -> Float {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        let x = state &* 0x2545_F491_4F6C_DD1D
        return Float(x >> 40) / Float(1 << 23) - 1
    }
}

/// The figures of a wrk run with --latency.
struct WrkResult {
    var requests: Int
    var requestsPerSecond: Double
    var p50: String
    var p99: String
    /// The "Socket errors: connect …, read …, write …, timeout …" line, when wrk printed one.
    var socketErrors: String?
    /// The "Non-2xx or 3xx responses: N" line, when wrk printed one.
    var non2xx: String?

    init?(_ output: String) {
        let lines = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        func value(after prefix: String) -> String? {
            lines.first { $0.hasPrefix(prefix) }.map { $0.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces) }
        }
        guard let rps = value(after: "Requests/sec:").flatMap(Double.init),
              let p99 = value(after: "99%"), let p50 = value(after: "50%"),
              let total = lines.first(where: { $0.contains(" requests in ") }),
              let count = Int(total.prefix { $0.isNumber }) else { return nil }
        requests = count
        requestsPerSecond = rps
        self.p50 = p50
        self.p99 = p99
        socketErrors = lines.first { $0.hasPrefix("Socket errors:") }
        non2xx = lines.first { $0.hasPrefix("Non-2xx or 3xx responses:") }
    }
}
