import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - SHA-256
//
// FIPS 180-4 SHA-256, streaming, in plain Swift (no CryptoKit on Linux, no external packages).
// Used to verify multi-gigabyte weight files against the hub's LFS ETag, so the compression
// loop works on raw pointers, computes the message schedule in a 16-word ring and is unrolled
// eight rounds at a time so the working variables never need to be shuffled.

/// Incremental SHA-256.
public struct SHA256: Sendable {
    private var s0: UInt32 = 0x6a09_e667, s1: UInt32 = 0xbb67_ae85, s2: UInt32 = 0x3c6e_f372, s3: UInt32 = 0xa54f_f53a
    private var s4: UInt32 = 0x510e_527f, s5: UInt32 = 0x9b05_688c, s6: UInt32 = 0x1f83_d9ab, s7: UInt32 = 0x5be0_cd19
    private var pending: [UInt8] = []   // fewer than 64 bytes not yet compressed
    private var length: UInt64 = 0      // total bytes absorbed

    public init() { pending.reserveCapacity(64) }

    /// Absorbs bytes.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress, bytes.count > 0 else { return }
        var n = bytes.count
        length &+= UInt64(n)
        if !pending.isEmpty {
            let take = min(64 - pending.count, n)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: p, count: take))
            p += take
            n -= take
            if pending.count < 64 { return }
            pending.withUnsafeBytes { compress($0.baseAddress!, blocks: 1) }
            pending.removeAll(keepingCapacity: true)
        }
        let blocks = n / 64
        if blocks > 0 { compress(p, blocks: blocks) }
        let rest = n - blocks * 64
        if rest > 0 { pending.append(contentsOf: UnsafeRawBufferPointer(start: p + blocks * 64, count: rest)) }
    }

    /// Absorbs bytes.
    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// Absorbs bytes.
    public mutating func update(_ data: Data) { data.withUnsafeBytes { update($0) } }

    /// Absorbs the UTF-8 bytes of a string.
    public mutating func update(_ string: String) { update(Array(string.utf8)) }

    /// The 32-byte digest of everything absorbed. The hasher can no longer be used afterwards.
    public mutating func finalize() -> [UInt8] {
        let bitLength = length &* 8
        var tail = pending
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for i in (0..<8).reversed() { tail.append(UInt8(truncatingIfNeeded: bitLength >> (8 * UInt64(i)))) }
        tail.withUnsafeBytes { compress($0.baseAddress!, blocks: tail.count / 64) }
        pending.removeAll()
        var out: [UInt8] = []
        out.reserveCapacity(32)
        for word in [s0, s1, s2, s3, s4, s5, s6, s7] {
            out.append(contentsOf: [UInt8(word >> 24), UInt8(truncatingIfNeeded: word >> 16),
                                    UInt8(truncatingIfNeeded: word >> 8), UInt8(truncatingIfNeeded: word)])
        }
        return out
    }

    /// Lower-case hex of `finalize()`.
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
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw CheckpointError.io(path: path, message: "cannot open: \(errnoString())") }
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

    // MARK: Compression

    private mutating func compress(_ data: UnsafeRawPointer, blocks: Int) {
        var a = s0, b = s1, c = s2, d = s3, e = s4, f = s5, g = s6, h = s7
        let w = UnsafeMutablePointer<UInt32>.allocate(capacity: 16)  // message schedule ring
        defer { w.deallocate() }
        let k = sha256K
        var p = data
        for _ in 0..<blocks {
            for i in 0..<16 { w[i] = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
            let (a0, b0, c0, d0, e0, f0, g0, h0) = (a, b, c, d, e, f, g, h)
            // Rounds 0-15 use the message words directly; 16-63 extend the schedule in place.
            var i = 0
            while i < 16 {
                sha256Round(a, b, c, &d, e, f, g, &h, k[i] &+ w[i])
                sha256Round(h, a, b, &c, d, e, f, &g, k[i + 1] &+ w[i + 1])
                sha256Round(g, h, a, &b, c, d, e, &f, k[i + 2] &+ w[i + 2])
                sha256Round(f, g, h, &a, b, c, d, &e, k[i + 3] &+ w[i + 3])
                sha256Round(e, f, g, &h, a, b, c, &d, k[i + 4] &+ w[i + 4])
                sha256Round(d, e, f, &g, h, a, b, &c, k[i + 5] &+ w[i + 5])
                sha256Round(c, d, e, &f, g, h, a, &b, k[i + 6] &+ w[i + 6])
                sha256Round(b, c, d, &e, f, g, h, &a, k[i + 7] &+ w[i + 7])
                i += 8
            }
            while i < 64 {
                sha256Round(a, b, c, &d, e, f, g, &h, k[i] &+ sha256Schedule(w, i))
                sha256Round(h, a, b, &c, d, e, f, &g, k[i + 1] &+ sha256Schedule(w, i + 1))
                sha256Round(g, h, a, &b, c, d, e, &f, k[i + 2] &+ sha256Schedule(w, i + 2))
                sha256Round(f, g, h, &a, b, c, d, &e, k[i + 3] &+ sha256Schedule(w, i + 3))
                sha256Round(e, f, g, &h, a, b, c, &d, k[i + 4] &+ sha256Schedule(w, i + 4))
                sha256Round(d, e, f, &g, h, a, b, &c, k[i + 5] &+ sha256Schedule(w, i + 5))
                sha256Round(c, d, e, &f, g, h, a, &b, k[i + 6] &+ sha256Schedule(w, i + 6))
                sha256Round(b, c, d, &e, f, g, h, &a, k[i + 7] &+ sha256Schedule(w, i + 7))
                i += 8
            }
            a &+= a0; b &+= b0; c &+= c0; d &+= d0; e &+= e0; f &+= f0; g &+= g0; h &+= h0
            p += 64
        }
        s0 = a; s1 = b; s2 = c; s3 = d; s4 = e; s5 = f; s6 = g; s7 = h
    }
}

@inline(__always)
private func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

/// One round; the caller rotates the roles of the eight working variables instead of moving them.
@inline(__always)
private func sha256Round(_ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32,
                         _ e: UInt32, _ f: UInt32, _ g: UInt32, _ h: inout UInt32, _ kw: UInt32) {
    let t1 = h &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ (g ^ (e & (f ^ g))) &+ kw
    let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) | (c & (a | b)))
    d &+= t1
    h = t1 &+ t2
}

/// Message word `i` (16...63), computed in place in the 16-word ring `w`.
@inline(__always)
private func sha256Schedule(_ w: UnsafeMutablePointer<UInt32>, _ i: Int) -> UInt32 {
    let w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15]
    let sig0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3)
    let sig1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10)
    let v = w[i & 15] &+ sig0 &+ w[(i - 7) & 15] &+ sig1
    w[i & 15] = v
    return v
}

/// Round constants, in a never-freed buffer so the hot loop indexes a raw pointer.
nonisolated(unsafe) private let sha256K: UnsafePointer<UInt32> = {
    let table = sha256KTable
    let p = UnsafeMutablePointer<UInt32>.allocate(capacity: table.count)
    p.initialize(from: table, count: table.count)
    return UnsafePointer(p)
}()

private let sha256KTable: [UInt32] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
]
