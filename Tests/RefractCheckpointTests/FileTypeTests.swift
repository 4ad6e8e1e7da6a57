import Foundation
import RefractTensor
import RefractTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import RefractCheckpoint

/// Paths that are not regular files, given where a file belongs: refused by type before they are
/// opened (a FIFO would block `open` forever), with a message naming the path and what it is.
final class FileTypeTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws { dir = try makeTempDirectory(self) }

    /// One of each kind of non-regular file, with the words its refusal must contain.
    private func hostilePaths() throws -> [(path: String, words: String)] {
        let fifo = dir.appendingPathComponent("weights-fifo.safetensors").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let folder = dir.appendingPathComponent("folder.safetensors").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let socketPath = dir.appendingPathComponent("sock.safetensors").path
        let fd = makeUnixSocketFile(socketPath)
        addTeardownBlock { close(fd) }
        let loopA = dir.appendingPathComponent("loop-a").path, loopB = dir.appendingPathComponent("loop-b").path
        try FileManager.default.createSymbolicLink(atPath: loopA, withDestinationPath: loopB)
        try FileManager.default.createSymbolicLink(atPath: loopB, withDestinationPath: loopA)
        return [(fifo, "is a named pipe (FIFO), not a regular file"),
                (folder, "is a directory"),
                ("/dev/null", "is a character device, not a regular file"),
                (socketPath, "is a socket, not a regular file"),
                (loopA, "symbolic links"),
                (dir.appendingPathComponent("missing.safetensors").path, "no such file")]
    }

    func testWeightsFilesThatAreNotRegularFilesAreRefusedByType() throws {
        for (path, words) in try hostilePaths() {
            let result = returnsPromptly(within: 10, unblocking: path) { () -> Error? in
                do { _ = try SafetensorsFile(url: URL(fileURLWithPath: path)); return nil } catch { return error }
            }
            guard let error = result ?? nil else { XCTFail("\(path): opened"); continue }
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix(path + ": "), text)
            XCTAssertTrue(text.contains("cannot open the safetensors file"), text)
            XCTAssertTrue(text.contains(words), "'\(words)' not in: \(text)")
            XCTAssertFalse(text.contains("NSCocoaErrorDomain"), text)
        }
    }

    func testInputFileReadRefusesEveryNonRegularKind() throws {
        for (path, words) in try hostilePaths() {
            let result = returnsPromptly(within: 10, unblocking: path) { () -> InputFileError? in
                do { _ = try InputFile.read(path); return nil } catch { return error as? InputFileError }
            }
            guard let error = result ?? nil else { XCTFail("\(path): read"); continue }
            XCTAssertEqual(error.path, path)
            XCTAssertTrue(error.reason.contains(words), "'\(words)' not in: \(error)")
        }
        // A regular file is read whole; a size limit is stated with both sizes.
        let file = dir.appendingPathComponent("ok.txt")
        try Data("hello".utf8).write(to: file)
        XCTAssertEqual(try InputFile.read(file.path), Data("hello".utf8))
        XCTAssertThrowsError(try InputFile.read(file.path, maxBytes: 3)) { error in
            XCTAssertTrue("\(error)".contains("is 5 bytes, more than the limit of 3 bytes"), "\(error)")
        }
        // Through a symbolic link to a regular file: followed.
        let link = dir.appendingPathComponent("link.txt")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: file)
        XCTAssertEqual(try InputFile.read(link.path), Data("hello".utf8))
    }
}

/// A Unix-domain socket bound at `path` (the socket file exists while `fd` is open).
func makeUnixSocketFile(_ path: String) -> Int32 {
    #if os(Linux)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_UNIX, SOCK_STREAM, 0)
    #endif
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.prefix(raw.count - 1).enumerated() { raw[i] = b }
    }
    _ = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    return fd
}

