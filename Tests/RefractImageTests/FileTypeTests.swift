import Foundation
import RefractImage
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An image path that is not a regular file: `.unreadable`, refused by type before it is opened,
/// with the path and what it is (not "permission denied", not a Foundation error code).
final class FileTypeTests: XCTestCase {
    func testNonRegularImagePathsAreRefusedByType() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-img-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("pipe.jpg").path
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let folder = dir.appendingPathComponent("folder.png").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let cases = [(fifo, "is a named pipe (FIFO), not a regular file"), (folder, "is a directory"),
                     ("/dev/zero", "is a character device"), (dir.appendingPathComponent("none.png").path, "no such file")]
        for (path, words) in cases {
            for probe in [false, true] {
                let error = imageErrorPromptly(path) {
                    if probe { _ = try ImageDecoder.probe(contentsOf: URL(fileURLWithPath: path)) }
                    else { _ = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: path)) }
                }
                guard let error else { continue }
                XCTAssertEqual(error.kind, .unreadable, "\(error)")
                XCTAssertTrue(error.description.hasPrefix("\(path): cannot read the file: "), error.description)
                XCTAssertTrue(error.description.contains(words), "'\(words)' not in: \(error)")
                XCTAssertFalse(error.description.contains("permission denied"), error.description)
            }
        }
    }

    /// The error of `body`, run on a thread; a FIFO open that blocks fails the test (and is unblocked).
    private func imageErrorPromptly(_ fifo: String, line: UInt = #line, _ body: @escaping @Sendable () throws -> Void) -> ImageError? {
        final class Box: @unchecked Sendable { var error: Error?; var returned = false; let done = DispatchSemaphore(value: 0) }
        let box = Box()
        Thread {
            do { try body() } catch { box.error = error }
            box.returned = true
            box.done.signal()
        }.start()
        if box.done.wait(timeout: .now() + 10) == .timedOut {
            XCTFail("\(fifo): still blocked after 10 s", line: line)
            let fd = open(fifo, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
            _ = box.done.wait(timeout: .now() + 10)
            return nil
        }
        guard let error = box.error else { XCTFail("\(fifo): decoded", line: line); return nil }
        guard let imageError = error as? ImageError else { XCTFail("\(fifo): \(type(of: error)): \(error)", line: line); return nil }
        return imageError
    }
}
