// MARK: - NumPy .npy files
//
// Version 1.0/2.0/3.0 headers, little-endian, C order. Float32, Float64, Int64, Int32, UInt8 and Bool
// arrays read; Float32 and Int64 written (atomically: temp file + rename).

import Foundation

public struct NPYError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}

public enum NPYArray: Sendable, Equatable {
    case float32(shape: [Int], values: [Float])
    case float64(shape: [Int], values: [Double])
    case int64(shape: [Int], values: [Int64])
    case int32(shape: [Int], values: [Int32])
    case uint8(shape: [Int], values: [UInt8])
    case bool(shape: [Int], values: [Bool])

    public var shape: [Int] {
        switch self {
        case .float32(let s, _), .float64(let s, _), .int64(let s, _), .int32(let s, _), .uint8(let s, _),
             .bool(let s, _): return s
        }
    }

    /// Values widened/narrowed to Float (for comparisons in tests and tools).
    public var floats: [Float] {
        switch self {
        case .float32(_, let v): return v
        case .float64(_, let v): return v.map(Float.init)
        case .int64(_, let v): return v.map(Float.init)
        case .int32(_, let v): return v.map(Float.init)
        case .uint8(_, let v): return v.map(Float.init)
        case .bool(_, let v): return v.map { $0 ? 1 : 0 }
        }
    }

    public var tensor: Tensor { Tensor(shape: shape, data: floats) }
}

public enum NPY {
    public static func read(_ url: URL) throws -> NPYArray {
        let name = url.path
        let data: Data
        do { data = try Data(contentsOf: url, options: .mappedIfSafe) } catch {
            throw NPYError(file: name, message: "cannot read: \(error.localizedDescription)")
        }
        return try parse(data, file: name)
    }

    public static func parse(_ data: Data, file: String) throws -> NPYArray {
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw NPYError(file: file, message: "not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLen: Int, headerStart: Int
        if major == 1 {
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        } else if major == 2 || major == 3, bytes.count >= 12 {
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        } else {
            throw NPYError(file: file, message: "unsupported .npy version \(major)")
        }
        guard headerStart + headerLen <= data.count,
              let header = String(data: data.subdata(in: headerStart..<(headerStart + headerLen)), encoding: .utf8)
        else { throw NPYError(file: file, message: "header runs past the end of the file") }
        func field(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let q1 = descrField.firstIndex(of: "'"),
              let q2 = descrField[descrField.index(after: q1)...].firstIndex(of: "'") else {
            throw NPYError(file: file, message: "header has no descr")
        }
        let descr = String(descrField[descrField.index(after: q1)..<q2])
        if let fo = field("fortran_order"), fo.hasPrefix("True") {
            throw NPYError(file: file, message: "Fortran-order arrays are not supported")
        }
        guard let shapeField = field("shape"), let open = shapeField.firstIndex(of: "("),
              let close = shapeField.firstIndex(of: ")") else {
            throw NPYError(file: file, message: "header has no shape")
        }
        let shape = try shapeField[shapeField.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { s -> Int in
                guard let v = Int(s), v >= 0 else { throw NPYError(file: file, message: "bad shape entry \(s)") }
                return v
            }
        let count = shape.reduce(1, *)
        let body = data.subdata(in: (headerStart + headerLen)..<data.count)
        func load<T>(_: T.Type, size: Int) throws -> [T] {
            guard body.count == count * size else {
                throw NPYError(file: file, message: "expected \(count * size) data bytes for shape \(shape), found \(body.count)")
            }
            return body.withUnsafeBytes { raw in (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * size, as: T.self) } }
        }
        switch descr {
        case "<f4": return .float32(shape: shape, values: try load(Float.self, size: 4))
        case "<f8": return .float64(shape: shape, values: try load(Double.self, size: 8))
        case "<i8": return .int64(shape: shape, values: try load(Int64.self, size: 8))
        case "<i4": return .int32(shape: shape, values: try load(Int32.self, size: 4))
        case "|u1": return .uint8(shape: shape, values: try load(UInt8.self, size: 1))
        case "|b1": return .bool(shape: shape, values: try load(UInt8.self, size: 1).map { $0 != 0 })
        default: throw NPYError(file: file, message: "unsupported dtype \(descr)")
        }
    }

    /// Serialises an array as a version 1.0 .npy file.
    public static func encode(_ array: NPYArray) -> Data {
        let descr: String
        var body = Data()
        switch array {
        case .float32(_, let v): descr = "<f4"; v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .float64(_, let v): descr = "<f8"; v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .int64(_, let v): descr = "<i8"; v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .int32(_, let v): descr = "<i4"; v.withUnsafeBytes { body.append(contentsOf: $0) }
        case .uint8(_, let v): descr = "|u1"; body.append(contentsOf: v)
        case .bool(_, let v): descr = "|b1"; body.append(contentsOf: v.map { $0 ? 1 : 0 })
        }
        let shape = array.shape
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // Pad so that the data starts on a 64-byte boundary; header ends with a newline.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let len = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(len & 0xff), UInt8(len >> 8)])
        out.append(contentsOf: Array(header.utf8))
        out.append(body)
        return out
    }

    /// Writes atomically: a reader never sees a half-written file under `url`.
    public static func write(_ array: NPYArray, to url: URL) throws {
        do {
            try encode(array).write(to: url, options: .atomic)
        } catch {
            throw NPYError(file: url.path, message: "cannot write: \(error.localizedDescription)")
        }
    }

    public static func write(_ tensor: Tensor, to url: URL) throws {
        try write(.float32(shape: tensor.shape, values: tensor.data), to: url)
    }
}
