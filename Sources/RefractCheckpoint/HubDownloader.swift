import Foundation
import RefractTensor
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Hub downloader
//
// Fetches files from `{endpoint}/{repo}/resolve/{revision}/{filename}` into the shared cache
// exactly as huggingface_hub stores them (see HubCache.swift):
//
// 1. HEAD the resolve URL (relative redirects followed, absolute ones not): `X-Repo-Commit` is the
//    commit, `X-Linked-Etag` (LFS) or `ETag` (unquoted) names the blob, `X-Linked-Size` or
//    `Content-Length` its size, and an absolute `Location` is where the bytes live (a CDN).
// 2. If `blobs/{etag}` exists, only the snapshot symlink is (re)made. Otherwise the body is
//    streamed into `blobs/{etag}.incomplete`; after a dropped connection the transfer resumes
//    with `Range: bytes={size of .incomplete}-` (up to `maxRetries` times, and on the next run).
// 3. The size is checked, and for LFS files (64-hex ETag = SHA-256 of the content) the digest,
//    computed while the bytes arrive; then the file is renamed to `blobs/{etag}`,
//    `snapshots/{commit}/{filename}` is linked to it and `refs/{revision}` records the commit.
//    A 404 for an optional file leaves `.no_exist/{commit}/{filename}`.
//
// The token is sent only to the endpoint's host, never to the CDN a download is redirected to.

/// Progress of one file transfer.
public struct DownloadProgress: Sendable {
    /// `org/name`.
    public var repo: String
    public var file: String
    /// Bytes in the blob so far (including bytes from an earlier, resumed attempt).
    public var bytesDone: Int64
    /// Expected size, when the hub announced it.
    public var totalBytes: Int64?
    /// True for the last report of a file.
    public var isFinished: Bool
}

/// What the hub says about one file at one revision.
public struct HubFileMetadata: Sendable, Equatable {
    /// The commit the revision resolved to.
    public var commit: String
    /// Blob name: the ETag without quotes (the SHA-256 for LFS files, the git blob id otherwise).
    public var etag: String
    /// File size, when announced.
    public var size: Int64?
    /// Where to GET the bytes (the resolve URL, or the CDN it redirects to).
    public var location: URL
    /// Whether the file is stored with LFS (`X-Linked-Etag` present).
    public var isLFS: Bool
}

/// Downloads model files from the Hugging Face hub into the local cache.
public struct HubDownloader: Sendable {
    public var cache: HubCache
    /// `https://huggingface.co` or `$HF_ENDPOINT`.
    public var endpoint: URL
    /// Bearer token (`$HF_TOKEN`, or the token file `huggingface-cli login` writes).
    public var token: String?
    /// When true (`HF_HUB_OFFLINE=1`), nothing touches the network; only cached files are returned.
    public var offline: Bool
    /// Extra attempts after a transport failure (including a timeout) or a 5xx/429 answer; each
    /// resumes the partial file. `$REFRACT_HTTP_RETRIES` when set.
    public var maxRetries: Int = HubDownloader.defaultMaxRetries
    /// Delay before the first retry; doubles on each further one.
    public var retryDelay: TimeInterval = 1
    /// Read timeout of each request: the longest silence once the response has begun, in seconds.
    /// `$REFRACT_HTTP_READ_TIMEOUT` when set.
    public var timeout: TimeInterval = HubDownloader.defaultReadTimeout
    /// Connect timeout of each request: the connection and the response headers must arrive within
    /// it, in seconds. `$REFRACT_HTTP_CONNECT_TIMEOUT` when set.
    public var connectTimeout: TimeInterval = HubDownloader.defaultConnectTimeout

    public static let defaultMaxRetries = 5
    public static let defaultReadTimeout: TimeInterval = 60
    public static let defaultConnectTimeout: TimeInterval = 30

    var timeouts: HTTPTimeouts { HTTPTimeouts(connect: connectTimeout, read: timeout) }
    /// Check the SHA-256 of LFS files against their ETag.
    public var verifyChecksums: Bool = true
    /// Called as bytes arrive (at most ~10 times a second per file, plus once when a file is done).
    public var progress: (@Sendable (DownloadProgress) -> Void)?

    public init(cache: HubCache, endpoint: URL = URL(string: "https://huggingface.co")!, token: String? = nil,
                offline: Bool = false) {
        self.cache = cache
        self.endpoint = endpoint
        self.token = token
        self.offline = offline
    }

    /// Configured from `HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` (or `$HF_HOME/token`)
    /// and `HF_HUB_OFFLINE`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        var ep = environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
        while ep.hasSuffix("/") { ep.removeLast() }
        self.init(cache: HubCache(environment: environment),
                  endpoint: URL(string: ep) ?? URL(string: "https://huggingface.co")!,
                  token: Self.token(environment: environment),
                  offline: Self.isOffline(environment: environment))
        let limits = Self.networkLimits(environment: environment)
        if let v = limits.connectTimeout { connectTimeout = v }
        if let v = limits.readTimeout { timeout = v }
        if let v = limits.retries { maxRetries = v }
    }

    /// `REFRACT_HTTP_CONNECT_TIMEOUT`, `REFRACT_HTTP_READ_TIMEOUT` (seconds, 0.01...3600) and
    /// `REFRACT_HTTP_RETRIES` (0...20) when set; a value that is not a number in range is ignored
    /// (nil) so a typo cannot disable the limits.
    public static func networkLimits(environment: [String: String]) -> (connectTimeout: TimeInterval?, readTimeout: TimeInterval?, retries: Int?) {
        func seconds(_ key: String) -> TimeInterval? {
            guard let raw = environment[key], let v = TimeInterval(raw.trimmingCharacters(in: .whitespaces)),
                  v.isFinite, (0.01...3600).contains(v) else { return nil }
            return v
        }
        let retries = environment["REFRACT_HTTP_RETRIES"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            .flatMap { (0...20).contains($0) ? $0 : nil }
        return (seconds("REFRACT_HTTP_CONNECT_TIMEOUT"), seconds("REFRACT_HTTP_READ_TIMEOUT"), retries)
    }

    /// Whether `HF_HUB_OFFLINE` is set to 1/true/yes/on.
    public static func isOffline(environment: [String: String]) -> Bool {
        ["1", "TRUE", "YES", "ON"].contains((environment["HF_HUB_OFFLINE"] ?? "").uppercased())
    }

    /// `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the contents of `HF_TOKEN_PATH` or `{HF_HOME}/token`.
    public static func token(environment: [String: String]) -> String? {
        for k in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
            if let t = environment[k]?.trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty { return t }
        }
        let home = environment["HF_HOME"].flatMap { $0.isEmpty ? nil : expandTilde($0, environment) }
            ?? ((environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? homeDirectory(environment) + "/.cache") + "/huggingface")
        let path = environment["HF_TOKEN_PATH"].flatMap { $0.isEmpty ? nil : expandTilde($0, environment) } ?? home + "/token"
        let t = (try? InputFile.read(path, maxBytes: 1 << 16)).map { String(decoding: $0, as: UTF8.self) }?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return (t?.isEmpty ?? true) ? nil : t
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{filename}` (revision fully percent-encoded).
    public func resolveURL(_ repoId: String, revision: String, filename: String) -> URL {
        let rev = revision.addingPercentEncoding(withAllowedCharacters: .urlUnreserved) ?? revision
        let file = filename.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: .urlUnreserved) ?? String($0) }.joined(separator: "/")
        return URL(string: "\(endpoint.absoluteString)/\(repoId)/resolve/\(rev)/\(file)")!
    }

    // MARK: Single files

    /// Ensures `filename` of `repo` is in the cache and returns its snapshot path. For an optional
    /// file (`required: false`) that the repository does not have, returns nil.
    public func download(_ filename: String, repo: HubRepo, required: Bool = true) async throws -> URL? {
        var pinned: String?
        return try await fetch(filename, repo: repo, pinned: &pinned, required: required)
    }

    /// HEAD request for one file. Returns nil when the file does not exist at that revision
    /// (a 404 other than repository/revision not found).
    public func fileMetadata(_ filename: String, repo: HubRepo) async throws -> HubFileMetadata? {
        if offline { throw CheckpointError.offline(repo: repo.id, revision: repo.revision, missing: [filename]) }
        switch try await head(filename, repoId: repo.id, revision: repo.revision) {
        case let .found(m): return m
        case .missing: return nil
        }
    }

    /// Fetches one file, pinning all files of one model to the commit of the first answer.
    func fetch(_ filename: String, repo: HubRepo, pinned: inout String?, required: Bool) async throws -> URL? {
        if let commit = pinned ?? cache.commit(for: repo) {
            let pointer = cache.snapshotFolder(repo.id, commit: commit).appendingPathComponent(filename)
            if FileManager.default.fileExists(atPath: pointer.path) { pinned = commit; return pointer }
            if !required, cache.isKnownMissing(filename, repoId: repo.id, commit: commit) { pinned = commit; return nil }
        }
        if offline {
            if required { throw CheckpointError.offline(repo: repo.id, revision: repo.revision, missing: [filename]) }
            return nil
        }
        let revision = pinned ?? repo.revision
        switch try await head(filename, repoId: repo.id, revision: revision) {
        case let .missing(commit, url):
            if let commit {
                cache.markMissing(repo.id, commit: commit, filename: filename)
                if pinned == nil {
                    pinned = commit
                    if repo.revision != commit { try cache.writeRef(repo.id, revision: repo.revision, commit: commit) }
                }
            }
            if required { throw CheckpointError.httpStatus(repo: repo.id, file: filename, status: 404, url: url.absoluteString) }
            return nil
        case let .found(meta):
            if pinned == nil {
                pinned = meta.commit
            }
            if repo.revision != meta.commit { try cache.writeRef(repo.id, revision: repo.revision, commit: meta.commit) }
            let blob = cache.blobFile(repo.id, etag: meta.etag)
            if !FileManager.default.fileExists(atPath: blob.path) {
                try await downloadBlob(meta, filename: filename, repoId: repo.id)
            }
            try cache.linkSnapshot(repo.id, commit: meta.commit, filename: filename, etag: meta.etag)
            return cache.snapshotFolder(repo.id, commit: meta.commit).appendingPathComponent(filename)
        }
    }

    // MARK: HEAD

    enum HeadResult {
        case found(HubFileMetadata)
        case missing(commit: String?, url: URL)
    }

    private func head(_ filename: String, repoId: String, revision: String) async throws -> HeadResult {
        var url = resolveURL(repoId, revision: revision, filename: filename)
        var carried: [String: String] = [:]  // hub headers seen on relative redirects
        for _ in 0..<10 {
            var req = URLRequest(url: url)
            req.httpMethod = "HEAD"
            addHeaders(&req)
            var r = try await withRetries(repoId: repoId, filename: filename) {
                try await HTTPTransfer.perform(req, timeouts: timeouts)
            }
            for (k, v) in carried where r.headers[k] == nil { r.headers[k] = v }
            switch r.status {
            case 200..<300:
                return .found(try metadata(from: r, location: url, repoId: repoId, filename: filename))
            case 300..<400:
                guard let raw = r.header("location"), let target = URL(string: raw, relativeTo: url)?.absoluteURL else {
                    throw CheckpointError.network(repo: repoId, file: filename, message: "HTTP \(r.status) without a Location header from \(url)")
                }
                if URL(string: raw)?.host == nil {
                    // Relative: still the hub (a renamed repository, or a mirror serving LFS itself).
                    for k in ["x-repo-commit", "x-linked-etag", "x-linked-size", "etag"] { carried[k] = r.headers[k] }
                    url = target
                    continue
                }
                return .found(try metadata(from: r, location: target, repoId: repoId, filename: filename))
            case 404:
                let code = r.header("x-error-code") ?? ""
                if code == "RepoNotFound" || code == "RevisionNotFound" {
                    throw CheckpointError.httpStatus(repo: repoId, file: filename, status: 404, url: url.absoluteString)
                }
                return .missing(commit: r.header("x-repo-commit").flatMap { isCommitHash($0) ? $0 : nil }, url: url)
            default:
                throw CheckpointError.httpStatus(repo: repoId, file: filename, status: r.status, url: url.absoluteString)
            }
        }
        throw CheckpointError.network(repo: repoId, file: filename, message: "too many redirects from \(url)")
    }

    private func metadata(from r: HTTPResponse, location: URL, repoId: String, filename: String) throws -> HubFileMetadata {
        guard let commit = r.header("x-repo-commit"), isCommitHash(commit) else {
            throw CheckpointError.network(repo: repoId, file: filename,
                message: "the server did not send an X-Repo-Commit header (is \(endpoint) a Hugging Face hub?)")
        }
        let linked = r.header("x-linked-etag")
        guard let rawTag = linked ?? r.header("etag"), let etag = normalizeETag(rawTag) else {
            throw CheckpointError.network(repo: repoId, file: filename, message: "the server did not send an ETag header")
        }
        let size = (r.header("x-linked-size") ?? (r.status < 300 ? r.header("content-length") : nil)).flatMap { Int64($0) }
        return HubFileMetadata(commit: commit, etag: etag, size: size, location: location, isLFS: linked != nil)
    }

    private func addHeaders(_ req: inout URLRequest) {
        req.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        req.setValue("refract/1 (swift)", forHTTPHeaderField: "User-Agent")
        if let token, req.url?.host == endpoint.host, req.url?.port == endpoint.port {
            req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
    }

    // MARK: Blob transfer

    private struct RetryableStatus: Error { var status: Int; var url: URL }
    private struct RestartTransfer: Error {}

    /// Runs `body`, retrying transport failures and 5xx/429 answers with exponential backoff.
    private func withRetries<T>(repoId: String, filename: String, _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                let value = try await body()
                if let r = value as? HTTPResponse, r.status == 429 || (500..<600).contains(r.status) {
                    throw RetryableStatus(status: r.status, url: r.url)
                }
                return value
            } catch let e where e is TransportError || e is RetryableStatus || e is RestartTransfer {
                if attempt >= maxRetries {
                    if let s = e as? RetryableStatus {
                        throw CheckpointError.httpStatus(repo: repoId, file: filename, status: s.status, url: s.url.absoluteString)
                    }
                    throw CheckpointError.network(repo: repoId, file: filename,
                        message: "\(e) (gave up after \(attempt + 1) attempt\(attempt == 0 ? "" : "s"); run again to resume)")
                }
                let delay = retryDelay * pow(2, Double(attempt))
                attempt += 1
                try await Task.sleep(nanoseconds: UInt64(max(0, delay) * 1e9))
            }
        }
    }

    private func downloadBlob(_ meta: HubFileMetadata, filename: String, repoId: String) async throws {
        let blob = cache.blobFile(repoId, etag: meta.etag)
        let incomplete = cache.incompleteFile(repoId, etag: meta.etag)
        try createDirectory(blob.deletingLastPathComponent())
        let lock = try await FileLock.acquire(cache.lockFile(repoId, etag: meta.etag))
        defer { lock.release() }
        if FileManager.default.fileExists(atPath: blob.path) { return }  // another process finished it

        let digest = try await withRetries(repoId: repoId, filename: filename) {
            try await transfer(meta, into: incomplete, filename: filename, repoId: repoId)
        }
        let size = fileSize(incomplete)
        if let expected = meta.size, size != expected {
            unlink(incomplete.path)
            throw CheckpointError.integrity(repo: repoId, file: filename, reason: "received \(size) bytes, expected \(expected)")
        }
        if let digest, digest != meta.etag {
            unlink(incomplete.path)
            throw CheckpointError.integrity(repo: repoId, file: filename, reason: "SHA-256 is \(digest), the hub says \(meta.etag)")
        }
        if rename(incomplete.path, blob.path) != 0 {
            throw CheckpointError.io(path: blob.path, message: "cannot move the finished download into place: \(errnoString())")
        }
        progress?(DownloadProgress(repo: repoId, file: filename, bytesDone: size, totalBytes: meta.size, isFinished: true))
    }

    /// One GET attempt, appending to `incomplete` from its current size. Returns the SHA-256 hex
    /// of the whole file when it is to be verified.
    private func transfer(_ meta: HubFileMetadata, into incomplete: URL, filename: String, repoId: String) async throws -> String? {
        let sink = try BlobSink(path: incomplete.path, hash: verifyChecksums && meta.isLFS && meta.etag.utf8.count == 64,
                                repo: repoId, file: filename, total: meta.size, progress: progress)
        defer { sink.close() }
        if let expected = meta.size, sink.offset > expected { try sink.truncate() }
        if let expected = meta.size, sink.offset == expected, expected > 0 { return try sink.finishDigest() }

        var url = meta.location
        for _ in 0..<10 {
            var req = URLRequest(url: url)
            addHeaders(&req)
            if sink.offset > 0 { req.setValue("bytes=\(sink.offset)-", forHTTPHeaderField: "Range") }
            let requestedOffset = sink.offset
            let r = try await HTTPTransfer.perform(req, timeouts: timeouts, onResponse: { r in
                switch r.status {
                case 200:
                    if sink.offset > 0 { try sink.truncate() }  // server ignored the Range: start over
                    return true
                case 206:
                    guard let range = r.header("content-range"), let start = contentRangeStart(range), start == requestedOffset else {
                        throw RestartTransfer()
                    }
                    return true
                case 300..<400: return false
                case 416:
                    try sink.truncate()
                    throw RestartTransfer()
                case 429, 500..<600: throw RetryableStatus(status: r.status, url: r.url)
                default:
                    throw CheckpointError.httpStatus(repo: repoId, file: filename, status: r.status, url: r.url.absoluteString)
                }
            }, onData: { data in try sink.append(data) })
            if let next = r.redirectLocation {
                url = next
                continue
            }
            return try sink.finishDigest()
        }
        throw CheckpointError.network(repo: repoId, file: filename, message: "too many redirects from \(meta.location)")
    }
}

/// Appends received bytes to the `.incomplete` file, hashing and reporting progress.
private final class BlobSink: @unchecked Sendable {  // used from one delegate queue at a time
    let path: String
    let fd: Int32
    private(set) var offset: Int64
    private var hasher: SHA256?
    private let hashing: Bool
    private let repo: String, file: String, total: Int64?
    private let progress: (@Sendable (DownloadProgress) -> Void)?
    private var lastReport = 0.0

    init(path: String, hash: Bool, repo: String, file: String, total: Int64?, progress: (@Sendable (DownloadProgress) -> Void)?) throws {
        self.path = path
        self.hashing = hash
        self.repo = repo; self.file = file; self.total = total; self.progress = progress
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw CheckpointError.io(path: path, message: "cannot open: \(errnoString())") }
        offset = Int64(lseek(fd, 0, SEEK_END))
        if hash {
            // Hash the bytes kept from an earlier attempt, then continue with the new ones.
            var h = SHA256()
            if offset > 0 { try h.update(fileAt: URL(fileURLWithPath: path)) }
            hasher = h
        }
    }

    func truncate() throws {
        if ftruncate(fd, 0) != 0 { throw CheckpointError.io(path: path, message: "cannot truncate: \(errnoString())") }
        lseek(fd, 0, SEEK_SET)
        offset = 0
        if hashing { hasher = SHA256() }
    }

    func append(_ data: Data) throws {
        try data.withUnsafeBytes { (buf: UnsafeRawBufferPointer) in
            var done = 0
            while done < buf.count {
                let n = write(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CheckpointError.io(path: path, message: "write failed: \(errnoString())")
                }
                done += n
            }
            hasher?.update(buf)
        }
        offset += Int64(data.count)
        if let progress {
            let now = Date().timeIntervalSinceReferenceDate
            if now - lastReport >= 0.1 {
                lastReport = now
                progress(DownloadProgress(repo: repo, file: file, bytesDone: offset, totalBytes: total, isFinished: false))
            }
        }
    }

    func finishDigest() throws -> String? {
        if fsync(fd) != 0 { throw CheckpointError.io(path: path, message: "fsync failed: \(errnoString())") }
        guard var h = hasher else { return nil }
        hasher = nil
        return h.finalizeHex()
    }

    func close() { _ = closeDescriptor(fd) }
}

@inline(__always) private func closeDescriptor(_ fd: Int32) -> Int32 { close(fd) }

/// An exclusive advisory lock on a file (`flock`), polled so it never blocks a thread.
struct FileLock {
    let fd: Int32

    static func acquire(_ url: URL) async throws -> FileLock {
        try createDirectory(url.deletingLastPathComponent())
        let fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw CheckpointError.io(path: url.path, message: "cannot open lock file: \(errnoString())") }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno != EWOULDBLOCK && errno != EINTR {
                let message = errnoString()
                close(fd)
                throw CheckpointError.io(path: url.path, message: "cannot lock: \(message)")
            }
            do { try await Task.sleep(nanoseconds: 100_000_000) } catch { close(fd); throw error }
        }
        return FileLock(fd: fd)
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// huggingface_hub's ETag normalisation: drop a weak `W/` prefix and the quotes.
func normalizeETag(_ raw: String) -> String? {
    var s = raw.trimmingCharacters(in: .whitespaces)
    if s.hasPrefix("W/") { s.removeFirst(2) }
    s = s.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    guard !s.isEmpty, !s.contains("/"), s != ".", s != ".." else { return nil }
    return s
}

/// The first byte position of a `Content-Range: bytes start-end/total` header.
func contentRangeStart(_ header: String) -> Int64? {
    let s = header.trimmingCharacters(in: .whitespaces)
    guard s.hasPrefix("bytes ") else { return nil }
    let rest = s.dropFirst(6)
    guard let dash = rest.firstIndex(of: "-") else { return nil }
    return Int64(rest[..<dash])
}

func fileSize(_ url: URL) -> Int64 {
    var st = stat()
    return stat(url.path, &st) == 0 ? Int64(st.st_size) : 0
}

extension CharacterSet {
    /// RFC 3986 unreserved characters (what Python's `quote(s, safe="")` leaves alone).
    static let urlUnreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}

// MARK: - Terminal progress

/// Draws download progress on stderr, for command-line tools.
public enum TerminalProgress {
    /// A progress callback that redraws one stderr line per file, or nil when stderr is not a
    /// terminal (so logs and pipes stay clean).
    public static func stderrReporter() -> (@Sendable (DownloadProgress) -> Void)? {
        guard isatty(2) != 0 else { return nil }
        let state = ReporterState()
        return { p in state.draw(p) }
    }

    private final class ReporterState: @unchecked Sendable {
        private let lock = NSLock()
        private var start: [String: (time: Double, bytes: Int64)] = [:]

        func draw(_ p: DownloadProgress) {
            lock.lock()
            defer { lock.unlock() }
            let now = Date().timeIntervalSinceReferenceDate
            let key = p.repo + "/" + p.file
            let s = start[key] ?? (now, p.bytesDone)
            start[key] = s
            let mb = { (b: Int64) in String(format: "%.1f", Double(b) / 1_000_000) }
            var line = "\(p.file): \(mb(p.bytesDone))"
            if let total = p.totalBytes, total > 0 {
                line += "/\(mb(total)) MB \(Int(100 * Double(p.bytesDone) / Double(total)))%"
            } else {
                line += " MB"
            }
            let dt = now - s.time
            if dt > 0.5 { line += String(format: " %.1f MB/s", Double(p.bytesDone - s.bytes) / dt / 1_000_000) }
            let text = "\r\u{1B}[K" + line + (p.isFinished ? "\n" : "")
            if p.isFinished { start[key] = nil }
            FileHandle.standardError.write(Data(text.utf8))
        }
    }
}
