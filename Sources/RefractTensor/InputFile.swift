// MARK: - Input files: regular files only, refused by type before they are read
//
// Every path a user gives (images, weights, text lists, CSV lists, metadata files) is opened
// through here, or checked here first. A directory, a named pipe (FIFO), a device or a socket is
// refused with a message that says what it is, before anything can block on it: the path is
// `stat`ed first, then opened with `O_NONBLOCK` (so a FIFO swapped in between cannot block the
// `open`) and the descriptor is `fstat`ed again before a byte is read.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A user-given input path that cannot be read as a regular file.
public struct InputFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    /// Why, in words: "is a directory", "is a named pipe (FIFO), not a regular file", "no such file".
    public var reason: String
    public var description: String { "\(path): \(reason)" }
    public init(path: String, reason: String) { self.path = path; self.reason = reason }
}

public enum InputFile {
    /// What kind of non-regular file `mode` describes, in words; nil for a regular file.
    public static func typeProblem(mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "is a directory, not a file"
        case S_IFIFO: return "is a named pipe (FIFO), not a regular file"
        case S_IFCHR: return "is a character device, not a regular file"
        case S_IFBLK: return "is a block device, not a regular file"
        case S_IFSOCK: return "is a socket, not a regular file"
        case S_IFLNK: return "is a symbolic link that cannot be followed"
        default: return "is not a regular file"
        }
    }

    /// An `errno` from `stat`/`open` in words.
    public static func errnoReason(_ code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file"
        case EACCES, EPERM: return "permission denied"
        case ELOOP: return "too many levels of symbolic links (a symlink loop?)"
        case ENOTDIR: return "a component of the path is not a folder"
        case ENAMETOOLONG: return "the path is too long"
        default: return String(cString: strerror(code))
        }
    }

    /// Checks that `path` (symlinks followed) is an existing regular file; throws naming what it is otherwise.
    /// Returns its size in bytes.
    @discardableResult
    public static func requireRegular(_ path: String) throws -> Int {
        var st = stat()
        if stat(path, &st) != 0 { throw InputFileError(path: path, reason: errnoReason(errno)) }
        if let problem = typeProblem(mode: st.st_mode) { throw InputFileError(path: path, reason: problem) }
        return Int(st.st_size)
    }

    /// Opens `path` for reading if it is a regular file: `stat`, `open(O_RDONLY | O_NONBLOCK)`,
    /// `fstat`. The descriptor is returned in blocking mode; the caller closes it.
    public static func openRegular(_ path: String) throws -> (fd: Int32, size: Int) {
        try requireRegular(path)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 { throw InputFileError(path: path, reason: errnoReason(errno)) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let reason = errnoReason(errno)
            close(fd)
            throw InputFileError(path: path, reason: reason)
        }
        if let problem = typeProblem(mode: st.st_mode) {
            close(fd)
            throw InputFileError(path: path, reason: problem)
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return (fd, Int(st.st_size))
    }

    /// The whole contents of the regular file at `path`, refused by type before it is opened.
    /// `maxBytes` bounds what is read (a larger file is refused, naming both sizes).
    public static func read(_ path: String, maxBytes: Int = Int.max) throws -> Data {
        let (fd, size) = try openRegular(path)
        defer { close(fd) }
        if size > maxBytes {
            throw InputFileError(path: path, reason: "is \(size) bytes, more than the limit of \(maxBytes) bytes for this kind of file")
        }
        var data = Data(count: size)
        var done = 0
        let failure: Int32? = data.withUnsafeMutableBytes { raw -> Int32? in
            while done < size {
                let n = Glibc_read(fd, raw.baseAddress! + done, size - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if n == 0 { break }  // the file shrank while being read
                done += n
            }
            return nil
        }
        if let failure { throw InputFileError(path: path, reason: "read failed: \(errnoReason(failure))") }
        if done < size { data.count = done }
        return data
    }
}

@inline(__always) private func Glibc_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}
