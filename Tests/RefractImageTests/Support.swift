// Test support: fixture locations, the manifest, a minimal .npy reader, FNV-1a.
// (Test-local on purpose; the library's full NPY module lives in RefractTensor.)

import Foundation
import XCTest
import RefractImage

enum Fixtures {
    /// Tests/Fixtures/images, found relative to this source file.
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()   // RefractImageTests
        .deletingLastPathComponent()   // Tests
        .appendingPathComponent("Fixtures/images", isDirectory: true)

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    struct DecodeCase: Decodable { let file: String; let rgb: String; let pilMode: String; let width: Int; let height: Int }
    struct PreprocessCase: Decodable { let file: String; let reference: String; let library: String; let config: ImagePreprocessing }
    struct ResizeCase: Decodable { let file: String; let width: Int; let height: Int; let interpolation: ResampleFilter; let reference: String }
    struct BadCase: Decodable { let file: String; let kind: String; let pil: String }
    struct BenchPreprocess: Decodable { let library: String; let config: ImagePreprocessing; let tensorFNV1a64: String; let sum: Double }
    struct Bench: Decodable { let file: String; let width: Int; let height: Int; let rgbFNV1a64: String; let preprocess: [BenchPreprocess] }
    struct Manifest: Decodable {
        let decode: [DecodeCase]
        let preprocess: [PreprocessCase]
        let resize: [ResizeCase]
        let bad: [BadCase]
        let bench: Bench
        let versions: [String: String]
    }

    static let manifest: Manifest = {
        do {
            let data = try Data(contentsOf: url("manifest.json"))
            return try JSONDecoder().decode(Manifest.self, from: data)
        } catch {
            fatalError("cannot load \(url("manifest.json").path): \(error)")
        }
    }()
}

/// A little-endian, C-order .npy array of uint8 or float32.
struct NPYArray {
    enum Storage { case uint8([UInt8]), float32([Float]) }
    let shape: [Int]
    let storage: Storage

    var bytes: [UInt8] {
        guard case .uint8(let b) = storage else { fatalError("not a uint8 array") }
        return b
    }
    var floats: [Float] {
        guard case .float32(let f) = storage else { fatalError("not a float32 array") }
        return f
    }

    init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url)
        let b = [UInt8](data)
        struct Bad: Error, CustomStringConvertible { let description: String }
        guard b.count >= 10, b[0] == 0x93, Array(b[1..<6]) == Array("NUMPY".utf8) else {
            throw Bad(description: "\(url.lastPathComponent): not an .npy file")
        }
        let major = b[6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(b[8]) | Int(b[9]) << 8
            start = 10
        } else {
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
            start = 12
        }
        let header = String(decoding: b[start..<(start + headerLength)], as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = value("descr"), let order = value("fortran_order"), let shapeText = value("shape") else {
            throw Bad(description: "\(url.lastPathComponent): unreadable header \(header)")
        }
        guard order.hasPrefix("False") else { throw Bad(description: "\(url.lastPathComponent): Fortran order") }
        let inner = shapeText.drop(while: { $0 != "(" }).dropFirst().prefix(while: { $0 != ")" })
        shape = inner.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let count = shape.reduce(1, *)
        let payload = Array(b[(start + headerLength)...])
        if descr.hasPrefix("'|u1'") {
            guard payload.count == count else { throw Bad(description: "\(url.lastPathComponent): size mismatch") }
            storage = .uint8(payload)
        } else if descr.hasPrefix("'<f4'") {
            guard payload.count == count * 4 else { throw Bad(description: "\(url.lastPathComponent): size mismatch") }
            var f = [Float](repeating: 0, count: count)
            for i in 0..<count {
                let bits = UInt32(payload[4 * i]) | UInt32(payload[4 * i + 1]) << 8
                    | UInt32(payload[4 * i + 2]) << 16 | UInt32(payload[4 * i + 3]) << 24
                f[i] = Float(bitPattern: bits)
            }
            storage = .float32(f)
        } else {
            throw Bad(description: "\(url.lastPathComponent): unsupported dtype \(descr)")
        }
    }
}

func fnv1a64<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    let s = String(h, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

func fnv1a64(floats: [Float]) -> String {
    var bytes = [UInt8]()
    bytes.reserveCapacity(floats.count * 4)
    for f in floats {
        let v = f.bitPattern
        bytes += [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)]
    }
    return fnv1a64(bytes)
}
