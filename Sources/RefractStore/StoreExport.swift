import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Export
//
// A run exported as plain NumPy files. Each tensor's `.npy` header is written for the full shape
// `[N, ...]` first; the shards are then streamed in, one at a time, so memory stays flat in N.
// Everything is written into a hidden temporary directory beside the target, which is renamed
// into place at the end: a killed export never looks complete.

/// Exports runs to other formats.
/// A tensor an export computes from a run's stored tensors, shard by shard (e.g. a CLIP run's
/// components stacked into one [C, D'] tensor per row).
public struct DerivedTensor: Sendable {
    public var name: String
    /// Shape per row.
    public var shape: [Int]
    /// Stored tensors it is computed from.
    public var inputs: [String]
    /// The derived rows [rows] + shape from the inputs' rows of one shard.
    public var compute: @Sendable ([String: Tensor]) throws -> Tensor
    public init(name: String, shape: [Int], inputs: [String], compute: @escaping @Sendable ([String: Tensor]) throws -> Tensor) {
        self.name = name
        self.shape = shape
        self.inputs = inputs
        self.compute = compute
    }
}

public enum StoreExport {
    /// Writes `dir/<name>.npy` (float32 `[N, ...]`) for each tensor in `names` (all when nil),
    /// `dir/<constant>.npy` for each constant, `image_index.npy` (int64 `[N]`), `images.txt`
    /// (one path per row), `labels.txt` (one label per row, empty when unlabelled) when any row has
    /// a label, `classes.txt` when the run has class names, and a copy of `manifest.json`.
    /// `derived` tensors are written as `<name>.npy` too, and `files` as they are (name → contents).
    /// `dir` must not exist or be an empty directory.
    public static func npy(_ reader: StoreReader, to dir: URL, names: [String]? = nil, derived: [DerivedTensor] = [],
                           files: [String: Data] = [:]) throws {
        let dir = dir.standardizedFileURL
        let target = dir.path
        var selected: [StoreTensorSpec] = []
        for name in names ?? reader.manifest.tensors.map(\.name) where !selected.contains(where: { $0.name == name }) {
            selected.append(try reader.spec(name))
        }
        switch pathKind(dir) {
        case .other: throw StoreError(.exists, path: target, "exists and is not a directory; choose another export path")
        case .directory:
            if !(try directoryEntries(dir)).isEmpty {
                throw StoreError(.exists, path: target, "exists and is not empty; choose another export path or remove it")
            }
        case .missing: break
        }
        let parent = dir.deletingLastPathComponent()
        do {
            try FileOutput.createDirectory(parent, action: "creating the export's parent folder")
        } catch let e as FileWriteError {
            throw StoreError(.io, path: target, "cannot write: \(e.action): \(e.reason)")
        }
        let temp = parent.appendingPathComponent(".\(dir.lastPathComponent).export\(temporaryMarker)\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        if mkdir(temp.path, 0o755) != 0 {
            throw StoreError(.io, path: target, "cannot write: creating the temporary export folder \(temp.lastPathComponent) "
                + "in \(parent.path): \(FileOutput.reason(errno, path: temp.path))")
        }
        var committed = false
        defer { if !committed { try? FileManager.default.removeItem(at: temp) } }

        do {
            try writeContents(reader, selected: selected, derived: derived, into: temp)
            for (name, data) in files.sorted(by: { $0.key < $1.key }) {
                try writeAtomically(data, to: temp.appendingPathComponent(name))
            }
        } catch var e as StoreError where e.path.hasPrefix(temp.path + "/") {
            // Name the file as it would have been, not its temporary folder.
            e.path = target + e.path.dropFirst(temp.path.count)
            throw e
        }
        syncDirectory(temp.path)
        if rename(temp.path, target) != 0 {
            let code = errno
            if code == ENOTEMPTY || code == EEXIST || code == ENOTDIR {
                throw StoreError(.exists, path: target, "something was written there while exporting (another export "
                    + "finished first?); the export was not moved into place")
            }
            throw StoreError(.io, path: target, "cannot write: moving the finished export into place: "
                + FileOutput.reason(code, path: target))
        }
        committed = true
        syncDirectory(parent.path)
    }

    private static func writeContents(_ reader: StoreReader, selected: [StoreTensorSpec], derived: [DerivedTensor],
                                      into temp: URL) throws {
        let n = reader.rowCount
        let manifest = reader.manifest
        var writers: [String: NPYStreamWriter] = [:]
        for spec in selected {
            writers[spec.name] = try NPYStreamWriter(url: temp.appendingPathComponent("\(spec.name).npy"),
                                                     descr: "<f4", shape: [n] + spec.shape, elementSize: 4)
        }
        for extra in derived {
            writers[extra.name] = try NPYStreamWriter(url: temp.appendingPathComponent("\(extra.name).npy"),
                                                      descr: "<f4", shape: [n] + extra.shape, elementSize: 4)
        }
        let indexWriter = try NPYStreamWriter(url: temp.appendingPathComponent("image_index.npy"),
                                              descr: "<i8", shape: [n], elementSize: 8)
        var read = selected.map(\.name)
        for name in derived.flatMap(\.inputs) where !read.contains(name) { read.append(name) }
        try reader.forEachShard(read) { rows, tensors in
            for spec in selected {
                guard let t = tensors[spec.name], let w = writers[spec.name] else { continue }
                try t.data.withUnsafeBytes { try w.append($0) }
            }
            for extra in derived {
                let t = try extra.compute(tensors)
                precondition(t.shape == [rows.count] + extra.shape, "derived tensor \(extra.name): \(t.shape)")
                try t.data.withUnsafeBytes { try writers[extra.name]!.append($0) }
            }
            let indices = reader.rowImageIndices[rows].map { Int64($0) }
            try indices.withUnsafeBytes { try indexWriter.append($0) }
        }
        for spec in selected { try writers[spec.name]?.finish() }
        for extra in derived { try writers[extra.name]?.finish() }
        try indexWriter.finish()

        for spec in manifest.constants {
            let t = try reader.constant(spec.name)
            let w = try NPYStreamWriter(url: temp.appendingPathComponent("\(spec.name).npy"),
                                        descr: "<f4", shape: t.shape, elementSize: 4)
            try t.data.withUnsafeBytes { try w.append($0) }
            try w.finish()
        }

        let images = reader.rowImageIndices.map { manifest.images[$0] }
        // images.txt is one path per line: a path holding a line break (possible only in runs made
        // before image lists refused such names) would shift every later row, so it is refused.
        if let bad = images.first(where: { $0.path.contains(where: \.isNewline) }) {
            throw StoreError(.io, path: reader.run.path,
                             "image path \(bad.path.debugDescription) holds a line break, which would shift every later line "
                                + "of images.txt; rename the file and decompose again")
        }
        try writeLines(images.lazy.map(\.path), to: temp.appendingPathComponent("images.txt"))
        if images.contains(where: { $0.label != nil }) {
            try writeLines(images.lazy.map { $0.label ?? "" }, to: temp.appendingPathComponent("labels.txt"))
        }
        if let classes = manifest.classNames {
            try writeLines(classes, to: temp.appendingPathComponent("classes.txt"))
        }
        let manifestData: Data
        do { manifestData = try manifest.encoded() } catch {
            throw StoreError(.io, path: ManifestFile.url(reader.run).path, "cannot encode the manifest: \(error)")
        }
        try writeAtomically(manifestData, to: temp.appendingPathComponent(ManifestFile.name))
    }

    /// Writes one line per element (each ending in "\n"), in buffered chunks.
    private static func writeLines<S: Sequence>(_ lines: S, to url: URL) throws where S.Element == String {
        let file = try AtomicFile(target: url)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        for line in lines {
            buffer.append(contentsOf: line.utf8)
            buffer.append(0x0A)
            if buffer.count >= 1 << 20 {
                try file.write(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try file.write(buffer)
        try file.commit()
    }
}

/// A .npy file written header first, then data appended in pieces; `finish()` checks that exactly
/// the bytes of the declared shape arrived. Version 1.0 header, laid out like `NPY.encode`.
final class NPYStreamWriter {
    private let file: AtomicFile
    private let expectedDataBytes: Int
    private let headerBytes: Int

    init(url: URL, descr: String, shape: [Int], elementSize: Int) throws {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = header.utf8.count
        guard length <= Int(UInt16.max) else {
            throw StoreError(.invalidArgument, path: url.path, "shape \(shape) is too long for a .npy header")
        }
        file = try AtomicFile(target: url)
        var prefix: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)]
        prefix.append(contentsOf: header.utf8)
        try file.write(prefix)
        headerBytes = prefix.count
        expectedDataBytes = shape.reduce(1, *) * elementSize
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard file.bytesWritten - headerBytes + bytes.count <= expectedDataBytes else {
            throw StoreError(.io, path: file.target, "more data than the declared shape holds")
        }
        try file.write(bytes)
    }

    func finish() throws {
        let data = file.bytesWritten - headerBytes
        guard data == expectedDataBytes else {
            throw StoreError(.io, path: file.target, "wrote \(data) data bytes, the declared shape needs \(expectedDataBytes)")
        }
        try file.commit()
    }
}
