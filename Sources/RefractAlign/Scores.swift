// MARK: - Component scores for a property described in words (Balasubramanian et al., NeurIPS 2024)
//
// The official `variance_attributed` and `variance_explained` (beyond-clip.md §3), streamed over a
// run. A property is k texts with embeddings e_1..e_k (each the renormalised mean of the 80 template
// embeddings, made by the caller). Their span gets an orthonormal basis b_1..b_k by modified
// Gram–Schmidt in float64 in list order (torch.qr's Q up to the signs of its columns). For aligned
// components a_c(x) [D] of N images:
//
//   p_cj(x) = a_c(x)·b_j,   P_j(x) = Σ_c p_cj(x)
//   variance_attributed_c = (1/k) Σ_j cov(P_j, p_cj) / (s(P_j) s(p_cj))     cov with 1/N, s with 1/(N−1)
//                         = (1/k) Σ_j Pearson(P_j, p_cj) · (N−1)/N
//   variance_explained_c  = Σ_j Var(p_cj) / tr Cov(a_c)                    (the span's share of a_c's variance)
//
// A (c, j) whose p_cj is constant over the images (its standard deviation 0, or at most 1e-6 of the
// larger of its root mean square and the total's standard deviation: float32 rounding left in a
// component orthogonal to the span) contributes 0 to variance_attributed and is counted in
// `constantDirections`; a component whose total variance is at most 1e-12 of its mean square norm has
// variance_explained 0 and is flagged `constant`.
//
// Streaming. One pass over the run: per chunk of rows, the aligned components [b, C, D] (a CLIP run's
// stored pre/attn/mlp/... slices as they are, a timm run's components through the alignment's maps)
// are projected on the bases of every property at once by one GEMM [b·S, D] × [D, K]; per (c, j) the
// sums Σq, Σq², ΣqQ and per j ΣQ, ΣQ² are kept in float64, q = p − s and Q = P − S being shifted by
// the means over the run's first rows (exactly the official formulas; the shift only removes
// cancellation). For variance_explained, per component Σ(a − r) [D] and Σ‖a − r‖², r the first rows'
// mean (tr Cov = E‖a − r‖² − ‖E(a − r)‖²). Rows are split over the cores, each with its own sums.
//
// `ReferenceScores` is the same mathematics in plain float64 over an in-memory array, for tests.

import Foundation
import RefractDecompose
import RefractStore
import RefractTensor

/// Input that cannot be scored, naming the file or option at fault.
public struct ScoreError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file, directory or option concerned.
    public var subject: String
    public var message: String
    public init(_ subject: String, _ message: String) { self.subject = subject; self.message = message }
    public var description: String { "\(subject): \(message)" }
}

/// A property described in words: its name, its texts in order and their embeddings [k, D].
public struct ScoreProperty: Sendable, Equatable {
    public var name: String
    public var texts: [String]
    /// Row i is e(texts[i]).
    public var embeddings: Tensor

    public init(name: String, texts: [String], embeddings: Tensor) {
        self.name = name; self.texts = texts; self.embeddings = embeddings
    }

    /// Refuses an empty name, an empty list, an empty entry or a repeated text, naming `source`
    /// (the option or file the list came from).
    public static func checkTexts(name: String, texts: [String], source: String) throws {
        if name.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw ScoreError(source, "the property has an empty name")
        }
        guard !texts.isEmpty else { throw ScoreError(source, "no texts for the property '\(name)'") }
        var seen: [String: Int] = [:]
        for (i, t) in texts.enumerated() {
            if t.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw ScoreError(source, "text \(i + 1) of the property '\(name)' is empty")
            }
            if let first = seen[t] {
                throw ScoreError(source, "'\(t)' is listed twice for the property '\(name)' (texts \(first + 1) and \(i + 1))")
            }
            seen[t] = i
        }
    }

    /// `checkTexts`, and embeddings of shape [k, D] with finite values.
    public func validate(width: Int, source: String) throws {
        try Self.checkTexts(name: name, texts: texts, source: source)
        guard embeddings.shape == [texts.count, width] else {
            throw ScoreError(source, "the embeddings of '\(name)' have shape \(embeddings.shape), expected [\(texts.count), \(width)] "
                + "(one row per text, the components' width)")
        }
        guard embeddings.data.allSatisfy(\.isFinite) else {
            throw ScoreError(source, "the embeddings of '\(name)' hold NaN or infinite values")
        }
    }
}

// MARK: - Basis

public enum ScoreBasis {
    /// The orthonormal basis of the texts' span, by modified Gram–Schmidt in float64 in list order:
    /// k columns of width D (column j = b_j). Equal to torch.qr(Tᵀ).Q up to each column's sign.
    /// A text whose embedding lies (within 1e-6 of its norm) in the span of the earlier ones is refused.
    public static func orthonormal(_ embeddings: Tensor, property: String = "the property", texts: [String]? = nil) throws -> [[Double]] {
        precondition(embeddings.rank == 2)
        let k = embeddings.shape[0], d = embeddings.shape[1]
        var q: [[Double]] = []
        for i in 0..<k {
            var v = (0..<d).map { Double(embeddings.data[i * d + $0]) }
            let norm0 = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for b in q {
                var dot = 0.0
                for t in 0..<d { dot += v[t] * b[t] }
                for t in 0..<d { v[t] -= dot * b[t] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm0 > 0, norm > 1e-6 * norm0 else {
                let label = texts.map { "'\($0[i])'" } ?? "text \(i + 1)"
                throw ScoreError(property, "the embedding of \(label) lies in the span of the texts before it "
                    + "(no new direction for the basis): drop it or reword it")
            }
            q.append(v.map { $0 / norm })
        }
        return q
    }
}

// MARK: - Results

/// The two scores of every component for one property.
public struct PropertyScores: Codable, Sendable, Equatable {
    public var name: String
    public var texts: [String]
    /// variance_attributed, per component in the run's order.
    public var varianceAttributed: [Double]
    /// variance_explained, per component; nil when not computed.
    public var varianceExplained: [Double]?
    /// Per component: basis directions along which it is constant over the images (scored 0).
    public var constantDirections: [Int]
    public init(name: String, texts: [String], varianceAttributed: [Double], varianceExplained: [Double]?, constantDirections: [Int]) {
        self.name = name; self.texts = texts; self.varianceAttributed = varianceAttributed
        self.varianceExplained = varianceExplained; self.constantDirections = constantDirections
    }
}

/// Scores of every property over a run (or an in-memory set of components).
public struct ScoreResult: Sendable, Equatable {
    /// Component names in order (empty when scored from memory without names).
    public var components: [String]
    public var images: Int
    public var properties: [PropertyScores]
    /// Components constant over the images (zero total variance): variance_explained 0 for them.
    public var constantComponents: [Int]
    public init(components: [String], images: Int, properties: [PropertyScores], constantComponents: [Int]) {
        self.components = components; self.images = images; self.properties = properties; self.constantComponents = constantComponents
    }
    public func property(_ name: String) -> PropertyScores? { properties.first { $0.name == name } }
}

// MARK: - Rankings

public enum ScoreRanking {
    /// The image-retrieval rule (§3.4): key_f(c) = score_f(c) − max(0, max over the other properties' score(c)).
    /// With no other property, the key is the score.
    public static func keys(_ scores: [Double], against others: [[Double]]) -> [Double] {
        scores.indices.map { c in scores[c] - max(0, others.map { $0[c] }.max() ?? 0) }
    }

    /// The Waterbirds rule (§3.4): key(c) = score_f(c) − score_g(c).
    public static func keys(_ scores: [Double], minus other: [Double]) -> [Double] {
        zip(scores, other).map { $0 - $1 }
    }

    /// Component indices by descending key (ties: the earlier component first; NaN last).
    public static func order(_ keys: [Double]) -> [Int] {
        keys.indices.sorted { a, b in
            let x = keys[a], y = keys[b]
            if x.isNaN != y.isNaN { return y.isNaN }
            if x != y && !x.isNaN { return x > y }
            return a < b
        }
    }
}

// MARK: - Streaming accumulator

/// Streaming sums for the scores of several properties at once. Feed aligned components (any number of
/// chunks, any split into parts), then `finish`.
public struct ScoreAccumulator: Sendable {
    public let components: Int
    public let width: Int
    public let properties: [(name: String, texts: [String])]
    /// Basis columns of each property in the concatenated basis.
    public let groups: [Range<Int>]
    public let varianceExplained: Bool
    /// K, the total number of basis columns.
    public var basisCount: Int { groups.last?.upperBound ?? 0 }
    /// The concatenated basis [D, K], row-major, float32 (for the GEMM) and float64.
    let basis: [Float]
    let basis64: [Double]

    /// Images seen.
    public private(set) var count = 0
    // Shifts (nil until the first chunk): s [C, K], S [K], r [C, D].
    var shiftP: [Double]? = nil
    var shiftTotal: [Double] = []
    var shiftA: [Float] = []
    // Sums of q = p − s: Σq, Σq², ΣqQ [C, K]; of Q = P − S: ΣQ, ΣQ² [K].
    var sq: [Double], sq2: [Double], sqQ: [Double], sQ: [Double], sQ2: [Double]
    // Σ(a − r) [C, D], Σ‖a − r‖² [C].
    var sa: [Double], sa2: [Double]
    /// tr Cov(a_c) per component known beforehand (an alignment's `componentVariance` over the same
    /// run): variance_explained from it, without the sums above.
    public var knownTraces: [Double]?

    /// - Parameters:
    ///   - components: C.
    ///   - properties: each with embeddings [k, width].
    ///   - varianceExplained: whether to keep the sums variance_explained needs (a pass over every value).
    public init(components: Int, width: Int, properties: [ScoreProperty], varianceExplained: Bool = true) throws {
        precondition(components > 0 && width > 0)
        var columns: [[Double]] = []
        var groups: [Range<Int>] = []
        for p in properties {
            try p.validate(width: width, source: p.name.isEmpty ? "property" : p.name)
            let q = try ScoreBasis.orthonormal(p.embeddings, property: p.name, texts: p.texts)
            groups.append(columns.count..<(columns.count + q.count))
            columns += q
        }
        let k = columns.count
        var b64 = [Double](repeating: 0, count: width * k)
        for j in 0..<k { for t in 0..<width { b64[t * k + j] = columns[j][t] } }
        self.components = components
        self.width = width
        self.properties = properties.map { ($0.name, $0.texts) }
        self.groups = groups
        self.varianceExplained = varianceExplained
        basis64 = b64
        basis = b64.map(Float.init)
        sq = .init(repeating: 0, count: components * k); sq2 = sq; sqQ = sq
        sQ = .init(repeating: 0, count: k); sQ2 = sQ
        sa = varianceExplained ? .init(repeating: 0, count: components * width) : []
        sa2 = .init(repeating: 0, count: components)
    }

    /// A copy with the same shifts and zero sums (one per worker).
    func emptyCopy() -> ScoreAccumulator {
        var c = self
        c.count = 0
        for i in c.sq.indices { c.sq[i] = 0; c.sq2[i] = 0; c.sqQ[i] = 0 }
        for i in c.sQ.indices { c.sQ[i] = 0; c.sQ2[i] = 0 }
        for i in c.sa.indices { c.sa[i] = 0 }
        for i in c.sa2.indices { c.sa2[i] = 0 }
        return c
    }

    /// Adds another accumulator's sums (same shifts).
    mutating func merge(_ o: ScoreAccumulator) {
        count += o.count
        for i in sq.indices { sq[i] += o.sq[i]; sq2[i] += o.sq2[i]; sqQ[i] += o.sqQ[i] }
        for i in sQ.indices { sQ[i] += o.sQ[i]; sQ2[i] += o.sQ2[i] }
        for i in sa.indices { sa[i] += o.sa[i] }
        for i in sa2.indices { sa2[i] += o.sa2[i] }
    }

    var hasShifts: Bool { shiftP != nil }

    /// Adds images' aligned components [B, C, D].
    public mutating func add(_ aligned: Tensor) {
        precondition(aligned.rank == 3 && aligned.shape[1] == components && aligned.shape[2] == width, "aligned components \(aligned.shape)")
        let b = aligned.shape[0]
        guard b > 0 else { return }
        let slots = Array(0..<components)
        aligned.data.withUnsafeBufferPointer { p in
            accumulate(rows: b, parts: [ChunkPart(base: p.baseAddress!, slots: slots)])
        }
    }

    /// Adds images whose components come in parts: part i is [B, S_i, D] holding components `slots[i]`
    /// (every component in exactly one part), as a CLIP run stores them (pre, attn, mlp, ...).
    public mutating func add(parts: [Tensor], slots: [[Int]]) {
        precondition(parts.count == slots.count && !parts.isEmpty)
        let b = parts[0].shape[0]
        guard b > 0 else { return }
        for (p, s) in zip(parts, slots) { precondition(p.shape[0] == b && p.data.count == b * s.count * width, "part \(p.shape)") }
        Self.withPointers(parts.map(\.data), []) { bases in
            accumulate(rows: b, parts: zip(bases, slots).map { ChunkPart(base: $0, slots: $1) })
        }
    }

    /// Calls `body` with base pointers of every array (nested, so that each stays valid).
    static func withPointers<R>(_ arrays: ArraySlice<[Float]>, _ taken: [UnsafePointer<Float>],
                                _ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
        guard let first = arrays.first else { return try body(taken) }
        return try first.withUnsafeBufferPointer { p in
            try withPointers(arrays.dropFirst(), taken + [p.baseAddress!], body)
        }
    }

    static func withPointers<R>(_ arrays: [[Float]], _ taken: [UnsafePointer<Float>],
                                _ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
        try withPointers(arrays[...], taken, body)
    }

    /// One chunk of rows: projections (one GEMM per part), the score sums, the variance sums.
    mutating func accumulate(rows b: Int, parts: [ChunkPart]) {
        let c = components, k = basisCount, d = width
        var proj = [Float](repeating: 0, count: b * c * k)
        if k > 0 {
            var tmp = [Float]()
            proj.withUnsafeMutableBufferPointer { out in
                for part in parts {
                    let s = part.slots.count
                    if tmp.count < b * s * k { tmp = [Float](repeating: 0, count: b * s * k) }
                    tmp.withUnsafeMutableBufferPointer { t in
                        basis.withUnsafeBufferPointer { q in
                            BLAS.sgemm(.none, .none, m: b * s, n: k, k: d, a: part.base, lda: d, b: q.baseAddress!, ldb: k,
                                       c: t.baseAddress!, ldc: k)
                        }
                        for i in 0..<b {
                            for (si, comp) in part.slots.enumerated() {
                                (out.baseAddress! + (i * c + comp) * k).update(from: t.baseAddress! + (i * s + si) * k, count: k)
                            }
                        }
                    }
                }
            }
        }
        accumulate(rows: b, projections: proj, parts: parts)
    }

    /// One chunk given its projections [b, C, K] (and, for variance_explained, its aligned components).
    mutating func accumulate(rows b: Int, projections proj: [Float], parts: [ChunkPart]) {
        if shiftP == nil { setShifts(rows: b, projections: proj, parts: parts) }
        accumulateProjections(rows: b, proj)
        if varianceExplained { accumulateVariance(rows: b, parts: parts) }
    }

    /// Shifts from the first chunk: the means of p, P and a over its rows.
    mutating func setShifts(rows b: Int, projections proj: [Float], parts: [ChunkPart]) {
        let c = components, k = basisCount, d = width
        var s = [Double](repeating: 0, count: c * k)
        for i in 0..<b { for t in 0..<(c * k) { s[t] += Double(proj[i * c * k + t]) } }
        for t in s.indices { s[t] /= Double(b) }
        let sanitized = s.map { $0.isFinite ? $0 : 0 }
        shiftP = sanitized
        shiftTotal = (0..<k).map { j in (0..<c).reduce(0.0) { $0 + sanitized[$1 * k + j] } }
        if varianceExplained {
            var r = [Double](repeating: 0, count: c * d)
            for part in parts {
                let sc = part.slots.count
                for i in 0..<b {
                    for (si, comp) in part.slots.enumerated() {
                        let src = part.base + (i * sc + si) * d
                        for t in 0..<d { r[comp * d + t] += Double(src[t]) }
                    }
                }
            }
            shiftA = r.map { v in let m = Float(v / Double(b)); return m.isFinite ? m : 0 }
        }
    }

    /// Projections [b, C, K] → the sums of q, q², qQ, Q, Q².
    mutating func accumulateProjections(rows b: Int, _ proj: [Float]) {
        let c = components, k = basisCount
        guard k > 0, let s = shiftP else { count += b; return }
        var total = [Double](repeating: 0, count: k)
        proj.withUnsafeBufferPointer { pp in
            for i in 0..<b {
                let row = pp.baseAddress! + i * c * k
                for j in 0..<k { total[j] = 0 }
                for comp in 0..<c { for j in 0..<k { total[j] += Double(row[comp * k + j]) } }
                for j in 0..<k {
                    let qq = total[j] - shiftTotal[j]
                    total[j] = qq
                    sQ[j] += qq; sQ2[j] += qq * qq
                }
                for comp in 0..<c {
                    for j in 0..<k {
                        let t = comp * k + j
                        let q = Double(row[t]) - s[t]
                        sq[t] += q; sq2[t] += q * q; sqQ[t] += q * total[j]
                    }
                }
            }
        }
        count += b
    }

    /// Σ(a − r) and Σ‖a − r‖² per component, SIMD in float32 within a chunk, float64 across chunks.
    mutating func accumulateVariance(rows b: Int, parts: [ChunkPart]) {
        let d = width
        var local = [Float](repeating: 0, count: components * d)
        shiftA.withUnsafeBufferPointer { rp in
            local.withUnsafeMutableBufferPointer { lp in
                for part in parts {
                    let sc = part.slots.count
                    for (si, comp) in part.slots.enumerated() {
                        let r = rp.baseAddress! + comp * d
                        let acc = lp.baseAddress! + comp * d
                        var squares = 0.0
                        for i in 0..<b {
                            squares += Double(Self.shiftedSumInto(acc, part.base + (i * sc + si) * d, r, d))
                        }
                        sa2[comp] += squares
                    }
                }
            }
        }
        for t in 0..<(components * d) { sa[t] += Double(local[t]) }
    }

    /// acc += x − r; returns Σ(x − r)².
    @inline(__always)
    static func shiftedSumInto(_ acc: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ r: UnsafePointer<Float>, _ n: Int) -> Float {
        var sq = SIMD16<Float>()
        var t = 0
        while t + 16 <= n {
            let v = UnsafeRawPointer(x + t).loadUnaligned(as: SIMD16<Float>.self) - UnsafeRawPointer(r + t).loadUnaligned(as: SIMD16<Float>.self)
            let a = UnsafeRawPointer(acc + t).loadUnaligned(as: SIMD16<Float>.self) + v
            UnsafeMutableRawPointer(acc + t).storeBytes(of: a, as: SIMD16<Float>.self)
            sq += v * v
            t += 16
        }
        var rest: Float = 0
        while t < n {
            let v = x[t] - r[t]
            acc[t] += v
            rest += v * v
            t += 1
        }
        return sq.sum() + rest
    }

    /// The scores. Refuses fewer than 2 images, and non-finite sums (NaN or infinity in the components),
    /// naming the first component concerned by `names` when given.
    public func finish(names: [String] = [], source: String = "components") throws -> ScoreResult {
        let c = components, k = basisCount
        let n = Double(count)
        guard count >= 2 else {
            throw ScoreError(source, "\(count) image\(count == 1 ? "" : "s"): the scores need at least 2 (they are correlations over images)")
        }
        func name(_ i: Int) -> String { i < names.count ? names[i] : "component \(i)" }
        // A component's own sums first (a NaN in one component reaches every component's ΣqQ through P).
        for comp in 0..<c {
            let bad = (0..<k).contains { !(sq[comp * k + $0].isFinite && sq2[comp * k + $0].isFinite) }
                || (varianceExplained && (!sa2[comp].isFinite || (0..<width).contains { !sa[comp * width + $0].isFinite }))
            if bad { throw ScoreError(source, "component \(name(comp)) holds NaN or infinite values") }
        }
        if sqQ.contains(where: { !$0.isFinite }) || sQ2.contains(where: { !$0.isFinite }) {
            throw ScoreError(source, "the components hold values too large to sum (the total overflows)")
        }
        // Var and cov with 1/N; the unbiased stds multiply to √(varP varp)·N/(N−1).
        var varTotal = [Double](repeating: 0, count: k)
        for j in 0..<k {
            let m = sQ[j] / n
            varTotal[j] = max(0, sQ2[j] / n - m * m)
        }
        var varP = [Double](repeating: 0, count: c * k), attributedTerm = [Double](repeating: 0, count: c * k)
        var constant = [Bool](repeating: false, count: c * k)
        for comp in 0..<c {
            for j in 0..<k {
                let t = comp * k + j
                let m = sq[t] / n, mQ = sQ[j] / n
                let v = max(0, sq2[t] / n - m * m)
                varP[t] = v
                let shift = shiftP?[t] ?? 0
                let meanSquare = v + (m + shift) * (m + shift)
                let isConstant = v == 0 || v.squareRoot() <= 1e-6 * max(meanSquare.squareRoot(), varTotal[j].squareRoot())
                constant[t] = isConstant
                let totalConstant = varTotal[j] == 0 || varTotal[j].squareRoot() <= 1e-6 * (varTotal[j] + (mQ + shiftTotal[j]) * (mQ + shiftTotal[j])).squareRoot()
                if isConstant || totalConstant { attributedTerm[t] = 0; continue }
                let cov = sqQ[t] / n - m * mQ
                attributedTerm[t] = cov / ((v * varTotal[j]).squareRoot() * n / (n - 1))
            }
        }
        var traces = [Double](repeating: 0, count: c)
        var constantComponents: [Int] = []
        if let known = knownTraces {
            precondition(known.count == c, "\(known.count) known traces for \(c) components")
            for comp in 0..<c {
                guard known[comp].isFinite else { throw ScoreError(source, "component \(name(comp)) has a non-finite variance") }
                // Constant as in the summed path: no variance above float rounding of its values.
                var total = 0.0
                for j in 0..<k { total += varP[comp * k + j] }
                if known[comp] <= 0 || (known[comp] <= 1e-12 && total == 0) { constantComponents.append(comp) } else { traces[comp] = known[comp] }
            }
        } else if varianceExplained {
            for comp in 0..<c {
                var meanNorm = 0.0, shiftNorm = 0.0, cross = 0.0
                for t in 0..<width {
                    let m = sa[comp * width + t] / n
                    let r = Double(shiftA[comp * width + t])
                    meanNorm += m * m; shiftNorm += r * r; cross += m * r
                }
                let tr = max(0, sa2[comp] / n - meanNorm)
                // E‖a‖² = tr + ‖E a‖², E a = m + r.
                let meanSquare = tr + meanNorm + 2 * cross + shiftNorm
                if tr == 0 || tr <= 1e-12 * meanSquare { constantComponents.append(comp); traces[comp] = 0 } else { traces[comp] = tr }
            }
        }
        var out: [PropertyScores] = []
        for (g, range) in groups.enumerated() {
            let kf = Double(range.count)
            var attributed = [Double](repeating: 0, count: c), explained = [Double](repeating: 0, count: c)
            var constantDirs = [Int](repeating: 0, count: c)
            for comp in 0..<c {
                var sum = 0.0, inSpan = 0.0
                for j in range {
                    sum += attributedTerm[comp * k + j]
                    inSpan += varP[comp * k + j]
                    if constant[comp * k + j] { constantDirs[comp] += 1 }
                }
                attributed[comp] = sum / kf
                explained[comp] = traces[comp] > 0 ? inSpan / traces[comp] : 0
            }
            out.append(PropertyScores(name: properties[g].name, texts: properties[g].texts, varianceAttributed: attributed,
                                      varianceExplained: varianceExplained || knownTraces != nil ? explained : nil, constantDirections: constantDirs))
        }
        return ScoreResult(components: names, images: count, properties: out, constantComponents: constantComponents)
    }
}

/// A block of rows of some components: [rows, slots.count, D] from `base`, slot i being component slots[i].
struct ChunkPart: @unchecked Sendable {
    let base: UnsafePointer<Float>
    let slots: [Int]
}

// MARK: - Streaming over a run

/// Where a run's aligned components come from: which stored tensors, which component each slot of
/// them is, and the map into CLIP space (nil: the identity, a CLIP run).
public struct ScoreSource: Sendable {
    /// Component names in the run's order.
    public var names: [String]
    /// Stored tensors to read, and per tensor the component of each of its slots (per-image shape [slots, d]).
    public var tensors: [String]
    public var slots: [[Int]]
    /// d, the stored width; D, the aligned (CLIP) width.
    public var storedWidth: Int
    public var width: Int
    /// The alignment's maps, nil for a CLIP run.
    public var maps: AlignerWeights?
    /// tr Cov(a_c) per component over the run, when the alignment recorded it for this run: the
    /// denominator of variance_explained, so a pass needs only the projections (W_c·Q folded).
    public var traces: [Double]?

    public init(names: [String], tensors: [String], slots: [[Int]], storedWidth: Int, width: Int, maps: AlignerWeights?) {
        self.names = names; self.tensors = tensors; self.slots = slots
        self.storedWidth = storedWidth; self.width = width; self.maps = maps
    }

    /// The source of a run: a CLIP run's pre/attn/attn_bias/mlp/readout_bias slices as they are (the
    /// official identity aligner; refused with an alignment), a timm run's components through
    /// `alignment` (required; checked against the run).
    public static func resolve(_ reader: StoreReader, alignment: Alignment?) throws -> ScoreSource {
        let run = reader.run.path
        let list = try RunComponents.describe(reader)
        let names = list.map(\.name)
        if RunComponents.isTimm(reader) {
            guard let al = alignment else {
                throw ScoreError(run, "a run of \(reader.manifest.model.id) (timm), whose components live in its own space, not CLIP's: "
                    + "scoring against text needs them mapped into CLIP space first; make an alignment with "
                    + "`refract align --run \(run) --output ALIGN` and pass it with --align ALIGN")
            }
            try al.check(run: reader)
            let spec = try reader.spec("components")
            guard spec.shape == [names.count, al.maps.width] else {
                throw ScoreError(run, "the components tensor has shape \(spec.shape), the manifest lists \(names.count) components of width \(al.maps.width)")
            }
            var source = ScoreSource(names: names, tensors: ["components"], slots: [Array(0..<names.count)],
                                     storedWidth: al.maps.width, width: al.maps.clipWidth, maps: al.maps)
            if let v = al.manifest.componentVariance, al.manifest.runId == reader.manifest.runId,
               v.images == reader.rowCount, v.traces.count == names.count {
                source.traces = v.traces
            }
            return source
        }
        if let al = alignment {
            throw ScoreError(al.directory.path, "\(run) is a run of the CLIP model \(reader.manifest.model.id): its components are in CLIP "
                + "space already (the official identity aligner); leave out --align")
        }
        let dims = reader.manifest.dimensions
        let heads = dims["heads"] ?? 0
        var tensors: [String] = [], slots: [[Int?]] = []
        func place(_ tensor: String, _ slot: Int, _ component: Int) throws {
            let spec = try reader.spec(tensor)
            let count = spec.shape.dropLast().reduce(1, *)
            guard slot < count else { throw ScoreError(run, "component \(names[component]) is slot \(slot) of \(tensor) \(spec.shape), which has \(count)") }
            if tensors.firstIndex(of: tensor) == nil { tensors.append(tensor); slots.append(Array(repeating: nil, count: count)) }
            slots[tensors.firstIndex(of: tensor)!][slot] = component
        }
        for (c, info) in list.enumerated() {
            switch info.kind {
            case .`init`: try place("pre", 0, c)
            case .head: try place("attn", (info.block ?? 0) * heads + (info.head ?? 0), c)
            case .attnBias: try place("attn_bias", info.block ?? 0, c)
            case .mlp: try place("mlp", info.block ?? 0, c)
            case .readoutBias: try place("readout_bias", 0, c)
            default: throw ScoreError(run, "component \(info.name) (\(info.kind.rawValue)) is not one a CLIP run stores")
            }
        }
        var full: [[Int]] = []
        for (t, s) in zip(tensors, slots) {
            guard s.allSatisfy({ $0 != nil }) else { throw ScoreError(run, "the tensor \(t) has slots that are no listed component") }
            full.append(s.map { $0! })
        }
        let width = try reader.spec("pre").shape.last ?? 0
        return ScoreSource(names: names, tensors: tensors, slots: full, storedWidth: width, width: width, maps: nil)
    }
}

/// Scores of properties over a whole run, in one streaming pass.
public enum ComponentScoring {
    /// Rows per chunk: about 4 MB of aligned components, so a chunk's GEMM and sums run from cache.
    static func chunkRows(components c: Int, width d: Int) -> Int { max(1, (4 << 20) / max(1, c * d * 4)) }

    /// Streams the run once and scores every property. `progress` gets the images done so far.
    /// `chunkRows`: images per chunk (default: about 4 MB of aligned components), for tests and tuning.
    public static func score(_ reader: StoreReader, source: ScoreSource, properties: [ScoreProperty], varianceExplained: Bool = true,
                             chunkRows: Int? = nil, progress: ((Int) -> Void)? = nil) throws -> ScoreResult {
        let known = varianceExplained ? source.traces : nil
        var acc = try ScoreAccumulator(components: source.names.count, width: source.width, properties: properties,
                                       varianceExplained: varianceExplained && known == nil)
        acc.knownTraces = known
        let maps = source.maps
        // Without variance_explained, a timm run needs only W_c·Q [d, K] per component, not the aligned components.
        let folded: [Float]? = (maps != nil && !acc.varianceExplained) ? foldedMaps(maps!, acc) : nil
        let chunk = max(1, chunkRows ?? Self.chunkRows(components: source.names.count, width: max(source.width, source.storedWidth)))
        var done = 0
        try reader.forEachShardInPlace(source.tensors) { rows, buffers in
            for (name, (a, slots)) in zip(source.tensors, zip(buffers, source.slots)) {
                let expected = rows.count * slots.count * source.storedWidth
                guard a.count == expected else { throw ScoreError(reader.run.path, "tensor \(name) has \(a.count) values in rows \(rows), expected \(expected)") }
            }
            guard rows.count > 0 else { return }
            let parts = zip(buffers, source.slots).map { ChunkPart(base: $0.baseAddress!, slots: $1) }
            feed(&acc, rows: rows.count, parts: parts, maps: maps, folded: folded, chunk: chunk)
            done += rows.count
            progress?(done)
        }
        return try acc.finish(names: source.names, source: reader.run.path)
    }

    /// W_c·Q [C, d, K] for every component.
    static func foldedMaps(_ maps: AlignerWeights, _ acc: ScoreAccumulator) -> [Float] {
        let c = maps.components, d = maps.width, e = maps.clipWidth, k = acc.basisCount
        var out = [Float](repeating: 0, count: c * d * k)
        maps.weights.withUnsafeBufferPointer { w in
            acc.basis.withUnsafeBufferPointer { q in
                out.withUnsafeMutableBufferPointer { o in
                    for comp in 0..<c {
                        BLAS.sgemm(.none, .none, m: d, n: k, k: e, a: w.baseAddress! + comp * d * e, lda: e, b: q.baseAddress!, ldb: k,
                                   c: o.baseAddress! + comp * d * k, ldc: k)
                    }
                }
            }
        }
        return out
    }

    /// One worker's sums (each worker writes only its own box).
    final class WorkerSums: @unchecked Sendable {
        var sums: ScoreAccumulator
        init(_ sums: ScoreAccumulator) { self.sums = sums }
    }

    /// Adds `rows` images held in `parts` (stored layout) to `acc`: the first chunk of a run sets the
    /// shifts on its own; the rest is split over the cores (single-threaded BLAS each), then merged.
    static func feed(_ acc: inout ScoreAccumulator, rows: Int, parts: [ChunkPart], maps: AlignerWeights?, folded: [Float]?, chunk: Int) {
        var start = 0
        if !acc.hasShifts {
            let n = min(rows, chunk)
            process(&acc, parts: parts, rows: 0..<n, maps: maps, folded: folded)
            start = n
        }
        guard start < rows else { return }
        let workers = min(BLAS.threads, (rows - start + chunk - 1) / chunk)
        if workers <= 1 {
            var r = start
            while r < rows { let e = min(rows, r + chunk); process(&acc, parts: parts, rows: r..<e, maps: maps, folded: folded); r = e }
            return
        }
        let boxes = (0..<workers).map { _ in WorkerSums(acc.emptyCopy()) }
        let total = rows - start, first = start
        BLAS.withSingleThreadedBLAS {
            Parallel.forEach(workers) { w in
                let box = boxes[w]
                var r = first + w * total / workers
                let end = first + (w + 1) * total / workers
                while r < end { let e = min(end, r + chunk); process(&box.sums, parts: parts, rows: r..<e, maps: maps, folded: folded); r = e }
            }
        }
        for b in boxes { acc.merge(b.sums) }
    }

    /// One chunk of rows `rows` of the stored parts.
    static func process(_ acc: inout ScoreAccumulator, parts: [ChunkPart], rows: Range<Int>, maps: AlignerWeights?, folded: [Float]?) {
        let b = rows.count
        guard let maps else {
            let shifted = parts.map { ChunkPart(base: $0.base + rows.lowerBound * $0.slots.count * acc.width, slots: $0.slots) }
            acc.accumulate(rows: b, parts: shifted)
            return
        }
        // A timm run: one part [B, C, d].
        let c = maps.components, d = maps.width, e = maps.clipWidth, k = acc.basisCount
        let x = parts[0].base + rows.lowerBound * c * d
        if let folded {
            var proj = [Float](repeating: 0, count: b * c * k)
            var biasProj = [Float](repeating: 0, count: k)
            for j in 0..<k { var s: Float = 0; for t in 0..<e { s += maps.bias[t] * acc.basis[t * k + j] }; biasProj[j] = s / Float(c) }
            proj.withUnsafeMutableBufferPointer { o in
                folded.withUnsafeBufferPointer { m in
                    for comp in 0..<c {
                        BLAS.sgemm(.none, .none, m: b, n: k, k: d, a: x + comp * d, lda: c * d, b: m.baseAddress! + comp * d * k, ldb: k,
                                   c: o.baseAddress! + comp * k, ldc: c * k)
                    }
                }
                for i in 0..<(b * c) { for j in 0..<k { o[i * k + j] += biasProj[j] } }
            }
            acc.accumulate(rows: b, projections: proj, parts: [])
            return
        }
        var aligned = [Float](repeating: 0, count: b * c * e)
        aligned.withUnsafeMutableBufferPointer { o in maps.align(x, rows: b, bias: true, into: o.baseAddress!) }
        aligned.withUnsafeBufferPointer { a in
            acc.accumulate(rows: b, parts: [ChunkPart(base: a.baseAddress!, slots: Array(0..<c))])
        }
    }
}

// MARK: - Reference

/// The official formulas in plain float64 on components in memory, for tests: `aligned[(n·C + c)·D + t]`.
public enum ReferenceScores {
    /// variance_attributed per component (§3.2): the mean over the basis of cov(P_j, p_cj)/(s(P_j) s(p_cj)),
    /// cov with 1/N and s unbiased; a constant p_cj or P_j gives 0.
    public static func varianceAttributed(_ aligned: [Double], images n: Int, components c: Int, width d: Int,
                                          embeddings: Tensor) throws -> [Double] {
        let q = try ScoreBasis.orthonormal(embeddings)
        let p = projections(aligned, images: n, components: c, width: d, basis: q)     // [k][c][n]
        let nn = Double(n)
        var out = [Double](repeating: 0, count: c)
        for pj in p {
            let total = (0..<n).map { x in (0..<c).reduce(0.0) { $0 + pj[$1][x] } }
            let mt = total.reduce(0, +) / nn
            let tc = total.map { $0 - mt }
            let sT = (tc.reduce(0) { $0 + $1 * $1 } / (nn - 1)).squareRoot()
            for comp in 0..<c {
                let m = pj[comp].reduce(0, +) / nn
                let pc = pj[comp].map { $0 - m }
                let sP = (pc.reduce(0) { $0 + $1 * $1 } / (nn - 1)).squareRoot()
                // The constant guard, with standard deviations over N.
                let rms = (pj[comp].reduce(0) { $0 + $1 * $1 } / nn).squareRoot()
                let rmsT = (total.reduce(0) { $0 + $1 * $1 } / nn).squareRoot()
                let f = ((nn - 1) / nn).squareRoot()
                if sP == 0 || sT == 0 || sP * f <= 1e-6 * max(rms, sT * f) || sT * f <= 1e-6 * rmsT { continue }
                let cov = zip(tc, pc).reduce(0) { $0 + $1.0 * $1.1 } / nn
                out[comp] += cov / (sT * sP) / Double(q.count)
            }
        }
        return out
    }

    /// variance_explained per component (§3.3): tr Cov(Qᵀã_c) / tr Cov(ã_c); 0 for a constant component.
    public static func varianceExplained(_ aligned: [Double], images n: Int, components c: Int, width d: Int,
                                         embeddings: Tensor) throws -> [Double] {
        let q = try ScoreBasis.orthonormal(embeddings)
        let nn = Double(n)
        return (0..<c).map { comp in
            var mean = [Double](repeating: 0, count: d)
            for x in 0..<n { for t in 0..<d { mean[t] += aligned[(x * c + comp) * d + t] / nn } }
            var total = 0.0, inSpan = 0.0, meanSquare = 0.0
            for x in 0..<n {
                var centred = [Double](repeating: 0, count: d)
                for t in 0..<d {
                    let v = aligned[(x * c + comp) * d + t]
                    centred[t] = v - mean[t]
                    total += centred[t] * centred[t]
                    meanSquare += v * v
                }
                for b in q {
                    var dot = 0.0
                    for t in 0..<d { dot += centred[t] * b[t] }
                    inSpan += dot * dot
                }
            }
            return total == 0 || total <= 1e-12 * meanSquare ? 0 : inSpan / total
        }
    }

    /// p[j][c][x] = a_c(x)·b_j.
    static func projections(_ aligned: [Double], images n: Int, components c: Int, width d: Int, basis q: [[Double]]) -> [[[Double]]] {
        q.map { b in
            (0..<c).map { comp in
                (0..<n).map { x in
                    var dot = 0.0
                    for t in 0..<d { dot += aligned[(x * c + comp) * d + t] * b[t] }
                    return dot
                }
            }
        }
    }
}
