import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - One writer per output directory
//
// A process that writes a resumable output directory (a run, a segmentation output) first takes an
// exclusive `flock` on `DIR/.refract.lock` and keeps it while it writes; the operating system
// releases it when the holder closes it, exits or is killed, so a stale lock file never blocks a
// later writer. The holder writes its pid, command line and start time into the file; a second
// writer, refused, names them. `flock` locks belong to the open file description, so two writers
// in one process (two `RunLock`s) exclude each other as two processes do.

/// An exclusive lock on an output directory, held until `release()` or deinit (or the process ends).
public final class RunLock: @unchecked Sendable {
    /// The lock file's name inside the directory it guards.
    public static let fileName = ".refract.lock"

    /// The guarded directory.
    public let directory: URL
    private let lock = NSLock()
    private var fd: Int32

    private init(directory: URL, fd: Int32) {
        self.directory = directory
        self.fd = fd
    }

    deinit { release() }

    /// Takes the lock on `directory` (which must exist), creating the lock file. Fails at once,
    /// naming the holder, when another writer holds it. `what` names the output in the message
    /// ("the run", "the segmentation output").
    public static func acquire(_ directory: URL, what: String) throws -> RunLock {
        let dir = directory.standardizedFileURL
        let path = dir.appendingPathComponent(fileName).path
        // O_NONBLOCK and O_NOFOLLOW: a FIFO or a symbolic link planted under the lock's name must not
        // block the open or redirect it; anything but a regular file is refused.
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW, 0o644)
        if fd < 0 {
            throw StoreError(.io, path: dir.path, "cannot write: creating the lock file \(path) (taken before writing \(what)): "
                + FileOutput.reason(errno, path: path))
        }
        var st = stat()
        if fstat(fd, &st) != 0 || (st.st_mode & S_IFMT) != S_IFREG {
            close(fd)
            throw StoreError(.io, path: dir.path, "the lock file \(path) is not a regular file; remove it")
        }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            close(fd)
            if code == EWOULDBLOCK {
                throw StoreError(.locked, path: dir.path,
                                 "\(what) is being written by another process (\(holder(path))); wait for it to finish "
                                    + "or stop it, or write to another path")
            }
            throw StoreError(.io, path: dir.path, "cannot lock \(path): \(String(cString: strerror(code)))")
        }
        // Ours: record who holds it (best effort; the lock itself is the flock, not the text).
        let args = CommandLine.arguments.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
        let started = ISO8601DateFormatter().string(from: Date())
        let text = Array("pid \(getpid())\ncommand \(args.prefix(500))\nstarted \(started)\n".utf8)
        if ftruncate(fd, 0) == 0 {
            _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            _ = fsync(fd)
        }
        return RunLock(directory: dir, fd: fd)
    }

    /// Releases the lock (the file stays; it is harmless without a holder).
    public func release() {
        lock.lock(); defer { lock.unlock() }
        if fd >= 0 {
            _ = flock(fd, LOCK_UN)
            close(fd)
            fd = -1
        }
    }

    /// "pid 123, refract decompose …, since 2026-…" from a lock file, or what is known.
    static func holder(_ path: String) -> String {
        // The holder writes its record right after taking the lock; give it a moment.
        var text = ""
        for attempt in 0..<20 {
            text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if text.hasPrefix("pid ") && text.hasSuffix("\n") { break }
            if attempt < 19 { usleep(10_000) }
        }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let space = line.firstIndex(of: " ") else { continue }
            fields[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        guard let pid = fields["pid"], Int32(pid) != nil else { return "its pid is not recorded in \(path)" }
        var parts = ["pid \(pid)"]
        if let command = fields["command"], !command.isEmpty { parts.append("`\(command)`") }
        if let started = fields["started"] { parts.append("since \(started)") }
        return parts.joined(separator: ", ")
    }
}
