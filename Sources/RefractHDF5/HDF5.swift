// MARK: - HDF5 reading
//
// A small read-only view of HDF5 files (MATLAB v7.3 `.mat` files are HDF5 with a 512-byte user
// block): open a file, look up datasets by path, read their shape and element type, read whole
// datasets as Swift arrays with checked conversion, read old-style object references and open
// the datasets they point to.
//
// * libhdf5 serial is not thread-safe: every call into it goes through one process-wide lock.
// * The library's automatic error printing is switched off; failures become `HDF5Error`s that
//   name the file, the object path and what the library said.
// * Handles are closed deterministically: `close()`, or when the Swift object is released.
//   A dataset keeps its file open.

import CHDF5
import Foundation

public enum HDF5Library {
    /// The loaded libhdf5's version, major.minor.release.
    public static var version: String {
        HDF5Lock.run {
            var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
            _ = H5get_libversion(&major, &minor, &release)
            return "\(major).\(minor).\(release)"
        }
    }
}

// MARK: Errors

/// Something about an HDF5 file or an object in it that cannot be used.
public struct HDF5Error: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, CaseIterable {
        /// The path does not exist or is not a regular file.
        case fileNotFound
        /// The file exists but has no HDF5 signature.
        case notHDF5
        /// The library could not open the file (corrupt superblock, permissions, ...).
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
        /// The library failed while reading data.
        case readFailed
    }

    /// The file, as given to `HDF5File(path:)`.
    public var file: String
    /// The object: a path such as `/value/img`, or `/value/img[3,0] -> /#refs#/b` for a
    /// dereferenced object; nil for problems with the file itself.
    public var object: String?
    public var kind: Kind
    /// What is wrong, in plain words (with libhdf5's own messages where it had some).
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

// MARK: Lock

/// The process-wide lock around libhdf5 (serial builds keep global state). Recursive, so
/// locked helpers may call each other.
enum HDF5Lock {
    private static let lock = NSRecursiveLock()
    nonisolated(unsafe) private static var initialised = false

    static func run<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        if !initialised {
            _ = H5open()
            _ = refract_h5e_silence()
            initialised = true
        }
        return try body()
    }

    /// The messages on libhdf5's error stack (outermost first), clearing it. Call with the lock held.
    static func takeLibraryMessages() -> String {
        var buffer = [CChar](repeating: 0, count: 2048)
        let count = buffer.withUnsafeMutableBufferPointer { refract_h5e_take_messages($0.baseAddress, $0.count) }
        if count == 0 { return "" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
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
    /// libhdf5's native memory type for this Swift type.
    static var hdf5NativeType: hid_t { get }
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
    public static var hdf5NativeType: hid_t { refract_h5t_native_uint8() }
}
extension Int8: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 1) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_int8() }
}
extension UInt16: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 2) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_uint16() }
}
extension Int16: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 2) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_int16() }
}
extension UInt32: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 4) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_uint32() }
}
extension Int32: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 4) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_int32() }
}
extension UInt64: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: false, bytes: 8) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_uint64() }
}
extension Int64: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .integer(signed: true, bytes: 8) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_int64() }
}
extension Float: HDF5Scalar {
    public static var hdf5Type: HDF5ElementType { .float(bytes: 4) }
    public static var hdf5NativeType: hid_t { refract_h5t_native_float() }
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
    public static var hdf5NativeType: hid_t { refract_h5t_native_double() }
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
    /// The file's hid_t; negative once closed. Guarded by `HDF5Lock`.
    private var id: hid_t
    /// Object paths by object identity, for naming objects opened through references; built on
    /// first use by `objectPaths(_:)`. Guarded by `HDF5Lock`.
    private var pathIndex: [ObjectIdentity: String]?

    /// Links a walk of the file visits at most when naming referenced objects (beyond that, objects
    /// are named by their address). Bounds the walk's time and the group handles it holds open.
    /// ImageNet-Segmentation's gtsegs_ijcv.mat has about 13,000 objects.
    static let maxIndexedLinks = 200_000

    /// Offsets at which an HDF5 superblock may start: 0, then 512 doubled (user blocks).
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

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
        let opened: (hid_t, String) = HDF5Lock.run {
            let fid = refract_h5f_open_readonly(path)
            return (fid, fid < 0 ? HDF5Lock.takeLibraryMessages() : "")
        }
        guard opened.0 >= 0 else {
            if !HDF5File.hasSignature(path: path) {
                throw HDF5Error(file: path, object: nil, kind: .notHDF5,
                                message: "not an HDF5 file (no HDF5 signature at offset 0 or at a user-block boundary)")
            }
            throw HDF5Error(file: path, object: nil, kind: .openFailed,
                            message: "libhdf5 cannot open the file" + (opened.1.isEmpty ? "" : ": \(opened.1)"))
        }
        id = opened.0
    }

    deinit { close() }

    /// Closes the file. Datasets still open keep the underlying file open until they are closed.
    public func close() {
        HDF5Lock.run {
            if id >= 0 { _ = H5Fclose(id); id = -1 }
        }
    }

    public var isOpen: Bool { HDF5Lock.run { id >= 0 } }

    /// Whether the file starts with the HDF5 signature, at offset 0 or at 512, 1024, 2048, ...
    /// (where a user block ends), as libhdf5 searches for it.
    public static func hasSignature(path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let size = try? handle.seekToEnd() else { return false }
        var offset: UInt64 = 0
        while offset + 8 <= size {
            do {
                try handle.seek(toOffset: offset)
                if let bytes = try handle.read(upToCount: 8), [UInt8](bytes) == signature { return true }
            } catch { return false }
            offset = offset == 0 ? 512 : offset * 2
        }
        return false
    }

    private func openID(object: String?) throws -> hid_t {
        guard id >= 0 else { throw HDF5Error(file: path, object: object, kind: .closed, message: "the file is closed") }
        return id
    }

    private static func normalised(_ objectPath: String) -> String {
        let parts = objectPath.split(separator: "/", omittingEmptySubsequences: true)
        return "/" + parts.joined(separator: "/")
    }

    /// What `objectPath` names, or nil when nothing does (a missing link, or a component that
    /// is not a group).
    public func kind(of objectPath: String) throws -> HDF5ObjectKind? {
        let full = Self.normalised(objectPath)
        return try HDF5Lock.run {
            let fid = try openID(object: full)
            return try Self.lookup(fid, full).map { $0.kind }
        }
    }

    public func contains(_ objectPath: String) throws -> Bool { try kind(of: objectPath) != nil }

    /// Follows the path link by link; nil when a link is missing or passes through a non-group.
    /// Returns the kind and the deepest existing ancestor. Lock held.
    private static func lookup(_ fid: hid_t, _ full: String) throws -> (kind: HDF5ObjectKind, path: String)? {
        if full == "/" { return (.group, "/") }
        var prefix = ""
        for part in full.split(separator: "/") {
            prefix += "/" + part
            // Every ancestor has been checked to be a group, so H5Lexists is well-defined.
            let exists = H5Lexists(fid, prefix, refract_h5p_default())
            if exists <= 0 { _ = HDF5Lock.takeLibraryMessages(); return nil }
            let kind = objectKind(fid, prefix)
            if prefix != full && kind != .group { return nil }
            if prefix == full { return kind.map { ($0, full) } }
        }
        return nil
    }

    /// The kind of the object at an existing link (nil if it cannot be opened, e.g. a dangling soft link).
    private static func objectKind(_ fid: hid_t, _ path: String) -> HDF5ObjectKind? {
        let oid = H5Oopen(fid, path, refract_h5p_default())
        if oid < 0 { _ = HDF5Lock.takeLibraryMessages(); return nil }
        defer { _ = H5Oclose(oid) }
        switch H5Iget_type(oid) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        case H5I_DATATYPE: return .namedDatatype
        default: return .other
        }
    }

    /// The names of the links in a group, sorted by name.
    public func members(ofGroup groupPath: String) throws -> [String] {
        let full = Self.normalised(groupPath)
        return try HDF5Lock.run {
            let fid = try openID(object: full)
            guard let found = try Self.lookup(fid, full) else {
                throw HDF5Error(file: path, object: full, kind: .noSuchObject, message: "no such group")
            }
            guard found.kind == .group else {
                throw HDF5Error(file: path, object: full, kind: .wrongKind, message: "is a \(found.kind.rawValue), not a group")
            }
            let gid = H5Gopen2(fid, full, refract_h5p_default())
            guard gid >= 0 else {
                throw HDF5Error(file: path, object: full, kind: .readFailed,
                                message: "cannot open the group: \(HDF5Lock.takeLibraryMessages())")
            }
            defer { _ = H5Gclose(gid) }
            var info = H5G_info_t()
            guard H5Gget_info(gid, &info) >= 0 else {
                throw HDF5Error(file: path, object: full, kind: .readFailed,
                                message: "cannot list the group: \(HDF5Lock.takeLibraryMessages())")
            }
            var names: [String] = []
            for i in 0..<info.nlinks {
                let n = H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, refract_h5p_default())
                guard n >= 0 else { _ = HDF5Lock.takeLibraryMessages(); continue }
                var buffer = [CChar](repeating: 0, count: Int(n) + 1)
                _ = H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buffer, buffer.count, refract_h5p_default())
                names.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
            }
            return names.sorted()
        }
    }

    /// Opens the dataset at `objectPath` (absolute, or relative to the root).
    public func dataset(_ objectPath: String) throws -> HDF5Dataset {
        let full = Self.normalised(objectPath)
        return try HDF5Lock.run {
            let fid = try openID(object: full)
            guard let found = try Self.lookup(fid, full) else {
                throw HDF5Error(file: path, object: full, kind: .noSuchObject, message: missingMessage(fid, full))
            }
            guard found.kind == .dataset else {
                throw HDF5Error(file: path, object: full, kind: .wrongKind,
                                message: "is a \(found.kind.rawValue), not a dataset")
            }
            let did = H5Dopen2(fid, full, refract_h5p_default())
            guard did >= 0 else {
                throw HDF5Error(file: path, object: full, kind: .readFailed,
                                message: "cannot open the dataset: \(HDF5Lock.takeLibraryMessages())")
            }
            return try HDF5Dataset(file: self, id: did, name: full)
        }
    }

    /// "no such dataset" plus what the deepest existing group holds. Lock held.
    private func missingMessage(_ fid: hid_t, _ full: String) -> String {
        var parts = full.split(separator: "/").map(String.init)
        var missing = "/" + parts.joined(separator: "/")
        while !parts.isEmpty {
            let parentParts = parts.dropLast()
            let parent = "/" + parentParts.joined(separator: "/")
            if let found = try? Self.lookup(fid, parent), found.kind == .group {
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
        try HDF5Lock.run {
            let fid = try openID(object: reference.source)
            if reference.isNull {
                throw HDF5Error(file: path, object: reference.source, kind: .badReference, message: "null object reference")
            }
            var raw = hobj_ref_t(reference.address)
            let oid = refract_h5r_dereference_object(fid, &raw)
            guard oid >= 0 else {
                let detail = HDF5Lock.takeLibraryMessages()
                throw HDF5Error(file: path, object: reference.source, kind: .badReference,
                                message: "the object reference (address \(reference.address)) does not resolve"
                                    + (detail.isEmpty ? "" : ": \(detail)"))
            }
            let target = objectPath(fid, oid) ?? "address \(reference.address)"
            let label = "\(reference.source) -> \(target)"
            let type = H5Iget_type(oid)
            guard type == H5I_DATASET else {
                let what = type == H5I_GROUP ? "group" : type == H5I_DATATYPE ? "named datatype" : "non-dataset object"
                _ = H5Oclose(oid)
                throw HDF5Error(file: path, object: label, kind: .wrongKind, message: "references a \(what), not a dataset")
            }
            return try HDF5Dataset(file: self, id: oid, name: label)
        }
    }

    // MARK: Naming referenced objects
    //
    // An object opened through a reference has no path of its own. libhdf5's H5Iget_name finds one
    // by walking the whole group graph recursively, once per call, and trusts the stored link
    // counts to stop at cycles: a damaged file whose groups link back to an ancestor with a count
    // of 1 recursed until the stack overflowed (found by fuzzing, Fuzz/findings). So H5Iget_name
    // is not used: the file's hard links are walked once, breadth first, by Refract, each object
    // visited once by identity (so no cycle can loop) and at most `maxIndexedLinks` links.

    /// An object's identity within the file (header address, or the HDF5 1.12 token).
    struct ObjectIdentity: Hashable {
        var a: UInt64
        var b: UInt64
    }

    static func identity(of oid: hid_t) -> ObjectIdentity? {
        var raw: (UInt64, UInt64) = (0, 0)
        let status = withUnsafeMutableBytes(of: &raw) {
            refract_h5o_identity(oid, $0.baseAddress!.assumingMemoryBound(to: UInt64.self))
        }
        guard status >= 0 else { _ = HDF5Lock.takeLibraryMessages(); return nil }
        return ObjectIdentity(a: raw.0, b: raw.1)
    }

    /// The first path (breadth first from the root, links in name order) to the open object `oid`,
    /// or nil when no hard-link path reaches it. Lock held.
    private func objectPath(_ fid: hid_t, _ oid: hid_t) -> String? {
        guard let key = Self.identity(of: oid) else { return nil }
        if pathIndex == nil { pathIndex = Self.indexPaths(fid) }
        return pathIndex?[key]
    }

    /// Paths of every object reachable from the root through hard links. Lock held.
    private static func indexPaths(_ fid: hid_t) -> [ObjectIdentity: String] {
        var paths: [ObjectIdentity: String] = [:]
        let root = H5Oopen(fid, "/", refract_h5p_default())
        guard root >= 0 else { _ = HDF5Lock.takeLibraryMessages(); return paths }
        var groups: [(id: hid_t, path: String)] = []
        if let key = identity(of: root) { paths[key] = "/" }
        groups.append((root, "/"))
        var links = 0
        var next = 0
        defer { for g in groups[next...] { _ = H5Oclose(g.id) } }
        while next < groups.count {
            let group = groups[next]
            next += 1
            defer { _ = H5Oclose(group.id) }
            var info = H5G_info_t()
            guard H5Gget_info(group.id, &info) >= 0 else { _ = HDF5Lock.takeLibraryMessages(); continue }
            var index: hsize_t = 0
            while index < info.nlinks && links < maxIndexedLinks {
                defer { index += 1; links += 1 }
                guard refract_h5l_is_hard_by_idx(group.id, index) == 1 else { _ = HDF5Lock.takeLibraryMessages(); continue }
                let n = H5Lget_name_by_idx(group.id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, refract_h5p_default())
                guard n > 0 else { _ = HDF5Lock.takeLibraryMessages(); continue }
                var buffer = [CChar](repeating: 0, count: Int(n) + 1)
                _ = H5Lget_name_by_idx(group.id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, buffer.count, refract_h5p_default())
                let name = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                let child = H5Oopen_by_idx(group.id, ".", H5_INDEX_NAME, H5_ITER_INC, index, refract_h5p_default())
                guard child >= 0 else { _ = HDF5Lock.takeLibraryMessages(); continue }
                guard let key = identity(of: child), paths[key] == nil else { _ = H5Oclose(child); continue }
                let childPath = (group.path == "/" ? "" : group.path) + "/" + name
                paths[key] = childPath
                if H5Iget_type(child) == H5I_GROUP {
                    groups.append((child, childPath))
                } else {
                    _ = H5Oclose(child)
                }
            }
            if links >= maxIndexedLinks { break }
        }
        return paths
    }
}

/// An open dataset: its shape, element type, and whole-array reads.
public final class HDF5Dataset: @unchecked Sendable {
    /// The file it belongs to (kept open while the dataset is).
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
    private var id: hid_t

    /// Takes ownership of `id`. Lock held by the caller.
    init(file: HDF5File, id: hid_t, name: String) throws {
        self.file = file
        self.name = name
        self.id = id
        func fail(_ message: String) -> HDF5Error {
            _ = H5Dclose(id)
            return HDF5Error(file: file.path, object: name, kind: .readFailed, message: message)
        }
        let space = H5Dget_space(id)
        guard space >= 0 else { throw fail("cannot read the dataspace: \(HDF5Lock.takeLibraryMessages())") }
        defer { _ = H5Sclose(space) }
        let spaceClass = H5Sget_simple_extent_type(space)
        var dims: [hsize_t] = []
        if spaceClass == H5S_SIMPLE {
            let rank = H5Sget_simple_extent_ndims(space)
            guard rank >= 0 else { throw fail("cannot read the rank: \(HDF5Lock.takeLibraryMessages())") }
            dims = [hsize_t](repeating: 0, count: Int(rank))
            if rank > 0 { _ = H5Sget_simple_extent_dims(space, &dims, nil) }
        }
        shape = dims.map { Int(clamping: $0) }
        hasData = spaceClass != H5S_NULL
        let type = H5Dget_type(id)
        guard type >= 0 else { throw fail("cannot read the element type: \(HDF5Lock.takeLibraryMessages())") }
        defer { _ = H5Tclose(type) }
        elementSize = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_INTEGER:
            elementType = .integer(signed: H5Tget_sign(type) == H5T_SGN_2, bytes: elementSize)
        case H5T_FLOAT:
            elementType = .float(bytes: elementSize)
        case H5T_REFERENCE:
            elementType = H5Tequal(type, refract_h5t_std_ref_obj()) > 0 ? .objectReference : .otherReference
        case H5T_STRING: elementType = .string
        case H5T_COMPOUND: elementType = .other("compound")
        case H5T_ENUM: elementType = .other("enum")
        case H5T_ARRAY: elementType = .other("array")
        case H5T_VLEN: elementType = .other("variable-length")
        case H5T_OPAQUE: elementType = .other("opaque")
        case H5T_BITFIELD: elementType = .other("bitfield")
        case H5T_TIME: elementType = .other("time")
        default: elementType = .other("unknown type class")
        }
    }

    deinit { close() }

    /// Releases the dataset handle (further reads throw).
    public func close() {
        HDF5Lock.run {
            if id >= 0 { _ = H5Dclose(id); id = -1 }
        }
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

    /// Reads every element in row-major (HDF5) order into `[T]` with memory type `memType`. Lock held.
    private func readRaw<T>(_ type: T.Type, memType: hid_t) throws -> [T] {
        guard id >= 0 else { throw error(.closed, "the dataset is closed") }
        let n = count
        let bytes = n.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        if n == Int.max || bytes.overflow || bytes.partialValue > Int(Int32.max) * 16 {
            throw error(.tooLarge, "\(shape) elements of \(MemoryLayout<T>.stride) bytes do not fit in one array")
        }
        if n == 0 { return [] }
        var status: herr_t = 0
        let values = [T](unsafeUninitializedCapacity: n) { buffer, initialised in
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            raw.initializeMemory(as: UInt8.self, repeating: 0, count: n * MemoryLayout<T>.stride)
            status = H5Dread(id, memType, refract_h5s_all(), refract_h5s_all(), refract_h5p_default(), raw)
            initialised = n
        }
        if status < 0 {
            throw error(.readFailed, "reading the data failed: \(HDF5Lock.takeLibraryMessages())")
        }
        return values
    }

    /// Reads the whole dataset, row-major (HDF5 order), as `T`. Integer and float datasets are
    /// converted exactly: any value that `T` cannot hold exactly throws `.conversion`, naming
    /// the element.
    public func read<T: HDF5Scalar>(as type: T.Type = T.self) throws -> [T] {
        try HDF5Lock.run {
            guard let bytes = elementType.numericBytes else {
                throw error(.unsupportedType, "holds \(elementType) elements, which cannot be read as \(T.self)")
            }
            if elementType == T.hdf5Type {
                return try readRaw(T.self, memType: T.hdf5NativeType)
            }
            switch elementType {
            case .integer(let signed, _) where signed || bytes < 8:
                let wide = try readRaw(Int64.self, memType: Int64.hdf5NativeType)
                return try convert(wide) { T(hdf5Exactly: $0) }
            case .integer:
                let wide = try readRaw(UInt64.self, memType: UInt64.hdf5NativeType)
                return try convert(wide) { T(hdf5Exactly: $0) }
            case .float where bytes <= 8:
                let wide = try readRaw(Double.self, memType: Double.hdf5NativeType)
                return try convert(wide) { T(hdf5Exactly: $0) }
            default:
                throw error(.unsupportedType, "holds \(elementType) elements, which cannot be read as \(T.self)")
            }
        }
    }

    private func convert<W, T>(_ wide: [W], _ exact: (W) -> T?) throws -> [T] {
        var out: [T] = []
        out.reserveCapacity(wide.count)
        for (i, v) in wide.enumerated() {
            guard let x = exact(v) else {
                throw error(.conversion, "element \(elementName(i)) = \(v) (\(elementType)) is not exactly representable as \(T.self)")
            }
            out.append(x)
        }
        return out
    }

    /// Reads a dataset of object references, row-major. Each reference's `source` is the
    /// element's name, e.g. `/value/img[3,0]`.
    public func readObjectReferences() throws -> [HDF5ObjectReference] {
        try HDF5Lock.run {
            guard elementType == .objectReference else {
                throw error(.unsupportedType, "holds \(elementType) elements, not object references")
            }
            let raw = try readRaw(UInt64.self, memType: refract_h5t_std_ref_obj())
            return raw.enumerated().map { HDF5ObjectReference(address: $0.element, source: elementName($0.offset)) }
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
