// MARK: - HDF5 datasets: type, shape, storage, filters
//
// Decodes a dataset's header messages (dataspace, datatype, fill value, filter pipeline,
// layout) and reads its raw elements: compact, contiguous, or chunked (v1 B-tree index, and the
// single-chunk, implicit and non-paged fixed-array indexes of HDF5 1.10) through the deflate,
// shuffle and Fletcher-32 filters. Every size is checked before anything is allocated.

import CZlib
import Foundation

// MARK: Datatype

/// A stored element type: what it is, its size, and how to decode it.
struct StoredType {
    var elementType: HDF5ElementType
    var size: Int
    var bigEndian: Bool

    static func decode(_ body: [UInt8], layout: FileLayout, what: String) throws -> StoredType {
        var c = Cursor(body, what: "the datatype of \(what)")
        let classAndVersion = try c.u8()
        let typeClass = classAndVersion & 0x0F
        let bits0 = try c.u8()
        let bits1 = try c.u8()
        _ = try c.u8()
        let size = Int(try c.u32())
        guard size >= 1, size <= 1 << 20 else { throw FormatError("the datatype of \(what) has an element size of \(size) bytes") }
        let bigEndian = bits0 & 0x01 != 0
        switch typeClass {
        case 0:  // fixed-point
            let offset = try c.u16(), precision = try c.u16()
            guard [1, 2, 4, 8].contains(size), offset == 0, Int(precision) == 8 * size else {
                return StoredType(elementType: .other("integer of \(precision) bits at bit \(offset) in \(size) bytes"), size: size, bigEndian: bigEndian)
            }
            return StoredType(elementType: .integer(signed: bits0 & 0x08 != 0, bytes: size), size: size, bigEndian: bigEndian)
        case 1:  // floating point
            let vax = bits0 & 0x40 != 0
            let offset = try c.u16(), precision = try c.u16()
            let exponentAt = try c.u8(), exponentBits = try c.u8(), mantissaAt = try c.u8(), mantissaBits = try c.u8()
            let bias = try c.u32()
            let ieee: [Int: (UInt8, UInt8, UInt8, UInt8, UInt32)] = [2: (10, 5, 0, 10, 15), 4: (23, 8, 0, 23, 127), 8: (52, 11, 0, 52, 1023)]
            guard !vax, let expected = ieee[size], offset == 0, Int(precision) == 8 * size,
                  (exponentAt, exponentBits, mantissaAt, mantissaBits, bias) == expected, bits1 == UInt8(8 * size - 1) else {
                return StoredType(elementType: .other("float of a non-IEEE layout (\(size) bytes)"), size: size, bigEndian: bigEndian)
            }
            return StoredType(elementType: .float(bytes: size), size: size, bigEndian: bigEndian)
        case 3:
            return StoredType(elementType: .string, size: size, bigEndian: false)
        case 7:  // reference
            let object = bits0 & 0x0F == 0 && classAndVersion >> 4 < 4 && size == layout.offsetSize
            return StoredType(elementType: object ? .objectReference : .otherReference, size: size, bigEndian: false)
        case 9:
            return StoredType(elementType: bits0 & 0x0F == 1 ? .string : .other("variable-length"), size: size, bigEndian: false)
        default:
            let names: [UInt8: String] = [2: "time", 4: "bitfield", 5: "opaque", 6: "compound", 8: "enum", 10: "array"]
            return StoredType(elementType: .other(names[typeClass] ?? "unknown type class \(typeClass)"), size: size, bigEndian: false)
        }
    }
}

// MARK: Dataspace

struct Dataspace {
    var dims: [UInt64]
    var isNull: Bool

    static func decode(_ body: [UInt8], lengthSize: Int, what: String) throws -> Dataspace {
        var c = Cursor(body, what: "the dataspace of \(what)")
        let version = try c.u8()
        let rank = Int(try c.u8())
        _ = try c.u8()  // flags (max dims, permutation: not needed)
        guard rank <= 32 else { throw FormatError("the dataspace of \(what) has rank \(rank) (at most 32)") }
        var isNull = false
        switch version {
        case 1: try c.skip(5)
        case 2: isNull = try c.u8() == 2
        default: throw FormatError("the dataspace of \(what) has version \(version) (1 or 2 expected)")
        }
        var dims: [UInt64] = []
        for _ in 0..<rank { dims.append(try c.uint(lengthSize)) }
        return Dataspace(dims: dims, isNull: isNull)
    }
}

// MARK: Filters

struct Filter {
    var id: UInt16
    var values: [UInt32]
}

enum FilterPipeline {
    static func decode(_ body: [UInt8], what: String) throws -> [Filter] {
        var c = Cursor(body, what: "the filter pipeline of \(what)")
        let version = try c.u8()
        let count = Int(try c.u8())
        guard count <= 32 else { throw FormatError("the filter pipeline of \(what) lists \(count) filters") }
        if version == 1 { try c.skip(6) } else if version != 2 {
            throw FormatError("the filter pipeline of \(what) has version \(version) (1 or 2 expected)")
        }
        var filters: [Filter] = []
        for _ in 0..<count {
            let id = try c.u16()
            let nameLength = version == 1 || id >= 256 ? Int(try c.u16()) : 0
            _ = try c.u16()  // flags
            let valueCount = Int(try c.u16())
            try c.skip(nameLength)
            var values: [UInt32] = []
            for _ in 0..<valueCount { values.append(try c.u32()) }
            if version == 1 && valueCount % 2 == 1 { try c.skip(4) }
            filters.append(Filter(id: id, values: values))
        }
        return filters
    }

    static func name(_ id: UInt16) -> String {
        [1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32001: "blosc",
         32004: "lz4", 32008: "bitshuffle", 32015: "zstd"][id].map { "\($0) (filter \(id))" } ?? "filter \(id)"
    }

    /// Undoes the filters (last applied first), skipping those whose bit is set in `mask`.
    /// The result must be `expected` bytes.
    static func apply(_ filters: [Filter], mask: UInt32, to input: [UInt8], expected: Int, elementSize: Int, what: String) throws -> [UInt8] {
        var data = input
        for (i, filter) in filters.enumerated().reversed() where i >= 32 || mask & (1 << UInt32(i)) == 0 {
            switch filter.id {
            case 1: data = try inflate(data, limit: expected + 4 * filters.count, what: what)
            case 2: data = unshuffle(data, elementSize: filter.values.first.map(Int.init) ?? elementSize)
            case 3:
                guard data.count >= 4 else { throw FormatError("\(what): a Fletcher-32 chunk of \(data.count) bytes has no checksum") }
                data.removeLast(4)
            default: throw FormatError("\(what) is stored with \(name(filter.id)), which this reader does not support (deflate, shuffle and fletcher32 are supported)")
            }
        }
        guard data.count == expected else {
            throw FormatError("\(what): a chunk decodes to \(data.count) bytes where \(expected) were expected")
        }
        return data
    }

    /// zlib-inflates `input` into at most `limit` bytes.
    static func inflate(_ input: [UInt8], limit: Int, what: String) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: max(limit, 1))
        var length = uLongf(output.count)
        let status = input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                uncompress(dst.baseAddress, &length, src.baseAddress, uLong(src.count))
            }
        }
        switch status {
        case Z_OK: return Array(output.prefix(Int(length)))
        case Z_BUF_ERROR: throw FormatError("\(what): a deflate chunk is damaged or decompresses to more than the chunk's \(limit) bytes")
        case Z_MEM_ERROR: throw FormatError("\(what): zlib ran out of memory")
        default: throw FormatError("\(what): a deflate chunk is damaged (zlib error \(status))")
        }
    }

    static func unshuffle(_ data: [UInt8], elementSize: Int) -> [UInt8] {
        guard elementSize > 1, data.count >= elementSize else { return data }
        let n = data.count / elementSize
        var out = data
        for b in 0..<elementSize {
            for i in 0..<n { out[i * elementSize + b] = data[b * n + i] }
        }
        return out
    }
}

// MARK: Layout

enum Storage {
    case compact([UInt8])
    case contiguous(address: UInt64, size: UInt64)
    case chunked(chunk: [Int], index: ChunkIndex)
    case unsupported(String)
}

enum ChunkIndex {
    case btree(UInt64)
    case single(UInt64, filteredSize: UInt64?, mask: UInt32)
    case implicit(UInt64)
    case fixedArray(UInt64)
}

extension Storage {
    static func decode(_ body: [UInt8], layout: FileLayout, rank: Int, what: String) throws -> Storage {
        var c = Cursor(body, what: "the layout of \(what)")
        let version = try c.u8()
        guard (3...5).contains(version) else {
            return .unsupported("a layout message of version \(version) (versions 3 to 5 are supported)")
        }
        let layoutClass = try c.u8()
        switch layoutClass {
        case 0:
            let size = Int(try c.u16())
            return .compact(try c.take(size))
        case 1:
            let address = try c.uint(layout.offsetSize)
            let size = try c.uint(layout.lengthSize)
            return .contiguous(address: address, size: size)
        case 2:
            if version == 3 {  // 4 and 5 (HDF5 1.10, 1.14) share one encoding
                let dimensionality = Int(try c.u8())
                guard dimensionality == rank + 1 else {
                    throw FormatError("the layout of \(what) has \(dimensionality) chunk dimensions for a rank-\(rank) dataset")
                }
                let address = try c.uint(layout.offsetSize)
                var chunk: [Int] = []
                for _ in 0..<dimensionality { chunk.append(Int(try c.u32())) }
                return .chunked(chunk: try checkedChunk(chunk, what), index: .btree(address))
            }
            let flags = try c.u8()
            let dimensionality = Int(try c.u8())
            let width = Int(try c.u8())
            guard dimensionality == rank + 1, (1...8).contains(width) else {
                throw FormatError("the layout of \(what) has \(dimensionality) chunk dimensions of \(width) bytes for a rank-\(rank) dataset")
            }
            var chunk: [Int] = []
            for _ in 0..<dimensionality {
                let d = try c.uint(width)
                guard d <= UInt64(Int32.max) else { throw FormatError("the layout of \(what) has a chunk dimension of \(d)") }
                chunk.append(Int(d))
            }
            let indexType = try c.u8()
            switch indexType {
            case 1:
                var filteredSize: UInt64?
                var mask: UInt32 = 0
                if flags & 0x02 != 0 {
                    filteredSize = try c.uint(layout.lengthSize)
                    mask = try c.u32()
                }
                return .chunked(chunk: try checkedChunk(chunk, what), index: .single(try c.uint(layout.offsetSize), filteredSize: filteredSize, mask: mask))
            case 2:
                return .chunked(chunk: try checkedChunk(chunk, what), index: .implicit(try c.uint(layout.offsetSize)))
            case 3:
                try c.skip(1)
                return .chunked(chunk: try checkedChunk(chunk, what), index: .fixedArray(try c.uint(layout.offsetSize)))
            case 4: return .unsupported("chunks indexed by an extensible array (a dataset with one unlimited dimension, written with libver 'latest')")
            case 5: return .unsupported("chunks indexed by a version-2 B-tree (a dataset with several unlimited dimensions, written with libver 'latest')")
            default: throw FormatError("the layout of \(what) names chunk index type \(indexType)")
            }
        case 3:
            return .unsupported("virtual dataset storage")
        default:
            throw FormatError("the layout of \(what) has layout class \(layoutClass)")
        }
    }

    /// Chunk dimensions (the last entry is the element size): positive, and a chunk at most 256 MiB.
    private static func checkedChunk(_ chunk: [Int], _ what: String) throws -> [Int] {
        var bytes = 1
        for d in chunk {
            guard d > 0 else { throw FormatError("the layout of \(what) has a zero chunk dimension") }
            let (p, o) = bytes.multipliedReportingOverflow(by: d)
            guard !o, p <= 256 << 20 else { throw FormatError("the layout of \(what) declares chunks of more than 256 MiB") }
            bytes = p
        }
        return chunk
    }
}

// MARK: Reading

/// Everything needed to read a dataset's raw bytes.
struct DatasetStorage {
    let source: FileSource
    let layout: FileLayout
    let dims: [Int]
    let elementSize: Int
    let storage: Storage
    let filters: [Filter]
    let fill: [UInt8]?
    let what: String

    /// Bytes of data a file may yield per byte it holds: deflate's best ratio is about 1032:1.
    static let maxExpansion: UInt64 = 1100
    /// Data that may come from fill values alone (unallocated storage), whatever the file's size.
    static let fillAllowance: UInt64 = 64 << 20

    /// The whole dataset, row-major, `count * elementSize` bytes.
    func readAll(count: Int) throws -> [UInt8] {
        let total = count * elementSize
        // Nothing is allocated for data the file could not hold, even compressed: a few bytes of
        // header can declare terabytes.
        let (limit, overflow) = source.size.multipliedReportingOverflow(by: Self.maxExpansion)
        if !overflow, UInt64(total) > max(limit, Self.fillAllowance) {
            throw FormatError("\(what) declares \(total) bytes of data, more than a file of \(source.size) bytes can hold even compressed")
        }
        var out = [UInt8](repeating: 0, count: total)
        if let fill, fill.count == elementSize, fill.contains(where: { $0 != 0 }), total > 0 {
            // The pattern, then copies of what is filled so far (doubling).
            out.replaceSubrange(0..<elementSize, with: fill)
            var filled = elementSize
            out.withUnsafeMutableBufferPointer { p in
                while filled < total {
                    let n = min(filled, total - filled)
                    (p.baseAddress! + filled).update(from: p.baseAddress!, count: n)
                    filled += n
                }
            }
        }
        switch storage {
        case .unsupported(let why):
            throw FormatError("\(what) uses \(why), which this reader does not support")
        case .compact(let bytes):
            guard bytes.count >= total else { throw FormatError("\(what): compact data holds \(bytes.count) bytes, \(total) needed") }
            out.replaceSubrange(0..<total, with: bytes[0..<total])
        case .contiguous(let address, let size):
            if address == layout.undefined { return out }
            guard size >= UInt64(total) else { throw FormatError("\(what): contiguous storage holds \(size) bytes, \(total) needed") }
            out = try source.read(at: try layout.absolute(address), count: total, what: "the data of \(what)")
        case .chunked(let chunk, let index):
            try readChunks(chunk: Array(chunk.dropLast()), index: index, into: &out)
        }
        return out
    }

    private func readChunks(chunk: [Int], index: ChunkIndex, into out: inout [UInt8]) throws {
        let rank = dims.count
        guard chunk.count == rank else { throw FormatError("\(what): chunks of rank \(chunk.count) for a rank-\(rank) dataset") }
        let chunkBytes = chunk.reduce(elementSize, *)
        // Chunks per dimension, and in all.
        let grid = zip(dims, chunk).map { ($0 + $1 - 1) / $1 }
        let chunkCount = grid.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        var seen: Set<[Int]> = []
        func place(_ offsets: [Int], _ address: UInt64, stored: Int, mask: UInt32) throws {
            for d in 0..<rank where offsets[d] % chunk[d] != 0 || offsets[d] >= dims[d] {
                throw FormatError("\(what): a chunk at \(offsets) lies outside the dataset \(dims) or off the chunk grid \(chunk)")
            }
            guard seen.insert(offsets).inserted else { throw FormatError("\(what): the chunk at \(offsets) is stored twice") }
            if address == layout.undefined { return }
            let limit = filters.isEmpty ? chunkBytes : chunkBytes * 2 + 65536
            guard stored >= 0, stored <= limit else { throw FormatError("\(what): a chunk at \(offsets) claims \(stored) stored bytes") }
            let raw = try source.read(at: try layout.absolute(address), count: stored, what: "a chunk of \(what)")
            let bytes = filters.isEmpty ? raw : try FilterPipeline.apply(filters, mask: mask, to: raw, expected: chunkBytes, elementSize: elementSize, what: what)
            guard bytes.count == chunkBytes else { throw FormatError("\(what): a chunk at \(offsets) holds \(bytes.count) bytes, \(chunkBytes) expected") }
            copy(bytes, chunk: chunk, at: offsets, into: &out)
        }
        func offsets(ofChunk n: Int) -> [Int] {
            var rest = n
            var result = [Int](repeating: 0, count: rank)
            for d in stride(from: rank - 1, through: 0, by: -1) {
                result[d] = (rest % grid[d]) * chunk[d]
                rest /= grid[d]
            }
            return result
        }
        switch index {
        case .btree(let root):
            if root == layout.undefined { return }
            let keySize = 8 + 8 * (rank + 1)
            try BTreeV1.walk(source, layout, root: root, type: 1, keySize: keySize, what: what) { child, key in
                var k = Cursor(key, what: "a chunk key of \(what)")
                let stored = Int(try k.u32())
                let mask = try k.u32()
                var at: [Int] = []
                for _ in 0..<rank {
                    let o = try k.uint(8)
                    guard o <= UInt64(Int.max) else { throw FormatError("\(what): a chunk offset of \(o)") }
                    at.append(Int(o))
                }
                try place(at, child, stored: stored, mask: mask)
            }
        case .single(let address, let filteredSize, let mask):
            try place([Int](repeating: 0, count: rank), address, stored: filteredSize.map { Int(clamping: $0) } ?? chunkBytes, mask: mask)
        case .implicit(let address):
            if address == layout.undefined { return }
            guard filters.isEmpty else { throw FormatError("\(what): an implicit chunk index with filters") }
            for n in 0..<chunkCount {
                let (step, o1) = UInt64(n).multipliedReportingOverflow(by: UInt64(chunkBytes))
                let (at, o2) = address.addingReportingOverflow(step)
                guard !o1, !o2 else { throw FormatError("\(what): chunk addresses overflow") }
                try place(offsets(ofChunk: n), at, stored: chunkBytes, mask: 0)
            }
        case .fixedArray(let address):
            if address == layout.undefined { return }
            let entries = try FixedArray.read(source, layout, at: address, chunks: chunkCount, filtered: !filters.isEmpty, what: what)
            for (n, entry) in entries.enumerated() {
                try place(offsets(ofChunk: n), entry.address, stored: entry.size ?? chunkBytes, mask: entry.mask)
            }
        }
    }

    /// Copies a decoded chunk's part inside the dataset into `out` (row-major both).
    private func copy(_ bytes: [UInt8], chunk: [Int], at offsets: [Int], into out: inout [UInt8]) {
        let rank = dims.count
        if rank == 0 { out.replaceSubrange(0..<elementSize, with: bytes[0..<elementSize]); return }
        let extent = (0..<rank).map { min(chunk[$0], dims[$0] - offsets[$0]) }
        if extent.contains(0) { return }
        let run = extent[rank - 1] * elementSize
        var index = [Int](repeating: 0, count: rank)  // position within the chunk, last dim fixed at 0
        bytes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                while true {
                    var s = 0, t = 0
                    for d in 0..<rank {
                        s = s * chunk[d] + index[d]
                        t = t * dims[d] + offsets[d] + index[d]
                    }
                    (dst.baseAddress! + t * elementSize).update(from: src.baseAddress! + s * elementSize, count: run)
                    var d = rank - 2
                    while d >= 0 {
                        index[d] += 1
                        if index[d] < extent[d] { break }
                        index[d] = 0
                        d -= 1
                    }
                    if d < 0 { return }
                }
            }
        }
    }
}

/// The fixed-array chunk index (HDF5 1.10, datasets with fixed dimensions written with libver 'latest').
enum FixedArray {
    struct Entry { var address: UInt64; var size: Int?; var mask: UInt32 }

    static func read(_ source: FileSource, _ layout: FileLayout, at address: UInt64, chunks: Int, filtered: Bool,
                     what: String) throws -> [Entry] {
        let label = "the fixed-array chunk index of \(what)"
        var c = Cursor(try source.read(at: try layout.absolute(address), count: 12 + layout.lengthSize + layout.offsetSize + 4,
                                       what: label), what: label)
        try c.signature("FAHD")
        try c.skip(2)  // version, client id
        let entrySize = Int(try c.u8())
        let pageBits = try c.u8()
        let count = try c.uint(layout.lengthSize)
        let block = try c.uint(layout.offsetSize)
        guard count == UInt64(chunks) else { throw FormatError("\(label) lists \(count) chunks where the dataset has \(chunks)") }
        guard pageBits >= 64 || count <= (UInt64(1) << UInt64(pageBits)) else {
            throw FormatError("\(label) is paged (more than 2^\(pageBits) chunks), which this reader does not support")
        }
        let expectedSize = filtered ? entrySize : layout.offsetSize
        guard entrySize == expectedSize, entrySize >= layout.offsetSize else { throw FormatError("\(label) has entries of \(entrySize) bytes") }
        let headSize = 4 + 2 + layout.offsetSize
        var d = Cursor(try source.read(at: try layout.absolute(block), count: headSize + chunks * entrySize, what: label), what: label)
        try d.signature("FADB")
        try d.skip(2 + layout.offsetSize)
        var entries: [Entry] = []
        for _ in 0..<chunks {
            let at = try d.uint(layout.offsetSize)
            if filtered {
                let sizeWidth = entrySize - layout.offsetSize - 4
                guard (1...8).contains(sizeWidth) else { throw FormatError("\(label) has entries of \(entrySize) bytes") }
                let size = try d.uint(sizeWidth)
                entries.append(Entry(address: at, size: Int(clamping: size), mask: try d.u32()))
            } else {
                entries.append(Entry(address: at, size: nil, mask: 0))
            }
        }
        return entries
    }
}

// MARK: Fill value

enum FillValue {
    /// The fill value's bytes when the header defines one.
    static func decode(_ header: ObjectHeader, what: String) throws -> [UInt8]? {
        if let message = header.first(MessageType.fillValue) {
            var c = Cursor(message.body, what: "the fill value of \(what)")
            let version = try c.u8()
            switch version {
            case 1, 2:
                try c.skip(2)
                let defined = try c.u8()
                if version == 2 && defined == 0 { return nil }
                guard c.remaining >= 4 else { return nil }
                let size = Int(try c.u32())
                return size == 0 ? nil : try c.take(size)
            case 3:
                let flags = try c.u8()
                guard flags & 0x20 != 0 else { return nil }
                let size = Int(try c.u32())
                return size == 0 ? nil : try c.take(size)
            default:
                throw FormatError("the fill value of \(what) has version \(version)")
            }
        }
        if let message = header.first(MessageType.fillValueOld) {
            var c = Cursor(message.body, what: "the fill value of \(what)")
            let size = Int(try c.u32())
            return size == 0 ? nil : try c.take(size)
        }
        return nil
    }
}
