import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

// MARK: - HTTP transfer
//
// One HTTP request over URLSession with redirects NOT followed automatically (the downloader
// needs the hub's own headers on the redirect response, and must not send the token to a CDN),
// the body streamed to a callback as it arrives (multi-gigabyte files never sit in memory), and
// two timeouts enforced by a watchdog of our own (so they hold whatever URLSession does with a
// server that accepts the connection and never answers):
// - connect timeout: the connection and the response headers must arrive within it;
// - read timeout: the longest silence allowed once the response has begun (between body chunks).
// When one fires, the transfer is cancelled and fails with a `TransportError` that names the URL
// and which timeout fired; the caller's retries take it from there.

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

/// The two limits of one HTTP request, in seconds.
public struct HTTPTimeouts: Sendable, Equatable {
    /// Connection plus response headers.
    public var connect: TimeInterval
    /// Longest silence once the response has begun.
    public var read: TimeInterval
    public init(connect: TimeInterval, read: TimeInterval) {
        self.connect = connect
        self.read = read
    }
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
    // Watchdog state, under `lock`.
    private let started = DispatchTime.now().uptimeNanoseconds
    private var lastActivity = DispatchTime.now().uptimeNanoseconds
    private var responded = false
    private var bodyBytes: Int64 = 0
    /// Set on the delegate queue when a timeout failed the transfer; later callbacks are ignored.
    private var timedOut = false
    private weak var delegateQueue: OperationQueue?

    private init(onResponse: @escaping (HTTPResponse) throws -> Bool, onData: @escaping (Data) throws -> Void) {
        self.onResponse = onResponse
        self.onData = onData
    }

    private func noteActivity(response: Bool = false, bytes: Int = 0) {
        lock.lock()
        lastActivity = DispatchTime.now().uptimeNanoseconds
        if response { responded = true }
        bodyBytes += Int64(bytes)
        lock.unlock()
    }

    /// Called by the watchdog: if a limit has passed, fails the transfer (once) and returns true.
    private func checkTimeouts(_ timeouts: HTTPTimeouts, request: URLRequest, task: URLSessionTask) -> Bool {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.lock()
        let message: String?
        let what = "\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? "?")"
        if !responded, Double(now - started) / 1e9 > timeouts.connect {
            message = "\(what): no response within \(seconds(timeouts.connect)) (connect timeout)"
        } else if responded, Double(now - lastActivity) / 1e9 > timeouts.read {
            message = "\(what): no data for \(seconds(timeouts.read)) after \(bodyBytes) bytes of the body (read timeout)"
        } else {
            message = nil
        }
        lock.unlock()
        guard let message else { return false }
        // Failed on the delegate queue, so no delegate callback is running meanwhile and none
        // touches the caller's sink afterwards (`timedOut`).
        delegateQueue?.addOperation { [self] in
            timedOut = true
            lock.lock()
            let c = continuation
            continuation = nil
            lock.unlock()
            c?.resume(throwing: TransportError(message: message))
            task.cancel()
        }
        return true
    }

    /// Performs `request` once. `onResponse` sees the status and headers and returns whether the
    /// body should be passed to `onData`; errors thrown by either abort the transfer and are
    /// rethrown. Transport failures throw `TransportError`.
    static func perform(_ request: URLRequest, timeouts: HTTPTimeouts,
                        onResponse: @escaping (HTTPResponse) throws -> Bool = { _ in false },
                        onData: @escaping (Data) throws -> Void = { _ in }) async throws -> HTTPResponse {
        let transfer = HTTPTransfer(onResponse: onResponse, onData: onData)
        let config = URLSessionConfiguration.ephemeral
        // URLSession's own idle timeout is a backstop only: the watchdog below fires first.
        let timeout = max(timeouts.connect, timeouts.read) + 5
        config.timeoutIntervalForRequest = timeout
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        config.urlCache = nil
        config.httpShouldSetCookies = false
        config.httpCookieAcceptPolicy = .never
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        transfer.delegateQueue = queue
        let session = URLSession(configuration: config, delegate: transfer, delegateQueue: queue)
        defer { session.finishTasksAndInvalidate() }
        var req = request
        req.timeoutInterval = timeout
        let task = session.dataTask(with: req)
        let watchdog = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        defer { watchdog.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<HTTPResponse, Error>) in
                transfer.lock.lock()
                transfer.continuation = c
                transfer.lock.unlock()
                let tick = max(0.01, min(0.25, min(timeouts.connect, timeouts.read) / 4))
                watchdog.schedule(deadline: .now() + tick, repeating: tick)
                watchdog.setEventHandler {
                    if transfer.checkTimeouts(timeouts, request: req, task: task) { watchdog.cancel() }
                }
                watchdog.resume()
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
        if timedOut { return completionHandler(.cancel) }
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
        noteActivity(response: true)
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
        noteActivity(bytes: data.count)
        guard receiving, sinkError == nil, !timedOut else { return }
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

/// "30 s", "0.5 s".
private func seconds(_ t: TimeInterval) -> String {
    t == t.rounded() ? "\(Int(t)) s" : "\(t) s"
}
