import CRefractKernels
import Foundation
import RefractCheckpoint
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Atomic files
//
// Every file of a run is written to a hidden temporary sibling (`.NAME.tmp-PID-RANDOM`), synced,
// and renamed into place; the directory is then synced so the rename itself survives a crash.
// A reader therefore sees either the old file or the complete new one, never a prefix.

func errnoText() -> String { String(cString: strerror(errno)) }

/// Marker that names temporary files, so a resumed run can recognise and remove leftovers.
let temporaryMarker = ".tmp-"

/// A file being written through a temporary sibling; `commit()` makes it appear under its name.
final class AtomicFile {
    let target: String
    let tempPath: String
    private var fd: Int32
    private var hasher: SHA256?
    private(set) var bytesWritten = 0

    /// Creates the temporary file beside `target`. With `hashing`, `commit()` returns the SHA-256
    /// of everything written.
    init(target url: URL, hashing: Bool = false) throws {
        target = url.path
        let dir = url.deletingLastPathComponent().path
        tempPath = "\(dir)/.\(url.lastPathComponent)\(temporaryMarker)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 {
            throw StoreError(.io, path: target, "cannot write: creating the file: \(FileOutput.reason(errno, path: target))")
        }
        hasher = hashing ? SHA256() : nil
    }

    deinit { abandon() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        hasher?.update(bytes)
        var done = 0
        while done < bytes.count {
            let n = sysWrite(fd, base + done, min(bytes.count - done, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError(.io, path: target, "cannot write: writing the data: \(errnoText())")
            }
            done += n
        }
        bytesWritten += bytes.count
    }

    /// Appends the whole file `source` (open for reading at offset 0). Linux: in the kernel with
    /// copy_file_range(2) (no copy through user space: ~10x faster on ext4), falling back to
    /// read/write where the file system refuses it; elsewhere read/write. Not for hashing files.
    func append(contentsOf source: Int32, path: String) throws {
        precondition(hasher == nil, "append(contentsOf:) does not hash")
        var copied = 0
        while true {
            let n = rf_copy_file_range(source, fd, 1 << 30)
            if n > 0 { copied += n; bytesWritten += n; continue }
            if n == 0 { return }
            if errno == EINTR { continue }
            // Not offered here (another OS, file systems that refuse it): read/write, from where it stopped.
            if copied == 0 && [EXDEV, ENOSYS, EINVAL, EOPNOTSUPP, EBADF].contains(errno) { break }
            throw StoreError(.io, path: target, "cannot write: copying \(path): \(errnoText())")
        }
        let size = 8 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(source, buffer, size)
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreError(.io, path: path, "cannot read: \(errnoText())")
            }
            if n == 0 { return }
            try write(UnsafeRawBufferPointer(start: buffer, count: n))
        }
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
    func write(_ data: Data) throws { try data.withUnsafeBytes { try write($0) } }
    func write(_ text: String) throws { try write(Array(text.utf8)) }

    /// Syncs, closes and renames the file into place, then syncs the directory. Returns the hex
    /// SHA-256 when hashing.
    @discardableResult
    func commit() throws -> String? {
        if fsync(fd) != 0 { throw StoreError(.io, path: target, "cannot write: syncing the data to disk: \(errnoText())") }
        let rc = close(fd)
        fd = -1
        if rc != 0 {
            unlink(tempPath)
            throw StoreError(.io, path: target, "cannot write: closing the file: \(errnoText())")
        }
        if rename(tempPath, target) != 0 {
            let message = FileOutput.reason(errno, path: target)
            unlink(tempPath)
            throw StoreError(.io, path: target, "cannot write: moving the finished file into place: \(message)")
        }
        syncDirectory(URL(fileURLWithPath: target).deletingLastPathComponent().path)
        return hasher?.finalizeHex()
    }

    /// Closes and removes the temporary file (no-op after `commit()`).
    func abandon() {
        if fd >= 0 {
            close(fd)
            fd = -1
            unlink(tempPath)
        }
    }
}

@inline(__always)
private func sysWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }

/// Writes `data` to `url` atomically.
func writeAtomically(_ data: Data, to url: URL) throws {
    let f = try AtomicFile(target: url)
    try f.write(data)
    try f.commit()
}

/// Makes renames inside `path` durable. File systems that cannot sync directories are ignored.
func syncDirectory(_ path: String) {
    let dfd = open(path, O_RDONLY | O_CLOEXEC)
    if dfd >= 0 {
        _ = fsync(dfd)
        close(dfd)
    }
}

/// What is at `path`: nothing, a directory, or something else.
enum PathKind { case missing, directory, other }

func pathKind(_ url: URL) -> PathKind {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { return .missing }
    return isDir.boolValue ? .directory : .other
}

/// Refuses, before anything opens it, a path that is not a regular file (a FIFO would block `open`
/// forever; a device or socket is never a run file). Symbolic links are followed.
func requireRegularFile(_ url: URL, role: String) throws {
    var st = stat()
    guard stat(url.path, &st) == 0 else { return }         // missing: the caller's own error follows
    if let problem = InputFile.typeProblem(mode: st.st_mode) {
        throw StoreError(.invalidShard, path: url.path, "\(problem), expected \(role)")
    }
}

/// Names of the entries of a directory (hidden ones included).
func directoryEntries(_ url: URL) throws -> [String] {
    do {
        return try FileManager.default.contentsOfDirectory(atPath: url.path)
    } catch {
        throw StoreError(.io, path: url.path, "cannot list the directory: \(FileOutput.reason(of: error, path: url.path))")
    }
}

/// Reads a whole (small) file.
func readFile(_ url: URL) throws -> Data {
    do {
        return try Data(contentsOf: url)
    } catch {
        throw StoreError(.io, path: url.path, "cannot read: \(FileOutput.reason(of: error, path: url.path))")
    }
}
