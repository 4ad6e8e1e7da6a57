import Foundation
import RefractCheckpoint
import RefractTensor

// MARK: - Shard files
//
// Shards and the constants file are ordinary safetensors files. They are written streaming: the
// header is computed from the shapes alone, then each tensor's bytes go from the caller's array
// straight to the temporary file (float16 converted in fixed-size chunks), so writing a shard
// never copies it. The layout follows the reference implementation and `SafetensorsWriter`:
// larger element types first, then by name, header padded with spaces to a multiple of 8 bytes,
// so every tensor is aligned to its element size and the strict reader accepts the file.
// Reading goes through `SafetensorsFile` (memory-mapped, validated), with errors restated as
// `StoreError`s naming the file.

/// Metadata key values written into every shard's `__metadata__`.
enum ShardMetadata {
    static let format = "format"
    static let runId = "run_id"
    static let shard = "shard"
    static let contents = "contents"
}

/// One tensor of a file about to be written.
struct FileEntry {
    enum Source {
        case int64([Int64])
        case float(Tensor, StoreDType)
        case float64([Double])
    }
    var name: String
    var shape: [Int]
    var source: Source

    var dtype: SafetensorsDType {
        switch source {
        case .int64: return .i64
        case .float64: return .f64
        case let .float(_, d): return d.safetensors
        }
    }
    var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
}

/// Writes a safetensors file atomically, streaming each tensor's bytes. Returns its hex SHA-256.
@discardableResult
func writeSafetensorsStreaming(to url: URL, metadata: [String: String], entries: [FileEntry]) throws -> String {
    let ordered = entries.sorted { ($1.dtype.byteSize, $0.name) < ($0.dtype.byteSize, $1.name) }
    var parts: [String] = []
    if !metadata.isEmpty {
        let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0] ?? ""))" }
        parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
    }
    var offset = 0
    for e in ordered {
        let end = offset + e.byteCount
        let shape = e.shape.map(String.init).joined(separator: ",")
        parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
        offset = end
    }
    var header = Array("{\(parts.joined(separator: ","))}".utf8)
    while header.count % 8 != 0 { header.append(0x20) }

    let file = try AtomicFile(target: url, hashing: true)
    var length = UInt64(header.count).littleEndian
    try withUnsafeBytes(of: &length) { try file.write($0) }
    try file.write(header)
    for e in ordered {
        switch e.source {
        case let .int64(values):
            try values.withUnsafeBytes { try file.write($0) }
        case let .float64(values):
            try values.withUnsafeBytes { try file.write($0) }
        case let .float(tensor, .float32):
            try tensor.data.withUnsafeBytes { try file.write($0) }
        case let .float(tensor, .float16):
            try writeFloat16(tensor.data, to: file)
        }
    }
    guard file.bytesWritten == 8 + header.count + offset else {
        throw StoreError(.io, path: url.path, "wrote \(file.bytesWritten) bytes, expected \(8 + header.count + offset)")
    }
    return try file.commit() ?? ""
}

/// Narrows to binary16 (round to nearest even) in chunks and writes the bytes.
private func writeFloat16(_ values: [Float], to file: AtomicFile) throws {
    let chunk = 32_768
    var buffer = [UInt16](repeating: 0, count: chunk)
    var done = 0
    while done < values.count {
        let n = min(chunk, values.count - done)
        for i in 0..<n { buffer[i] = HalfPrecision.float16Bits(from: values[done + i]) }
        try buffer.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<(2 * n)])) }
        done += n
    }
}

// MARK: Reading

/// Opens and validates a safetensors file of the run. `role` says what the manifest expects it
/// to be (for the message when it is missing).
func openRunFile(_ url: URL, role: String) throws -> SafetensorsFile {
    switch pathKind(url) {
    case .missing: throw StoreError(.missingFile, path: url.path, "missing (\(role))")
    case .directory: throw StoreError(.invalidShard, path: url.path, "is a directory, expected \(role)")
    case .other: try requireRegularFile(url, role: role)
    }
    do {
        return try SafetensorsFile(url: url)
    } catch let e as CheckpointError {
        throw StoreError(.invalidShard, path: url.path, stripPath(e.description, url.path))
    } catch {
        throw StoreError(.invalidShard, path: url.path, "\(error)")
    }
}

/// Removes a leading "PATH: " from a message that will be prefixed with the path again.
func stripPath(_ text: String, _ path: String) -> String {
    let prefix = path + ": "
    return text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
}

/// Checks that `file` holds exactly the named tensors with the given dtypes and shapes.
func checkTensors(_ file: SafetensorsFile, expected: [(name: String, dtype: SafetensorsDType, shape: [Int])],
                  manifestName: String) throws {
    let path = file.path
    for e in expected {
        guard let info = file.tensors[e.name] else {
            throw StoreError(.invalidShard, path: path, "has no tensor '\(e.name)' (listed in \(manifestName))")
        }
        if info.dtype != e.dtype {
            throw StoreError(.invalidShard, path: path,
                             "tensor '\(e.name)' is \(info.dtype.rawValue), \(manifestName) says \(e.dtype.rawValue)")
        }
        if info.shape != e.shape {
            throw StoreError(.invalidShard, path: path, "tensor '\(e.name)' has shape \(info.shape), expected \(e.shape)")
        }
    }
    let names = Set(expected.map(\.name))
    if let extra = file.keys.first(where: { !names.contains($0) }) {
        throw StoreError(.invalidShard, path: path, "holds tensor '\(extra)' that \(manifestName) does not list")
    }
}

/// Converts `count` elements starting at element `start` of a F32 or F16 tensor's raw bytes into `dst`.
func convertElements(_ raw: UnsafeRawBufferPointer, dtype: SafetensorsDType, start: Int, count: Int,
                     into dst: UnsafeMutablePointer<Float>) {
    guard count > 0, let base = raw.baseAddress else { return }
    if dtype == .f32 {
        UnsafeMutableRawPointer(dst).copyMemory(from: base + 4 * start, byteCount: 4 * count)
        return
    }
    let src = base + 2 * start
    if Int(bitPattern: src) & 1 == 0 {
        HalfPrecision.convertFloat16ToFloat32(src.assumingMemoryBound(to: UInt16.self), dst, count: count)
        return
    }
    let chunk = 16_384
    withUnsafeTemporaryAllocation(of: UInt16.self, capacity: chunk) { tmp in
        guard let t = tmp.baseAddress else { return }
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            UnsafeMutableRawPointer(t).copyMemory(from: src + 2 * done, byteCount: 2 * n)
            HalfPrecision.convertFloat16ToFloat32(t, dst + done, count: n)
            done += n
        }
    }
}

// MARK: Public streaming writer

/// Writes float32 tensors to a safetensors file atomically and without copying them (the layout of
/// every Refract file: larger types first, then by name). Returns the file's hex SHA-256. For
/// artefacts beside runs (alignments, checkpoints) whose tensors are too large to copy into memory.
public func writeFloatSafetensors(to url: URL, metadata: [String: String], tensors: [(name: String, tensor: Tensor)]) throws -> String {
    try writeSafetensorsStreaming(to: url, metadata: metadata,
                                  entries: tensors.map { FileEntry(name: $0.name, shape: $0.tensor.shape, source: .float($0.tensor, .float32)) })
}
