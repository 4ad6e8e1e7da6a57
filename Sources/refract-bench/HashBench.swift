// MARK: - Weights hash
//
// `--only hash`: SHA-256 of a 1 GiB file (written to a temporary directory, then read from the page
// cache) with `RefractCheckpoint.SHA256` (swift-crypto: BoringSSL, with the CPU's SHA extensions),
// against coreutils' `sha256sum` on the same file in the same run. Every command that records a
// model's `weightsSHA256` (decompose, segment, textspan, ...) hashes the weights once at start.

import Foundation
import RefractCheckpoint

struct HashBenchResults: Codable {
    var bytes: Int
    var refractMBPerSecond: Double
    var sha256sumMBPerSecond: Double?
}

enum HashBench {
    static func run(quick: Bool) throws -> HashBenchResults {
        let bytes = quick ? 256 << 20 : 1 << 30
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-hash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("weights.bin")
        var chunk = [UInt8](repeating: 0, count: 16 << 20)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<chunk.count { state = state &* 6364136223846793005 &+ 1442695040888963407; chunk[i] = UInt8(truncatingIfNeeded: state >> 56) }
        _ = FileManager.default.createFile(atPath: file.path, contents: nil)
        let handle = try FileHandle(forWritingTo: file)
        for _ in 0..<(bytes / chunk.count) { try handle.write(contentsOf: chunk) }
        try handle.close()
        print("\nSHA-256 of a \(bytes >> 20) MiB file (page cache), MB/s")
        var digest = ""
        let t = measure(minSeconds: quick ? 1 : 3, minRuns: 2) { digest = (try? SHA256.hexDigest(ofFileAt: file)) ?? "" }
        let ours = Double(bytes) / t / 1e6
        print("  Refract (swift-crypto): \(fmt(ours, 0))")
        var theirs: Double?
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/sha256sum") {
            var out = ""
            let t2 = measure(minSeconds: quick ? 1 : 3, minRuns: 2) {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
                p.arguments = [file.path]
                let pipe = Pipe()
                p.standardOutput = pipe
                try? p.run()
                out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                p.waitUntilExit()
            }
            theirs = Double(bytes) / t2 / 1e6
            let same = out.hasPrefix(digest)
            print("  sha256sum (coreutils): \(fmt(theirs!, 0))  (digests \(same ? "agree" : "DIFFER"))")
        }
        return HashBenchResults(bytes: bytes, refractMBPerSecond: ours, sha256sumMBPerSecond: theirs)
    }
}
