import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

// MARK: - HTTP transfer
//
// One HTTP request over URLSession with redirects NOT followed automatically (the downloader
// needs the hub's own headers on the redirect response, and must not send the token to a CDN),
// the body streamed to a callback as it arrives (multi-gigabyte files never sit in memory), and
// an idle timeout.

/// Status, headers (lower-cased names) and URL of one HTTP response.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var url: URL

    func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// The redirect target, resolved against the request URL, for 3xx responses.
    var redirectLocation: URL? {
        guard (300..<400).contains(status), let loc = header("location") else { return nil }
        return URL(string: loc, relativeTo: url)?.absoluteURL
    }
}

/// A failed transfer (no HTTP response, or the connection broke while the body was arriving).
struct TransportError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

final class HTTPTransfer: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    // Delegate callbacks run on a serial queue; `lock` guards the hand-off to the awaiting task.
    private let lock = NSLock()
    private var continuation: CheckedContinuation<HTTPResponse, Error>?
    private var response: HTTPResponse?
    private var receiving = false
    private var sinkError: Error?
    private let onResponse: (HTTPResponse) throws -> Bool
    private let onData: (Data) throws -> Void

    private init(onResponse: @escaping (HTTPResponse) throws -> Bool, onData: @escaping (Data) throws -> Void) {
        self.onResponse = onResponse
        self.onData = onData
    }

    /// Performs `request` once. `onResponse` sees the status and headers and returns whether the
    /// body should be passed to `onData`; errors thrown by either abort the transfer and are
    /// rethrown. Transport failures throw `TransportError`.
    static func perform(_ request: URLRequest, timeout: TimeInterval,
                        onResponse: @escaping (HTTPResponse) throws -> Bool = { _ in false },
                        onData: @escaping (Data) throws -> Void = { _ in }) async throws -> HTTPResponse {
        let transfer = HTTPTransfer(onResponse: onResponse, onData: onData)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        config.urlCache = nil
        config.httpShouldSetCookies = false
        config.httpCookieAcceptPolicy = .never
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let session = URLSession(configuration: config, delegate: transfer, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        var req = request
        req.timeoutInterval = timeout
        let task = session.dataTask(with: req)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPResponse, Error>) in
                transfer.lock.lock()
                transfer.continuation = c
                transfer.lock.unlock()
                task.resume()
            }
        } onCancel: {
            task.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)  // the caller follows redirects itself
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        guard let http = response as? HTTPURLResponse else {
            sinkError = TransportError(message: "not an HTTP response")
            completionHandler(.cancel)
            return
        }
        var headers: [String: String] = [:]
        for (k, v) in http.allHeaderFields {
            if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v }
        }
        let r = HTTPResponse(status: http.statusCode, headers: headers, url: http.url ?? dataTask.originalRequest?.url ?? URL(fileURLWithPath: "/"))
        self.response = r
        do {
            receiving = try onResponse(r)
            completionHandler(.allow)
        } catch {
            sinkError = error
            completionHandler(.cancel)
        }
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard receiving, sinkError == nil else { return }
        do { try onData(data) } catch {
            sinkError = error
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        if let sinkError {
            c?.resume(throwing: sinkError)
        } else if let error {
            let ns = error as NSError
            if ns.domain == NSURLErrorDomain && ns.code == NSURLErrorCancelled {
                c?.resume(throwing: CancellationError())
            } else {
                c?.resume(throwing: TransportError(message: error.localizedDescription))
            }
        } else if let response {
            c?.resume(returning: response)
        } else {
            c?.resume(throwing: TransportError(message: "no response"))
        }
    }
}
