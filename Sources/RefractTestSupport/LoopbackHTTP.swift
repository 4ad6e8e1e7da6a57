// MARK: - A plain HTTP/1.1 client for servers on loopback
//
// What the tests use to talk to `refract serve` and to a WebDriver (chromedriver): POSIX sockets
// only, no proxy (the environment's http_proxy never applies), no URL normalisation (the request
// line goes out exactly as written, hostile ones included), and a time limit on every exchange so
// that a server that stops answering fails the test instead of hanging it.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum LoopbackHTTP {
    /// An answer: the status (0 when no HTTP head came back), the head as text (status line and
    /// header lines) and the body (de-chunked).
    public struct Response: Sendable {
        public var status: Int
        public var headers: String
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }

        /// The value of header `name` (case-insensitive), if present.
        public func header(_ name: String) -> String? {
            let key = name.lowercased() + ":"
            for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix(key) {
                return line.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
            }
            return nil
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// One exchange on a new connection to 127.0.0.1:`port`: sends `request` (the request line and
    /// headers, ending with an empty line, exactly as given) and `body`, then reads the answer: up
    /// to its Content-Length, through its last chunk, or until the server closes. Throws when the
    /// connection is refused or no byte arrives for `timeout` seconds.
    public static func exchange(port: Int, request: String, body: [UInt8] = [], timeout: TimeInterval = 30) throws -> Response {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let noSignal = Int32(MSG_NOSIGNAL)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        let noSignal: Int32 = 0
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        guard fd >= 0 else { throw Failure("socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var limit = timeval(tv_sec: time_t(timeout), tv_usec: suseconds_t((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var addr = loopback(port: port)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure("connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }

        let bytes = Array(request.utf8) + body
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, noSignal) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }                                        // the server may close early on a refused body
            sent += n
        }

        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var headEnd: Int?
        while !complete(data, headEnd: &headEnd) {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { data += buffer[0..<n]; continue }
            if n == 0 { break }                                        // closed by the server
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw Failure("no answer from 127.0.0.1:\(port) within \(timeout) s to \(request.prefix(while: { $0 != "\r" }))")
            }
            break                                                      // reset: keep what arrived
        }
        guard let split = headEnd ?? findHeadEnd(data) else { return Response(status: 0, headers: "", body: data) }
        let head = String(decoding: data[..<split], as: UTF8.self)
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        var payload = Array(data[(split + 4)...])
        if head.lowercased().contains("transfer-encoding: chunked") { payload = dechunk(payload) }
        return Response(status: status, headers: head, body: payload)
    }

    /// GET `path` (with `Connection: close`).
    public static func get(port: Int, path: String, timeout: TimeInterval = 30) throws -> Response {
        try exchange(port: port, request: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n", timeout: timeout)
    }

    /// A JSON exchange: `body` (any JSONSerialization value) is sent as JSON; the answer's body is
    /// parsed as JSON (nil when it is empty or not JSON).
    public static func json(port: Int, method: String = "GET", path: String, body: Any? = nil,
                            timeout: TimeInterval = 30) throws -> (status: Int, value: Any?) {
        var payload: [UInt8] = []
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: application/json\r\nConnection: close\r\n"
        if let body {
            payload = Array(try JSONSerialization.data(withJSONObject: body, options: [.fragmentsAllowed]))
        }
        if body != nil || method == "POST" || method == "PUT" {
            head += "Content-Type: application/json; charset=utf-8\r\nContent-Length: \(payload.count)\r\n"
        }
        let r = try exchange(port: port, request: head + "\r\n", body: payload, timeout: timeout)
        let value = r.body.isEmpty ? nil : try? JSONSerialization.jsonObject(with: Data(r.body), options: [.fragmentsAllowed])
        return (r.status, value)
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, released),
    /// for a server that must be told its port (chromedriver).
    public static func freePort() throws -> Int {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure("socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var addr = loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure("bind: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure("getsockname: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The payload of a chunked body (stops at the last chunk or at the first malformed size line).
    public static func dechunk(_ b: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [], i = 0
        while i < b.count {
            guard let end = b[i...].indices.dropLast().first(where: { b[$0] == 13 && b[$0 + 1] == 10 }),
                  let size = Int(String(decoding: b[i..<end], as: UTF8.self).split(separator: ";").first ?? "", radix: 16),
                  size > 0 else { break }
            out += b[(end + 2)..<min(b.count, end + 2 + size)]
            i = end + 2 + size + 2
        }
        return out
    }

    // MARK: Internals

    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        #if canImport(Darwin)
        addr.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }

    static func findHeadEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        return (0...(data.count - 4)).first { data[$0] == 13 && data[$0 + 1] == 10 && data[$0 + 2] == 13 && data[$0 + 3] == 10 }
    }

    /// Whether `data` holds a whole answer: its head and, by Content-Length or the last chunk, its
    /// body. Without either (or for an answer to a request the server reads no further) the
    /// connection's end says so.
    static func complete(_ data: [UInt8], headEnd: inout Int?) -> Bool {
        if headEnd == nil { headEnd = findHeadEnd(data) }
        guard let split = headEnd else { return false }
        let head = String(decoding: data[..<split], as: UTF8.self).lowercased()
        let bodyStart = split + 4
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            if let n = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) {
                return data.count - bodyStart >= n
            }
        }
        if head.contains("transfer-encoding: chunked") {
            // The last chunk: "0" (maybe with extensions) then an empty trailer.
            let tail = data.suffix(from: bodyStart)
            guard tail.count >= 5 else { return false }
            let last = Array(tail.suffix(5))
            return last == Array("0\r\n\r\n".utf8) && lastChunkReached(Array(tail))
        }
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        return status == 204 || status == 304 || (100..<200).contains(status)
    }

    /// Walks the chunk sizes to tell the terminating chunk from data that happens to end in "0\r\n\r\n".
    static func lastChunkReached(_ b: [UInt8]) -> Bool {
        var i = 0
        while i < b.count {
            guard let end = b[i...].indices.dropLast().first(where: { b[$0] == 13 && b[$0 + 1] == 10 }),
                  let size = Int(String(decoding: b[i..<end], as: UTF8.self).split(separator: ";").first ?? "", radix: 16)
            else { return false }
            if size == 0 { return true }
            i = end + 2 + size + 2
        }
        return false
    }
}
