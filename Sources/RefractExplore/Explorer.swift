// MARK: - The explorer over a run
//
// What `refract serve` answers, as plain functions from a request's parameters to Codable values (or
// PNG bytes), with no HTTP in sight: the server (RefractServe) only routes and encodes, and the
// tests call these directly. Everything is read-only: the run, its TextSpan report and alignment
// are opened once; images are read by row from the run's own list, never by a path from a request.
//
// Components are a run's components in CLIP space: a CLIP run's slices as stored (pre, every MLP,
// head and constant), a timm run's through its alignment (a_c = x_c·W_c + b/C), or, without an
// alignment, in the model's own space (then nothing needs text). One pass at start-up gathers, per
// component, the mean and covariance of its stored vectors (Σ_c, [d, d], centred on the run's mean
// from the shards' statistics), so that ranking every component by its variance along a typed text
// t, uᵀΣ_c u with u = W_c·t̂, costs C·d² multiply-adds: milliseconds, while the user types.

import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractSegment
import RefractStore
import RefractTensor
import RefractTextSpan
import RefractTimm

/// A refusal with the HTTP status it maps to (400 bad request, 404 not found, 409 not available
/// for this run, 413 too large, 422 well-formed but unusable).
public struct ExplorerError: Error, CustomStringConvertible, Equatable, Sendable {
    public var status: Int
    public var message: String
    public init(_ status: Int, _ message: String) { self.status = status; self.message = message }
    public var description: String { message }

    static func badRequest(_ m: String) -> ExplorerError { ExplorerError(400, m) }
    static func notFound(_ m: String) -> ExplorerError { ExplorerError(404, m) }
    static func unavailable(_ m: String) -> ExplorerError { ExplorerError(409, m) }
}

// MARK: Answers

public struct ExplorerRunInfo: Codable, Sendable, Equatable {
    public struct Model: Codable, Sendable, Equatable { public var id: String; public var weightsSHA256: String }
    /// A block's components (`block` null: those of no block, such as the read-out's constant).
    public struct Block: Codable, Sendable, Equatable {
        public var block: Int?
        public var variance: Double
        public var share: Double
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(block, forKey: .block)
            try c.encode(variance, forKey: .variance)
            try c.encode(share, forKey: .share)
        }
    }
    public var run: String
    public var model: Model
    public var convention: String
    public var family: String
    public var rows: Int
    public var componentCount: Int
    public var aligned: Bool
    public var textspan: Bool
    /// Whether text features (ranking, contributions along a text) are available.
    public var text: Bool
    public var heatmaps: Bool
    /// Σ_c Var(a_c): the shares below are of this sum (covariances between components left out).
    public var componentVarianceSum: Double
    public var blocks: [Block]
}

public struct ExplorerDescription: Codable, Sendable, Equatable {
    public var text: String
    /// Fraction (0...1) of the component's variance the description's direction explained (TextSpan).
    public var varianceExplained: Double
}

public struct ExplorerComponent: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    public var kind: String
    public var block: Int?
    public var head: Int?
    /// tr Cov(a_c) over the run (in CLIP space when aligned), and its share of the sum over components.
    public var variance: Double
    public var share: Double
    /// No variance above float rounding (a bias, a lumped constant).
    public var constant: Bool
    public var descriptions: [ExplorerDescription]?
}

public struct ExplorerComponentList: Codable, Sendable, Equatable { public var components: [ExplorerComponent] }

public struct ExplorerRanked: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    /// Var(a_c · t̂) over the run, and its share of the component's variance.
    public var variance: Double
    public var share: Double
}

public struct ExplorerRanking: Codable, Sendable, Equatable { public var text: String; public var components: [ExplorerRanked] }

public struct ExplorerRowValue: Codable, Sendable, Equatable { public var row: Int; public var value: Double }

public struct ExplorerDirection: Codable, Sendable, Equatable {
    public var rank: Int
    /// Variance along the direction and its share of the component's (own-space) variance.
    public var variance: Double
    public var share: Double
    public var top: [ExplorerRowValue]
    public var bottom: [ExplorerRowValue]
}

public struct ExplorerComponentDetail: Codable, Sendable, Equatable {
    public var component: ExplorerComponent
    public var directions: [ExplorerDirection]
}

public struct ExplorerNeighbor: Codable, Sendable, Equatable { public var row: Int; public var similarity: Double }
public struct ExplorerNeighbors: Codable, Sendable, Equatable { public var row: Int; public var neighbors: [ExplorerNeighbor] }

public struct ExplorerClassScore: Codable, Sendable, Equatable { public var name: String; public var score: Double }

public struct ExplorerImage: Codable, Sendable, Equatable {
    public var row: Int
    /// The file name only (the full path stays on the server).
    public var name: String
    public var label: String?
    public var classes: [ExplorerClassScore]?
}

public struct ExplorerContribution: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    public var kind: String
    public var value: Double
}

public struct ExplorerContributions: Codable, Sendable, Equatable {
    public var text: String
    /// Σ_c a_c · t̂: the representation (the aligned sum) along the text.
    public var total: Double
    public var components: [ExplorerContribution]
}

// MARK: - Explorer

public final class Explorer: @unchecked Sendable {
    /// Longest text accepted (characters), most results per list, largest image side served.
    public static let maxTextLength = 1000
    public static let maxTop = 1000
    public static let imageSide = 384

    public let reader: StoreReader
    public let components: [ComponentInfo]
    let source: ScoreSource
    let alignment: Alignment?
    let textspan: TextSpanReport?
    let clip: CLIP?
    /// Heatmaps: the run's own CLIP model (CLIP runs), or the run's timm model (timm runs, with their
    /// alignment and its CLIP for the text).
    let heatmapModel: CLIP?
    let timmModel: TimmModel?
    /// Per component: its tensor, slot, mean [d] and covariance [d, d] (full, symmetric) in stored space.
    let layout: [(tensor: String, slot: Int)]
    let means: [[Float]]
    let covariances: [[Float]]
    /// Per component: tr Cov(a_c) in CLIP space (own space without an alignment).
    let variances: [Double]
    let constant: [Bool]
    /// Class names and their text embeddings [K, D] (CLIP runs with class names), for top classes.
    let classNames: [String]?
    let classEmbeddings: Tensor?
    private let lock = NSLock()
    private var textCache: [String: [Float]] = [:]
    private var projectionCache: [Int: Tensor] = [:]

    /// Opens the explorer over `reader`. `alignment`: a timm run's (checked against the run);
    /// `textspan`: a TextSpan report of this run; `clip`: the text tower (the run's own model for a
    /// CLIP run, the alignment's CLIP for a timm run), nil for no text features; `heatmaps`: compute
    /// token heatmaps with `clip` (CLIP runs) or `timmModel` (timm runs: the run's model, its weights
    /// checked by the caller). `progress(done, total)` counts rows of the start-up pass.
    public init(reader: StoreReader, alignment: Alignment?, textspan: TextSpanReport?, clip: CLIP?, heatmaps: Bool,
                timmModel: TimmModel? = nil, progress: ((Int, Int) -> Void)? = nil) throws {
        self.reader = reader
        let timm = RunComponents.isTimm(reader)
        if let alignment {
            guard timm else { throw ExplorerError.badRequest("\(reader.run.path) is a CLIP run, already in CLIP space: leave out the alignment") }
            try alignment.check(run: reader)
        }
        if let textspan {
            guard textspan.weightsSHA256 == reader.manifest.model.weightsSHA256, textspan.images == reader.rowCount else {
                throw ExplorerError.badRequest("the TextSpan report is of another run (model weights \(textspan.weightsSHA256.prefix(12))…, "
                    + "\(textspan.images) images; this run: \(reader.manifest.model.weightsSHA256.prefix(12))…, \(reader.rowCount) images)")
            }
        }
        components = try RunComponents.describe(reader)
        source = try Self.layoutSource(reader, alignment: alignment, components: components)
        self.alignment = alignment
        self.textspan = textspan
        if let clip {
            let width = alignment?.maps.clipWidth ?? source.storedWidth
            guard clip.architecture.embedDim == width else {
                throw ExplorerError.badRequest("the text model \(clip.id) embeds into width \(clip.architecture.embedDim), the components' is \(width)")
            }
            if alignment == nil && timm { throw ExplorerError.badRequest("a timm run needs its alignment for text features") }
        }
        self.clip = clip
        heatmapModel = heatmaps && !timm ? clip : nil
        // Per-token terms exist in the faithful convention only (TimmHeatmaps.plan refuses the others).
        self.timmModel = heatmaps && timm && alignment != nil && clip != nil && reader.manifest.convention == "faithful" ? timmModel : nil
        var order = [(tensor: String, slot: Int)](repeating: ("", 0), count: components.count)
        for (t, s) in zip(source.tensors, source.slots) { for (slot, comp) in s.enumerated() { order[comp] = (t, slot) } }
        layout = order
        (means, covariances) = try Self.moments(reader, source: source, layout: order, progress: progress)
        var v = [Double](repeating: 0, count: components.count), c = [Bool](repeating: false, count: components.count)
        let d = source.storedWidth
        for k in 0..<components.count {
            var own = 0.0, meanSquare = 0.0
            for j in 0..<d { own += Double(covariances[k][j * d + j]); meanSquare += Double(means[k][j]) * Double(means[k][j]) }
            c[k] = own <= 1e-12 * (own + meanSquare) || own <= 0
            if let maps = alignment?.maps {
                v[k] = c[k] ? 0 : Self.alignedTrace(covariances[k], maps: maps, component: k)
            } else {
                v[k] = c[k] ? 0 : own
            }
        }
        variances = v
        constant = c
        if let clip, !timm, let names = reader.manifest.classNames, !names.isEmpty, names.count <= 10_000 {
            let e = try clip.encodeTextsChecked(names.map { "a photo of a \($0)." }, labels: names)
            classNames = names
            classEmbeddings = Ops.l2Normalized(e)                                                // [K, D]
        } else {
            classNames = nil
            classEmbeddings = nil
        }
    }

    /// The layout of the components in the stored tensors (ScoreSource's, with or without an alignment).
    static func layoutSource(_ reader: StoreReader, alignment: Alignment?, components: [ComponentInfo]) throws -> ScoreSource {
        if RunComponents.isTimm(reader) && alignment == nil {
            let spec = try reader.spec("components")
            guard spec.shape.count == 2, spec.shape[0] == components.count else {
                throw ExplorerError.badRequest("\(reader.run.path): the components tensor \(spec.shape) does not list \(components.count) components")
            }
            return ScoreSource(names: components.map(\.name), tensors: ["components"], slots: [Array(0..<components.count)],
                               storedWidth: spec.shape[1], width: spec.shape[1], maps: nil)
        }
        return try ScoreSource.resolve(reader, alignment: alignment)
    }

    /// Per component, the mean and covariance of its stored vectors over the run: means from the
    /// shards' statistics (a pass for runs without), then one pass of centred rank-k updates.
    static func moments(_ reader: StoreReader, source: ScoreSource, layout: [(tensor: String, slot: Int)],
                        progress: ((Int, Int) -> Void)?) throws -> ([[Float]], [[Float]]) {
        let d = source.storedWidth, n = reader.rowCount, c = layout.count
        var mean = [[Double]](repeating: [Double](repeating: 0, count: d), count: c)
        let slotsOf = Dictionary(uniqueKeysWithValues: zip(source.tensors, source.slots.map(\.count)))
        if let stats = try StoredValues.finiteStatistics(reader, source.tensors) {
            for (k, p) in layout.enumerated() {
                let s = stats.mean(p.tensor)
                mean[k] = Array(s[(p.slot * d)..<((p.slot + 1) * d)])
            }
        } else {
            try reader.forEachShardInPlace(source.tensors) { rows, buffers in
                for (k, p) in layout.enumerated() {
                    let buf = buffers[source.tensors.firstIndex(of: p.tensor)!], stride = slotsOf[p.tensor]! * d
                    for r in 0..<rows.count { for j in 0..<d { mean[k][j] += Double(buf[r * stride + p.slot * d + j]) } }
                }
            }
            for k in 0..<c { for j in 0..<d { mean[k][j] /= Double(max(n, 1)) } }
        }
        let meanF = mean.map { $0.map { Float($0) } }
        var cov = [[Float]](repeating: [Float](repeating: 0, count: d * d), count: c)
        var done = 0
        try reader.forEachShardInPlace(source.tensors) { rows, buffers in
            let r = rows.count
            var centred = [Float](repeating: 0, count: r * d)                                    // [r, d]
            for (k, p) in layout.enumerated() {
                let buf = buffers[source.tensors.firstIndex(of: p.tensor)!], stride = slotsOf[p.tensor]! * d
                for i in 0..<r { for j in 0..<d { centred[i * d + j] = buf[i * stride + p.slot * d + j] - meanF[k][j] } }
                try centred.withUnsafeBufferPointer { a in
                    try cov[k].withUnsafeMutableBufferPointer { out in
                        try LAPACK.ssyrkUpperTransposed(n: d, k: r, alpha: 1 / Float(max(n, 1)), a: a.baseAddress!, lda: d,
                                                        beta: 1, c: out.baseAddress!, ldc: d)            // Σ += Xcᵀ Xc / N
                    }
                }
            }
            done += r
            progress?(done, n)
        }
        for k in 0..<c { for i in 0..<d { for j in 0..<i { cov[k][i * d + j] = cov[k][j * d + i] } } }      // full, symmetric
        return (meanF, cov)
    }

    /// tr(W_cᵀ Σ_c W_c): the variance of component `k` aligned into CLIP space.
    static func alignedTrace(_ cov: [Float], maps: AlignerWeights, component k: Int) -> Double {
        let d = maps.width, e = maps.clipWidth
        let w = Self.mapWeights(maps, k)                                                         // [d, D]
        let sw = Ops.matmul(Tensor(shape: [d, d], data: cov), Tensor(shape: [d, e], data: w))   // Σ W [d, D]
        var t = 0.0
        for i in 0..<(d * e) { t += Double(sw.data[i]) * Double(w[i]) }
        return max(0, t)
    }

    /// W_c [d, D] of component `k`, row-major, from the maps' [C, d, D].
    static func mapWeights(_ maps: AlignerWeights, _ k: Int) -> [Float] {
        let n = maps.width * maps.clipWidth
        return Array(maps.weights[(k * n)..<((k + 1) * n)])
    }

    // MARK: Run and components

    public var hasText: Bool { clip != nil }

    public func runInfo() -> ExplorerRunInfo {
        let m = reader.manifest
        let sum = variances.reduce(0, +)
        var byBlock: [Int: Double] = [:]
        for (k, info) in components.enumerated() { byBlock[info.block ?? -1, default: 0] += variances[k] }
        let blocks = byBlock.keys.sorted().map { b in
            ExplorerRunInfo.Block(block: b < 0 ? nil : b, variance: byBlock[b]!, share: sum > 0 ? byBlock[b]! / sum : 0)
        }
        return ExplorerRunInfo(run: reader.run.path, model: .init(id: m.model.id, weightsSHA256: m.model.weightsSHA256),
                               convention: m.convention, family: RunComponents.isTimm(reader) ? "timm" : "clip", rows: reader.rowCount,
                               componentCount: components.count, aligned: alignment != nil, textspan: textspan != nil,
                               text: hasText, heatmaps: heatmapModel != nil || timmModel != nil, componentVarianceSum: sum, blocks: blocks)
    }

    func describe(_ k: Int) -> ExplorerComponent {
        let info = components[k]
        let sum = variances.reduce(0, +)
        var descriptions: [ExplorerDescription]?
        if let report = textspan {
            let head = report.heads.first { h in
                h.component.map { $0 == info.name } ?? (info.kind == .head && h.layer == info.block && h.head == info.head)
            }
            descriptions = head?.descriptions.map { ExplorerDescription(text: $0.text, varianceExplained: $0.varianceExplained) }
        }
        return ExplorerComponent(index: k, name: info.name, kind: info.kind.rawValue, block: info.block, head: info.head,
                                 variance: variances[k], share: sum > 0 ? variances[k] / sum : 0, constant: constant[k],
                                 descriptions: descriptions)
    }

    public func componentList() -> ExplorerComponentList {
        ExplorerComponentList(components: components.indices.map(describe))
    }

    func checkComponent(_ k: Int) throws {
        guard (0..<components.count).contains(k) else {
            throw ExplorerError.notFound("no component \(k): the run has \(components.count) (0...\(components.count - 1))")
        }
    }

    func checkRow(_ row: Int) throws {
        guard (0..<reader.rowCount).contains(row) else {
            throw ExplorerError.notFound("no image row \(row): the run has \(reader.rowCount) rows (0...\(reader.rowCount - 1))")
        }
    }

    static func checkTop(_ top: Int) throws {
        guard (1...maxTop).contains(top) else { throw ExplorerError.badRequest("top \(top) is out of range: allowed 1...\(maxTop)") }
    }

    // MARK: Text

    /// The unit text direction in CLIP space (cached per text).
    func direction(_ text: String) throws -> [Float] {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !t.isEmpty else { throw ExplorerError.badRequest("the text is empty") }
        guard t.count <= Self.maxTextLength else { throw ExplorerError(413, "the text has \(t.count) characters; at most \(Self.maxTextLength)") }
        guard let clip else {
            throw ExplorerError.unavailable(RunComponents.isTimm(reader)
                ? "text needs the run's alignment and its CLIP model (refract serve --align ALIGN)"
                : "text needs the run's CLIP model, which could not be loaded (refract serve --model M)")
        }
        lock.lock()
        if let hit = textCache[t] { lock.unlock(); return hit }
        lock.unlock()
        let e = Ops.l2Normalized(try clip.encodeTextsChecked([t], labels: ["the text"])).data
        lock.lock()
        if textCache.count > 4096 { textCache.removeAll() }
        textCache[t] = e
        lock.unlock()
        return e
    }

    /// u_c = W_c·t (stored space) for every component, [C, d] row-major, by one GEMM over the maps
    /// [C·d, D]; nil for a CLIP run (u_c = t).
    func storedDirections(_ t: [Float]) -> [Float]? {
        guard let maps = alignment?.maps else { return nil }
        let rows = maps.components * maps.width
        var u = [Float](repeating: 0, count: rows)
        maps.weights.withUnsafeBufferPointer { w in
            t.withUnsafeBufferPointer { tp in
                u.withUnsafeMutableBufferPointer { up in
                    BLAS.sgemm(.none, .none, m: rows, n: 1, k: maps.clipWidth, a: w.baseAddress!, lda: maps.clipWidth,
                               b: tp.baseAddress!, ldb: 1, c: up.baseAddress!, ldc: 1)
                }
            }
        }
        return u
    }

    /// Component `k`'s u_c from `storedDirections` (or t for a CLIP run).
    func direction(of k: Int, _ all: [Float]?, _ t: [Float]) -> ArraySlice<Float> {
        let d = source.storedWidth
        return all.map { $0[(k * d)..<((k + 1) * d)] } ?? t[...]
    }

    /// Every component (but the constants) ranked by the variance of its contribution along the text,
    /// highest first.
    public func rank(text: String, top: Int) throws -> ExplorerRanking {
        try Self.checkTop(top)
        return ExplorerRanking(text: text, components: try rank(direction: try direction(text), top: top))
    }

    /// Every component ranked by the variance of its contribution along the unit direction `t` [D]
    /// (CLIP space), highest first: uᵀ Σ_c u with u = W_c·t.
    public func rank(direction t: [Float], top: Int) throws -> [ExplorerRanked] {
        let width = alignment?.maps.clipWidth ?? source.storedWidth
        guard t.count == width else { throw ExplorerError.badRequest("a direction of width \(t.count); the components' is \(width)") }
        let d = source.storedWidth
        var out: [ExplorerRanked] = []
        let all = storedDirections(t)
        for k in components.indices where !constant[k] {                                    // a constant has no variance to rank
            let u = Array(direction(of: k, all, t))
            var y = [Float](repeating: 0, count: d)                                         // Σ_c u [d]
            covariances[k].withUnsafeBufferPointer { s in
                u.withUnsafeBufferPointer { up in
                    y.withUnsafeMutableBufferPointer { yp in
                        BLAS.sgemm(.none, .none, m: d, n: 1, k: d, a: s.baseAddress!, lda: d, b: up.baseAddress!, ldb: 1,
                                   c: yp.baseAddress!, ldc: 1)
                    }
                }
            }
            var v = 0.0
            for i in 0..<d { v += Double(y[i]) * Double(u[i]) }
            v = max(0, v)
            out.append(ExplorerRanked(index: k, name: components[k].name, variance: v, share: variances[k] > 0 ? min(1, v / variances[k]) : 0))
        }
        out.sort { ($0.variance, -$0.index) > ($1.variance, -$1.index) }
        return Array(out.prefix(top))
    }

    // MARK: A component's page

    /// The stored vectors [N, d] of component `k` for every row (cached, a few components).
    func vectors(_ k: Int) throws -> Tensor {
        lock.lock()
        if let hit = projectionCache[k] { lock.unlock(); return hit }
        lock.unlock()
        let p = layout[k]
        let shape = try reader.spec(p.tensor).shape.dropLast()
        let t: Tensor
        if shape.isEmpty {                                                                  // [D] per image (pre, readout_bias): the tensor itself
            t = try reader.tensor(p.tensor).reshaped([reader.rowCount, source.storedWidth])
        } else {
            var index: [Int] = [], rest = p.slot
            for extent in shape.reversed() { index.insert(rest % extent, at: 0); rest /= extent }
            t = try reader.slices(of: p.tensor, indices: [index]).reshaped([reader.rowCount, source.storedWidth])
        }
        lock.lock()
        if projectionCache.count >= 4 { projectionCache.removeAll() }          // [N, d] each: a few components
        projectionCache[k] = t
        lock.unlock()
        return t
    }

    public func component(_ k: Int, directions count: Int = 3, images: Int = 6) throws -> ExplorerComponentDetail {
        try checkComponent(k)
        let detail = describe(k)
        guard !constant[k], reader.rowCount > 1 else { return ExplorerComponentDetail(component: detail, directions: []) }
        let d = source.storedWidth
        let eig = try LAPACK.symmetricEigen(Tensor(shape: [d, d], data: covariances[k]), largest: min(count, d))
        let x = try vectors(k)                                                                  // [N, d]
        let own = (0..<d).reduce(0.0) { $0 + Double(covariances[k][$1 * d + $1]) }
        var out: [ExplorerDirection] = []
        for (r, value) in eig.values.enumerated() where value > 0 {
            let v = Array(eig.vectors.data[(r * d)..<((r + 1) * d)])
            var proj = [(Int, Double)]()
            for i in 0..<reader.rowCount {
                var s = 0.0
                for j in 0..<d { s += Double(x.data[i * d + j] - means[k][j]) * Double(v[j]) }
                proj.append((i, s))
            }
            // The sign of an eigenvector is arbitrary: point it at the larger tail, so the answer is
            // the same whichever sign LAPACK returns.
            let high = proj.map(\.1).max() ?? 0, low = proj.map(\.1).min() ?? 0
            if -low > high { proj = proj.map { ($0.0, -$0.1) } }
            let sorted = proj.sorted { ($0.1, -$0.0) > ($1.1, -$1.0) }
            // The images furthest along the direction and furthest against it (a small run has fewer
            // than twice `images` rows: each end then keeps its own sign).
            let top = sorted.filter { $0.1 > 0 }.prefix(images).map { ExplorerRowValue(row: $0.0, value: $0.1) }
            let bottom = sorted.filter { $0.1 < 0 }.suffix(images).reversed().map { ExplorerRowValue(row: $0.0, value: $0.1) }
            out.append(ExplorerDirection(rank: r + 1, variance: Double(value), share: own > 0 ? Double(value) / own : 0,
                                         top: Array(top), bottom: Array(bottom)))
        }
        return ExplorerComponentDetail(component: detail, directions: out)
    }

    /// The rows nearest to `row` by component `k`'s stored vector (cosine), the row itself excluded.
    public func neighbors(component k: Int, row: Int, top: Int) throws -> ExplorerNeighbors {
        try checkComponent(k)
        try checkRow(row)
        try Self.checkTop(top)
        let x = try vectors(k), d = source.storedWidth
        func norm(_ i: Int) -> Double { (0..<d).reduce(0.0) { $0 + Double(x.data[i * d + $1]) * Double(x.data[i * d + $1]) }.squareRoot() }
        let q = norm(row)
        var sims: [ExplorerNeighbor] = []
        for i in 0..<reader.rowCount where i != row {
            var dot = 0.0
            for j in 0..<d { dot += Double(x.data[row * d + j]) * Double(x.data[i * d + j]) }
            let n = q * norm(i)
            sims.append(ExplorerNeighbor(row: i, similarity: n > 0 ? dot / n : 0))
        }
        sims.sort { ($0.similarity, -$0.row) > ($1.similarity, -$1.row) }
        return ExplorerNeighbors(row: row, neighbors: Array(sims.prefix(top)))
    }

    // MARK: An image's page

    public func image(_ row: Int, classes top: Int = 5) throws -> ExplorerImage {
        try checkRow(row)
        let img = reader.rowImages[row]
        var classes: [ExplorerClassScore]?
        if let names = classNames, let e = classEmbeddings, reader.manifest.tensors.contains(where: { $0.name == "embedding" }) {
            let emb = Ops.l2Normalized(try reader.tensor("embedding", rows: row..<(row + 1)))    // [1, D]
            let scores = Ops.matmul(emb, Ops.transposed(e)).data                                  // [K]
            classes = scores.indices.sorted { scores[$0] > scores[$1] }.prefix(top)
                .map { ExplorerClassScore(name: names[$0], score: Double(scores[$0])) }
        }
        return ExplorerImage(row: row, name: URL(fileURLWithPath: img.path).lastPathComponent, label: img.label, classes: classes)
    }

    /// Every component's contribution to the row's representation along the text: a_c · t̂.
    public func contributions(row: Int, text: String) throws -> ExplorerContributions {
        try checkRow(row)
        let t = try direction(text)
        let d = source.storedWidth, c = components.count
        var values = [Double](repeating: 0, count: c)
        let all = storedDirections(t)
        for (name, slots) in zip(source.tensors, source.slots) {
            let x = try reader.tensor(name, rows: row..<(row + 1)).data                          // [slots · d]
            for (slot, k) in slots.enumerated() {
                let u = direction(of: k, all, t)
                var s = 0.0
                for (j, uj) in u.enumerated() { s += Double(x[slot * d + j]) * Double(uj) }
                values[k] = s
            }
        }
        if let maps = alignment?.maps {                                                          // + (b/C)·t per component
            var bt = 0.0
            for j in 0..<maps.clipWidth { bt += Double(maps.bias[j]) * Double(t[j]) }
            for k in 0..<c { values[k] += bt / Double(c) }
        }
        return ExplorerContributions(text: text, total: values.reduce(0, +),
                                     components: (0..<c).map {
                                        ExplorerContribution(index: $0, name: components[$0].name, kind: components[$0].kind.rawValue, value: values[$0])
                                     })
    }

    /// The row's image as PNG, at most `imageSide` pixels on its longer side.
    public func imagePNG(row: Int) throws -> [UInt8] {
        try checkRow(row)
        let path = reader.rowImages[row].path
        let image: RGBImage
        do { image = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ExplorerError(422, "image row \(row) (\(URL(fileURLWithPath: path).lastPathComponent)) cannot be read: \(error)")
        }
        let side = max(image.width, image.height)
        guard side > Self.imageSide else { return try PNGEncoder.encode(image) }
        let w = max(1, image.width * Self.imageSide / side), h = max(1, image.height * Self.imageSide / side)
        return try PNGEncoder.encode(PILResampler.resize(image, width: w, height: h, filter: .bilinear))
    }

    // MARK: Heatmaps

    /// The token heatmap of the chosen head components for the text, drawn over the row's image
    /// (CLIP runs with their model): per patch, Σ over the chosen heads of the token's direct
    /// contribution along t̂, upsampled to the model's input and coloured over the preprocessed image.
    public func heatmapPNG(row: Int, text: String, components chosen: [Int]) throws -> [UInt8] {
        try checkRow(row)
        guard !chosen.isEmpty else { throw ExplorerError.badRequest("choose at least one head component") }
        guard chosen.count <= 256 else { throw ExplorerError(413, "\(chosen.count) components; at most 256") }
        if let timmModel, let alignment { return try timmHeatmapPNG(row: row, text: text, components: chosen, model: timmModel, alignment: alignment) }
        guard let model = heatmapModel else {
            throw ExplorerError.unavailable(RunComponents.isTimm(reader)
                ? "heatmaps of a timm run need a faithful run, its model, its alignment and that alignment's CLIP (refract serve --align ALIGN)"
                : "heatmaps need the run's CLIP model (refract serve --model M)")
        }
        var members: [(Int, Int)] = []
        for k in chosen {
            try checkComponent(k)
            let info = components[k]
            guard info.kind == .head, let b = info.block, let h = info.head else {
                throw ExplorerError(422, "component \(k) (\(info.name)) is not an attention head: heatmaps are of heads' token terms")
            }
            members.append((b, h))
        }
        let t = try direction(text)
        let arch = model.architecture
        let heads = try HeadSet(layers: arch.vision.layers, heads: arch.vision.heads, members: members)
        let convention = DecompositionConvention(rawValue: reader.manifest.convention) ?? .faithful
        let decomposer = try CLIPDecomposer(tower: model.vision, convention: convention, tokenSumHeads: heads)
        let url = URL(fileURLWithPath: reader.rowImages[row].path)
        let pixels: [Tensor]
        do { pixels = try model.preprocessFiles([url]) } catch {
            throw ExplorerError(422, "image row \(row) (\(url.lastPathComponent)) cannot be read: \(error)")
        }
        let image = decomposer(pixels).image(0)
        let heatmap = try TokenHeatmap(tokenSums: image.tokenSums!, tokens: arch.visionTokens,
                                       directions: Tensor(shape: [1, t.count], data: t))
        let map = TokenHeatmaps.upsampleBilinear(heatmap.map(0), size: heatmap.grid, factor: arch.patchSize)
        let figure = SegmentFigures.heatmapFigure(picture: SegmentFigures.picture(pixels[0], preprocessing: model.preprocessing),
                                                  maps: [map], titles: [text])
        return try PNGEncoder.encode(figure)
    }

    /// A timm run's heatmap: the chosen heads' per-token terms through their maps, along t̂
    /// (`refract heatmap --align`), drawn over the model's preprocessed image.
    func timmHeatmapPNG(row: Int, text: String, components chosen: [Int], model: TimmModel, alignment: Alignment) throws -> [UInt8] {
        for k in chosen { try checkComponent(k) }
        if let k = chosen.first(where: { components[$0].kind != .head }) {
            throw ExplorerError(422, "component \(k) (\(components[k].name)) is not an attention head: heatmaps are of heads' token terms")
        }
        let t = try direction(text)
        let plan: TimmHeatmapPlan
        do {
            plan = try TimmHeatmaps.plan(model: model, weightsSHA256: reader.manifest.model.weightsSHA256, alignment: alignment,
                                         components: chosen.map { components[$0].name })
        } catch let e as HeatmapError {
            throw ExplorerError(422, e.message)
        }
        let url = URL(fileURLWithPath: reader.rowImages[row].path)
        let pixels: [Tensor]
        do { pixels = try model.preprocessFiles([url]) } catch {
            throw ExplorerError(422, "image row \(row) (\(url.lastPathComponent)) cannot be read: \(error)")
        }
        let size = pixels[0].shape[2]
        guard size % plan.grid == 0 else { throw ExplorerError(422, "the input size \(size) is not a multiple of the \(plan.grid)x\(plan.grid) grid") }
        let folded = TimmHeatmaps.folded(alignment.maps, components: plan.components, directions: Tensor(shape: [1, t.count], data: t))
        let heatmap = try TimmHeatmaps.heatmap(plan.decomposer(pixels), image: 0, components: plan.components, folded: folded,
                                               grid: plan.grid, prefixTokens: plan.prefixTokens)
        let map = TokenHeatmaps.upsampleBilinear(heatmap.map(0), size: plan.grid, factor: size / plan.grid)
        let figure = SegmentFigures.heatmapFigure(picture: SegmentFigures.picture(pixels[0], preprocessing: model.preprocessing),
                                                  maps: [map], titles: [text])
        return try PNGEncoder.encode(figure)
    }
}
