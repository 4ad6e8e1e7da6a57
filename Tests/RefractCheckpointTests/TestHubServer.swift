import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import RefractCheckpoint

// A minimal HTTP/1.1 server on 127.0.0.1 (ephemeral port) that imitates the Hugging Face hub's
// resolve endpoint: ETag / X-Linked-Etag / X-Linked-Size / X-Repo-Commit headers, 404s with
// X-Error-Code, 401 for unknown repositories, optional redirects of LFS files to a "CDN" path,
// Range requests, and fault modes: drop the connection part-way through a body, accept a
// connection and never answer, or send part of a body and then go silent (the last two hold
// the connection open until the server stops, at most `holdLimit` seconds).
// Each connection is served on its own thread with socket timeouts and `Connection: close`;
// the accept loop polls a stop flag and shuts itself down after `lifetime` seconds regardless.

final class TestHubServer: @unchecked Sendable {
    struct HubFile {
        var content: [UInt8]
        var lfs: Bool
        /// sha256 for LFS files, a fake git blob id (40 hex) otherwise.
        var etag: String
    }

    struct Request: Sendable {
        var method: String
        var path: String
        var headers: [String: String]  // lower-cased names
    }

    enum Redirect { case none, absolute, relative }

    let commit = "0123456789abcdef0123456789abcdef01234567"
    private(set) var port: UInt16 = 0
    private let lock = NSLock()
    private var repos: [String: [String: HubFile]] = [:]
    private var log: [Request] = []
    private var drops: [String: (afterBytes: Int, remaining: Int)] = [:]   // by file name
    private var stopped = false
    private let listenFD: Int32
    private var redirectMode: Redirect = .none
    private var requiredToken: String?
    private var ignoreRange = false
    private var neverAnswer = false
    private var stalls: [String: Int] = [:]  // by file name: body bytes sent before going silent
    /// Longest a silent connection is held open.
    let holdLimit: TimeInterval = 30

    var endpoint: String { "http://127.0.0.1:\(port)" }

    init(lifetime: TimeInterval = 120) throws {
        #if os(Linux)
        listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        listenFD = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard listenFD >= 0 else { throw CheckpointError.io(path: "socket", message: errnoString()) }
        var yes: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listenFD, 16) == 0 else {
            close(listenFD)
            throw CheckpointError.io(path: "bind/listen", message: errnoString())
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listenFD, $0, &len) }
        }
        port = UInt16(bigEndian: addr.sin_port)
        let deadline = Date().addingTimeInterval(lifetime)
        let thread = Thread { [self] in acceptLoop(deadline: deadline) }
        thread.start()
    }

    deinit { stop() }

    /// Stops accepting within one poll interval (100 ms); the accept thread closes the socket.
    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }

    // MARK: Configuration

    /// Adds a file; LFS files get their SHA-256 as ETag.
    func add(_ repo: String, _ name: String, _ content: [UInt8], lfs: Bool? = nil) {
        let isLFS = lfs ?? name.hasSuffix(".safetensors") || name.hasSuffix(".bin")
        let sha = SHA256.hexDigest(content)
        let etag = isLFS ? sha : String(sha.reversed().prefix(40))
        lock.lock(); defer { lock.unlock() }
        repos[repo, default: [:]][name] = HubFile(content: content, lfs: isLFS, etag: etag)
    }

    func add(_ repo: String, _ name: String, text: String) { add(repo, name, Array(text.utf8), lfs: false) }

    /// Serves different bytes than the ETag announces (one byte flipped).
    func corrupt(_ repo: String, _ name: String) {
        lock.lock(); defer { lock.unlock() }
        repos[repo]?[name]?.content[0] ^= 0xFF
    }

    func file(_ repo: String, _ name: String) -> HubFile? {
        lock.lock(); defer { lock.unlock() }
        return repos[repo]?[name]
    }

    /// The next `times` GETs of `name`'s bytes send `afterBytes` body bytes, then drop the connection.
    func dropConnection(for name: String, afterBytes: Int, times: Int = 1) {
        lock.lock(); defer { lock.unlock() }
        drops[name] = (afterBytes, times)
    }

    func setRedirect(_ mode: Redirect) { lock.lock(); redirectMode = mode; lock.unlock() }
    func requireToken(_ token: String?) { lock.lock(); requiredToken = token; lock.unlock() }
    func setIgnoreRange(_ on: Bool) { lock.lock(); ignoreRange = on; lock.unlock() }
    /// Every request is read and logged, then never answered (the connection stays open).
    func setNeverAnswer(_ on: Bool) { lock.lock(); neverAnswer = on; lock.unlock() }
    /// Every GET of `name`'s bytes sends the headers and `afterBytes` body bytes, then goes silent
    /// (nil: serve normally again).
    func stallBody(for name: String, afterBytes: Int?) { lock.lock(); stalls[name] = afterBytes; lock.unlock() }

    /// Keeps a connection open and silent until the server stops (or `holdLimit` passes).
    private func holdSilently() {
        let until = Date().addingTimeInterval(holdLimit)
        while Date() < until {
            lock.lock()
            let stop = stopped
            lock.unlock()
            if stop { return }
            usleep(20_000)
        }
    }

    var requests: [Request] {
        lock.lock(); defer { lock.unlock() }
        return log
    }

    func clearLog() { lock.lock(); log.removeAll(); lock.unlock() }

    // MARK: Serving

    private func acceptLoop(deadline: Date) {
        defer { close(listenFD) }
        while true {
            lock.lock()
            let stop = stopped || Date() > deadline
            lock.unlock()
            if stop { return }
            var pfd = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 100)
            if ready <= 0 { continue }
            let fd = accept(listenFD, nil, nil)
            if fd < 0 { continue }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            Thread { [self] in
                handle(fd)
                close(fd)
            }.start()
        }
    }

    private func readRequest(_ fd: Int32) -> Request? {
        var buf: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while buf.count < 65536 {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { return nil }
            buf.append(contentsOf: chunk[0..<n])
            if let end = findHeaderEnd(buf) {
                let text = String(decoding: buf[0..<end], as: UTF8.self)
                let lines = text.components(separatedBy: "\r\n")
                let parts = lines[0].split(separator: " ")
                guard parts.count >= 2 else { return nil }
                var headers: [String: String] = [:]
                for line in lines.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                return Request(method: String(parts[0]), path: String(parts[1]), headers: headers)
            }
        }
        return nil
    }

    private func findHeaderEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            #if os(Linux)
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            #else
            let n = bytes.withUnsafeBytes { Darwin.send(fd, $0.baseAddress! + done, bytes.count - done, 0) }
            #endif
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    private func respond(_ fd: Int32, _ status: Int, _ reason: String, headers: [(String, String)], body: [UInt8] = [],
                         head: Bool, contentLength: Int? = nil, dropAfter: Int? = nil, stallAfter: Int? = nil) {
        var text = "HTTP/1.1 \(status) \(reason)\r\n"
        for (k, v) in headers { text += "\(k): \(v)\r\n" }
        text += "Content-Length: \(contentLength ?? body.count)\r\nConnection: close\r\n\r\n"
        guard send(fd, Array(text.utf8)), !head else { return }
        if let stallAfter {
            _ = send(fd, Array(body.prefix(stallAfter)))
            return holdSilently()
        }
        if let dropAfter {
            _ = send(fd, Array(body.prefix(dropAfter)))
            usleep(50_000)
            shutdown(fd, Int32(SHUT_RDWR))
            return
        }
        _ = send(fd, body)
    }

    private func handle(_ fd: Int32) {
        guard let req = readRequest(fd) else { return }
        lock.lock()
        log.append(req)
        let mode = redirectMode
        let token = requiredToken
        let noRange = ignoreRange
        let silent = neverAnswer
        lock.unlock()
        if silent { return holdSilently() }
        let head = req.method == "HEAD"
        let path = req.path.removingPercentEncoding ?? req.path

        if path.hasPrefix("/cdn/") {
            let sha = String(path.dropFirst(5))
            lock.lock()
            let found = repos.values.flatMap { $0 }.first { $0.value.etag == sha }
            lock.unlock()
            guard let (fileName, file) = found else { return respond(fd, 404, "Not Found", headers: [], head: head) }
            return serveBytes(fd, req, file, name: fileName, headers: [("ETag", "\"\(sha)\"")], head: head, ignoreRange: noRange)
        }

        // /{org}/{name}/resolve/{revision}/{file}
        let parts = path.split(separator: "/", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5 || parts.count == 6, parts[0].isEmpty else {
            return respond(fd, 404, "Not Found", headers: [], head: head)
        }
        let comps = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard comps.count >= 5, comps[2] == "resolve" else { return respond(fd, 404, "Not Found", headers: [], head: head) }
        let repo = comps[0] + "/" + comps[1]
        let revision = comps[3]
        let name = comps[4...].joined(separator: "/")

        lock.lock()
        let files = repos[repo]
        lock.unlock()
        if let token, req.headers["authorization"] != "Bearer \(token)" {
            return respond(fd, 401, "Unauthorized", headers: [("X-Error-Code", "GatedRepo")], head: head)
        }
        guard let files else {
            return respond(fd, 401, "Unauthorized", headers: [("X-Error-Code", "RepoNotFound")], head: head)
        }
        guard revision == "main" || revision == commit else {
            return respond(fd, 404, "Not Found", headers: [("X-Error-Code", "RevisionNotFound")], head: head)
        }
        guard let file = files[name] else {
            return respond(fd, 404, "Not Found", headers: [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", commit)], head: head)
        }
        var headers = [("X-Repo-Commit", commit)]
        if file.lfs {
            headers += [("X-Linked-Etag", "\"\(file.etag)\""), ("X-Linked-Size", String(file.content.count))]
            switch mode {
            case .absolute:
                headers += [("ETag", "\"\(file.etag)\""), ("Location", "http://localhost:\(port)/cdn/\(file.etag)")]
                return respond(fd, 302, "Found", headers: headers, head: head)
            case .relative:
                headers += [("ETag", "\"\(file.etag)\""), ("Location", "/cdn/\(file.etag)")]
                return respond(fd, 302, "Found", headers: headers, head: head)
            case .none:
                headers.append(("ETag", "W/\"\(file.etag)\""))
            }
        } else {
            headers.append(("ETag", "\"\(file.etag)\""))
        }
        serveBytes(fd, req, file, name: name, headers: headers, head: head, ignoreRange: noRange)
    }

    private func serveBytes(_ fd: Int32, _ req: Request, _ file: HubFile, name: String, headers: [(String, String)],
                            head: Bool, ignoreRange: Bool) {
        let total = file.content.count
        var start = 0
        var status = (200, "OK")
        var headers = headers
        if !ignoreRange, let range = req.headers["range"], range.hasPrefix("bytes="), range.hasSuffix("-"),
           let s = Int(range.dropFirst(6).dropLast()) {
            if s >= total {
                return respond(fd, 416, "Range Not Satisfiable", headers: [("Content-Range", "bytes */\(total)")], head: head)
            }
            start = s
            status = (206, "Partial Content")
            headers.append(("Content-Range", "bytes \(s)-\(total - 1)/\(total)"))
        }
        let body = Array(file.content[start...])
        var dropAfter: Int?
        var stallAfter: Int?
        if !head {
            lock.lock()
            stallAfter = stalls[name].map { max(0, $0 - start) }
            if let d = drops[name], d.remaining > 0 {
                drops[name] = (d.afterBytes, d.remaining - 1)
                dropAfter = max(0, d.afterBytes - start)
            }
            lock.unlock()
        }
        respond(fd, status.0, status.1, headers: headers, body: body, head: head, dropAfter: dropAfter, stallAfter: stallAfter)
    }
}
