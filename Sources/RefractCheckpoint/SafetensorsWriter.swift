import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - safetensors writer
//
// Builds a safetensors file in memory and writes it atomically (temporary file in the target
// directory, fsync, rename). Tensors are laid out like the reference implementation: larger
// element types first, then by name, so every tensor is aligned to its element size; the header
// is padded with spaces to a multiple of 8 bytes. The result always passes `SafetensorsFile`'s
// strict validation.

/// Collects named tensors and metadata, then writes a safetensors file.
public struct SafetensorsWriter: Sendable {
    /// Written as the header's `__metadata__` map (omitted when empty).
    public var metadata: [String: String]

    private struct Entry: Sendable {
        var key: String
        var dtype: SafetensorsDType
        var shape: [Int]
        var bytes: [UInt8]
    }
    private var entries: [String: Entry] = [:]

    private static let origin = "(SafetensorsWriter)"

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Names of the tensors added so far.
    public var keys: [String] { entries.keys.sorted() }

    /// Adds a float32 tensor, stored as `dtype` (F32, or F16/BF16 rounded to nearest-even).
    public mutating func add(_ key: String, _ tensor: Tensor, as dtype: SafetensorsDType = .f32) throws {
        try add(key, float32: tensor.data, shape: tensor.shape, as: dtype)
    }

    /// Adds float values with `shape`, stored as `dtype` (F32, F16 or BF16).
    public mutating func add(_ key: String, float32 values: [Float], shape: [Int], as dtype: SafetensorsDType = .f32) throws {
        let bytes: [UInt8]
        switch dtype {
        case .f32:
            bytes = values.withUnsafeBytes { Array($0) }
        case .f16:
            bytes = values.map(HalfPrecision.float16Bits(from:)).withUnsafeBytes { Array($0) }
        case .bf16:
            bytes = values.map(HalfPrecision.bfloat16Bits(from:)).withUnsafeBytes { Array($0) }
        default:
            throw CheckpointError.unconvertibleDType(path: Self.origin, key: key, dtype: dtype.rawValue, wanted: "float32 source data")
        }
        try addRaw(key, dtype: dtype, shape: shape, bytes: bytes)
    }

    /// Adds an I64 tensor (e.g. index buffers).
    public mutating func add(_ key: String, int64 values: [Int64], shape: [Int]) throws {
        try addRaw(key, dtype: .i64, shape: shape, bytes: values.withUnsafeBytes { Array($0) })
    }

    /// Adds a tensor of any dtype from its little-endian bytes.
    public mutating func addRaw(_ key: String, dtype: SafetensorsDType, shape: [Int], bytes: [UInt8]) throws {
        func bad(_ reason: String) -> CheckpointError { .invalidEntry(path: Self.origin, key: key, reason: reason) }
        if key == "__metadata__" { throw bad("'__metadata__' is reserved") }
        if entries[key] != nil { throw bad("added twice") }
        if shape.contains(where: { $0 < 0 }) { throw bad("negative extent in shape \(shape)") }
        let count = shape.reduce(1, *)
        if count * dtype.byteSize != bytes.count {
            throw bad("shape \(shape) of \(dtype.rawValue) needs \(count * dtype.byteSize) bytes, got \(bytes.count)")
        }
        entries[key] = Entry(key: key, dtype: dtype, shape: shape, bytes: bytes)
    }

    private var orderedEntries: [Entry] {
        entries.values.sorted { ($1.dtype.byteSize, $0.key) < ($0.dtype.byteSize, $1.key) }
    }

    /// The header JSON (padded to a multiple of 8 bytes) for the current contents.
    func headerBytes() -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for e in orderedEntries {
            let end = offset + e.bytes.count
            parts.append("\(jsonString(e.key)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array("{\(parts.joined(separator: ","))}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        return header
    }

    /// The complete file contents.
    public func serialized() -> [UInt8] {
        let header = headerBytes()
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + entries.values.reduce(0) { $0 + $1.bytes.count })
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for e in orderedEntries { out.append(contentsOf: e.bytes) }
        return out
    }

    /// Writes the file atomically: readers see either the old file or the complete new one.
    public func write(to url: URL) throws {
        let header = headerBytes()
        var prefix: [UInt8] = []
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(contentsOf: header)
        try writeAtomically(to: url) { write in
            try write(prefix)
            for e in orderedEntries { try write(e.bytes) }
        }
    }
}

/// JSON string literal for `s` (quotes, backslashes and control characters escaped).
public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20:
            let h = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// Writes a file through a temporary sibling, fsyncs it and renames it into place.
/// `body` receives a function that appends bytes.
func writeAtomically(to url: URL, _ body: ((([UInt8]) throws -> Void)) throws -> Void) throws {
    let path = url.path
    let dir = url.deletingLastPathComponent().path
    let tmp = "\(dir)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    if fd < 0 { throw CheckpointError.io(path: path, message: "cannot create temporary file \(tmp): \(errnoString())") }
    var ok = false
    defer {
        if !ok { close(fd); unlink(tmp) }
    }
    try body { bytes in
        try bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = posixWrite(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CheckpointError.io(path: path, message: "write failed: \(errnoString())")
                }
                done += n
            }
        }
    }
    if fsync(fd) != 0 { throw CheckpointError.io(path: path, message: "fsync failed: \(errnoString())") }
    if close(fd) != 0 {
        ok = true
        unlink(tmp)
        throw CheckpointError.io(path: path, message: "close failed: \(errnoString())")
    }
    ok = true
    if rename(tmp, path) != 0 {
        let message = errnoString()
        unlink(tmp)
        throw CheckpointError.io(path: path, message: "cannot rename temporary file into place: \(message)")
    }
}

@inline(__always)
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    write(fd, p, n)
}
