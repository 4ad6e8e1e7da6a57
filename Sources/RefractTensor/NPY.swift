// MARK: - NumPy .npy files
//
// Version 1.0/2.0/3.0 headers, little-endian, C order. Float32, Float64, Int64, Int32, UInt8 and Bool
// arrays read; all of them written (atomically: temp file + rename, see `FileOutput`).
//
// Reading trusts nothing in the file: the header is parsed as the Python literal it is (a dict
// with exactly `descr`, `fortran_order`, `shape`), and the shape is checked (non-negative
// dimensions, a product that does not overflow, exactly as many data bytes as it needs) before
// anything is allocated, so a damaged or hostile file is an `NPYError` naming it, never a crash.

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// The most dimensions a shape may have (NumPy's own limit).
    public static let maxRank = 64

    public static func read(_ url: URL) throws -> NPYArray {
        let name = url.path
        // Refuse what is not a regular file before opening it (a FIFO would block in open).
        var st = stat()
        if stat(name, &st) != 0 {
            throw NPYError(file: name, message: "cannot read: \(InputFile.errnoReason(errno))")
        }
        if let problem = InputFile.typeProblem(mode: st.st_mode) {
            throw NPYError(file: name, message: "\(problem) (expected a .npy file)")
        }
        let data: Data
        do { data = try Data(contentsOf: url, options: .mappedIfSafe) } catch {
            throw NPYError(file: name, message: "cannot read: \(error.localizedDescription)")
        }
        return try parse(data, file: name)
    }

    /// The dtypes read, with their element sizes.
    static let elementSizes: [String: Int] = ["<f4": 4, "<f8": 8, "<i8": 8, "<i4": 4, "|u1": 1, "|b1": 1]

    /// Parses a whole .npy file. Every field of the header is checked before anything is allocated:
    /// the magic, version and header length; the header is a dict with exactly `descr`,
    /// `fortran_order` and `shape`; the dtype is one of those read; the shape's dimensions are
    /// non-negative and their product (times the element size) does not overflow; and the data is
    /// exactly that many bytes. Any violation is an `NPYError` naming the file.
    public static func parse(_ data: Data, file: String) throws -> NPYArray {
        func bad(_ message: String) -> NPYError { NPYError(file: file, message: message) }
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else {
            throw bad("not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLen: Int, headerStart: Int
        if major == 1 {
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10
        } else if major == 2 || major == 3 {
            guard bytes.count >= 12 else { throw bad("file ends inside the header length (\(data.count) bytes)") }
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        } else {
            throw bad("unsupported .npy version \(major) (versions 1, 2 and 3 are read)")
        }
        guard headerStart + headerLen <= data.count else {
            throw bad("header length \(headerLen) runs past the end of the file (\(data.count) bytes)")
        }
        let headerBytes = data.subdata(in: (data.startIndex + headerStart)..<(data.startIndex + headerStart + headerLen))
        guard major == 3 || !headerBytes.contains(where: { $0 >= 0x80 }),
              let header = String(data: headerBytes, encoding: .utf8) else {
            throw bad("header is not \(major == 3 ? "UTF-8" : "ASCII") text")
        }
        let fields: [String: NPYHeaderValue]
        do { fields = try NPYHeaderParser.parse(header) } catch let e as NPYHeaderParser.Failure {
            throw bad("malformed header (\(e.message)): \(shorten(header))")
        }
        let expectedKeys: Set<String> = ["descr", "fortran_order", "shape"]
        guard Set(fields.keys) == expectedKeys else {
            throw bad("header keys are \(fields.keys.sorted()), expected descr, fortran_order and shape")
        }
        guard case .string(let descr)? = fields["descr"] else { throw bad("header's descr is not a string") }
        guard case .bool(let fortran)? = fields["fortran_order"] else { throw bad("header's fortran_order is not True or False") }
        guard case .tuple(let dims)? = fields["shape"] else { throw bad("header's shape is not a tuple of integers") }
        guard let size = elementSizes[descr] else {
            throw bad("unsupported dtype '\(shorten(descr))' (read: little-endian float32 <f4, float64 <f8, int64 <i8, "
                + "int32 <i4, uint8 |u1, bool |b1)")
        }
        if fortran { throw bad("Fortran-order arrays are not supported (save with numpy.ascontiguousarray)") }
        guard dims.count <= maxRank else { throw bad("shape has \(dims.count) dimensions; at most \(maxRank) are allowed") }
        var count = 1
        for d in dims {
            guard d >= 0 else { throw bad("shape \(dims) has a negative dimension \(d)") }
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw bad("shape \(dims) has more elements than can be addressed") }
            count = p
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else { throw bad("shape \(dims) of \(descr) holds more bytes than can be addressed") }
        let bodyCount = data.count - headerStart - headerLen
        guard bodyCount == byteCount else {
            throw bad("shape \(dims) of \(descr) needs \(byteCount) data bytes, the file has \(bodyCount)"
                + (bodyCount < byteCount ? " (truncated or wrong shape)" : " (trailing bytes or wrong shape)"))
        }
        let shape = dims
        let bodyStart = data.startIndex + headerStart + headerLen
        func load<T>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: count) { buf, n in
                if count > 0 {
                    data.withUnsafeBytes { raw in
                        UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: raw.baseAddress! + (bodyStart - data.startIndex),
                                                                              byteCount: byteCount)
                    }
                }
                n = count
            }
        }
        switch descr {
        case "<f4": return .float32(shape: shape, values: load(Float.self))
        case "<f8": return .float64(shape: shape, values: load(Double.self))
        case "<i8": return .int64(shape: shape, values: load(Int64.self))
        case "<i4": return .int32(shape: shape, values: load(Int32.self))
        case "|u1": return .uint8(shape: shape, values: load(UInt8.self))
        default: return .bool(shape: shape, values: load(UInt8.self).map { $0 != 0 })
        }
    }

    /// At most 200 characters of a header or value, for messages.
    static func shorten(_ text: String) -> String {
        text.count <= 200 ? text : String(text.prefix(200)) + "…"
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
        // Version 1.0 holds a header of up to 65535 bytes; longer ones (very high rank) need 2.0.
        let version: UInt8 = 10 + header.utf8.count + 1 + 63 <= Int(UInt16.max) ? 1 : 2
        let prefixBytes = version == 1 ? 10 : 12
        // Pad so that the data starts on a 64-byte boundary; header ends with a newline.
        let unpadded = prefixBytes + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [version, 0])
        let len = header.utf8.count
        out.append(contentsOf: (0..<(prefixBytes - 8)).map { UInt8(truncatingIfNeeded: len >> (8 * $0)) })
        out.append(contentsOf: Array(header.utf8))
        out.append(body)
        return out
    }

    /// Writes atomically: a reader never sees a half-written file under `url`. Failures are
    /// `FileWriteError`s ("cannot write PATH: what: why").
    public static func write(_ array: NPYArray, to url: URL) throws {
        try FileOutput.writeAtomically(encode(array), to: url, what: "the .npy array")
    }

    public static func write(_ tensor: Tensor, to url: URL) throws {
        try write(.float32(shape: tensor.shape, values: tensor.data), to: url)
    }
}


// MARK: - Header literal

/// A value of a .npy header dict: the subset of Python literals NumPy writes there.
enum NPYHeaderValue: Equatable {
    case string(String)
    case bool(Bool)
    case tuple([Int])
}

/// Parses `{'key': value, ...}` with string, True/False and integer-tuple values (a trailing comma
/// and whitespace allowed, as NumPy writes and reads them). Nothing else is accepted.
enum NPYHeaderParser {
    struct Failure: Error { var message: String }

    static func parse(_ text: String) throws -> [String: NPYHeaderValue] {
        var s = Substring(text)
        func skipSpace() { while let c = s.first, c == " " || c == "\t" || c == "\n" || c == "\r" { s.removeFirst() } }
        func expect(_ c: Character) throws {
            skipSpace()
            guard s.first == c else { throw Failure(message: "expected '\(c)'" + (s.first.map { " at '\($0)'" } ?? " at the end")) }
            s.removeFirst()
        }
        func string() throws -> String {
            skipSpace()
            guard let q = s.first, q == "'" || q == "\"" else { throw Failure(message: "expected a quoted string") }
            s.removeFirst()
            guard let end = s.firstIndex(of: q) else { throw Failure(message: "unterminated string") }
            let value = String(s[..<end])
            if value.contains("\\") { throw Failure(message: "escapes in strings are not supported") }
            s = s[s.index(after: end)...]
            return value
        }
        func integer() throws -> Int {
            skipSpace()
            var digits = ""
            if s.first == "-" { digits.append("-"); s.removeFirst() }
            while let c = s.first, c.isASCII, c.isNumber { digits.append(c); s.removeFirst() }
            if s.first == "L" { s.removeFirst() }     // Python 2 long
            guard digits != "" && digits != "-" else { throw Failure(message: "expected an integer in the shape") }
            guard let v = Int(digits) else { throw Failure(message: "shape entry \(digits) is out of range") }
            return v
        }
        func value() throws -> NPYHeaderValue {
            skipSpace()
            guard let first = s.first else { throw Failure(message: "expected a value at the end") }
            switch first {
            case "'", "\"": return .string(try string())
            case "T" where s.hasPrefix("True"): s.removeFirst(4); return .bool(true)
            case "F" where s.hasPrefix("False"): s.removeFirst(5); return .bool(false)
            case "(", "[":
                let close: Character = first == "(" ? ")" : "]"
                s.removeFirst()
                var items: [Int] = []
                while true {
                    skipSpace()
                    if s.first == close { s.removeFirst(); break }
                    items.append(try integer())
                    skipSpace()
                    if s.first == "," { s.removeFirst(); continue }
                    guard s.first == close else { throw Failure(message: "expected ',' or '\(close)' in the shape") }
                    s.removeFirst()
                    break
                }
                return .tuple(items)
            default:
                throw Failure(message: "unsupported value")
            }
        }
        var out: [String: NPYHeaderValue] = [:]
        try expect("{")
        while true {
            skipSpace()
            if s.first == "}" { s.removeFirst(); break }
            let key = try string()
            try expect(":")
            if out.updateValue(try value(), forKey: key) != nil { throw Failure(message: "key '\(key)' appears twice") }
            skipSpace()
            if s.first == "," { s.removeFirst(); continue }
            try expect("}")
            break
        }
        skipSpace()
        guard s.isEmpty else { throw Failure(message: "text after the closing brace") }
        return out
    }
}
