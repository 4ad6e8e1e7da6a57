// MARK: - HDF5 reading
//
// A small read-only view of HDF5 files (MATLAB v7.3 `.mat` files are HDF5 with a 512-byte user
// block): open a file, look up datasets by path, read their shape and element type, read whole
// datasets as Swift arrays with checked conversion, read old-style object references and open
// the datasets they point to.
//
// * Pure Swift (HDF5Format.swift, HDF5Storage.swift; zlib for deflate): no libhdf5. A damaged
//   or hostile file is refused with an `HDF5Error` naming the file, the object and what is
//   wrong; it cannot crash the process (fuzzed: docs/Fuzzing.md).
// * Thread-safe: reads use `pread`; the per-file caches sit behind a lock.
// * A dataset keeps its file open; `close()` on either is deterministic and idempotent.

import Foundation

// MARK: Errors

/// Something about an HDF5 file or an object in it that cannot be used.
public struct HDF5Error: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// The path does not exist or is not a regular file.
        case fileNotFound
        /// The file exists but has no HDF5 signature.
        case notHDF5
        /// The file cannot be opened or its superblock is damaged or truncated.
        case openFailed
        /// The file was closed before the call.
        case closed
        /// No object at the path (or a path component is not a group).
        case noSuchObject
        /// The object exists but is not of the kind asked for (a group where a dataset was expected).
        case wrongKind
        /// The element type cannot be read as asked (strings, compounds, references as numbers, ...).
        case unsupportedType
        /// A stored value does not convert exactly to the requested Swift type.
        case conversion
        /// An object reference that does not resolve.
        case badReference
        /// The dataset is too large to hold in memory as one array.
        case tooLarge
        /// The object's header or data is damaged, or stored in a way this reader does not support.
        case readFailed
    }

    /// The file, as given to `HDF5File(path:)`.
    public var file: String
    /// The object: a path such as `/value/img`, or `/value/img[3,0] -> /#refs#/b` for a
    /// dereferenced object; nil for problems with the file itself.
    public var object: String?
    public var kind: Kind
    /// What is wrong, in plain words.
    public var message: String

    public init(file: String, object: String?, kind: Kind, message: String) {
        self.file = file
        self.object = object
        self.kind = kind
        self.message = message
    }

    public var description: String {
        if let object { return "\(file): \(object): \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: Element types

/// How a dataset's elements are stored.
public enum HDF5ElementType: Sendable, Equatable, CustomStringConvertible {
    case integer(signed: Bool, bytes: Int)
    case float(bytes: Int)
    /// Old-style object references (`hobj_ref_t`), as MATLAB cells and h5py references use.
    case objectReference
    /// Any other reference type (region references, HDF5 1.12 `H5R_ref_t`).
    case otherReference
    case string
    /// Compound, enum, array, opaque, bitfield, variable-length: named by class.
    case other(String)

    public var description: String {
        switch self {
        case .integer(let signed, let bytes): return "\(signed ? "int" : "uint")\(bytes * 8)"
        case .float(let bytes): return "float\(bytes * 8)"
        case .objectReference: return "object reference"
        case .otherReference: return "reference (not an object reference)"
        case .string: return "string"
        case .other(let name): return name
        }
    }

    /// Bytes per element in memory when read as numbers (nil for non-numeric types).
    var numericBytes: Int? {
        switch self {
        case .integer(_, let b), .float(let b): return b
        default: return nil
        }
    }
}

/// Swift numbers a dataset can be read into. Conversions are exact or fail: an integer dataset
/// reads into any type that holds every stored value; a float dataset reads into an integer
/// type only when every value is integral and in range.
public protocol HDF5Scalar: Sendable {
    /// How this type is stored when the stored type matches it exactly (then read without conversion).
    static var hdf5Type: HDF5ElementType { get }
    init?(hdf5Exactly value: Int64)
    init?(hdf5Exactly value: UInt64)
    init?(hdf5Exactly value: Double)
}

extension HDF5Scalar where Self: BinaryInteger {
    public init?(hdf5Exactly value: Int64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: UInt64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: Double) { self.init(exactly: value) }
}

extension UInt8: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 1) }
}
extension Int8: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 1) }
}
extension UInt16: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 2) }
}
extension Int16: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 2) }
}
extension UInt32: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 4) }
}
extension Int32: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 4) }
}
extension UInt64: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 8) }
}
extension Int64: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 8) }
}
extension Float: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .float(bytes: 4) }
    public init?(hdf5Exactly value: Int64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: UInt64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: Double) {
        // NaN stays NaN; anything else must survive the narrowing unchanged.
        if value.isNaN { self = .nan; return }
        self.init(exactly: value)
    }
}
extension Double: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .float(bytes: 8) }
    public init?(hdf5Exactly value: Int64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: UInt64) { self.init(exactly: value) }
    public init?(hdf5Exactly value: Double) { self = value }
}

// MARK: Objects

/// What a path in a file names.
public enum HDF5ObjectKind: String, Sendable, Equatable {
    case group, dataset, namedDatatype, other
}

/// An old-style HDF5 object reference read from a dataset. It is only meaningful in the file
/// it was read from; dereference it with that file's `HDF5File.dataset(referencedBy:)`.
public struct HDF5ObjectReference: Sendable, Hashable {
    /// The referenced object's address in the file (0 for a null reference).
    public var address: UInt64
    /// Where it was read, for messages: `/value/img[3,0]`.
    public var source: String
    public init(address: UInt64, source: String) {
        self.address = address
        self.source = source
    }
    public var isNull: Bool { address == 0 }
}


/// An open HDF5 file (read-only).
public final class HDF5File: @unchecked Sendable {
    /// The path as given.
    public let path: String
    /// The bytes; nil once closed. Guarded by `lock`.
    private var source: FileSource?
    private let layout: FileLayout
    private let lock = NSRecursiveLock()
    /// Parsed object headers and group link lists by address (bounded caches). Guarded by `lock`.
    private var headers: [UInt64: ObjectHeader] = [:]
    private var groupLinks: [UInt64: [(String, LinkTarget)]] = [:]
    /// Object paths by header address, for naming objects opened through references; built on
    /// first use. Guarded by `lock`.
    private var pathIndex: [UInt64: String]?

    /// Links a walk of the file visits at most when naming referenced objects (beyond that, objects
    /// are named by their address). ImageNet-Segmentation's gtsegs_ijcv.mat has about 13,000 objects.
    static let maxIndexedLinks = 200_000
    /// Soft links one lookup follows before the path is given up as a loop.
    static let maxSoftLinks = 16
    private static let maxCached = 4096

    /// The HDF5 signature, found at offset 0 or at a user-block boundary (512, 1024, 2048, ...).
    static let signature = Superblock.signature

    /// Opens an existing file read-only.
    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw HDF5Error(file: path, object: nil, kind: .fileNotFound, message: "no such file")
        }
        if isDirectory.boolValue {
            throw HDF5Error(file: path, object: nil, kind: .fileNotFound, message: "is a directory, not an HDF5 file")
        }
        let source: FileSource
        do { source = try FileSource(path: path) } catch let error as FormatError {
            throw HDF5Error(file: path, object: nil, kind: .openFailed, message: error.message)
        }
        guard let at = Superblock.locate(source) else {
            throw HDF5Error(file: path, object: nil, kind: .notHDF5,
                            message: "not an HDF5 file (no HDF5 signature at offset 0 or at a user-block boundary)")
        }
        do {
            layout = try Superblock.read(source, at: at)
            let root = try ObjectHeader.read(source, layout, at: layout.root)
            headers[layout.root] = root
        } catch let error as FormatError {
            throw HDF5Error(file: path, object: nil, kind: .openFailed, message: "the file is damaged: \(error.message)")
        }
        self.source = source
    }

    /// Closes the file. Datasets still open keep the underlying file open until they are closed.
    public func close() {
        locked {
            source = nil
            headers = [:]
            groupLinks = [:]
            pathIndex = nil
        }
    }

    public var isOpen: Bool { locked { source != nil } }

    /// Whether the file starts with the HDF5 signature, at offset 0 or at 512, 1024, 2048, ...
    /// (where a user block ends), as libhdf5 searches for it.
    public static func hasSignature(path: String) -> Bool {
        guard let source = try? FileSource(path: path) else { return false }
        return Superblock.locate(source) != nil
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    private func openSource(object: String?) throws -> FileSource {
        guard let source else { throw HDF5Error(file: path, object: object, kind: .closed, message: "the file is closed") }
        return source
    }

    private static func normalised(_ objectPath: String) -> String {
        let parts = objectPath.split(separator: "/", omittingEmptySubsequences: true)
        return "/" + parts.joined(separator: "/")
    }

    // MARK: Objects (lock held)

    private func header(at address: UInt64, _ source: FileSource) throws -> ObjectHeader {
        if let cached = headers[address] { return cached }
        let header = try ObjectHeader.read(source, layout, at: address)
        if headers.count >= Self.maxCached { headers = [layout.root: headers[layout.root]].compactMapValues { $0 } }
        headers[address] = header
        return header
    }

    /// The group's links in name order, or nil when the object is not a group.
    private func links(of header: ObjectHeader, _ source: FileSource) throws -> [(String, LinkTarget)]? {
        if let cached = groupLinks[header.address] { return cached }
        guard let links = try Groups.links(header, source, layout) else { return nil }
        if groupLinks.count >= Self.maxCached { groupLinks = [:] }
        groupLinks[header.address] = links
        return links
    }

    private static func kind(of header: ObjectHeader) -> HDF5ObjectKind {
        if header.first(MessageType.layout) != nil && header.first(MessageType.dataspace) != nil { return .dataset }
        if header.first(MessageType.symbolTable) != nil || header.first(MessageType.linkInfo) != nil
            || header.first(MessageType.link) != nil || header.first(MessageType.groupInfo) != nil { return .group }
        if header.first(MessageType.datatype) != nil { return .namedDatatype }
        return .other
    }

    /// Follows the path link by link (soft links too, external links never); nil when a link is
    /// missing, dangling, or passes through a non-group. At most `maxSoftLinks` soft links are
    /// followed in one lookup, counted over the whole lookup (as libhdf5 does): soft links whose
    /// targets are paths through other soft links could otherwise branch exponentially (found by
    /// fuzzing).
    private func resolve(_ full: String, _ source: FileSource) throws -> ObjectHeader? {
        var hops = 0
        return try resolve(full, source, hops: &hops)
    }

    private func resolve(_ full: String, _ source: FileSource, hops: inout Int) throws -> ObjectHeader? {
        var current = try header(at: layout.root, source)
        var walked: [Substring] = []
        for part in full.split(separator: "/") {
            guard let links = try links(of: current, source) else { return nil }
            guard let target = Self.find(part, in: links) else { return nil }
            switch target {
            case .hard(let address):
                guard let next = try? header(at: address, source) else { return nil }
                current = next
            case .soft(let value):
                guard hops < Self.maxSoftLinks else { return nil }
                hops += 1
                let absolute = value.hasPrefix("/") ? value : "/" + (walked.map(String.init) + [value]).joined(separator: "/")
                guard let next = try resolve(Self.normalised(absolute), source, hops: &hops) else { return nil }
                current = next
            case .external:
                return nil
            }
            walked.append(part)
        }
        return current
    }

    private static func find(_ name: Substring, in links: [(String, LinkTarget)]) -> LinkTarget? {
        var low = 0, high = links.count
        while low < high {
            let mid = (low + high) / 2
            if links[mid].0 < name { low = mid + 1 } else { high = mid }
        }
        return low < links.count && links[low].0 == name ? links[low].1 : nil
    }

    private func readFailed(_ object: String, _ error: FormatError) -> HDF5Error {
        HDF5Error(file: path, object: object, kind: .readFailed, message: error.message)
    }

    // MARK: Lookup

    /// What `objectPath` names, or nil when nothing does (a missing link, or a component that
    /// is not a group).
    public func kind(of objectPath: String) throws -> HDF5ObjectKind? {
        let full = Self.normalised(objectPath)
        return try locked {
            let source = try openSource(object: full)
            do { return try resolve(full, source).map(Self.kind(of:)) } catch let error as FormatError { throw readFailed(full, error) }
        }
    }

    public func contains(_ objectPath: String) throws -> Bool { try kind(of: objectPath) != nil }

    /// The names of the links in a group, sorted by name.
    public func members(ofGroup groupPath: String) throws -> [String] {
        let full = Self.normalised(groupPath)
        return try locked {
            let source = try openSource(object: full)
            do {
                guard let header = try resolve(full, source) else {
                    throw HDF5Error(file: path, object: full, kind: .noSuchObject, message: "no such group")
                }
                guard let links = try links(of: header, source) else {
                    throw HDF5Error(file: path, object: full, kind: .wrongKind, message: "is a \(Self.kind(of: header).rawValue), not a group")
                }
                return links.map { $0.0 }
            } catch let error as FormatError { throw readFailed(full, error) }
        }
    }

    /// Opens the dataset at `objectPath` (absolute, or relative to the root).
    public func dataset(_ objectPath: String) throws -> HDF5Dataset {
        let full = Self.normalised(objectPath)
        return try locked {
            let source = try openSource(object: full)
            do {
                guard let header = try resolve(full, source) else {
                    throw HDF5Error(file: path, object: full, kind: .noSuchObject, message: missingMessage(full))
                }
                let kind = Self.kind(of: header)
                guard kind == .dataset else {
                    throw HDF5Error(file: path, object: full, kind: .wrongKind, message: "is a \(kind.rawValue), not a dataset")
                }
                return try HDF5Dataset(file: self, source: source, layout: layout, header: header, name: full, datatypeAt: { try self.header(at: $0, source) })
            } catch let error as FormatError { throw readFailed(full, error) }
        }
    }

    /// "no such dataset" plus what the deepest existing group holds. Lock held.
    private func missingMessage(_ full: String) -> String {
        var parts = full.split(separator: "/").map(String.init)
        var missing = "/" + parts.joined(separator: "/")
        while !parts.isEmpty {
            let parentParts = parts.dropLast()
            let parent = "/" + parentParts.joined(separator: "/")
            if let kind = try? self.kind(of: parent), kind == .group {
                let members = (try? self.members(ofGroup: parent)) ?? []
                let shown = members.prefix(12).map { parent == "/" ? "/\($0)" : "\(parent)/\($0)" }
                let list = shown.isEmpty ? "nothing" : shown.joined(separator: ", ") + (members.count > 12 ? ", ..." : "")
                return "no such object: \(missing) does not exist (\(parent) holds \(list))"
            }
            missing = parent
            parts = Array(parentParts)
        }
        return "no such object"
    }

    /// Opens the dataset an object reference (read from a dataset of this file) points to.
    /// The dataset's name is `<reference source> -> <path>`, e.g. `/value/img[3,0] -> /#refs#/b`.
    public func dataset(referencedBy reference: HDF5ObjectReference) throws -> HDF5Dataset {
        try locked {
            let source = try openSource(object: reference.source)
            if reference.isNull {
                throw HDF5Error(file: path, object: reference.source, kind: .badReference, message: "null object reference")
            }
            let header: ObjectHeader
            do { header = try self.header(at: reference.address, source) } catch let error as FormatError {
                throw HDF5Error(file: path, object: reference.source, kind: .badReference,
                                message: "the object reference (address \(reference.address)) does not resolve: \(error.message)")
            }
            let target = objectPath(reference.address, source) ?? "address \(reference.address)"
            let label = "\(reference.source) -> \(target)"
            let kind = Self.kind(of: header)
            guard kind == .dataset else {
                let what = kind == .group ? "group" : kind == .namedDatatype ? "named datatype" : "non-dataset object"
                throw HDF5Error(file: path, object: label, kind: .wrongKind, message: "references a \(what), not a dataset")
            }
            do {
                return try HDF5Dataset(file: self, source: source, layout: layout, header: header, name: label, datatypeAt: { try self.header(at: $0, source) })
            } catch let error as FormatError { throw readFailed(label, error) }
        }
    }

    // MARK: Naming referenced objects
    //
    // An object opened through a reference has no path of its own. The file's hard links are
    // walked once, breadth first from the root in name order, each object visited once by
    // address (so no cycle can loop) and at most `maxIndexedLinks` links; the first path found
    // names the object.

    private func objectPath(_ address: UInt64, _ source: FileSource) -> String? {
        if pathIndex == nil { pathIndex = indexPaths(source) }
        return pathIndex?[address]
    }

    private func indexPaths(_ source: FileSource) -> [UInt64: String] {
        var paths: [UInt64: String] = [layout.root: "/"]
        var groups: [(UInt64, String)] = [(layout.root, "/")]
        var next = 0
        var visited = 0
        while next < groups.count && visited < Self.maxIndexedLinks {
            let (address, groupPath) = groups[next]
            next += 1
            guard let header = try? header(at: address, source), let links = try? Groups.links(header, source, layout) else { continue }
            for (name, target) in links {
                visited += 1
                if visited > Self.maxIndexedLinks { break }
                guard case .hard(let child) = target, paths[child] == nil else { continue }
                let childPath = (groupPath == "/" ? "" : groupPath) + "/" + name
                paths[child] = childPath
                if let childHeader = try? self.header(at: child, source), Self.kind(of: childHeader) == .group {
                    groups.append((child, childPath))
                }
            }
        }
        return paths
    }
}

/// An open dataset: its shape, element type, and whole-array reads.
public final class HDF5Dataset: @unchecked Sendable {
    /// The file it belongs to.
    public let file: HDF5File
    /// Its path, or `<source> -> <path>` when opened through a reference. Used in messages.
    public let name: String
    /// Dimensions in HDF5 (C, row-major) order; empty for a scalar or a null dataspace.
    /// MATLAB writes column-major arrays, so an `H x W x 3` MATLAB array reads as `[3, W, H]`.
    public let shape: [Int]
    /// False for an HDF5 null dataspace (no elements at all).
    public let hasData: Bool
    public let elementType: HDF5ElementType
    /// Bytes per stored element.
    public let elementSize: Int
    private let bigEndian: Bool
    private let offsetSize: Int
    private let lock = NSLock()
    /// How to read the bytes; nil once closed (it holds the file open). Guarded by `lock`.
    private var storage: DatasetStorage?

    init(file: HDF5File, source: FileSource, layout: FileLayout, header: ObjectHeader, name: String,
         datatypeAt: (UInt64) throws -> ObjectHeader) throws {
        self.file = file
        self.name = name
        guard let spaceMessage = header.first(MessageType.dataspace), let layoutMessage = header.first(MessageType.layout) else {
            throw FormatError("\(name) has no dataspace or layout message")
        }
        let space = try Dataspace.decode(spaceMessage.body, lengthSize: layout.lengthSize, what: name)
        guard var typeMessage = header.first(MessageType.datatype) else { throw FormatError("\(name) has no datatype message") }
        if typeMessage.isShared {
            // A committed datatype: the message names the object header that holds it.
            var c = Cursor(typeMessage.body, what: "the shared datatype of \(name)")
            let version = try c.u8()
            let type = try c.u8()
            if version == 1 { try c.skip(6) }
            guard (1...3).contains(version), version < 3 || type == 2 else {
                throw FormatError("\(name) has a datatype shared through the shared-message heap, which this reader does not support")
            }
            let committed = try datatypeAt(try c.uint(layout.offsetSize))
            guard let inner = committed.first(MessageType.datatype), !inner.isShared else {
                throw FormatError("the shared datatype of \(name) does not lead to a datatype")
            }
            typeMessage = inner
        }
        let type = try StoredType.decode(typeMessage.body, layout: layout, what: name)
        shape = space.dims.map { Int(clamping: $0) }
        hasData = !space.isNull
        elementType = type.elementType
        elementSize = type.size
        bigEndian = type.bigEndian
        offsetSize = layout.offsetSize
        let filters = try header.first(MessageType.filterPipeline).map { try FilterPipeline.decode($0.body, what: name) } ?? []
        storage = DatasetStorage(source: source, layout: layout, dims: shape, elementSize: elementSize,
                                 storage: try Storage.decode(layoutMessage.body, layout: layout, rank: shape.count, what: name),
                                 filters: filters, fill: try FillValue.decode(header, what: name), what: name)
    }

    /// Releases the dataset (further reads throw).
    public func close() {
        lock.lock()
        storage = nil
        lock.unlock()
    }

    public var rank: Int { shape.count }

    /// Number of elements (1 for a scalar, 0 for a null dataspace).
    public var count: Int {
        hasData ? shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 } : 0
    }

    /// `name[i,j,...]` for the element at a flat (row-major) index.
    public func elementName(_ flat: Int) -> String {
        guard !shape.isEmpty else { return name }
        var rest = flat
        var index = [Int](repeating: 0, count: shape.count)
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 0 {
            index[d] = rest % shape[d]
            rest /= shape[d]
        }
        return "\(name)[\(index.map(String.init).joined(separator: ","))]"
    }

    private func error(_ kind: HDF5Error.Kind, _ message: String) -> HDF5Error {
        HDF5Error(file: file.path, object: name, kind: kind, message: message)
    }

    /// Every element's stored bytes, row-major.
    private func rawBytes() throws -> [UInt8] {
        lock.lock()
        let storage = self.storage
        lock.unlock()
        guard let storage else { throw error(.closed, "the dataset is closed") }
        let n = count
        let bytes = n.multipliedReportingOverflow(by: elementSize)
        if n == Int.max || bytes.overflow || bytes.partialValue > Int(Int32.max) * 16 {
            throw error(.tooLarge, "\(shape) elements of \(elementSize) bytes do not fit in one array")
        }
        if n == 0 { return [] }
        do { return try storage.readAll(count: n) } catch let failure as FormatError {
            throw error(.readFailed, failure.message)
        }
    }

    /// The stored integer at element `i`, widened (sign-extended when signed).
    private func integer(_ raw: UnsafeBufferPointer<UInt8>, _ i: Int, signed: Bool) -> UInt64 {
        let bytes = UnsafeRawBufferPointer(raw)
        let at = i * elementSize
        switch elementSize {
        case 1:
            let v = bytes[at]
            return signed ? UInt64(bitPattern: Int64(Int8(bitPattern: v))) : UInt64(v)
        case 2:
            let v = bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self)
            let n = bigEndian ? v.byteSwapped : v.littleEndian
            return signed ? UInt64(bitPattern: Int64(Int16(bitPattern: n))) : UInt64(n)
        case 4:
            let v = bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)
            let n = bigEndian ? v.byteSwapped : v.littleEndian
            return signed ? UInt64(bitPattern: Int64(Int32(bitPattern: n))) : UInt64(n)
        default:
            let v = bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self)
            return bigEndian ? v.byteSwapped : v.littleEndian
        }
    }

    private func float(_ raw: UnsafeBufferPointer<UInt8>, _ i: Int) -> Double {
        let bits = integer(raw, i, signed: false)
        switch elementSize {
        case 2: return Self.half(UInt16(bits))
        case 4: return Double(Float(bitPattern: UInt32(bits)))
        default: return Double(bitPattern: bits)
        }
    }

    /// IEEE binary16 to Double (exact).
    static func half(_ h: UInt16) -> Double {
        let sign: Double = h & 0x8000 != 0 ? -1 : 1
        let exponent = Int((h >> 10) & 0x1F), fraction = Double(h & 0x3FF)
        switch exponent {
        case 0: return sign * fraction * 0x1p-24
        case 31: return fraction == 0 ? sign * .infinity : .nan
        default: return sign * (1 + fraction / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
        }
    }

    /// Reads the whole dataset, row-major (HDF5 order), as `T`. Integer and float datasets are
    /// converted exactly: any value that `T` cannot hold exactly throws `.conversion`, naming
    /// the element.
    public func read<T: HDF5Scalar>(as type: T.Type = T.self) throws -> [T] {
        guard elementType.numericBytes != nil else {
            throw error(.unsupportedType, "holds \(elementType) elements, which cannot be read as \(T.self)")
        }
        let raw = try rawBytes()
        let n = raw.count / max(elementSize, 1)
        if elementType == T.hdf5Type && !bigEndian && MemoryLayout<T>.stride == elementSize && 1.littleEndian == 1 {
            return [T](unsafeUninitializedCapacity: n) { buffer, initialised in
                raw.withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
                initialised = n
            }
        }
        var out: [T] = []
        out.reserveCapacity(n)
        try raw.withUnsafeBufferPointer { bytes in
            for i in 0..<n {
                let converted: T?
                let shown: String
                switch elementType {
                case .integer(let signed, _) where signed || elementSize < 8:
                    let v = Int64(bitPattern: integer(bytes, i, signed: signed))
                    converted = T(hdf5Exactly: v)
                    shown = "\(v)"
                case .integer:
                    let v = integer(bytes, i, signed: false)
                    converted = T(hdf5Exactly: v)
                    shown = "\(v)"
                default:
                    let v = float(bytes, i)
                    converted = T(hdf5Exactly: v)
                    shown = "\(v)"
                }
                guard let x = converted else {
                    throw error(.conversion, "element \(elementName(i)) = \(shown) (\(elementType)) is not exactly representable as \(T.self)")
                }
                out.append(x)
            }
        }
        return out
    }

    /// Reads a dataset of object references, row-major. Each reference's `source` is the
    /// element's name, e.g. `/value/img[3,0]`.
    public func readObjectReferences() throws -> [HDF5ObjectReference] {
        guard elementType == .objectReference else {
            throw error(.unsupportedType, "holds \(elementType) elements, not object references")
        }
        let raw = try rawBytes()
        return raw.withUnsafeBufferPointer { bytes in
            (0..<(raw.count / elementSize)).map { HDF5ObjectReference(address: integer(bytes, $0, signed: false), source: elementName($0)) }
        }
    }

    /// Opens the dataset the reference at flat index `index` of this dataset points to.
    public func dereference(at index: Int) throws -> HDF5Dataset {
        let references = try readObjectReferences()
        guard references.indices.contains(index) else {
            throw error(.badReference, "index \(index) is out of range (\(references.count) references)")
        }
        return try file.dataset(referencedBy: references[index])
    }
}
