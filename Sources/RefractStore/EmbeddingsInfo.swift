// MARK: - What an embeddings file holds
//
// `refract embed-images --output E.npy` writes, beside the array and its E.paths.txt, E.model.json:
// the model that made the rows (id, layout, weights SHA-256), their shape and whether they were
// L2-normalised. Commands that take the array as targets (`refract align --clip-embeddings`) read it
// to name the model in their own artefacts and to refuse another model's embeddings.

import Foundation
import RefractCheckpoint
import RefractTensor

public struct EmbeddingsInfo: Codable, Equatable, Sendable {
    public static let formatName = "refract-embeddings"
    /// Version 2 added `part` and `mergedFrom` (embeddings split across machines).
    public static let currentFormatVersion = 2

    public var format: String = formatName
    public var formatVersion: Int = currentFormatVersion
    public var model: StoreModelInfo
    public var rows: Int
    public var width: Int
    public var normalized: Bool
    /// Set when the file holds part K of N of the list (`embed-images --part K/N`).
    public var part: EmbeddingsPart?
    /// Set when the file was merged from parts (`refract merge`), in list order.
    public var mergedFrom: [EmbeddingsPart]?

    public init(model: StoreModelInfo, rows: Int, width: Int, normalized: Bool) {
        self.model = model; self.rows = rows; self.width = width; self.normalized = normalized
    }

    /// `E.npy` → `E.model.json`.
    public static func url(for array: URL) -> URL { array.deletingPathExtension().appendingPathExtension("model.json") }

    /// Reads and checks E.model.json; nil when there is none.
    public static func read(for array: URL) throws -> EmbeddingsInfo? {
        let url = url(for: array)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            let info = try JSONDecoder().decode(EmbeddingsInfo.self, from: try InputFile.read(url.path))
            guard info.format == formatName, info.formatVersion >= 1, info.formatVersion <= currentFormatVersion else {
                throw StoreError(.invalidManifest, path: url.path, "not a \(formatName) file of a version this build reads")
            }
            return info
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError(.invalidManifest, path: url.path, "not a readable embeddings description: \(error)")
        }
    }

    /// Refuses a part where the whole list's embeddings are needed.
    public func requireWhole(_ array: URL) throws {
        if let p = part {
            throw StoreError(.isPart, path: array.path, "holds part \(p.index)/\(p.count) of the embeddings (images \(p.firstImage)..<"
                + "\(p.firstImage + p.imageCount) of \(p.listCount)), not all; join the parts with `refract merge --output E.npy PART.npy...`")
        }
    }

    public func write(for array: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileOutput.writeAtomically(try e.encode(self), to: Self.url(for: array), what: "the embeddings description")
    }
}

/// Part K of N of an image list's embeddings: the K-th of N contiguous slices of the list, cut at
/// batch boundaries (batches `⌊K·B/N⌋ ..< ⌊(K+1)·B/N⌋` of the list's B batches), so that every image
/// is embedded in the same batch as by one process over the whole list and the merged array is
/// bit for bit that process's array.
public struct EmbeddingsPart: Codable, Equatable, Sendable {
    public var index: Int
    public var count: Int
    public var firstImage: Int
    public var imageCount: Int
    /// Images per forward pass: the slices' unit.
    public var batchSize: Int
    /// Images in the whole list, and the SHA-256 of the list (absolute paths, one per line).
    public var listCount: Int
    public var listSHA256: String

    /// Part `index` of `count` of `paths` embedded `batchSize` at a time; fails on an index
    /// outside 0..<count.
    public init(index: Int, count: Int, paths: [String], batchSize: Int) throws {
        guard count >= 1, count <= 1_000_000, (0..<count).contains(index), batchSize >= 1 else {
            throw StoreError(.invalidArgument, path: "--part", "\(index)/\(count): K must be 0...\(max(count - 1, 0)) and N 1...1000000 "
                + "(parts are numbered from 0, as Slurm array and Kubernetes Indexed Job indices)")
        }
        let n = paths.count, batches = (n + batchSize - 1) / batchSize
        self.index = index
        self.count = count
        firstImage = min(n, index * batches / count * batchSize)
        imageCount = min(n, (index + 1) * batches / count * batchSize) - firstImage
        self.batchSize = batchSize
        listCount = n
        listSHA256 = Self.listSHA256(paths)
    }

    public var images: Range<Int> { firstImage..<(firstImage + imageCount) }

    public static func listSHA256(_ paths: [String]) -> String {
        SHA256.hexDigest(Array(paths.map { $0 + "\n" }.joined().utf8))
    }
}

/// Joins embedding parts (`E.K.npy` with their `.paths.txt` and `.model.json`) into one file.
public enum EmbeddingsMerge {
    /// Checks that `parts` (any order) are parts of one list by one model that cover it exactly
    /// once, then writes `output` (the array, `.paths.txt`, `.model.json`) in list order. Returns
    /// the number of rows.
    public static func merge(parts: [URL], into output: URL) throws -> Int {
        var loaded: [(url: URL, info: EmbeddingsInfo, part: EmbeddingsPart)] = []
        for url in parts {
            guard let info = try EmbeddingsInfo.read(for: url) else {
                throw StoreError(.mergeRefused, path: EmbeddingsInfo.url(for: url).path,
                                 "missing: \(url.path) has no description, so it cannot be checked as a part")
            }
            guard let part = info.part else {
                throw StoreError(.mergeRefused, path: url.path, "holds whole embeddings, not a part (parts are written with embed-images --part K/N)")
            }
            loaded.append((url, info, part))
        }
        let first = loaded[0]
        for l in loaded.dropFirst() {
            if l.info.model != first.info.model {
                throw StoreError(.mergeRefused, path: l.url.path, "part \(l.part.index)/\(l.part.count) is a part of another model than "
                    + "\(first.url.path): \(l.info.model.id) (weights sha256 \(l.info.model.weightsSHA256.prefix(12))...) and "
                    + "\(first.info.model.id) (\(first.info.model.weightsSHA256.prefix(12))...)")
            }
            if l.part.listSHA256 != first.part.listSHA256 || l.part.listCount != first.part.listCount {
                throw StoreError(.mergeRefused, path: l.url.path, "part \(l.part.index)/\(l.part.count) is a part of another image list "
                    + "than \(first.url.path) (\(l.part.listCount) and \(first.part.listCount) images, list hashes differ)")
            }
            if l.info.normalized != first.info.normalized || l.info.width != first.info.width || l.part.batchSize != first.part.batchSize {
                throw StoreError(.mergeRefused, path: l.url.path, "part \(l.part.index)/\(l.part.count) has other settings than \(first.url.path) "
                    + "(normalised \(l.info.normalized) and \(first.info.normalized), width \(l.info.width) and \(first.info.width), "
                    + "batch size \(l.part.batchSize) and \(first.part.batchSize))")
            }
        }
        let sorted = loaded.sorted { ($0.part.firstImage, $0.part.imageCount) < ($1.part.firstImage, $1.part.imageCount) }
        var next = 0
        for l in sorted where l.part.imageCount > 0 {
            if l.part.firstImage < next {
                throw StoreError(.mergeRefused, path: l.url.path, "part \(l.part.index)/\(l.part.count) overlaps another part: both hold "
                    + "images \(l.part.firstImage)..<\(min(next, l.part.firstImage + l.part.imageCount)); give each part once")
            }
            if l.part.firstImage > next {
                throw StoreError(.mergeRefused, path: output.path, "the parts do not cover the list: images \(next)..<\(l.part.firstImage) are in no part given")
            }
            next = l.part.firstImage + l.part.imageCount
        }
        if next < first.part.listCount {
            throw StoreError(.mergeRefused, path: output.path, "the parts do not cover the list: images \(next)..<\(first.part.listCount) are in no part given")
        }
        var paths: [String] = [], data: [Float] = []
        for l in sorted {
            let array = try NPY.read(l.url).tensor
            let listURL = l.url.deletingPathExtension().appendingPathExtension("paths.txt")
            var list = String(decoding: try InputFile.read(listURL.path), as: UTF8.self)
                .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if list.last == "" { list.removeLast() }
            guard array.shape == [l.part.imageCount, l.info.width], list.count == l.part.imageCount else {
                throw StoreError(.mergeRefused, path: l.url.path, "holds \(array.shape) and \(list.count) paths; its description says "
                    + "[\(l.part.imageCount), \(l.info.width)]")
            }
            paths += list
            data += array.data
        }
        guard EmbeddingsPart.listSHA256(paths) == first.part.listSHA256 else {
            throw StoreError(.mergeRefused, path: output.path, "the parts' path lists joined are not the list their descriptions hash")
        }
        var info = EmbeddingsInfo(model: first.info.model, rows: paths.count, width: first.info.width, normalized: first.info.normalized)
        info.mergedFrom = sorted.map(\.part)
        // List, description, then the array (each atomic); a failure removes what was written.
        let list = output.deletingPathExtension().appendingPathExtension("paths.txt")
        do {
            try FileOutput.writeLines(paths, to: list, what: "the image list")
            try info.write(for: output)
            try NPY.write(Tensor(shape: [paths.count, first.info.width], data: data), to: output)
        } catch {
            try? FileManager.default.removeItem(at: list)
            try? FileManager.default.removeItem(at: EmbeddingsInfo.url(for: output))
            throw error
        }
        return paths.count
    }
}
