import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@testable import RefractCheckpoint

/// A fresh temporary directory, removed when the test ends.
func makeTempDirectory(_ test: XCTestCase, file: StaticString = #filePath, line: UInt = #line) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("refract-ckpt-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.resolvingSymlinksInPath()
}

/// A safetensors file assembled by hand: 8-byte length, the given header text, then `data`.
func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + h + data
}

func write(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}

/// Asserts that `body` throws a `CheckpointError` whose description contains every fragment.
func assertCheckpointError<T>(_ body: @autoclosure () throws -> T, contains fragments: [String],
                              file: StaticString = #filePath, line: UInt = #line,
                              _ check: (CheckpointError) -> Bool = { _ in true }) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let e as CheckpointError {
        let text = e.description
        for f in fragments where !text.contains(f) {
            XCTFail("error '\(text)' does not mention '\(f)'", file: file, line: line)
        }
        XCTAssertTrue(check(e), "unexpected error case: \(e)", file: file, line: line)
    } catch {
        XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Async variant of `assertCheckpointError`.
func assertCheckpointErrorAsync<T>(_ body: () async throws -> T, contains fragments: [String],
                                   file: StaticString = #filePath, line: UInt = #line,
                                   _ check: (CheckpointError) -> Bool = { _ in true }) async {
    do {
        _ = try await body()
        XCTFail("expected an error containing \(fragments)", file: file, line: line)
    } catch let e as CheckpointError {
        let text = e.description
        for f in fragments where !text.contains(f) {
            XCTFail("error '\(text)' does not mention '\(f)'", file: file, line: line)
        }
        XCTAssertTrue(check(e), "unexpected error case: \(e)", file: file, line: line)
    } catch {
        XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Deterministic pseudo-random floats.
func pseudoRandomFloats(_ n: Int, seed: UInt64 = 42) -> [Float] {
    var s = seed
    return (0..<n).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: s >> 11) % 2_000_001 - 1_000_000) / 250_000
    }
}

/// CPU time of the calling thread: benchmarks stay meaningful on a loaded machine.
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
