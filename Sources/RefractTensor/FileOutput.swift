// MARK: - Writing output files
//
// One place for writing a whole output file (a .npy array, a list of lines, a report) and for
// saying why it failed. Files are written to a hidden temporary sibling, synced, and renamed into
// place, so a reader never sees a prefix under the final name (a failure leaves nothing there).
// Failures are `FileWriteError`s in human terms:
//
//     cannot write out/E.npy: writing the embeddings: No space left on device
//     cannot write out/E.npy: creating the file: out is a file, not a folder
//     cannot write out/E.npy: creating the file: out/E.npy is a folder, not a file
//
// instead of raw Foundation errors ("NSCocoaErrorDomain error 256").

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file (or folder) that could not be written: the path, what was being done, and why.
public struct FileWriteError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// The file or folder concerned.
    public var path: String
    /// What was being done (e.g. "writing the .npy array", "renaming the finished file into place").
    public var action: String
    /// Why it failed, in words (the system's error text, or what is in the way).
    public var reason: String

    public init(path: String, action: String, reason: String) {
        self.path = path
        self.action = action
        self.reason = reason
    }

    public var description: String { "cannot write \(path): \(action): \(reason)" }
    public var errorDescription: String? { description }
}

public enum FileOutput {
    /// Why an operation on `path` failed with `code` (an `errno`), in words. Where the system's text
    /// is vague about *which* component is wrong (a file where a folder belongs, a missing folder,
    /// a folder where the file belongs), the component is named.
    public static func reason(_ code: Int32, path: String) -> String {
        let text = String(cString: strerror(code))
        let url = URL(fileURLWithPath: path)
        switch code {
        case ENOTDIR:
            // Some ancestor exists but is not a directory: name the first one.
            var prefix = url.deletingLastPathComponent()
            var chain: [URL] = []
            while prefix.path != "/" && !prefix.path.isEmpty {
                chain.append(prefix)
                prefix = prefix.deletingLastPathComponent()
            }
            for ancestor in chain.reversed() {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: ancestor.path, isDirectory: &isDir), !isDir.boolValue {
                    return "\(ancestor.path) is a file, not a folder"
                }
            }
            return text
        case ENOENT:
            let parent = url.deletingLastPathComponent().path
            if !FileManager.default.fileExists(atPath: parent) { return "the folder \(parent) does not exist" }
            return text
        case EISDIR:
            return "\(path) is a folder, not a file"
        default:
            return text
        }
    }

    /// The system's reason behind a Foundation error (the POSIX error under an `NSCocoaErrorDomain`
    /// error, in words), else its localized description.
    public static func reason(of error: Error, path: String) -> String {
        var e: NSError? = error as NSError
        while let current = e {
            if current.domain == NSPOSIXErrorDomain { return reason(Int32(current.code), path: path) }
            e = current.userInfo[NSUnderlyingErrorKey] as? NSError
        }
        // Cocoa codes without a POSIX error underneath (swift-corelibs-foundation gives these).
        let ns = error as NSError
        if ns.domain == NSCocoaErrorDomain {
            switch ns.code {
            case CocoaError.fileNoSuchFile.rawValue, CocoaError.fileReadNoSuchFile.rawValue: return reason(ENOENT, path: path)
            case CocoaError.fileReadNoPermission.rawValue, CocoaError.fileWriteNoPermission.rawValue: return reason(EACCES, path: path)
            case CocoaError.fileWriteOutOfSpace.rawValue: return reason(ENOSPC, path: path)
            case CocoaError.fileWriteVolumeReadOnly.rawValue: return reason(EROFS, path: path)
            case CocoaError.fileWriteFileExists.rawValue: return reason(EEXIST, path: path)
            default: break
            }
        }
        return error.localizedDescription
    }

    /// The error for a failed system call on `path`, from the current `errno`.
    public static func error(_ path: String, _ action: String, errno code: Int32 = errno) -> FileWriteError {
        FileWriteError(path: path, action: action, reason: reason(code, path: path))
    }

    /// Creates `url` and its missing parents as folders; an existing folder is fine.
    public static func createDirectory(_ url: URL, action: String = "creating the folder") throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) {
            if isDir.boolValue { return }
            throw FileWriteError(path: url.path, action: action, reason: "\(url.path) is a file, not a folder")
        }
        let parent = url.deletingLastPathComponent()
        if parent.path != url.path && parent.path != "/" { try createDirectory(parent, action: action) }
        if mkdir(url.path, 0o755) != 0 && errno != EEXIST { throw error(url.path, action) }
    }

    /// Writes `parts` one after the other into `url` atomically (temporary sibling, fsync, rename,
    /// directory sync). `what` says what the file is ("the embeddings", "the image list"), for errors.
    public static func writeAtomically(_ parts: [UnsafeRawBufferPointer], to url: URL, what: String) throws {
        let target = url.path
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDir), isDir.boolValue {
            throw FileWriteError(path: target, action: "writing \(what)", reason: "\(target) is a folder, not a file")
        }
        let dir = url.deletingLastPathComponent().path
        let temp = "\(dir)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            let code = errno
            // The temporary file's errors are about the folder; report them against the target.
            throw FileWriteError(path: target, action: "creating the file", reason: reason(code, path: target))
        }
        var closed = false
        var renamed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(temp) }
        }
        for part in parts {
            guard var p = part.baseAddress else { continue }
            var left = part.count
            while left > 0 {
                let n = write(fd, p, min(left, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw error(target, "writing \(what)")
                }
                p += n
                left -= n
            }
        }
        if fsync(fd) != 0 { throw error(target, "writing \(what) (syncing to disk)") }
        closed = true
        if close(fd) != 0 { throw error(target, "writing \(what) (closing)") }
        if rename(temp, target) != 0 { throw error(target, "moving the finished file into place") }
        renamed = true
        let dfd = open(dir, O_RDONLY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Writes `data` into `url` atomically.
    public static func writeAtomically(_ data: Data, to url: URL, what: String) throws {
        try data.withUnsafeBytes { try writeAtomically([$0], to: url, what: what) }
    }

    /// Writes one line per element (each ending in "\n") into `url` atomically.
    public static func writeLines(_ lines: [String], to url: URL, what: String) throws {
        var bytes: [UInt8] = []
        for line in lines {
            bytes.append(contentsOf: line.utf8)
            bytes.append(0x0A)
        }
        try bytes.withUnsafeBytes { try writeAtomically([$0], to: url, what: what) }
    }
}
