import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - SHA-256
//
// Streaming SHA-256 for weight files (the run manifests' `weightsSHA256`, the hub's LFS ETag
// check) and run shards. The compression is swift-crypto's: BoringSSL on Linux, which uses the
// CPU's SHA extensions (SHA-NI) or AVX2 where present, CryptoKit on macOS. This type keeps
// Refract's small API (hex digests, files read in 4 MiB chunks with progress) over it.

import Crypto

/// Incremental SHA-256.
public struct SHA256: @unchecked Sendable {
    private var hasher = Crypto.SHA256()

    public init() {}

    /// Absorbs bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { hasher.update(bufferPointer: bytes) }
    }

    /// Absorbs bytes.
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// Absorbs bytes.
    public mutating func update(_ data: Data) { data.withUnsafeBytes { update($0) } }

    /// Absorbs the UTF-8 bytes of a string.
    public mutating func update(_ string: String) { update(Array(string.utf8)) }

    /// The 32-byte digest of everything absorbed. The hasher can no longer be used afterwards.
    public mutating func finalize() -> [UInt8] { Array(hasher.finalize()) }

    public mutating func finalizeHex() -> String { Self.hex(finalize()) }

    /// Digest of a byte array.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var h = SHA256()
        h.update(bytes)
        return h.finalize()
    }

    /// Lower-case hex digest of a byte array.
    public static func hexDigest(_ bytes: [UInt8]) -> String { hex(hash(bytes)) }

    /// Lower-case hex digest of a file, read in 4 MiB chunks. `progress` gets bytes hashed so far.
    public static func hexDigest(ofFileAt url: URL, progress: ((Int64) -> Void)? = nil) throws -> String {
        var h = SHA256()
        try h.update(fileAt: url, progress: progress)
        return h.finalizeHex()
    }

    /// Absorbs the contents of a file, read in 4 MiB chunks.
    public mutating func update(fileAt url: URL, progress: ((Int64) -> Void)? = nil) throws {
        let path = url.path
        let fd: Int32  // refused by type before opening: a FIFO would block (InputFile)
        do { fd = try InputFile.openRegular(path).fd } catch let e as InputFileError {
            throw CheckpointError.io(path: path, message: "cannot open to hash: \(e.reason)")
        }
        defer { close(fd) }
        let chunk = 4 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
        defer { buf.deallocate() }
        var total: Int64 = 0
        while true {
            let n = read(fd, buf, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.io(path: path, message: "read failed: \(errnoString())")
            }
            if n == 0 { break }
            update(UnsafeRawBufferPointer(start: buf, count: n))
            total += Int64(n)
            progress?(total)
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }


}
