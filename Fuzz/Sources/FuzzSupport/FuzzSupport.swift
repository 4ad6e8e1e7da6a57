// MARK: - Fuzz support
//
// What every harness shares: a per-process scratch directory (on tmpfs when there is one) where
// inputs are written as files, because the CLI's parsers take paths (they stat, open and map the
// file themselves), and a way to split one fuzz input into several files.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `write(2)` (inside `Scratch`, `write` names the static method).
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }

public enum Scratch {
    /// `$REFRACT_FUZZ_SCRATCH/pid-<pid>` (scripts/fuzz.sh sets it to a temporary tmpfs
    /// directory it removes afterwards), else `/dev/shm` or the temporary directory.
    public static let directory: URL = {
        let env = ProcessInfo.processInfo.environment["REFRACT_FUZZ_SCRATCH"]
        let base = env ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory())
        let url = URL(fileURLWithPath: base).appendingPathComponent("refract-fuzz-pid-\(getpid())")
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            fatalError("fuzz: cannot create the scratch directory \(url.path): \(error)")
        }
        return url
    }()

    /// A subdirectory of the scratch directory (created once).
    public static func subdirectory(_ name: String) -> URL {
        let url = directory.appendingPathComponent(name)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            fatalError("fuzz: cannot create \(url.path): \(error)")
        }
        return url
    }

    /// Replaces the file at `url` with `bytes` (plain POSIX calls: this runs on every input).
    public static func write(_ bytes: UnsafeRawBufferPointer, to url: URL) {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { fatalError("fuzz: cannot create \(url.path): \(String(cString: strerror(errno)))") }
        var done = 0
        while done < bytes.count {
            let n = posixWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { fatalError("fuzz: cannot write \(url.path): \(String(cString: strerror(errno)))") }
            done += n
        }
        close(fd)
    }

    public static func write(_ bytes: ArraySlice<UInt8>, to url: URL) {
        bytes.withUnsafeBytes { write($0, to: url) }
    }

    /// Removes the file at `url` if it exists.
    public static func remove(_ url: URL) { unlink(url.path) }
}

public enum FuzzInput {
    /// The bytes before and after the first NUL byte (`second` is nil when there is none), so
    /// that one input can carry two files (e.g. config.json and preprocessor_config.json).
    public static func splitAtNUL(_ bytes: UnsafeBufferPointer<UInt8>) -> (first: ArraySlice<UInt8>, second: ArraySlice<UInt8>?) {
        let all = Array(bytes)[...]
        guard let nul = all.firstIndex(of: 0) else { return (all, nil) }
        return (all[..<nul], all[(nul + 1)...])
    }

    /// Touches an error's message, as the CLI prints it (message formatting is part of the path).
    public static func refused(_ error: any Error) {
        let text = String(describing: error)
        if text.isEmpty { fatalError("fuzz: an error with an empty message: \(type(of: error))") }
    }
}
