import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - safetensors reader
//
// Layout (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N, N bytes
// of UTF-8 JSON (may be padded with trailing spaces), then the data section. The JSON maps tensor
// names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section)
// plus an optional "__metadata__" string->string map. The reader is strict, following the format
// specification: duplicate keys, unknown dtypes, byte lengths that disagree with shape x dtype,
// offsets outside the data section, overlapping tensors, holes between tensors and unindexed
// trailing bytes are all errors. The file is memory-mapped; tensors are converted straight from
// the mapping into their float32 arrays, so weights are never held in memory twice.

/// Element types a safetensors header may declare.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case f8e5m2 = "F8_E5M2"
    case f8e4m3 = "F8_E4M3"
    case f8e8m0 = "F8_E8M0"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"
    case c64 = "C64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64, .c64: return 8
        }
    }

    /// Whether values of this type convert exactly to float32 (F32, F16, BF16).
    public var isConvertibleToFloat32: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One tensor entry of a safetensors header.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    /// Tensor name.
    public var key: String
    public var dtype: SafetensorsDType
    public var shape: [Int]
    /// Byte range within the data section (after the header).
    public var dataOffsets: Range<Int>
    /// Number of elements (`shape` product; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A validated, memory-mapped safetensors file.
public final class SafetensorsFile: @unchecked Sendable {  // immutable after init; the mapping is read-only
    /// The largest header the reader accepts (the reference implementation's limit).
    public static let maxHeaderLength = 100_000_000

    public let url: URL
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// Entries by tensor name.
    public let tensors: [String: SafetensorsTensorInfo]
    /// Tensor names in data-section order.
    public let keys: [String]
    /// Size of the file in bytes.
    public let fileSize: Int

    private let mapping: UnsafeMutableRawPointer?
    private let dataStart: Int

    public var path: String { url.path }

    /// Opens, maps and validates `url`. Throws `CheckpointError` naming the file (and tensor) on
    /// any violation of the format.
    public init(url: URL) throws {
        self.url = url
        let path = url.path
        // Refused by type before the open can block (a FIFO given as the weights file), then
        // opened non-blocking and checked again on the descriptor (InputFile).
        let fd: Int32, size: Int
        do { (fd, size) = try InputFile.openRegular(path) } catch let e as InputFileError {
            throw CheckpointError.io(path: path, message: "cannot open the safetensors file: \(e.reason)")
        }
        defer { close(fd) }
        fileSize = size
        if size == 0 { throw CheckpointError.malformedFile(path: path, reason: "file is empty (0 bytes)") }
        if size < 8 {
            throw CheckpointError.malformedFile(path: path, reason: "file is \(size) bytes, too short for the 8-byte header length")
        }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw CheckpointError.io(path: path, message: "cannot map \(size) bytes: \(errnoString())")
        }
        mapping = m
        do {
            let parsed = try Self.parseHeader(UnsafeRawBufferPointer(start: m, count: size), path: path)
            metadata = parsed.metadata
            tensors = parsed.tensors
            keys = parsed.keys
            dataStart = parsed.dataStart
        } catch {
            munmap(m, size)
            throw error
        }
    }

    deinit {
        if let mapping { munmap(mapping, fileSize) }
    }

    /// The entry for `key`, or a `missingTensor` error naming this file.
    public func info(_ key: String) throws -> SafetensorsTensorInfo {
        guard let info = tensors[key] else {
            throw CheckpointError.missingTensor(key: key, paths: [path], suggestions: similarKeys(to: key, in: keys))
        }
        return info
    }

    /// Reads a F32/F16/BF16 tensor as float32 (exact widening).
    public func floatTensor(_ key: String) throws -> Tensor {
        let info = try info(key)
        guard info.dtype.isConvertibleToFloat32 else {
            throw CheckpointError.unconvertibleDType(path: path, key: key, dtype: info.dtype.rawValue, wanted: "float32")
        }
        let n = info.elementCount
        let src = UnsafeRawPointer(mapping!) + dataStart + info.dataOffsets.lowerBound
        let data = [Float](unsafeUninitializedCapacity: n) { buf, count in
            if n > 0 {
                switch info.dtype {
                case .f32: UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: src, byteCount: 4 * n)
                case .f16: HalfPrecision.convert16(src, buf.baseAddress!, count: n, bfloat: false)
                default: HalfPrecision.convert16(src, buf.baseAddress!, count: n, bfloat: true)
                }
            }
            count = n
        }
        return Tensor(shape: info.shape, data: data)
    }

    /// Reads an I64 tensor (e.g. `position_ids` buffers) as `[Int64]`.
    public func int64Values(_ key: String) throws -> [Int64] {
        let info = try info(key)
        guard info.dtype == .i64 else {
            throw CheckpointError.unconvertibleDType(path: path, key: key, dtype: info.dtype.rawValue, wanted: "int64")
        }
        let n = info.elementCount
        let src = UnsafeRawPointer(mapping!) + dataStart + info.dataOffsets.lowerBound
        return [Int64](unsafeUninitializedCapacity: n) { buf, count in
            if n > 0 { UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: src, byteCount: 8 * n) }
            count = n
        }
    }

    /// Calls `body` with the raw little-endian bytes of a tensor of any dtype (valid only inside `body`).
    public func withRawBytes<R>(_ key: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let info = try info(key)
        let src = UnsafeRawPointer(mapping!) + dataStart + info.dataOffsets.lowerBound
        return try body(UnsafeRawBufferPointer(start: src, count: info.dataOffsets.count))
    }

    /// Tells the kernel the mapped pages of `key` are no longer needed (they stay in the page
    /// cache), so that loading a large model does not keep its file mapped in resident memory.
    func releasePages(of key: String) {
        guard let info = tensors[key], let mapping else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = dataStart + info.dataOffsets.lowerBound
        let end = dataStart + info.dataOffsets.upperBound
        let alignedStart = (start + page - 1) / page * page
        let alignedEnd = end / page * page
        if alignedEnd > alignedStart {
            _ = madvise(mapping + alignedStart, alignedEnd - alignedStart, Int32(MADV_DONTNEED))
        }
    }

    // MARK: Header validation

    struct ParsedHeader {
        var metadata: [String: String]
        var tensors: [String: SafetensorsTensorInfo]
        var keys: [String]
        var dataStart: Int
    }

    /// Parses and validates the header of a whole file held in `file`.
    static func parseHeader(_ file: UnsafeRawBufferPointer, path: String) throws -> ParsedHeader {
        func bad(_ reason: String) -> CheckpointError { .malformedFile(path: path, reason: reason) }
        let size = file.count
        let declared = UInt64(littleEndian: file.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(size - 8) else {
            throw bad("header length \(declared) is larger than the rest of the file (\(size) bytes in all, so at most \(size - 8))")
        }
        let n = Int(declared)
        guard n <= maxHeaderLength else { throw bad("header length \(n) exceeds the \(maxHeaderLength)-byte limit") }
        guard n >= 2 else { throw bad("header length \(n) is too small for a JSON object") }
        let header = UnsafeBufferPointer(start: file.baseAddress!.assumingMemoryBound(to: UInt8.self) + 8, count: n)
        guard header[0] == UInt8(ascii: "{") else {
            throw bad("header is not JSON (it must start with '{', found byte 0x\(String(header[0], radix: 16)))")
        }
        guard String(bytes: header, encoding: .utf8) != nil else { throw bad("header is not valid UTF-8") }
        let json: JSONValue
        do {
            json = try JSONParser.parse(header)
        } catch {
            throw bad("header is not valid JSON: \(error)")
        }
        guard case let .object(members) = json else { throw bad("header is not a JSON object") }

        let dataLength = size - 8 - n
        var metadata: [String: String] = [:]
        var tensors: [String: SafetensorsTensorInfo] = [:]
        for (key, value) in members {
            if key == "__metadata__" {
                guard case let .object(pairs) = value else { throw bad("__metadata__ is \(value.kindName), not an object") }
                for (k, v) in pairs {
                    guard case let .string(s) = v else {
                        throw bad("__metadata__ value for '\(k)' is \(v.kindName), not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            tensors[key] = try parseEntry(key: key, value: value, dataLength: dataLength, path: path)
        }

        // The data section must be covered exactly: no overlaps, no holes, no trailing bytes.
        let ordered = tensors.values.sorted {
            ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound, $0.key)
                < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound, $1.key)
        }
        var cursor = 0
        var previous: SafetensorsTensorInfo?
        for t in ordered {
            let r = t.dataOffsets
            if r.lowerBound < cursor, let p = previous {
                throw CheckpointError.invalidEntry(path: path, key: t.key,
                    reason: "data_offsets [\(r.lowerBound), \(r.upperBound)] overlap tensor '\(p.key)' at [\(p.dataOffsets.lowerBound), \(p.dataOffsets.upperBound)]")
            }
            if r.lowerBound > cursor {
                throw CheckpointError.invalidEntry(path: path, key: t.key,
                    reason: "data_offsets start at \(r.lowerBound) but the previous tensor\(previous.map { " '\($0.key)'" } ?? "") ends at \(cursor): "
                        + "the data section has an unindexed gap of \(r.lowerBound - cursor) bytes (not allowed by the format)")
            }
            cursor = r.upperBound
            if !r.isEmpty || previous == nil { previous = t }
        }
        if cursor != dataLength {
            throw bad("data section is \(dataLength) bytes but tensors cover only \(cursor); \(dataLength - cursor) trailing bytes are not indexed")
        }
        return ParsedHeader(metadata: metadata, tensors: tensors, keys: ordered.map(\.key), dataStart: 8 + n)
    }

    private static func parseEntry(key: String, value: JSONValue, dataLength: Int, path: String) throws -> SafetensorsTensorInfo {
        func bad(_ reason: String) -> CheckpointError { .invalidEntry(path: path, key: key, reason: reason) }
        guard case let .object(fields) = value else { throw bad("entry is \(value.kindName), not an object") }
        var dtypeText: String?
        var shapeValue: JSONValue?
        var offsetsValue: JSONValue?
        for (k, v) in fields {
            switch k {
            case "dtype":
                guard case let .string(s) = v else { throw bad("dtype is \(v.kindName), not a string") }
                dtypeText = s
            case "shape": shapeValue = v
            case "data_offsets": offsetsValue = v
            default: throw bad("unexpected field '\(k)' (allowed: dtype, shape, data_offsets)")
            }
        }
        guard let dtypeText else { throw bad("missing 'dtype'") }
        guard let shapeValue else { throw bad("missing 'shape'") }
        guard let offsetsValue else { throw bad("missing 'data_offsets'") }
        guard let dtype = SafetensorsDType(rawValue: dtypeText) else {
            throw CheckpointError.unknownDType(path: path, key: key, dtype: dtypeText)
        }
        guard case let .array(dims) = shapeValue else { throw bad("shape is \(shapeValue.kindName), not an array") }
        var shape: [Int] = []
        var count = 1
        for d in dims {
            guard let e = d.nonNegativeInt else { throw bad("shape \(render(shapeValue)) has an entry that is not a non-negative integer") }
            shape.append(e)
            let (c, o) = count.multipliedReportingOverflow(by: e)
            if o { throw bad("shape \(shape) has too many elements") }
            count = c
        }
        guard case let .array(offs) = offsetsValue, offs.count == 2,
              let begin = offs[0].nonNegativeInt, let end = offs[1].nonNegativeInt else {
            throw bad("data_offsets \(render(offsetsValue)) is not a pair of non-negative integers")
        }
        guard begin <= end else { throw bad("data_offsets [\(begin), \(end)] end before they begin") }
        guard end <= dataLength else {
            throw bad("data_offsets [\(begin), \(end)] are out of range: the data section is \(dataLength) bytes")
        }
        let (bytes, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o, bytes == end - begin else {
            throw bad("shape \(shape) of \(dtype.rawValue) needs \(o ? "too many" : String(bytes)) bytes but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        return SafetensorsTensorInfo(key: key, dtype: dtype, shape: shape, dataOffsets: begin..<end)
    }

    private static func render(_ v: JSONValue) -> String {
        switch v {
        case let .array(items): return "[" + items.map(render).joined(separator: ", ") + "]"
        case let .number(s): return s
        case let .string(s): return "\"\(s)\""
        case let .bool(b): return String(b)
        case .null: return "null"
        case .object: return "{...}"
        }
    }
}

func errnoString() -> String { String(cString: strerror(errno)) }

/// Up to three keys that share the longest dotted suffix with `key` (for "did you mean" hints).
func similarKeys(to key: String, in keys: [String]) -> [String] {
    let parts = key.split(separator: ".")
    func score(_ other: String) -> Int {
        let o = other.split(separator: ".")
        var n = 0
        while n < min(parts.count, o.count), parts[parts.count - 1 - n] == o[o.count - 1 - n] { n += 1 }
        return n
    }
    let scored = keys.map { ($0, score($0)) }.filter { $0.1 >= 2 || ($0.1 >= 1 && parts.count == 1) }
    return scored.sorted { ($1.1, $0.0) < ($0.1, $1.0) }.prefix(3).map(\.0)
}
