import Foundation
import RefractTestSupport
import XCTest

/// `refract serve` end to end, in a real headless browser: Chromium driven over WebDriver
/// (chromedriver, the W3C JSON protocol over loopback HTTP) through the explorer's pages, as a user
/// clicks and types. scripts/test.sh installs Chromium and chromedriver (Debian); without them the
/// test is skipped. REFRACT_SCREENSHOTS=DIR keeps a screenshot of every page there.
extension CLITests {
    func testExplorerInAHeadlessBrowser() throws {
        guard let driverBinary = Self.executable(named: ["chromedriver"]),
              let browserBinary = Self.executable(named: ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) else {
            throw XCTSkip("chromedriver or chromium is not installed (scripts/test.sh installs both: Debian packages chromium, chromium-driver)")
        }
        let clock = TestClock(limit: 100)                              // the whole test, builds of the run included

        // A run of the tiny CLIP model, its TextSpan report, and the server over both.
        let run = path(scratch, "run")
        var r = try refract(["decompose", "--model", tinyModel, "--output", run, try classFolders().path], timeout: clock.remaining)
        XCTAssertEqual(r.status, 0, r.stderr)
        let pool = path(scratch, "pool.txt")
        try """
            a photo of a dog
            a photo of a cat
            a red car
            snow on the ground
            a photo taken at night
            water
            a blue sky
            green grass
            a close-up of a face
            text on a sign
            """.write(toFile: pool, atomically: true, encoding: .utf8)
        let textspan = path(scratch, "textspan")
        r = try refract(["textspan", "--run", run, "--descriptions", pool, "--output", textspan, "--per-head", "3", "--rank", "4"],
                        timeout: clock.remaining)
        XCTAssertEqual(r.status, 0, r.stderr)
        guard r.status == 0 else { return }

        let server = try start(Self.binary, ["serve", "--run", run, "--textspan", textspan, "--port", "0"],
                               environment: environment(unsetting: Self.proxyVariables), label: "refract serve")
        defer { stop(server) }
        let (servedRun, port) = try waitForServeLine(server, clock: clock)
        XCTAssertEqual(servedRun, URL(fileURLWithPath: run).standardizedFileURL.path)

        // What the API says, to compare the pages with.
        let info = try XCTUnwrap(try LoopbackHTTP.json(port: port, path: "/api/run").value as? [String: Any])
        let modelId = try XCTUnwrap((info["model"] as? [String: Any])?["id"] as? String)
        let componentCount = try XCTUnwrap(info["componentCount"] as? Int)
        let blockCount = try XCTUnwrap(info["blocks"] as? [Any]).count
        XCTAssertEqual(info["text"] as? Bool, true)
        XCTAssertEqual(info["heatmaps"] as? Bool, true)
        let components = try XCTUnwrap((try LoopbackHTTP.json(port: port, path: "/api/components").value as? [String: Any])?["components"]
                                       as? [[String: Any]])
        XCTAssertEqual(components.count, componentCount)
        let ranking = try LoopbackHTTP.json(port: port, path: "/api/rank?text=a%20photo%20of%20a%20dog&top=20")
        XCTAssertEqual(ranking.status, 200)
        let ranked = try XCTUnwrap((ranking.value as? [String: Any])?["components"] as? [[String: Any]])
        let topName = try XCTUnwrap(ranked.first?["name"] as? String)
        let topIndex = try XCTUnwrap(ranked.first?["index"] as? Int)

        // chromedriver on a free port, with a clean environment (no proxy for loopback).
        let driverPort = try LoopbackHTTP.freePort()
        let driverLog = path(scratch, "chromedriver.log")
        let driver = try start(driverBinary, ["--port=\(driverPort)", "--log-path=\(driverLog)"],
                               environment: environment(unsetting: Self.proxyVariables), label: "chromedriver")
        defer {
            driver.process.terminate()
            driver.process.waitUntilExit()
        }
        let web = WebDriver(port: driverPort, clock: clock)
        do {
            try clock.wait("chromedriver to listen on \(driverPort)", timeout: 20) {
                guard driver.process.isRunning else {
                    throw LoopbackHTTP.Failure("chromedriver exited: \((try? String(contentsOfFile: driverLog, encoding: .utf8)) ?? "")")
                }
                let status = try? LoopbackHTTP.json(port: driverPort, path: "/status", timeout: 2)
                return ((status?.value as? [String: Any])?["value"] as? [String: Any])?["ready"] as? Bool == true ? true : nil
            }
            try web.startSession(browser: browserBinary, profile: path(scratch, "chromium-profile"))
        } catch {
            print("chromedriver log:\n\(((try? String(contentsOfFile: driverLog, encoding: .utf8)) ?? "").suffix(4000))")
            throw error
        }
        defer { web.endSession() }
        let shots = ProcessInfo.processInfo.environment["REFRACT_SCREENSHOTS"].map { URL(fileURLWithPath: $0) } ?? scratch!
        try FileManager.default.createDirectory(at: shots, withIntermediateDirectories: true)
        let base = "http://127.0.0.1:\(port)/"

        // #/ overview: the model and the chart of the blocks.
        try web.navigate(base + "#/")
        let shownModel = try web.waitForScript("the overview's model id", """
            const m = document.getElementById('model-id'); return m && m.textContent ? m.textContent : null;
            """) as? String
        XCTAssertEqual(shownModel, modelId)
        XCTAssertEqual(try web.script("return document.getElementById('run-model').textContent;") as? String, modelId)
        XCTAssertEqual(try web.script("return document.querySelectorAll('svg.chart rect.bar').length;") as? Int, blockCount,
                       "one bar per block in the block chart")
        try web.saveScreenshot(shots.appendingPathComponent("explorer-overview.png"))
        try web.assertNoErrorBox("overview")

        // #/components: every component a row; the filter narrows them; ranking for a typed text.
        try web.click(try web.find("a[data-nav=components]"))
        let rows = try web.waitForScript("the component rows", """
            const n = document.querySelectorAll('[data-testid=component-row]').length; return n > 0 ? n : null;
            """) as? Int
        XCTAssertEqual(rows, componentCount)
        let term = "mlp"
        let expectedShown = components.filter { c in
            ([c["name"] as? String, c["kind"] as? String] + ((c["descriptions"] as? [[String: Any]]) ?? []).map { $0["text"] as? String })
                .compactMap { $0?.lowercased() }.contains { $0.contains(term) }
        }.count
        XCTAssertGreaterThan(expectedShown, 0)
        XCTAssertLessThan(expectedShown, componentCount)
        let filter = try web.find("#component-filter")
        try web.type(filter, term)
        let shown = try web.waitForScript("the filter to narrow the rows to \(expectedShown)", """
            const n = [...document.querySelectorAll('[data-testid=component-row]')].filter((r) => !r.hidden).length;
            return n === \(expectedShown) ? n : null;
            """) as? Int
        XCTAssertEqual(shown, expectedShown)
        XCTAssertEqual(try web.script("return document.getElementById('component-count').textContent;") as? String,
                       "Showing \(expectedShown) of \(componentCount) components.")
        try web.type(filter, String(repeating: "\u{E003}", count: term.count))          // backspaces
        _ = try web.waitForScript("every row back once the filter is empty", """
            const n = [...document.querySelectorAll('[data-testid=component-row]')].filter((r) => !r.hidden).length;
            return n === \(componentCount) ? n : null;
            """)

        try web.type(try web.find("#rank-text"), "a photo of a dog")
        let entries = try web.waitForScript("the ranking for the whole text", """
            const status = document.getElementById('rank-status').textContent;
            const n = document.querySelectorAll('[data-testid=rank-entry]').length;
            return status.includes('\u{201C}a photo of a dog\u{201D}') && n > 0 ? n : null;
            """) as? Int
        // Every component but the constants (a run's read-out bias) is ranked.
        let constants = (components.filter { ($0["constant"] as? Bool) == true }).count
        XCTAssertEqual(entries, min(20, componentCount - constants))
        let firstName = try web.script("return document.querySelector('[data-testid=rank-entry] .rank-name').textContent;") as? String
        XCTAssertEqual(firstName, topName, "the page's first entry is the API's top answer")
        XCTAssertTrue((try web.script("return location.hash;") as? String ?? "").contains("rank=a%20photo%20of%20a%20dog"),
                      "the typed text is kept in the URL")
        try web.saveScreenshot(shots.appendingPathComponent("explorer-components.png"))
        try web.assertNoErrorBox("components")

        // #/component/{i}: its name and its thumbnails, loaded.
        try web.click(try web.find("[data-testid=rank-entry] a.rank-link"))
        let heading = try web.waitForScript("the component page of \(topName)", """
            const h = document.querySelector('main h1');
            return location.hash.startsWith('#/component/') && h && h.textContent === \(Self.jsString(topName)) ? h.textContent : null;
            """) as? String
        XCTAssertEqual(heading, topName)
        let thumbs = try web.waitForScript("the component's thumbnails to load", """
            const images = [...document.querySelectorAll('[data-testid=thumb] img')];
            for (const i of images) if (!i.complete) i.scrollIntoView({ block: 'nearest' });
            return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0) ? images.length : null;
            """, timeout: 20) as? Int
        XCTAssertGreaterThan(thumbs ?? 0, 0)
        _ = try web.script("window.scrollTo(0, 0); return true;")
        // The TextSpan descriptions, each with the fraction of the component's variance it explained
        // (the report's varianceExplained, 0...1), shown as a percentage.
        let detail = try LoopbackHTTP.json(port: port, path: "/api/components/\(topIndex)").value as? [String: Any]
        let expected = ((detail?["component"] as? [String: Any])?["descriptions"] as? [[String: Any]]) ?? []
        let described = try web.script("""
            return [...document.querySelectorAll('#descriptions li')].map((li) => li.textContent);
            """) as? [String] ?? []
        XCTAssertGreaterThan(described.count, 0, "the TextSpan descriptions are beside the component")
        XCTAssertEqual(described.count, expected.count)
        for (text, d) in zip(described, expected) {
            let name = d["text"] as? String ?? "?", fraction = d["varianceExplained"] as? Double ?? .nan
            XCTAssertTrue(text.hasPrefix(name), "'\(text)' is not the description '\(name)'")
            let percent = Self.lastPercentage(in: text)
            XCTAssertEqual(percent ?? .nan, 100 * fraction, accuracy: 0.051,
                           "'\(text)': the share shown is not the \(fraction) of the component's variance the description explained")
        }
        try web.saveScreenshot(shots.appendingPathComponent("explorer-component.png"))
        try web.assertNoErrorBox("component")

        // A thumbnail → #/image/{row}: contributions along a text, then its heatmap.
        let thumb = try web.find("[data-testid=thumb]")
        let row = try XCTUnwrap(try web.script("return arguments[0].dataset.row;", [WebDriver.reference(thumb)]) as? String)
        try web.click(thumb)
        _ = try web.waitForScript("the image page of row \(row)", """
            const t = document.getElementById('contrib-text');
            return location.hash.startsWith('#/image/\(row)') && t && !t.disabled ? true : null;
            """)
        try web.type(try web.find("#contrib-text"), "a dog")
        let bars = try web.waitForScript("the contribution bars for the whole text", """
            const total = document.getElementById('contrib-total').textContent;
            const n = document.querySelectorAll('[data-testid=contrib-bar]').length;
            return total.includes('\u{201C}a dog\u{201D}') && n > 0 ? n : null;
            """) as? Int
        XCTAssertEqual(bars, min(20, componentCount))
        let button = try web.find("#heatmap-button")
        _ = try web.waitForScript("the heatmap button to be enabled", "return document.getElementById('heatmap-button').disabled ? null : true;")
        try web.click(button)
        let heatmapWidth = try web.waitForScript("the heatmap to load", """
            const m = document.getElementById('heatmap');
            return m && !m.hidden && m.complete && m.naturalWidth > 0 ? m.naturalWidth : null;
            """, timeout: 30) as? Int
        XCTAssertGreaterThan(heatmapWidth ?? 0, 0)
        XCTAssertGreaterThan(try web.script("const i = document.getElementById('image'); return i.complete ? i.naturalWidth : 0;") as? Int ?? 0, 0,
                             "the image itself loaded")
        try web.saveScreenshot(shots.appendingPathComponent("explorer-image.png"))
        try web.assertNoErrorBox("image")
        XCTAssertEqual(try web.severeConsoleMessages(), [], "the browser's console reports no errors (CSP refusals, failed requests, exceptions)")
        print("explorer browser test: \(componentCount) components, top for 'a photo of a dog' \(topName), image row \(row), "
              + "\(String(format: "%.1f", clock.elapsed)) s; screenshots in \(shots.path)")
    }

    // MARK: Helpers shared with the load test

    /// Variables that would send a client's requests through a proxy: removed for the processes
    /// that talk to loopback.
    static let proxyVariables: Set<String> = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                              "no_proxy", "NO_PROXY"]

    /// The first of `names` found as an executable on PATH (or in /usr/bin, /usr/local/bin).
    static func executable(named names: [String]) -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"]
        for name in names {
            for dir in dirs where !dir.isEmpty {
                let candidate = URL(fileURLWithPath: dir).appendingPathComponent(name)
                if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            }
        }
        return nil
    }

    /// Waits for `refract serve`'s line "serving RUN at http://HOST:PORT/ (Ctrl-C to stop)" and
    /// returns the run's path and the port.
    func waitForServeLine(_ server: Started, clock: TestClock, host: String = "127.0.0.1", timeout: TimeInterval = 60) throws -> (run: String, port: Int) {
        try clock.wait("refract serve to print its address", timeout: timeout) {
            guard server.process.isRunning else {
                let err = (try? String(contentsOf: server.stderr, encoding: .utf8)) ?? ""
                throw LoopbackHTTP.Failure("refract serve exited (status \(server.process.terminationStatus)): \(err)")
            }
            let out = (try? String(contentsOf: server.stdout, encoding: .utf8)) ?? ""
            guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("serving ") && $0.hasSuffix(" (Ctrl-C to stop)") }),
                  let at = line.range(of: " at http://\(host):", options: .backwards) else { return nil }
            let run = String(line[line.index(line.startIndex, offsetBy: "serving ".count)..<at.lowerBound])
            guard let port = Int(line[at.upperBound...].prefix(while: \.isNumber)) else { return nil }
            return (run, port)
        }
    }

    /// Stops a started server (SIGTERM, then waits for it).
    func stop(_ s: Started) {
        if s.process.isRunning { s.process.terminate() }
        _ = try? finish(s, timeout: 15)
    }

    /// The last "N%" in `text` (N a decimal number), as N.
    static func lastPercentage(in text: String) -> Double? {
        let regex = try? NSRegularExpression(pattern: "([0-9]+(?:\\.[0-9]+)?)%")
        let range = NSRange(text.startIndex..., in: text)
        guard let match = regex?.matches(in: text, range: range).last, let r = Range(match.range(at: 1), in: text) else { return nil }
        return Double(text[r])
    }

    /// `text` as a JavaScript string literal.
    static func jsString(_ text: String) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: [text])) ?? Data("[\"\"]".utf8)
        return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
    }
}

/// A deadline for a whole test, and waits under it: each wait polls (every 50 ms) until its probe
/// returns a value, and fails naming what it waited for when its own time or the test's is up.
final class TestClock {
    let start = Date()
    let end: Date
    init(limit: TimeInterval) { end = start.addingTimeInterval(limit) }
    var elapsed: TimeInterval { Date().timeIntervalSince(start) }
    /// What is left of the test's time (at least a second, so that a last step can still fail cleanly).
    var remaining: TimeInterval { max(end.timeIntervalSinceNow, 1) }

    @discardableResult
    func wait<T>(_ what: String, timeout: TimeInterval = 10, _ probe: () throws -> T?) throws -> T {
        let until = min(Date().addingTimeInterval(timeout), end)
        var lastError: Error?
        while true {
            do {
                if let value = try probe() { return value }
                lastError = nil
            } catch let e as LoopbackHTTP.Failure where e.description.hasPrefix("refract serve exited") || e.description.hasPrefix("chromedriver exited") {
                throw e
            } catch {
                lastError = error
            }
            if Date() >= until {
                let which = until == end ? "the test's \(Int(end.timeIntervalSince(start))) s" : "\(Int(timeout)) s"
                throw LoopbackHTTP.Failure("waited \(which) for \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
            }
            usleep(50_000)
        }
    }
}

/// A WebDriver session (W3C protocol) on a local chromedriver, over LoopbackHTTP.
final class WebDriver {
    static let elementKey = "element-6066-11e4-a52e-4f735466cecf"
    let port: Int
    let clock: TestClock
    var session: String?

    init(port: Int, clock: TestClock) { self.port = port; self.clock = clock }

    static func reference(_ element: String) -> [String: String] { [elementKey: element] }

    /// A command; returns its `value`, or throws the WebDriver error it answered.
    @discardableResult
    func command(_ method: String, _ path: String, _ body: Any? = nil, timeout: TimeInterval = 30) throws -> Any? {
        let timeout = min(timeout, clock.remaining)
        let prefix = session.map { "/session/\($0)" } ?? ""
        let r = try LoopbackHTTP.json(port: port, method: method, path: prefix + path, body: body ?? (method == "POST" ? [String: Any]() : nil),
                                      timeout: timeout)
        let value = (r.value as? [String: Any])?["value"]
        if r.status != 200 {
            let error = value as? [String: Any]
            throw LoopbackHTTP.Failure("WebDriver \(method) \(path): \(r.status) \(error?["error"] ?? "") \(String(describing: error?["message"] ?? r.value).prefix(600))")
        }
        return value
    }

    func startSession(browser: URL, profile: String) throws {
        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--no-proxy-server", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--hide-scrollbars", "--force-device-scale-factor=1", "--user-data-dir=\(profile)"]
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": browser.path, "args": args],
            "goog:loggingPrefs": ["browser": "ALL"],
            "timeouts": ["implicit": 0, "pageLoad": 30000, "script": 10000],
        ] as [String: Any]]]
        let value = try command("POST", "/session", capabilities, timeout: 60) as? [String: Any]
        guard let id = value?["sessionId"] as? String else { throw LoopbackHTTP.Failure("no session id in \(String(describing: value))") }
        session = id
    }

    /// Ends the session (the browser quits), past the test's deadline too.
    func endSession() {
        guard let session else { return }
        _ = try? LoopbackHTTP.json(port: port, method: "DELETE", path: "/session/\(session)", timeout: 20)
        self.session = nil
    }

    func navigate(_ url: String) throws { try command("POST", "/url", ["url": url]) }

    /// The first element matching `css` (waits for it to appear).
    func find(_ css: String, timeout: TimeInterval = 10) throws -> String {
        try clock.wait("an element '\(css)'", timeout: timeout) {
            let found = try command("POST", "/elements", ["using": "css selector", "value": css]) as? [[String: Any]]
            return found?.first?[Self.elementKey] as? String
        }
    }

    func click(_ element: String) throws { try command("POST", "/element/\(element)/click") }

    func type(_ element: String, _ text: String) throws { try command("POST", "/element/\(element)/value", ["text": text]) }

    func script(_ source: String, _ args: [Any] = []) throws -> Any? {
        let value = try command("POST", "/execute/sync", ["script": source, "args": args])
        return value is NSNull ? nil : value
    }

    /// Runs `source` until it returns something other than null (a deadline, no fixed sleeps).
    func waitForScript(_ what: String, _ source: String, timeout: TimeInterval = 10) throws -> Any {
        try clock.wait(what, timeout: timeout) { try script(source) }
    }

    func saveScreenshot(_ file: URL) throws {
        let base64 = try XCTUnwrap(try command("GET", "/screenshot") as? String)
        let png = try XCTUnwrap(Data(base64Encoded: base64))
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        try png.write(to: file)
    }

    func assertNoErrorBox(_ page: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let state = try script("""
            const bar = document.getElementById('error-bar');
            return bar.hidden && getComputedStyle(bar).display === 'none' ? '' : document.getElementById('error').textContent || '(empty)';
            """) as? String
        XCTAssertEqual(state, "", "\(page): the error box shows", file: file, line: line)
    }

    /// The browser console's SEVERE entries since the last call (chromedriver's log endpoint),
    /// after checking that the endpoint sees the console at all (a warning logged for the purpose).
    func severeConsoleMessages() throws -> [String] {
        _ = try script("console.warn('refract-test-probe'); return true;")
        let entries = try command("POST", "/se/log", ["type": "browser"]) as? [[String: Any]] ?? []
        XCTAssertTrue(entries.contains { ($0["message"] as? String ?? "").contains("refract-test-probe") },
                      "the browser's console log is not readable: \(entries)")
        return entries.filter { ($0["level"] as? String) == "SEVERE" }.map { ($0["message"] as? String) ?? "" }
    }
}
