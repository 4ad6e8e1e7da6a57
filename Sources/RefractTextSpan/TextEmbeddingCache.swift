// MARK: - The text-embedding cache, verified on every use
//
// One entry per (model weights, text list): `<cache>/text-embeddings/<w16>-<p16>.npy` (float32
// [M, D'], L2-normalised rows) and its side-car `<w16>-<p16>.json`:
//
//     {"embeddingsSHA256": "…", "format": "refract-text-embeddings", "formatVersion": 2,
//      "model": "…", "pool": "…", "poolSHA256": "…", "rows": M, "weightsSHA256": "…", "width": D'}
//
// Nothing in the cache is trusted: an entry is used only when the side-car decodes, names the same
// weights, text list, row count and width, the .npy's SHA-256 equals the recorded one, the array
// parses with shape [M, D'], and every value is finite. Anything else (a damaged or truncated file,
// a missing or foreign side-car, an entry from an older refract without a checksum) is reported on
// stderr and the entry is recomputed and rewritten. Both files are written atomically, the array
// first, so a killed write leaves an entry that fails the check, never one that passes it.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor

/// One entry of the text-embedding cache.
struct TextEmbeddingCache {
    static let format = "refract-text-embeddings"
    static let formatVersion = 2

    /// The side-car's contents.
    struct Record: Codable, Equatable {
        var format: String
        var formatVersion: Int
        var model: String
        var weightsSHA256: String
        var pool: String
        var poolSHA256: String
        var rows: Int
        var width: Int
        var embeddingsSHA256: String
    }

    let npy: URL
    let sidecar: URL
    let modelID: String
    let weightsSHA256: String
    let poolPath: String
    let poolSHA256: String
    let rows: Int
    let width: Int

    init(directory: URL, poolPath: String, poolSHA256: String, rows: Int, modelID: String, weightsSHA256: String, width: Int) {
        let name = "\(weightsSHA256.prefix(16))-\(poolSHA256.prefix(16))"
        let dir = directory.appendingPathComponent("text-embeddings")
        npy = dir.appendingPathComponent("\(name).npy")
        sidecar = dir.appendingPathComponent("\(name).json")
        self.modelID = modelID
        self.weightsSHA256 = weightsSHA256
        self.poolPath = poolPath
        self.poolSHA256 = poolSHA256
        self.rows = rows
        self.width = width
    }

    init(directory: URL, pool: DescriptionPool, model: CLIP, weightsSHA256: String) {
        self.init(directory: directory, poolPath: pool.path, poolSHA256: pool.sha256, rows: pool.count, modelID: model.id,
                  weightsSHA256: weightsSHA256, width: model.architecture.embedDim)
    }

    /// Messages about the cache go to stderr.
    static func note(_ text: String) {
        FileHandle.standardError.write(Data("note: \(text)\n".utf8))
    }

    /// The cached embeddings [rows, width] when the entry exists and passes every check; nil when
    /// there is none (silently) or it is damaged (with a note saying why and that it is recomputed).
    func load(note: (String) -> Void = TextEmbeddingCache.note) -> Tensor? {
        guard FileManager.default.fileExists(atPath: npy.path) || FileManager.default.fileExists(atPath: sidecar.path) else {
            return nil
        }
        switch check() {
        case .success(let t):
            return t
        case .failure(let problem):
            note("the cached text embeddings \(npy.path) cannot be used (\(problem.reason)); recomputing them")
            return nil
        }
    }

    struct Problem: Error { var reason: String }

    /// Every check of the entry, in order; the first failure is the reason.
    func check() -> Result<Tensor, Problem> {
        func fail(_ reason: String) -> Result<Tensor, Problem> { .failure(Problem(reason: reason)) }
        // Only regular files are opened (a FIFO planted in the cache would block the read forever).
        for url in [sidecar, npy] {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { continue }
            let type = (try? FileManager.default.attributesOfItem(atPath: url.path)[.type]) as? FileAttributeType
            if isDir.boolValue || type != .typeRegular { return fail("\(url.lastPathComponent) is not a regular file") }
        }
        guard let sidecarData = try? Data(contentsOf: sidecar) else { return fail("its side-car \(sidecar.lastPathComponent) is missing or unreadable") }
        guard let record = try? JSONDecoder().decode(Record.self, from: sidecarData), record.format == Self.format else {
            return fail("its side-car \(sidecar.lastPathComponent) is not a valid cache record (damaged, or written by an older refract without a checksum)")
        }
        guard record.formatVersion == Self.formatVersion else { return fail("its side-car has format version \(record.formatVersion)") }
        guard record.weightsSHA256 == weightsSHA256, record.poolSHA256 == poolSHA256 else {
            return fail("its side-car is for other weights or another text list")
        }
        guard record.rows == rows, record.width == width else {
            return fail("its side-car records [\(record.rows), \(record.width)], expected [\(rows), \(width)]")
        }
        let data: Data
        do { data = try Data(contentsOf: npy) } catch { return fail("the array cannot be read: \(FileOutput.reason(of: error, path: npy.path))") }
        let sha = SHA256.hexDigest([UInt8](data))
        guard sha == record.embeddingsSHA256 else {
            return fail("its SHA-256 is \(sha), the side-car records \(record.embeddingsSHA256): the file is damaged")
        }
        let tensor: Tensor
        do { tensor = try NPY.parse(data, file: npy.path).tensor } catch { return fail("\(error)") }
        guard tensor.shape == [rows, width] else { return fail("shape \(tensor.shape), expected [\(rows), \(width)]") }
        if let bad = tensor.data.firstIndex(where: { !$0.isFinite }) {
            return fail("non-finite value at row \(bad / max(width, 1))")
        }
        return .success(tensor)
    }

    /// Writes the entry (array, then side-car). A cache that cannot be written is not an error:
    /// the reason is noted on stderr and the caller goes on with the embeddings.
    func store(_ embeddings: Tensor, note: (String) -> Void = TextEmbeddingCache.note) {
        do {
            try FileOutput.createDirectory(npy.deletingLastPathComponent(), action: "creating the cache folder")
            let bytes = NPY.encode(.float32(shape: embeddings.shape, values: embeddings.data))
            try FileOutput.writeAtomically(bytes, to: npy, what: "the text embeddings")
            let record = Record(format: Self.format, formatVersion: Self.formatVersion, model: modelID,
                                weightsSHA256: weightsSHA256, pool: poolPath, poolSHA256: poolSHA256, rows: rows, width: width,
                                embeddingsSHA256: SHA256.hexDigest([UInt8](bytes)))
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileOutput.writeAtomically(try e.encode(record), to: sidecar, what: "the cache record")
        } catch {
            note("cannot cache the text embeddings (\(error)); they are used without caching")
        }
    }
}
