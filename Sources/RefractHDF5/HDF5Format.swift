// MARK: - HDF5 file format, read side
//
// The on-disk structures of the HDF5 file format (The HDF Group, "HDF5 File Format
// Specification", version 3.0) that a read-only reader of MATLAB v7.3 and h5py files needs:
// superblocks 0-3, object headers 1 and 2 with continuation blocks, symbol-table groups (v1 B-tree,
// symbol nodes, local heap) and compact link messages, dataspace, datatype, fill-value, filter
// and layout messages. Parsed in Swift, so a damaged or hostile file can only produce a
// `FormatError`, never a read outside a buffer.
//
// Every read goes through `FileSource.read(at:count:)`, which refuses ranges past the end of
// the file; every structure that links to others (continuation blocks, B-tree nodes, groups) is
// walked with a visited set and a bound, so no file can make a walk loop or recurse without end.

import Foundation

/// A problem with the bytes of the file, in words; turned into an `HDF5Error` at the API.
struct FormatError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

// MARK: Bytes

/// The file, read with `pread` (thread-safe, no shared offset). Closed when the last owner
/// (the file or a dataset opened from it) lets go.
final class FileSource: @unchecked Sendable {
    let path: String
    let size: UInt64
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        // Open without blocking (a FIFO would block in open), then insist on a regular file.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw FormatError("cannot open the file: \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw FormatError("cannot read the file's type: \(reason)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw FormatError("not a regular file")
        }
        self.fd = fd
        self.size = UInt64(info.st_size)
    }

    deinit { close(fd) }

    /// `count` bytes at `offset`; throws when the range is not inside the file.
    func read(at offset: UInt64, count: Int, what: @autoclosure () -> String) throws -> [UInt8] {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw FormatError("\(what()) (\(count) bytes at byte \(offset)) lies past the end of the file (\(size) bytes)")
        }
        if count == 0 { return [] }
        var failure: Int32 = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialised in
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    break
                }
                if n == 0 { failure = EIO; break }  // shrank under us
                done += n
            }
            if done < count { buffer.baseAddress!.advanced(by: done).initialize(repeating: 0, count: count - done) }
            initialised = count
        }
        if failure != 0 {
            throw FormatError("reading \(what()) failed: \(String(cString: strerror(failure)))")
        }
        return bytes
    }
}

/// A bounds-checked little-endian reader over one structure's bytes.
struct Cursor {
    let bytes: [UInt8]
    var position: Int
    /// What is being read, for messages ("object header at 800").
    let what: String

    init(_ bytes: [UInt8], at position: Int = 0, what: String) {
        self.bytes = bytes
        self.position = position
        self.what = what
    }

    var remaining: Int { bytes.count - position }

    private func short(_ n: Int) -> FormatError {
        FormatError("\(what) is cut short: \(n) more bytes needed at byte \(position) of \(bytes.count)")
    }

    mutating func u8() throws -> UInt8 {
        guard position < bytes.count else { throw short(1) }
        defer { position += 1 }
        return bytes[position]
    }

    /// An unsigned little-endian integer of `width` bytes (1...8).
    mutating func uint(_ width: Int) throws -> UInt64 {
        guard width >= 1, width <= 8 else { throw FormatError("\(what): field width \(width) is not 1 to 8 bytes") }
        guard width <= remaining else { throw short(width) }
        var value: UInt64 = 0
        for i in 0..<width { value |= UInt64(bytes[position + i]) << (8 * UInt64(i)) }
        position += width
        return value
    }

    mutating func u16() throws -> UInt16 { UInt16(try uint(2)) }
    mutating func u32() throws -> UInt32 { UInt32(try uint(4)) }

    mutating func skip(_ n: Int) throws {
        guard n >= 0, n <= remaining else { throw short(n) }
        position += n
    }

    mutating func take(_ n: Int) throws -> [UInt8] {
        guard n >= 0, n <= remaining else { throw short(n) }
        defer { position += n }
        return Array(bytes[position..<(position + n)])
    }

    mutating func signature(_ expected: String) throws {
        let got = try take(4)
        guard got == Array(expected.utf8) else {
            throw FormatError("\(what): expected the signature \"\(expected)\", found \(got.map { String(format: "%02x", $0) }.joined())")
        }
    }
}

// MARK: Superblock

/// What the superblock says: where addresses start, their widths, and the root group.
struct FileLayout: Sendable {
    /// Absolute file offset that every stored address is relative to (the superblock's position).
    var base: UInt64
    var offsetSize: Int
    var lengthSize: Int
    /// The root group's object header (relative address).
    var root: UInt64

    /// The "undefined address" value (all bits set in `offsetSize` bytes).
    var undefined: UInt64 { offsetSize == 8 ? .max : (UInt64(1) << (8 * UInt64(offsetSize))) - 1 }

    func absolute(_ address: UInt64) throws -> UInt64 {
        let (sum, overflow) = base.addingReportingOverflow(address)
        guard !overflow else { throw FormatError("address \(address) is out of range") }
        return sum
    }
}

enum Superblock {
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Where the signature is: offset 0, 512, 1024, 2048, ... (after a user block).
    static func locate(_ source: FileSource) -> UInt64? {
        var offset: UInt64 = 0
        while offset + 8 <= source.size {
            if let bytes = try? source.read(at: offset, count: 8, what: "signature"), bytes == signature { return offset }
            offset = offset == 0 ? 512 : offset * 2
        }
        return nil
    }

    static func read(_ source: FileSource, at offset: UInt64) throws -> FileLayout {
        let available = Int(min(source.size - offset, 256))
        var c = Cursor(try source.read(at: offset, count: available, what: "the superblock"), what: "the superblock")
        try c.skip(8)
        let version = try c.u8()
        let offsetSize: Int, lengthSize: Int, root: UInt64, eof: UInt64
        switch version {
        case 0, 1:
            try c.skip(4)  // free-space, root symbol table, (reserved) and shared header versions
            offsetSize = Int(try c.u8())
            lengthSize = Int(try c.u8())
            try checkWidths(offsetSize, lengthSize)
            try c.skip(1 + 2 + 2 + 4)  // reserved, group leaf K, group internal K, consistency flags
            if version == 1 { try c.skip(4) }  // indexed storage K, reserved
            _ = try c.uint(offsetSize)  // base address (the superblock's own position, by the format's rule)
            _ = try c.uint(offsetSize)  // free-space info
            eof = try c.uint(offsetSize)
            _ = try c.uint(offsetSize)  // driver info block
            _ = try c.uint(offsetSize)  // root entry: link name offset
            root = try c.uint(offsetSize)
        case 2, 3:
            offsetSize = Int(try c.u8())
            lengthSize = Int(try c.u8())
            try checkWidths(offsetSize, lengthSize)
            try c.skip(1)  // consistency flags
            _ = try c.uint(offsetSize)  // base address
            _ = try c.uint(offsetSize)  // superblock extension
            eof = try c.uint(offsetSize)
            root = try c.uint(offsetSize)
        default:
            throw FormatError("superblock version \(version) is not a known HDF5 version (0 to 3)")
        }
        let layout = FileLayout(base: offset, offsetSize: offsetSize, lengthSize: lengthSize, root: root)
        // The stored end-of-file address is absolute (libhdf5 writes it so, user block included).
        if eof != layout.undefined, eof > source.size {
            throw FormatError("truncated file: the superblock says the HDF5 data ends at byte \(eof), but the file has \(source.size) bytes")
        }
        return layout
    }

    private static func checkWidths(_ offsets: Int, _ lengths: Int) throws {
        guard [2, 4, 8].contains(offsets), [2, 4, 8].contains(lengths) else {
            throw FormatError("the superblock gives addresses of \(offsets) bytes and lengths of \(lengths) bytes (2, 4 or 8 expected)")
        }
    }
}

// MARK: Object headers

/// One header message: its type, flags and body.
struct HeaderMessage {
    var type: UInt16
    var flags: UInt8
    var body: [UInt8]
    /// Flag bit 1: the body is a reference to a message stored elsewhere (a committed datatype).
    var isShared: Bool { flags & 0x02 != 0 }
}

/// Message type numbers used here.
enum MessageType {
    static let dataspace: UInt16 = 0x01
    static let linkInfo: UInt16 = 0x02
    static let datatype: UInt16 = 0x03
    static let fillValueOld: UInt16 = 0x04
    static let fillValue: UInt16 = 0x05
    static let link: UInt16 = 0x06
    static let layout: UInt16 = 0x08
    static let groupInfo: UInt16 = 0x0A
    static let filterPipeline: UInt16 = 0x0B
    static let continuation: UInt16 = 0x10
    static let symbolTable: UInt16 = 0x11
}

struct ObjectHeader {
    let address: UInt64
    let messages: [HeaderMessage]

    /// Header chunks a single object may have (continuation blocks included).
    static let maxChunks = 4096
    /// Bytes of messages a single object header may hold. Real headers are a few hundred bytes
    /// (a compact dataset at most 64 KiB); a larger claim is a damaged file.
    static let maxBytes = 16 << 20

    func first(_ type: UInt16) -> HeaderMessage? { messages.first { $0.type == type } }
    func all(_ type: UInt16) -> [HeaderMessage] { messages.filter { $0.type == type } }

    static func read(_ source: FileSource, _ layout: FileLayout, at address: UInt64) throws -> ObjectHeader {
        let what = "the object header at address \(address)"
        guard address != layout.undefined else { throw FormatError("\(what) is the undefined address") }
        let start = try layout.absolute(address)
        let head = try source.read(at: start, count: Int(min(16, source.size - min(start, source.size))), what: what)
        var messages: [HeaderMessage] = []
        var budget = maxBytes
        if head.count >= 4, head[0..<4] == Array("OHDR".utf8)[...] {
            var c = Cursor(try source.read(at: start, count: Int(min(source.size - start, 64)), what: what), what: what)
            try c.skip(4)
            let version = try c.u8()
            guard version == 2 else { throw FormatError("\(what) has version \(version) (2 expected after OHDR)") }
            let flags = try c.u8()
            if flags & 0x20 != 0 { try c.skip(16) }
            if flags & 0x10 != 0 { try c.skip(4) }
            let size = try c.uint(1 << Int(flags & 0x03))
            guard size <= UInt64(budget) else { throw FormatError("\(what) claims \(size) bytes of messages") }
            let bodyStart = start + UInt64(c.position)
            var pending: [(UInt64, UInt64)] = []
            let block = try source.read(at: bodyStart, count: Int(size), what: what)
            budget -= block.count
            try parseV2(block, flags: flags, what: what, into: &messages, continuations: &pending, layout: layout)
            var seen: Set<UInt64> = [address]
            var chunks = 1
            while !pending.isEmpty {
                let (at, length) = pending.removeFirst()
                chunks += 1
                guard chunks <= maxChunks, seen.insert(at).inserted else {
                    throw FormatError("\(what) has a continuation block that repeats or too many (\(chunks)) blocks")
                }
                guard length >= 8, length <= UInt64(budget) else {
                    throw FormatError("\(what) has a continuation block of \(length) bytes")
                }
                budget -= Int(length)
                let bytes = try source.read(at: try layout.absolute(at), count: Int(length), what: "a continuation block of \(what)")
                var cc = Cursor(bytes, what: "a continuation block of \(what)")
                try cc.signature("OCHK")
                try parseV2(Array(bytes[4..<(bytes.count - 4)]), flags: flags, what: what, into: &messages,
                            continuations: &pending, layout: layout)
            }
        } else {
            var c = Cursor(head, what: what)
            let version = try c.u8()
            guard version == 1 else {
                throw FormatError("\(what) is not an object header (version byte \(version), neither 1 nor the OHDR signature)")
            }
            try c.skip(1)
            let count = Int(try c.u16())
            try c.skip(4)  // reference count
            let size = try c.u32()
            guard size <= UInt32(budget) else { throw FormatError("\(what) claims \(size) bytes of messages") }
            budget -= Int(size)
            var pending: [(UInt64, UInt64)] = [(address, 0)]
            var first = true
            var seen: Set<UInt64> = []
            var chunks = 0
            while !pending.isEmpty && messages.count < count {
                let (at, length) = pending.removeFirst()
                chunks += 1
                guard chunks <= maxChunks, seen.insert(at).inserted || first else {
                    throw FormatError("\(what) has a continuation block that repeats or too many (\(chunks)) blocks")
                }
                let bytes: [UInt8]
                if first {
                    bytes = try source.read(at: start + 16, count: Int(size), what: what)
                    first = false
                } else {
                    guard length <= UInt64(budget) else { throw FormatError("\(what) has a continuation block of \(length) bytes") }
                    budget -= Int(length)
                    bytes = try source.read(at: try layout.absolute(at), count: Int(length), what: "a continuation block of \(what)")
                }
                try parseV1(bytes, what: what, limit: count, into: &messages, continuations: &pending, layout: layout)
            }
        }
        return ObjectHeader(address: address, messages: messages)
    }

    private static func continuation(_ body: [UInt8], _ layout: FileLayout, _ what: String) throws -> (UInt64, UInt64) {
        var c = Cursor(body, what: "a continuation message of \(what)")
        let at = try c.uint(layout.offsetSize)
        let length = try c.uint(layout.lengthSize)
        return (at, length)
    }

    private static func parseV1(_ bytes: [UInt8], what: String, limit: Int, into messages: inout [HeaderMessage],
                                continuations: inout [(UInt64, UInt64)], layout: FileLayout) throws {
        var c = Cursor(bytes, what: what)
        while c.remaining >= 8 && messages.count < limit {
            let type = try c.u16()
            let size = Int(try c.u16())
            let flags = try c.u8()
            try c.skip(3)
            let body = try c.take(size)
            if type == MessageType.continuation {
                continuations.append(try continuation(body, layout, what))
            }
            messages.append(HeaderMessage(type: type, flags: flags, body: body))
        }
    }

    private static func parseV2(_ bytes: [UInt8], flags headerFlags: UInt8, what: String, into messages: inout [HeaderMessage],
                                continuations: inout [(UInt64, UInt64)], layout: FileLayout) throws {
        var c = Cursor(bytes, what: what)
        let prefix = headerFlags & 0x04 != 0 ? 6 : 4
        while c.remaining >= prefix {
            let type = UInt16(try c.u8())
            let size = Int(try c.u16())
            let flags = try c.u8()
            if headerFlags & 0x04 != 0 { try c.skip(2) }
            let body = try c.take(size)
            if type == MessageType.continuation {
                continuations.append(try continuation(body, layout, what))
            }
            messages.append(HeaderMessage(type: type, flags: flags, body: body))
        }
    }
}

// MARK: Groups

/// Where a link leads.
enum LinkTarget: Equatable {
    case hard(UInt64)
    case soft(String)
    case external
}

enum Groups {
    /// Links a single group may list (bounds the work of a damaged B-tree).
    static let maxLinks = 1 << 22

    /// The links of the group whose header is `header`, in name order. Nil when the header is
    /// not a group's.
    static func links(_ header: ObjectHeader, _ source: FileSource, _ layout: FileLayout) throws -> [(String, LinkTarget)]? {
        var links: [(String, LinkTarget)] = []
        var isGroup = false
        if let table = header.first(MessageType.symbolTable) {
            isGroup = true
            var c = Cursor(table.body, what: "the symbol table message of the group at \(header.address)")
            let tree = try c.uint(layout.offsetSize)
            let heap = try c.uint(layout.offsetSize)
            links += try symbolTable(tree: tree, heap: heap, source, layout, group: header.address)
        }
        if let info = header.first(MessageType.linkInfo) {
            isGroup = true
            var c = Cursor(info.body, what: "the link info message of the group at \(header.address)")
            try c.skip(1)
            let flags = try c.u8()
            if flags & 0x01 != 0 { try c.skip(8) }
            let heap = try c.uint(layout.offsetSize)
            if heap != layout.undefined {
                throw FormatError("the group at address \(header.address) stores its links densely (a fractal heap, HDF5 1.8 \"new-style\" groups with many links), which this reader does not support; re-save the file with h5py's default libver or MATLAB's -v7.3")
            }
        }
        let linkMessages = header.all(MessageType.link)
        if !linkMessages.isEmpty || header.first(MessageType.groupInfo) != nil { isGroup = true }
        for message in linkMessages {
            links.append(try link(message.body, layout, group: header.address))
        }
        guard isGroup else { return nil }
        return links.sorted { $0.0 < $1.0 }
    }

    /// A link message (compact groups).
    static func link(_ body: [UInt8], _ layout: FileLayout, group: UInt64) throws -> (String, LinkTarget) {
        var c = Cursor(body, what: "a link message of the group at \(group)")
        let version = try c.u8()
        guard version == 1 else { throw FormatError("a link message of the group at \(group) has version \(version) (1 expected)") }
        let flags = try c.u8()
        let type = flags & 0x08 != 0 ? try c.u8() : 0
        if flags & 0x04 != 0 { try c.skip(8) }
        if flags & 0x10 != 0 { try c.skip(1) }
        let nameLength = try c.uint(1 << Int(flags & 0x03))
        guard nameLength > 0, nameLength <= UInt64(c.remaining) else {
            throw FormatError("a link message of the group at \(group) has a name of \(nameLength) bytes")
        }
        let name = String(decoding: try c.take(Int(nameLength)), as: UTF8.self)
        switch type {
        case 0:
            return (name, .hard(try c.uint(layout.offsetSize)))
        case 1:
            let length = Int(try c.u16())
            return (name, .soft(String(decoding: try c.take(length), as: UTF8.self)))
        default:
            return (name, .external)
        }
    }

    /// An old-style group: a v1 B-tree of symbol nodes whose names live in a local heap.
    static func symbolTable(tree: UInt64, heap: UInt64, _ source: FileSource, _ layout: FileLayout,
                            group: UInt64) throws -> [(String, LinkTarget)] {
        let names = try LocalHeap.read(source, layout, at: heap, group: group)
        var links: [(String, LinkTarget)] = []
        try BTreeV1.walk(source, layout, root: tree, type: 0, keySize: layout.lengthSize, what: "the group at \(group)") { child, _ in
            let what = "a symbol node of the group at \(group)"
            let start = try layout.absolute(child)
            var c = Cursor(try source.read(at: start, count: 8, what: what), what: what)
            try c.signature("SNOD")
            try c.skip(2)
            let count = Int(try c.u16())
            let entrySize = 2 * layout.offsetSize + 24
            var e = Cursor(try source.read(at: start + 8, count: count * entrySize, what: what), what: what)
            for _ in 0..<count {
                let nameOffset = try e.uint(layout.offsetSize)
                let header = try e.uint(layout.offsetSize)
                let cacheType = try e.u32()
                try e.skip(4)
                let scratch = try e.take(16)
                let name = try names.string(at: nameOffset)
                if cacheType == 2 {
                    var s = Cursor(scratch, what: what)
                    let valueOffset = UInt64(try s.u32())
                    links.append((name, .soft(try names.string(at: valueOffset))))
                } else {
                    links.append((name, .hard(header)))
                }
                guard links.count <= maxLinks else { throw FormatError("the group at \(group) lists more than \(maxLinks) links") }
            }
        }
        return links
    }
}

/// A local heap: the NUL-terminated link names of an old-style group.
struct LocalHeap {
    let data: [UInt8]
    let what: String

    static func read(_ source: FileSource, _ layout: FileLayout, at address: UInt64, group: UInt64) throws -> LocalHeap {
        let what = "the local heap of the group at \(group)"
        var c = Cursor(try source.read(at: try layout.absolute(address), count: 8 + 2 * layout.lengthSize + layout.offsetSize,
                                       what: what), what: what)
        try c.signature("HEAP")
        try c.skip(4)
        let size = try c.uint(layout.lengthSize)
        _ = try c.uint(layout.lengthSize)
        let data = try c.uint(layout.offsetSize)
        guard size <= UInt64(ObjectHeader.maxBytes) * 4 else { throw FormatError("\(what) claims \(size) bytes") }
        return LocalHeap(data: try source.read(at: try layout.absolute(data), count: Int(size), what: what), what: what)
    }

    func string(at offset: UInt64) throws -> String {
        guard offset < UInt64(data.count) else { throw FormatError("\(what): a name at offset \(offset) lies outside the heap (\(data.count) bytes)") }
        let start = Int(offset)
        guard let end = data[start...].firstIndex(of: 0) else { throw FormatError("\(what): the name at offset \(offset) has no terminating NUL") }
        return String(decoding: data[start..<end], as: UTF8.self)
    }
}

// MARK: v1 B-trees

enum BTreeV1 {
    /// Nodes one tree may have (bounds the walk of a damaged tree).
    static let maxNodes = 1 << 20

    /// Visits every leaf entry of a version-1 B-tree, left to right: `visit(child, keyBefore)`,
    /// where `keyBefore` is the raw key to the child's left. Type 0: group nodes; 1: chunks.
    static func walk(_ source: FileSource, _ layout: FileLayout, root: UInt64, type: UInt8, keySize: Int, what: String,
                     visit: (UInt64, [UInt8]) throws -> Void) throws {
        var seen: Set<UInt64> = []
        func node(_ address: UInt64, expectedLevel: Int?) throws {
            let label = "a B-tree node of \(what) (address \(address))"
            guard seen.insert(address).inserted else { throw FormatError("\(label) is reached twice (a cycle)") }
            guard seen.count <= maxNodes else { throw FormatError("the B-tree of \(what) has more than \(maxNodes) nodes") }
            let start = try layout.absolute(address)
            let headSize = 8 + 2 * layout.offsetSize
            var c = Cursor(try source.read(at: start, count: headSize, what: label), what: label)
            try c.signature("TREE")
            let nodeType = try c.u8()
            guard nodeType == type else { throw FormatError("\(label) has node type \(nodeType) (\(type) expected)") }
            let level = Int(try c.u8())
            if let expectedLevel, level != expectedLevel {
                throw FormatError("\(label) is at level \(level) where level \(expectedLevel) was expected")
            }
            let entries = Int(try c.u16())
            let body = entries * (keySize + layout.offsetSize) + keySize
            var e = Cursor(try source.read(at: start + UInt64(headSize), count: body, what: label), what: label)
            for _ in 0..<entries {
                let key = try e.take(keySize)
                let child = try e.uint(layout.offsetSize)
                if level == 0 {
                    try visit(child, key)
                } else {
                    try node(child, expectedLevel: level - 1)
                }
            }
        }
        try node(root, expectedLevel: nil)
    }
}
