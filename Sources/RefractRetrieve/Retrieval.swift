// MARK: - Property-based retrieval (Paper 1, section 4.4)
//
// A set of heads picks out a property (a head that labels colours, one that labels counts). Every
// image of a run gets its head-set vector v = Σ_{(l,h) ∈ heads} attn[l, h] [D'] (the heads' direct
// contributions to its representation, summed); images are ranked by how similar their vector is to
// the query's:
//
// - an image of the run (a row): its stored vector; the row itself is left out of the results;
// - an image file: when its path is one of the run's images, that row (as above); otherwise it is
//   decomposed on the fly with the run's model and convention, each head rounded to the run's storage
//   type as if it had been stored;
// - a text: its L2-normalised text embedding t [D'] stands in for v_q.
//
// Metrics: `cosine` (the paper's description) = cos(v_q, v_i); `dot` (the official notebook, which
// ranks by the dot product of the norm-scaled contributions) = v_q · v_i. Scores are accumulated in
// double precision; equal scores are ordered by row. The head-set vectors come from a strided read
// (`StoreReader.summedSlices`) that touches only the chosen heads' bytes.

import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractStore
import RefractTensor
import RefractTextSpan

/// How images are compared with the query.
public enum RetrievalMetric: String, Codable, CaseIterable, Sendable {
    /// cos(v_q, v_i); 0 for an image whose vector is zero.
    case cosine
    /// v_q · v_i.
    case dot
}

/// What to search for.
public enum RetrievalQuery: Sendable, Equatable {
    /// Row `r` of the run (row order: the run's images in input order, skipped images left out).
    case row(Int)
    /// An image file.
    case image(String)
    /// A text, through the run's model's text encoder.
    case text(String)
}

/// A retrieval request that cannot be answered; the text names the file or argument and the problem.
public struct RetrievalError: Error, CustomStringConvertible, LocalizedError, Sendable {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
    public var errorDescription: String? { description }
}

public struct RetrievalOptions: Sendable {
    /// The heads whose contributions are summed (at least one).
    public var heads: [HeadID] = []
    /// How many images to return.
    public var top: Int = 15
    public var metric: RetrievalMetric = .cosine
    public init(heads: [HeadID] = [], top: Int = 15, metric: RetrievalMetric = .cosine) {
        self.heads = heads
        self.top = top
        self.metric = metric
    }
}

// MARK: - Report

/// The query as it was answered.
public struct RetrievalQueryInfo: Codable, Equatable, Sendable {
    /// `index`, `image` or `text`: what was asked.
    public var kind: String
    /// `run` (a stored row's contributions), `decomposed` (an image decomposed on the fly) or
    /// `textEncoder` (a text embedding).
    public var source: String
    /// The row, when the query is an image of the run.
    public var row: Int?
    /// The row's index in the run's input list.
    public var imageIndex: Int?
    public var path: String?
    public var label: String?
    public var text: String?
    /// How the query's vector was obtained, in words.
    public var note: String
    /// L2 norm of the query's vector (the head-set vector, or 1 for a text).
    public var norm: Double
}

/// One retrieved image.
public struct RetrievalHit: Codable, Equatable, Sendable {
    /// 1-based.
    public var rank: Int
    public var row: Int
    /// Index in the run's input list.
    public var imageIndex: Int
    public var path: String
    public var label: String?
    public var score: Double
    /// L2 norm of the image's head-set vector.
    public var norm: Double
}

/// Everything `retrieval.json` holds.
public struct RetrievalReport: Codable, Equatable, Sendable {
    public var formatVersion: Int
    public var run: String
    public var model: String
    public var weightsSHA256: String
    public var convention: String
    /// `LAYER.HEAD` (a timm run: the component names), in the order their contributions are summed.
    public var heads: [String]
    public var metric: String
    /// Rows compared with the query (the run's rows, less the query's own row).
    public var candidates: Int
    public var top: Int
    public var query: RetrievalQueryInfo
    public var results: [RetrievalHit]
}

// MARK: - Retrieval

public enum Retrieval {
    public static let formatVersion = 1

    /// The run's layers, heads and output width; fails unless it is a decomposition run (a per-head
    /// `attn` tensor [layers, heads, embedDim]).
    public static func dimensions(_ reader: StoreReader) throws -> (layers: Int, heads: Int, width: Int) {
        let m = reader.manifest.dimensions
        guard let l = m["layers"], let h = m["heads"], let d = m["embedDim"],
              reader.manifest.tensors.contains(where: { $0.name == "attn" && $0.shape == [l, h, d] }) else {
            throw RetrievalError(path: reader.run.appendingPathComponent("manifest.json").path,
                                 message: "not a decomposition run: no per-head 'attn' tensor [layers, heads, embedDim] "
                                    + "(it has: \(reader.manifest.tensors.map { "\($0.name)\($0.shape)" }.joined(separator: ", ")))")
        }
        return (l, h, d)
    }

    /// The run's row holding the image at `path` (same file after resolving `.`/`..` and symbolic
    /// links; the first such row when the run lists the file twice), or nil.
    public static func storedRow(forImageAt path: String, in reader: StoreReader) -> Int? {
        let target = URL(fileURLWithPath: path).standardizedFileURL
        let images = reader.rowImages
        if let r = images.firstIndex(where: { URL(fileURLWithPath: $0.path).standardizedFileURL.path == target.path }) {
            return r
        }
        guard FileManager.default.fileExists(atPath: target.path) else { return nil }
        let resolved = target.resolvingSymlinksInPath().path
        return images.firstIndex { URL(fileURLWithPath: $0.path).standardizedFileURL.resolvingSymlinksInPath().path == resolved }
    }

    /// Whether answering `query` needs the run's model (a text, or an image file that is not in the run).
    public static func needsModel(_ query: RetrievalQuery, reader: StoreReader) -> Bool {
        switch query {
        case .row: return false
        case .image(let path): return storedRow(forImageAt: path, in: reader) == nil
        case .text: return true
        }
    }

    /// Every row's head-set vector Σ_{heads} attn[l, h], [N, D'] float32, read from the chosen heads' bytes only.
    public static func headSetVectors(_ reader: StoreReader, heads: [HeadID]) throws -> Tensor {
        _ = try dimensions(reader)
        let vectors = try reader.summedSlices(of: "attn", indices: heads.map { [$0.layer, $0.head] })  // [N, D']
        try vectors.requireFiniteRows(note: "retrieve refuses runs holding non-finite values; decompose the images again") { row in
            (reader.run.path, "the chosen heads' contributions of row \(row) (image \(reader.rowImages[row].path))")
        }
        return vectors
    }

    /// Answers `query` over the run. `model` must be the run's model (see `RunModel.load`); it is needed
    /// only when `needsModel` says so.
    public static func search(_ reader: StoreReader, query: RetrievalQuery, options: RetrievalOptions,
                              model: CLIP? = nil) throws -> RetrievalReport {
        let (layers, headsPerLayer, width) = try dimensions(reader)
        let runPath = reader.run.path
        guard !options.heads.isEmpty else { throw RetrievalError(path: runPath, message: "no heads given") }
        if let bad = options.heads.first(where: { $0.layer < 0 || $0.layer >= layers || $0.head < 0 || $0.head >= headsPerLayer }) {
            throw RetrievalError(path: runPath, message: "head \(bad) does not exist: the run has layers 0...\(layers - 1) "
                                    + "and heads 0...\(headsPerLayer - 1)")
        }
        guard options.top > 0 else { throw RetrievalError(path: runPath, message: "top must be positive, got \(options.top)") }
        let vectors = try headSetVectors(reader, heads: options.heads)                        // [N, D']
        let label = options.heads.map(\.description).joined(separator: ",")
        let (vector, exclude, info): ([Float], Int?, RetrievalQueryInfo)
        switch query {
        case .image(let path) where storedRow(forImageAt: path, in: reader) == nil:
            guard let model else {
                throw RetrievalError(path: path, message: "the image is not in the run; decomposing it needs the run's model")
            }
            vector = try decomposedVector(path, reader: reader, model: model, heads: options.heads)
            exclude = nil
            info = RetrievalQueryInfo(kind: "image", source: "decomposed", row: nil, imageIndex: nil, path: path, label: nil,
                                      text: nil, note: "not an image of the run; decomposed with the run's model and convention "
                                        + "(\(reader.manifest.convention))", norm: 0)
        case .text(let text):
            (vector, info) = try textQuery(text, width: width, runPath: runPath, note: "the L2-normalised text embedding of the run's model") {
                guard let model else { throw RetrievalError(path: runPath, message: "a text query needs the run's model") }
                return model.encodeTexts([$0])
            }
            exclude = nil
        default:
            (vector, exclude, info) = try rowQuery(query, reader: reader, vectors: vectors, note: "its stored contributions are used")
        }
        return try report(reader, vectors: vectors, query: (vector, exclude, info), units: options.heads.map(\.description),
                          label: "heads \(label)", options: options)
    }

    /// Answers `query` over a run of a non-CLIP model by the sum of the chosen `components` (indices in
    /// the run's order), as the paper's applications: a text is compared with the components aligned
    /// into CLIP space (`aligned`, a_c = x_c·W_c + b/C, and the text's embedding `textEmbedding` by the
    /// alignment's CLIP, both needed for a text); an image of the run with the unaligned components
    /// (similarity in the model's own space, as the official image-based retrieval).
    public static func search(_ reader: StoreReader, components: [Int], query: RetrievalQuery, options: RetrievalOptions,
                              aligned: AlignedRun? = nil, textEmbedding: [Float]? = nil) throws -> RetrievalReport {
        let runPath = reader.run.path
        let names = try RunComponents.describe(reader).map(\.name)
        guard !components.isEmpty else { throw RetrievalError(path: runPath, message: "no components given") }
        if let bad = components.first(where: { $0 < 0 || $0 >= names.count }) {
            throw RetrievalError(path: runPath, message: "component index \(bad) is outside the run's \(names.count) components")
        }
        guard options.top > 0 else { throw RetrievalError(path: runPath, message: "top must be positive, got \(options.top)") }
        let units = components.map { names[$0] }
        let vectors: Tensor
        let (vector, exclude, info): ([Float], Int?, RetrievalQueryInfo)
        switch query {
        case .text(let text):
            guard let aligned, let textEmbedding else {
                throw RetrievalError(path: runPath, message: "a text query on a run of \(reader.manifest.model.id) needs its alignment "
                                        + "into CLIP space (refract align; --align) and that CLIP's text embedding")
            }
            var sum = [Float](repeating: 0, count: reader.rowCount * aligned.width)                 // [N, D]
            try aligned.forEachComponent(components) { _, a in for i in 0..<sum.count { sum[i] += a.data[i] } }
            vectors = Tensor(shape: [reader.rowCount, aligned.width], data: sum)
            (vector, info) = try textQuery(text, width: aligned.width, runPath: runPath,
                                           note: "the L2-normalised text embedding of \(aligned.alignment.manifest.target.model.id), "
                                            + "compared with the components aligned into its space") { _ in
                Tensor(shape: [1, textEmbedding.count], data: textEmbedding)
            }
            exclude = nil
        case .image(let path) where storedRow(forImageAt: path, in: reader) == nil:
            throw RetrievalError(path: path, message: "the image is not in the run; for a run of a timm model, decompose it into "
                                    + "the run first (images of the run are compared by their stored components)")
        default:
            vectors = try reader.summedSlices(of: "components", indices: components.map { [$0] })      // [N, d]
            try vectors.requireFiniteRows(note: "retrieve refuses runs holding non-finite values; decompose the images again") { row in
                (runPath, "the chosen components of row \(row) (image \(reader.rowImages[row].path))")
            }
            (vector, exclude, info) = try rowQuery(query, reader: reader, vectors: vectors,
                                                   note: "its stored components are used, unaligned (in the model's own space)")
        }
        return try report(reader, vectors: vectors, query: (vector, exclude, info), units: units,
                          label: "components \(units.joined(separator: ","))", options: options)
    }

    /// A query that is a row of the run (`.row`, or `.image` of a stored image): its vector and row.
    static func rowQuery(_ query: RetrievalQuery, reader: StoreReader, vectors: Tensor,
                         note: String) throws -> ([Float], Int?, RetrievalQueryInfo) {
        let images = reader.rowImages
        func rowInfo(_ r: Int, kind: String, note: String) -> RetrievalQueryInfo {
            RetrievalQueryInfo(kind: kind, source: "run", row: r, imageIndex: reader.rowImageIndices[r], path: images[r].path,
                               label: images[r].label, text: nil, note: note, norm: 0)
        }
        switch query {
        case .row(let r):
            guard r >= 0 && r < reader.rowCount else {
                throw RetrievalError(path: reader.run.path, message: "index \(r) is outside the run's \(reader.rowCount) rows "
                                        + "(0...\(reader.rowCount - 1))")
            }
            return (Array(vectors.row(r)), r, rowInfo(r, kind: "index", note: "row \(r) of the run; \(note) and it is left out of the results"))
        case .image(let path):
            guard let r = storedRow(forImageAt: path, in: reader) else { preconditionFailure("an image of the run") }
            var info = rowInfo(r, kind: "image", note: "the image is row \(r) of the run; \(note) and it is left out of the results")
            info.path = path
            return (Array(vectors.row(r)), r, info)
        case .text:
            preconditionFailure("a row query")
        }
    }

    /// A text query's vector: the L2-normalised embedding `embed(text)` [1, width].
    static func textQuery(_ text: String, width: Int, runPath: String, note: String,
                          embed: (String) throws -> Tensor) throws -> ([Float], RetrievalQueryInfo) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw RetrievalError(path: runPath, message: "the query text is empty") }
        let t = Ops.l2Normalized(try embed(trimmed))                                              // [1, D']
        guard t.shape == [1, width] else {
            throw RetrievalError(path: runPath, message: "the text embedding has width \(t.shape.last ?? 0), the run's is \(width)")
        }
        return (t.data, RetrievalQueryInfo(kind: "text", source: "textEncoder", row: nil, imageIndex: nil, path: nil, label: nil,
                                           text: trimmed, note: note, norm: 0))
    }

    /// Ranks `vectors` by the query and assembles the report.
    static func report(_ reader: StoreReader, vectors: Tensor, query: ([Float], Int?, RetrievalQueryInfo), units: [String],
                       label: String, options: RetrievalOptions) throws -> RetrievalReport {
        var (vector, exclude, info) = query
        info.norm = norm(vector)
        guard info.norm > 0, info.norm.isFinite else {
            throw RetrievalError(path: reader.run.path, message: "the query's vector for \(label) is "
                                    + "\(info.norm.isFinite ? "zero" : "not finite (NaN or infinity)"); there is nothing to compare")
        }
        let images = reader.rowImages
        let ranked = rank(vectors, query: vector, metric: options.metric, top: options.top, excluding: exclude)
        let hits = ranked.enumerated().map { i, r in
            RetrievalHit(rank: i + 1, row: r.row, imageIndex: reader.rowImageIndices[r.row], path: images[r.row].path,
                         label: images[r.row].label, score: r.score, norm: r.norm)
        }
        let m = reader.manifest
        return RetrievalReport(formatVersion: formatVersion, run: reader.run.path, model: m.model.id, weightsSHA256: m.model.weightsSHA256,
                               convention: m.convention, heads: units, metric: options.metric.rawValue,
                               candidates: reader.rowCount - (exclude == nil ? 0 : 1), top: options.top, query: info, results: hits)
    }

    // MARK: Ranking

    /// The `top` rows of `vectors` [N, D'] most similar to `query` [D'] by `metric`, highest first;
    /// equal scores by row; NaN scores last; `excluding` left out. Scores and norms in double precision.
    public static func rank(_ vectors: Tensor, query: [Float], metric: RetrievalMetric, top: Int,
                            excluding: Int? = nil) -> [(row: Int, score: Double, norm: Double)] {
        precondition(vectors.shape.count == 2 && vectors.shape[1] == query.count, "vectors \(vectors.shape) vs query \(query.count)")
        let n = vectors.shape[0], d = query.count
        guard n > 0, d > 0 else { return [] }
        var dots = [Double](repeating: 0, count: n), norms = [Double](repeating: 0, count: n)
        let queryDouble = query.map(Double.init)
        vectors.data.withUnsafeBufferPointer { vp in
            queryDouble.withUnsafeBufferPointer { qp in
                dots.withUnsafeMutableBufferPointer { dp in
                    norms.withUnsafeMutableBufferPointer { np in
                        let v = SendablePointer(vp.baseAddress!), q = SendablePointer(qp.baseAddress!)
                        let outDot = SendablePointer(dp.baseAddress!), outNorm = SendablePointer(np.baseAddress!)
                        let chunks = max(1, min(n, ProcessInfo.processInfo.activeProcessorCount * 4))
                        let per = (n + chunks - 1) / chunks
                        Parallel.forEach(chunks) { c in
                            let lo = c * per, hi = min(n, lo + per)
                            guard lo < hi else { return }
                            for i in lo..<hi {
                                // Four independent double accumulators for each sum (no loop-carried latency).
                                let row = v.pointer + i * d
                                var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, n0 = 0.0, n1 = 0.0, n2 = 0.0, n3 = 0.0
                                var j = 0
                                while j + 4 <= d {
                                    let x0 = Double(row[j]), x1 = Double(row[j + 1]), x2 = Double(row[j + 2]), x3 = Double(row[j + 3])
                                    s0 += x0 * q.pointer[j]; s1 += x1 * q.pointer[j + 1]
                                    s2 += x2 * q.pointer[j + 2]; s3 += x3 * q.pointer[j + 3]
                                    n0 += x0 * x0; n1 += x1 * x1; n2 += x2 * x2; n3 += x3 * x3
                                    j += 4
                                }
                                while j < d {
                                    let x = Double(row[j])
                                    s0 += x * q.pointer[j]; n0 += x * x
                                    j += 1
                                }
                                let s = (s0 + s1) + (s2 + s3), s2sum = (n0 + n1) + (n2 + n3)
                                outDot.pointer[i] = s
                                outNorm.pointer[i] = s2sum.squareRoot()
                            }
                        }
                    }
                }
            }
        }
        let qNorm = norm(query)
        var scored = [(row: Int, score: Double, norm: Double)]()
        scored.reserveCapacity(n)
        for i in 0..<n where i != excluding {
            let score: Double
            switch metric {
            case .dot: score = dots[i]
            case .cosine: score = norms[i] > 0 && qNorm > 0 ? dots[i] / (norms[i] * qNorm) : (dots[i].isNaN ? .nan : 0)
            }
            scored.append((i, score, norms[i]))
        }
        let k = min(top, scored.count)
        // Highest first; NaN below everything; ties by row.
        func before(_ a: (row: Int, score: Double, norm: Double), _ b: (row: Int, score: Double, norm: Double)) -> Bool {
            if a.score.isNaN != b.score.isNaN { return b.score.isNaN }
            if a.score != b.score && !a.score.isNaN { return a.score > b.score }
            return a.row < b.row
        }
        if k <= 64 && k < scored.count / 8 {
            // Partial selection: keep the k best in a sorted buffer (one comparison per row for most rows).
            var best = [(row: Int, score: Double, norm: Double)]()
            best.reserveCapacity(k + 1)
            for s in scored {
                if best.count == k, let last = best.last, !before(s, last) { continue }
                let at = best.firstIndex { before(s, $0) } ?? best.count
                best.insert(s, at: at)
                if best.count > k { best.removeLast() }
            }
            return best
        }
        return Array(scored.sorted(by: before).prefix(k))
    }

    static func norm(_ v: [Float]) -> Double {
        v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    // MARK: On-the-fly decomposition

    /// The head-set vector of an image file that is not in the run: decoded, preprocessed and
    /// decomposed with `model` in the run's convention; each head's contribution is rounded to the
    /// run's storage type of `attn` (as if it had been stored) and the heads are summed in order, in
    /// float32, as `summedSlices` sums stored rows.
    public static func decomposedVector(_ path: String, reader: StoreReader, model: CLIP, heads: [HeadID]) throws -> [Float] {
        let (layers, headsPerLayer, width) = try dimensions(reader)
        let arch = model.architecture
        guard arch.vision.layers == layers, arch.vision.heads == headsPerLayer, arch.embedDim == width else {
            throw RetrievalError(path: reader.run.path, message: "the model \(model.id) has \(arch.vision.layers) layers × "
                                    + "\(arch.vision.heads) heads, width \(arch.embedDim); the run has \(layers) × \(headsPerLayer), "
                                    + "width \(width): not the run's model")
        }
        guard let convention = DecompositionConvention(rawValue: reader.manifest.convention) else {
            throw RetrievalError(path: reader.run.appendingPathComponent("manifest.json").path,
                                 message: "unknown convention '\(reader.manifest.convention)'")
        }
        let image = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: path))
        let pixels = model.preprocessing(image)                                                  // [3, S, S]
        let decomposer = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: [])
        let parts = decomposer.decompose(pixels)
        let dtype = try reader.spec("attn").dtype
        var sum = [Float](repeating: 0, count: width)                                            // [D']
        for id in heads {
            let c = parts.attention(layer: id.layer, head: id.head)                              // [D']
            for j in 0..<width { sum[j] += dtype.rounded(c[j]) }
        }
        return sum
    }
}
