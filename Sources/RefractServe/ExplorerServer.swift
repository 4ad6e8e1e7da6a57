// MARK: - `refract serve`: the explorer over HTTP
//
// Routes a request to the explorer's answer and encodes it: JSON for the API, PNG for images and
// heatmaps, and the pages (ExplorerPages) from memory. Nothing here reads a path from a request:
// images are addressed by row. Every refusal is a 4xx with `{"error": "…"}`; the work of an answer
// runs on a dispatch queue, off Swift concurrency's few threads, so a long heatmap does not hold up
// the requests that come after it. Read-only: only GET (and POST for a ranking with a long text).

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import RefractExplore

public enum ExplorerServer {
    /// Largest request body accepted (POST /api/rank).
    public static let maxBody = 64 << 10

    /// The router of the explorer's pages and API.
    public static func router(_ explorer: Explorer) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/") { _, _ in page(ExplorerPages.html, type: "text/html; charset=utf-8") }
        router.get("/index.html") { _, _ in page(ExplorerPages.html, type: "text/html; charset=utf-8") }
        router.get("/app.js") { _, _ in page(ExplorerPages.javascript, type: "text/javascript; charset=utf-8") }
        router.get("/app.css") { _, _ in page(ExplorerPages.css, type: "text/css; charset=utf-8") }

        router.get("/api/run") { _, _ in try await answer { explorer.runInfo() } }
        router.get("/api/components") { _, _ in try await answer { explorer.componentList() } }
        router.get("/api/rank") { request, _ in try await guarded {
            let q = request.uri.queryParameters
            let text = try required(q.get("text"), "text")
            let top = try integer(q.get("top"), "top", default: 20)
            return try await answer { try explorer.rank(text: text, top: top) }
        } }
        router.post("/api/rank") { request, _ in
            struct Body: Decodable { var text: String; var top: Int? }
            var request = request
            let buffer: ByteBuffer
            do { buffer = try await request.collectBody(upTo: maxBody) } catch {
                return failure(ExplorerError(413, "the request body is larger than \(maxBody) bytes"))
            }
            let body: Body
            do { body = try JSONDecoder().decode(Body.self, from: Data(buffer.readableBytesView)) } catch {
                return failure(ExplorerError(400, "the body is not JSON of the form {\"text\": \"...\", \"top\": 20}"))
            }
            let top = body.top ?? 20
            return try await answer { try explorer.rank(text: body.text, top: top) }
        }
        router.get("/api/components/:index") { _, context in try await guarded {
            let k = try integer(context.parameters.get("index"), "component")
            return try await answer { try explorer.component(k) }
        } }
        router.get("/api/components/:index/neighbors") { request, context in try await guarded {
            let k = try integer(context.parameters.get("index"), "component")
            let q = request.uri.queryParameters
            let row = try integer(q.get("row"), "row")
            let top = try integer(q.get("top"), "top", default: 12)
            return try await answer { try explorer.neighbors(component: k, row: row, top: top) }
        } }
        router.get("/api/images/:row") { _, context in try await guarded {
            let row = try integer(context.parameters.get("row"), "row")
            return try await answer { try explorer.image(row) }
        } }
        router.get("/api/images/:row/contributions") { request, context in try await guarded {
            let row = try integer(context.parameters.get("row"), "row")
            let text = try required(request.uri.queryParameters.get("text"), "text")
            return try await answer { try explorer.contributions(row: row, text: text) }
        } }
        router.get("/api/images/:row/image") { _, context in try await guarded {
            let row = try integer(context.parameters.get("row"), "row")
            return try await png { try explorer.imagePNG(row: row) }
        } }
        router.get("/api/images/:row/heatmap") { request, context in try await guarded {
            let row = try integer(context.parameters.get("row"), "row")
            let q = request.uri.queryParameters
            let text = try required(q.get("text"), "text")
            let list = try required(q.get("components"), "components")
            let chosen = try list.split(separator: ",", omittingEmptySubsequences: false).map { try integer(String($0), "components") }
            return try await png { try explorer.heatmapPNG(row: row, text: text, components: chosen) }
        } }
        router.get("/api/**") { request, _ in
            failure(ExplorerError(404, "no such API endpoint: \(request.uri.path)"))
        }
        return router
    }

    /// Serves `explorer` on `host:port` until the task is cancelled (or SIGINT/SIGTERM);
    /// `onRunning(port)` is called once it listens (port 0 picks a free one).
    public static func run(_ explorer: Explorer, host: String, port: Int, onRunning: @escaping @Sendable (Int) async -> Void) async throws {
        var logger = Logger(label: "refract.serve")
        logger.logLevel = .critical                                       // no line per start, request or shutdown
        let app = Application(router: router(explorer), configuration: .init(address: .hostname(host, port: port), serverName: "refract"),
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) }, logger: logger)
        try await app.runService()
    }

    /// The handler's response, or its refusal (an `ExplorerError` from parsing the request) as JSON.
    static func guarded(_ body: () async throws -> Response) async throws -> Response {
        do { return try await body() } catch let e as ExplorerError { return failure(e) }
    }

    // MARK: Encoding

    static let securityHeaders: [(HTTPField.Name, String)] = [
        (.contentSecurityPolicy, "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
            + "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        (HTTPField.Name("X-Content-Type-Options")!, "nosniff"),
        (.cacheControl, "no-store"),
    ]

    static func response(status: HTTPResponse.Status, type: String, bytes: some Collection<UInt8>) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        for (name, value) in securityHeaders { headers[name] = value }
        var buffer = ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: buffer))
    }

    static func page(_ text: String, type: String) -> Response {
        response(status: .ok, type: type, bytes: Array(text.utf8))
    }

    static func failure(_ error: ExplorerError) -> Response {
        let body = (try? JSONEncoder().encode(["error": error.message])) ?? Data("{\"error\":\"?\"}".utf8)
        return response(status: HTTPResponse.Status(code: error.status), type: "application/json", bytes: Array(body))
    }

    /// Runs `work` on a dispatch queue (not on the cooperative pool) and encodes its value as JSON.
    static func answer<T: Encodable>(_ work: @escaping @Sendable () throws -> T) async throws -> Response {
        do {
            let value = try await offload(work)
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return response(status: .ok, type: "application/json", bytes: Array(try e.encode(value)))
        } catch let e as ExplorerError {
            return failure(e)
        } catch {
            return failure(ExplorerError(500, "\(error)"))
        }
    }

    static func png(_ work: @escaping @Sendable () throws -> [UInt8]) async throws -> Response {
        do {
            return response(status: .ok, type: "image/png", bytes: try await offload(work))
        } catch let e as ExplorerError {
            return failure(e)
        } catch {
            return failure(ExplorerError(500, "\(error)"))
        }
    }

    static let queue = DispatchQueue(label: "refract.serve.work", attributes: .concurrent)

    static func offload<T>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    // MARK: Parameters

    static func required(_ value: String?, _ name: String) throws -> String {
        guard let value else { throw ExplorerError(400, "missing parameter '\(name)'") }
        return value
    }

    /// A whole number parameter (a path segment or a query value), refusing anything else,
    /// including numbers beyond Int, with 400.
    static func integer(_ value: String?, _ name: String, default fallback: Int? = nil) throws -> Int {
        guard let value else {
            if let fallback { return fallback }
            throw ExplorerError(400, "missing parameter '\(name)'")
        }
        guard value.count <= 18, let n = Int(value.trimmingCharacters(in: .whitespaces)) else {
            throw ExplorerError(400, "'\(name)' must be a whole number, not '\(value.prefix(40))'")
        }
        return n
    }
}
