// MARK: - Vision models
//
// What every image model Refract loads (CLIP, the timm families) offers the commands: its
// checkpoint's identity, its own preprocessing, and the image representation that is embedded,
// classified and decomposed. Batching, decoding, hashing and non-finite checks are written once
// here, for all of them.

import Foundation
import RefractCheckpoint
import RefractImage
import RefractTensor

public protocol VisionModel: AnyObject, Sendable {
    /// The model id (hub id or directory path).
    var id: String { get }
    /// Where the checkpoint was found (directory, layout, model id, hub commit).
    var location: ModelLocation { get }
    /// The checkpoint's own image transform.
    var preprocessing: ImagePreprocessing { get }
    /// Width of the representation.
    var representationWidth: Int { get }
    /// The representation [N, W] of preprocessed images [3, S, S] (CLIP: the image embedding
    /// before L2 normalisation; timm: the pre-logits features). Batches are split over the cores.
    func represent(pixels: [Tensor]) -> Tensor
}

extension VisionModel {
    /// SHA-256 identifying the weights: the hex digest of the weights file, or for a sharded
    /// checkpoint the digest of the lines "<file name> <file digest>\n" in shard order. A file in
    /// the Hugging Face cache is checked against the SHA-256 the cache names it by.
    public func weightsSHA256() throws -> String {
        let files = try location.weightFiles()
        if files.count == 1 { return try HubCache.checkedDigest(ofFileAt: files[0]) }
        var lines = ""
        for f in files { lines += "\(f.lastPathComponent) \(try HubCache.checkedDigest(ofFileAt: f))\n" }
        return SHA256.hexDigest(Array(lines.utf8))
    }

    /// Decodes and preprocesses files in parallel: [3, S, S] each.
    public func preprocessFiles(_ files: [URL]) throws -> [Tensor] {
        let results = ResultSlots<Tensor>(count: files.count)
        let prep = preprocessing
        Parallel.forEach(files.count) { i in
            results.set(i, Result { prep(try ImageDecoder.decode(contentsOf: files[i])) })
        }
        return try results.values()
    }

    /// Decodes, preprocesses and represents image files in batches: [N, W], rows in the order of
    /// `files`. Decoding runs in parallel; the first unreadable file stops the run with an
    /// `ImageError` naming it. `progress` receives the number of images done. A NaN or ±infinity
    /// stops the run with a `NonFiniteError` naming the file.
    public func encodeImageFiles(_ files: [URL], batchSize: Int = 8, progress: ((Int) -> Void)? = nil) throws -> Tensor {
        guard (1...CLIP.maxBatchSize).contains(batchSize) else {
            throw CLIPBatchSizeError(batchSize: batchSize)
        }
        var rows = [Float]()
        rows.reserveCapacity(files.count * representationWidth)
        var start = 0
        while start < files.count {
            let batch = Array(files[start..<min(start + batchSize, files.count)])
            let pixels = try preprocessFiles(batch)
            let embeddings = represent(pixels: pixels)
            try requireFinite(embeddings, kind: "image embedding", rows: batch.map(\.path))
            rows += embeddings.data
            start += batch.count
            progress?(start)
        }
        return Tensor(shape: [files.count, representationWidth], data: rows)
    }

    /// Refuses rows [N, W] holding a NaN or ±infinity, naming row `rows[i]`: nothing built from
    /// such a row (a file, a score, a ranking) would mean anything.
    public func requireFinite(_ embeddings: Tensor, kind: String, rows: [String]) throws {
        try embeddings.requireFiniteRows(note: "the model \(id) computes non-finite values for this input (its weights are "
                                            + "finite, so an intermediate value overflowed float32)") { row in
            (row < rows.count ? rows[row] : "row \(row)", "the \(kind)")
        }
    }
}
