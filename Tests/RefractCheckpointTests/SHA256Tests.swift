import Foundation
import XCTest
@testable import RefractCheckpoint

final class SHA256Tests: XCTestCase {
    private func hex(_ s: String) -> String { SHA256.hexDigest(Array(s.utf8)) }

    // FIPS 180-2 / NIST CAVS example vectors.
    func testNISTEmpty() {
        XCTAssertEqual(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    func testNISTabc() {
        XCTAssertEqual(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testNIST448BitMessage() {
        XCTAssertEqual(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testNIST896BitMessage() {
        XCTAssertEqual(hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
                       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    func testNISTOneMillionA() {
        XCTAssertEqual(SHA256.hexDigest([UInt8](repeating: 0x61, count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Lengths around the padding boundaries (reference digests from Python's hashlib).
    func testPaddingBoundaries() {
        let expected: [Int: String] = [
            55: "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b",
            56: "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27",
            63: "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055",
            64: "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241",
            65: "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e",
            119: "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e",
            120: "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5",
            127: "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07",
            128: "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6",
            1000: "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371",
        ]
        for (n, digest) in expected {
            let bytes = (0..<n).map { UInt8(($0 * 7 + 3) % 256) }
            XCTAssertEqual(SHA256.hexDigest(bytes), digest, "length \(n)")
        }
    }

    /// Any split of the input into update() calls gives the one-shot digest.
    func testStreamingSplits() {
        let bytes = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 3) }
        let whole = SHA256.hexDigest(bytes)
        for chunk in [1, 3, 63, 64, 65, 127, 1000, 4999] {
            var h = SHA256()
            var i = 0
            while i < bytes.count {
                let j = min(bytes.count, i + chunk)
                h.update(Array(bytes[i..<j]))
                i = j
            }
            XCTAssertEqual(h.finalizeHex(), whole, "chunk \(chunk)")
        }
    }

    func testFileDigestMatchesMemory() throws {
        let dir = try makeTempDirectory(self)
        let bytes = (0..<(1 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        let url = dir.appendingPathComponent("blob")
        try write(bytes, to: url)
        var seen: Int64 = 0
        XCTAssertEqual(try SHA256.hexDigest(ofFileAt: url, progress: { seen = $0 }), SHA256.hexDigest(bytes))
        XCTAssertEqual(seen, Int64(bytes.count))
    }

    func testThroughput() {
        #if DEBUG
        let megabytes = 4  // unoptimised builds: just exercise the loop
        #else
        let megabytes = 512
        #endif
        let bytes = [UInt8](repeating: 0x5A, count: megabytes << 20)
        let start = threadCPUSeconds()
        var h = SHA256()
        h.update(bytes)
        _ = h.finalize()
        let rate = Double(megabytes) * 1.048576 / (threadCPUSeconds() - start)
        print("SHA-256: \(Int(rate)) MB/s (per CPU second)")
        #if !DEBUG
        XCTAssertGreaterThan(rate, 100)
        #endif
    }
}
