// MARK: - TextSpan (Gandelsman et al., ICLR 2024, Algorithm 1, with the official code's span projection)
//
// Given one head's contributions C [K, D'] over K images and a pool of text embeddings R [M, D']:
//   1. V [r, D'] = the top r right singular vectors of the uncentred C; R ← R·Vᵀ·V.
//   2. Centre C (mean μ); the reconstruction starts at μ.
//   3. m times: pick j* = argmax_j var_k((C·Rᵀ)[k, j]) (first on ties); u = R[j*]; add
//      (C·u/|u|²)·uᵀ to the reconstruction; deflate C ← C·P and R ← R·P with P = I − u·uᵀ/|u|².
//
// The literal algorithm costs K·M·D' per step (the product C·Rᵀ). Here everything runs on the
// centred covariance S = CᵀC/(K−1) [D', D'] instead, built once (one symmetric rank-K update,
// K·D'² flops, in row blocks so C is never copied whole):
//   - var_j = r_j·S·r_jᵀ, so with T = R·S the variances are the row dot products of R and T;
//   - the right singular vectors of the uncentred C are the eigenvectors of CᵀC = K−1·S + K·μμᵀ;
//   - deflation is S ← P·S·P and R ← R·P, and then T ← R·P·S·P = (T − a·wᵀ)·P with a = R·u/|u|²
//     and w = S·u: a rank-2 update, O(M·D') per step, fused with the next step's variances in one
//     pass over the rows of R and T. T is recomputed as R·S every 32 steps to bound rounding drift.
// The variance a step removes is trace(S) − trace(P·S·P) = u·S·uᵀ/|u|²; fractions are of the
// head's total centred variance (trace of S, accumulated in double from the data).
//
// Reconstruction: the deflated C at step s is C·P_1⋯P_(s−1), so the s-th coefficient of a row x is
// (x − μ)·z_s with z_s = P_1⋯P_(s−1)·u_s/|u_s|² (in exact arithmetic the u_s are orthogonal and
// z_s = u_s/|u_s|²; z_s is built in double as the algorithm states it). `reconstruct` is then two
// GEMMs: μ + ((X − μ)·Zᵀ)·U.

import Foundation
import RefractTensor

/// One description chosen by TextSpan.
public struct TextSpanStep: Sendable, Equatable {
    /// Row of the description pool (0-based).
    public var index: Int
    /// Fraction (0...1) of the head's total centred variance that this step's direction removed.
    public var varianceExplained: Double
    /// Running total of `varianceExplained` up to and including this step.
    public var cumulative: Double

    public init(index: Int, varianceExplained: Double, cumulative: Double) {
        self.index = index; self.varianceExplained = varianceExplained; self.cumulative = cumulative
    }
}

/// Wall-clock seconds of the phases of one `TextSpan.run`.
public struct TextSpanTiming: Sendable, Equatable {
    /// Mean, total variance and finiteness (one pass over C) and the centred Gram matrix (ssyrk).
    public var gram: Double = 0
    /// Top-r eigenvectors of the uncentred CᵀC (LAPACK).
    public var eigen: Double = 0
    /// Projection of the pool onto their span, and T = R·S.
    public var projection: Double = 0
    /// The greedy steps.
    public var greedy: Double = 0
    public var total: Double { gram + eigen + projection + greedy }
    public init() {}
}

public struct TextSpanResult: Sendable {
    /// The descriptions chosen, in order.
    public var steps: [TextSpanStep]
    /// Total centred variance of the contributions: the trace of their sample covariance (sum over
    /// the D' dimensions of the per-dimension variance, normalised by K − 1).
    public var totalVariance: Double
    /// μ [D'], the column mean of the contributions.
    public var mean: [Float]
    /// u_s [m, D']: the direction chosen at each step (the chosen pool row, projected and deflated
    /// by the earlier steps).
    public var directions: Tensor
    /// z_s [m, D']: the coefficient of row x on step s is (x − μ)·z_s.
    public var readout: Tensor
    public var timing: TextSpanTiming
    /// The span rank used (the one asked for, or the contributions' rank when that is smaller and
    /// the caller allowed clamping).
    public var rank: Int = 0

    /// The chosen pool rows, in order.
    public var indices: [Int] { steps.map(\.index) }

    public init(steps: [TextSpanStep], totalVariance: Double, mean: [Float], directions: Tensor, readout: Tensor,
                timing: TextSpanTiming = TextSpanTiming()) {
        self.steps = steps; self.totalVariance = totalVariance; self.mean = mean
        self.directions = directions; self.readout = readout; self.timing = timing
    }

    /// Reconstruction of the given contributions (the same C it was fitted on, or any other rows)
    /// [N, D']: μ + Σ_s (projection on the s-th chosen deflated direction), exactly as the algorithm
    /// builds it: μ + ((X − μ)·Zᵀ)·U.
    public func reconstruct(_ contributions: Tensor) -> Tensor {
        let d = mean.count, m = steps.count
        precondition(contributions.rank == 2 && contributions.shape[1] == d,
                     "reconstruct: contributions \(contributions.shape), expected [N, \(d)]")
        let n = contributions.shape[0]
        var out = [Float](repeating: 0, count: n * d)                         // [N, D']
        for i in 0..<n { for j in 0..<d { out[i * d + j] = mean[j] } }
        guard m > 0, n > 0 else { return Tensor(shape: [n, d], data: out) }
        // Coefficients (X − μ)·Zᵀ = X·Zᵀ − (μ·z_s).
        var offset = [Float](repeating: 0, count: m)
        for s in 0..<m {
            var acc = 0.0
            for j in 0..<d { acc += Double(mean[j]) * Double(readout.data[s * d + j]) }
            offset[s] = Float(acc)
        }
        var coef = [Float](repeating: 0, count: n * m)                        // [N, m]
        contributions.data.withUnsafeBufferPointer { xp in
            readout.data.withUnsafeBufferPointer { zp in
                coef.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(.none, .transpose, m: n, n: m, k: d, a: xp.baseAddress!, lda: d,
                               b: zp.baseAddress!, ldb: d, c: cp.baseAddress!, ldc: m)
                }
            }
        }
        for i in 0..<n { for s in 0..<m { coef[i * m + s] -= offset[s] } }
        coef.withUnsafeBufferPointer { cp in
            directions.data.withUnsafeBufferPointer { up in
                out.withUnsafeMutableBufferPointer { op in
                    BLAS.sgemm(.none, .none, m: n, n: d, k: m, a: cp.baseAddress!, lda: m,
                               b: up.baseAddress!, ldb: d, beta: 1, c: op.baseAddress!, ldc: d)
                }
            }
        }
        return Tensor(shape: [n, d], data: out)
    }
}

public struct TextSpanError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable, Equatable {
        /// A tensor is not 2-D, or the widths of contributions and texts differ, or the width is 0.
        case shape
        /// Fewer than 2 images.
        case tooFewImages
        /// No text embeddings.
        case emptyPool
        /// Negative, more than the pool, or more than the span rank.
        case steps
        /// Below 1, or above the numerical rank of the contributions.
        case rank
        /// NaN or infinity in the contributions or the texts.
        case notFinite
        /// The contributions are the same for every image.
        case noVariance
        /// The chosen direction vanished after deflation: the projected pool spans fewer dimensions
        /// than the steps asked for.
        case poolExhausted
    }
    public var kind: Kind
    public var message: String
    public var description: String { "TextSpan: \(message)" }
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
}

public enum TextSpan {
    /// An eigenvalue of CᵀC counts towards the numerical rank of C when it is above this fraction of
    /// the largest (float32 rounding of the Gram matrix sits near 1e-7 of it).
    public static let rankTolerance = 1e-6
    /// A step's direction counts as vanished when |u|² is below this fraction of the largest squared
    /// row norm of the projected pool (float32 rounding of a deflated-away row is ~1e-13 of it).
    public static let exhaustedTolerance = 1e-10
    /// T is recomputed as R·S after this many rank-2 updates.
    static let refreshInterval = 32

    /// Runs TextSpan on one head. `contributions` C [K, D'] (float32), `texts` R [M, D'] (the pool's
    /// embeddings, L2-normalised rows), `steps` m (0...min(M, rank)), `rank` r (1...numerical rank of C).
    /// With `clampRank`, a rank above the contributions' numerical rank is lowered to it (a head's
    /// contributions live in its value space, e.g. 64 dimensions, below the paper's default 80)
    /// instead of being an error; `TextSpanResult.rank` says what was used.
    public static func run(contributions: Tensor, texts: Tensor, steps: Int, rank requested: Int,
                           clampRank: Bool = false) throws -> TextSpanResult {
        var rank = requested
        let (k, d, m) = try validate(contributions: contributions, texts: texts, steps: steps, rank: rank)
        try BLAS.load()
        try LAPACK.load()
        var timing = TextSpanTiming()
        var t0 = clock()

        // 1. Mean, total variance, finiteness; the centred Gram matrix.
        let stats = try columnStatistics(contributions)
        try checkFinite(texts, "texts")
        let totalVariance = stats.totalVariance
        guard totalVariance > 0 else {
            throw TextSpanError(.noVariance, "the contributions are the same for all \(k) images (zero centred variance); "
                                + "there is nothing to explain")
        }
        let gram = try centredGram(contributions, mean: stats.mean)           // [D', D'] upper, Σ (c − μ)ᵀ(c − μ)
        timing.gram = clock() - t0; t0 = clock()

        // 2. Top-r right singular vectors of the uncentred C: eigenvectors of CᵀC = gram + K·μμᵀ.
        var uncentred = gram
        for i in 0..<d {
            for j in i..<d { uncentred[i * d + j] += Float(Double(k) * stats.mean[i] * stats.mean[j]) }
        }
        var eig = try LAPACK.symmetricEigen(Tensor(shape: [d, d], data: uncentred), largest: rank)
        let largest = Double(eig.values[0])
        if clampRank, largest > 0, !(Double(eig.values[rank - 1]) > rankTolerance * largest) {
            let q = numericalRank(eigenvalues: eig.values)
            guard q >= steps else {
                throw TextSpanError(.steps, "\(steps) steps asked for but the contributions have rank \(q): at most \(q) "
                                    + "directions can be removed")
            }
            rank = q
            eig = (Array(eig.values.prefix(q)), Tensor(shape: [q, d], data: Array(eig.vectors.data.prefix(q * d))))
        }
        if !(largest > 0) || !(Double(eig.values[rank - 1]) > rankTolerance * largest) {
            let all = try LAPACK.symmetricEigenvalues(Tensor(shape: [d, d], data: uncentred))
            let q = numericalRank(eigenvalues: all)
            throw TextSpanError(.rank, "rank \(rank) is larger than the rank of the contributions (\(q): the eigenvalues of CᵀC "
                                + "above \(rankTolerance) of the largest, for \(k) images of width \(d)); ask for rank ≤ \(q)")
        }
        timing.eigen = clock() - t0; t0 = clock()

        // 3. Pool projected on the span: R ← (R·Vᵀ)·V. Covariance S, T = R·S, variances.
        var r = project(texts, onto: eig.vectors)                              // [M, D']
        var s = [Float](repeating: 0, count: d * d)                           // [D', D'] full, /(K−1)
        let scale = Float(1 / Double(k - 1))
        for i in 0..<d {
            for j in i..<d {
                let v = gram[i * d + j] * scale
                s[i * d + j] = v; s[j * d + i] = v
            }
        }
        var t = matmul(r, rows: m, s, d: d)                                   // [M, D']
        var vars = rowDots(r, t, rows: m, d: d)                               // [M]
        var maxNorm = 0.0
        r.withUnsafeBufferPointer { rp in
            for j in 0..<m { maxNorm = max(maxNorm, Double(dot(rp.baseAddress! + j * d, rp.baseAddress! + j * d, d))) }
        }
        timing.projection = clock() - t0; t0 = clock()

        // 4. Greedy steps.
        var chosen = [TextSpanStep]()
        var directions = [Float](), readout = [Float]()
        var unitDirections = [[Double]]()                                     // n_i = u_i/|u_i|, double
        var cumulative = 0.0
        var u = [Float](repeating: 0, count: d), w = [Float](repeating: 0, count: d)
        for step in 0..<steps {
            if step > 0 && step % refreshInterval == 0 {
                t = matmul(r, rows: m, s, d: d)
                vars = rowDots(r, t, rows: m, d: d)
            }
            var best = 0
            for j in 1..<max(m, 1) where vars[j] > vars[best] { best = j }
            for i in 0..<d { u[i] = r[best * d + i] }
            var nu = 0.0
            for i in 0..<d { nu += Double(u[i]) * Double(u[i]) }
            guard nu > exhaustedTolerance * maxNorm else {
                throw TextSpanError(.poolExhausted, "step \(step + 1): every remaining description's direction vanished after "
                                    + "deflation (the projected pool spans only \(step) dimensions; repeated or dependent "
                                    + "descriptions); ask for at most \(step) steps")
            }
            // w = S·u, u·S·u.
            var uw = 0.0
            s.withUnsafeBufferPointer { sp in
                for i in 0..<d {
                    w[i] = u.withUnsafeBufferPointer { dot(sp.baseAddress! + i * d, $0.baseAddress!, d) }
                    uw += Double(u[i]) * Double(w[i])
                }
            }
            let removed = uw / nu
            let fraction = removed / totalVariance
            cumulative += fraction
            chosen.append(TextSpanStep(index: best, varianceExplained: fraction, cumulative: cumulative))

            // z_s = P_1⋯P_(s−1)·u/|u|², applied right to left, in double.
            var z = u.map { Double($0) / nu }
            for n in unitDirections.reversed() {
                var p = 0.0
                for i in 0..<d { p += z[i] * n[i] }
                for i in 0..<d { z[i] -= p * n[i] }
            }
            let norm = nu.squareRoot()
            unitDirections.append(u.map { Double($0) / norm })
            directions += u
            readout += z.map { Float($0) }
            if step == steps - 1 { break }

            // S ← P·S·P = S − n·wnᵀ − wn·nᵀ + c·n·nᵀ (n = u/|u|, wn = S·n, c = n·S·n).
            let nf = u.map { Float(Double($0) / norm) }, wn = w.map { Float(Double($0) / norm) }
            let c = Float(removed)
            s.withUnsafeMutableBufferPointer { sp in
                for i in 0..<d {
                    let ni = nf[i], wi = wn[i]
                    for j in 0..<d { sp[i * d + j] -= (ni * wn[j] + wi * nf[j]) - c * (ni * nf[j]) }
                }
            }
            // R ← R − a·uᵀ, T ← T − a·wᵀ − b·uᵀ (a = R·u/|u|², b = (T·u − a·(u·S·u))/|u|²), then the
            // variances r_j·t_j for the next step, one pass over the rows.
            deflate(r: &r, t: &t, vars: &vars, rows: m, d: d, u: u, w: w, nu: nu, uw: uw)
        }
        timing.greedy = clock() - t0

        var result = TextSpanResult(steps: chosen, totalVariance: totalVariance, mean: stats.mean.map { Float($0) },
                                    directions: Tensor(shape: [chosen.count, d], data: directions),
                                    readout: Tensor(shape: [chosen.count, d], data: readout), timing: timing)
        result.rank = rank
        return result
    }

    /// Numerical rank of the contributions C [K, D']: the eigenvalues of CᵀC above `rankTolerance`
    /// of the largest. The largest `rank` `run` accepts.
    public static func numericalRank(_ contributions: Tensor) throws -> Int {
        guard contributions.rank == 2 else {
            throw TextSpanError(.shape, "contributions must be a 2-D [images, width] tensor, got shape \(contributions.shape)")
        }
        try BLAS.load()
        try LAPACK.load()
        let k = contributions.shape[0], d = contributions.shape[1]
        if k == 0 || d == 0 { return 0 }
        let stats = try columnStatistics(contributions)
        var g = try centredGram(contributions, mean: stats.mean)
        for i in 0..<d { for j in i..<d { g[i * d + j] += Float(Double(k) * stats.mean[i] * stats.mean[j]) } }
        return numericalRank(eigenvalues: try LAPACK.symmetricEigenvalues(Tensor(shape: [d, d], data: g)))
    }

    static func numericalRank(eigenvalues: [Float]) -> Int {
        guard let top = eigenvalues.first, top > 0 else { return 0 }
        return eigenvalues.filter { Double($0) > rankTolerance * Double(top) }.count
    }

    // MARK: Validation

    static func validate(contributions c: Tensor, texts r: Tensor, steps: Int, rank: Int) throws -> (Int, Int, Int) {
        guard c.rank == 2 else {
            throw TextSpanError(.shape, "contributions must be a 2-D [images, width] tensor, got shape \(c.shape)")
        }
        guard r.rank == 2 else {
            throw TextSpanError(.shape, "texts must be a 2-D [descriptions, width] tensor, got shape \(r.shape)")
        }
        let k = c.shape[0], d = c.shape[1], m = r.shape[0]
        guard r.shape[1] == d else {
            throw TextSpanError(.shape, "contributions are \(d) wide (shape \(c.shape)) but the text embeddings are "
                                + "\(r.shape[1]) wide (shape \(r.shape))")
        }
        guard d > 0 else { throw TextSpanError(.shape, "contributions and texts have width 0") }
        guard k >= 2 else {
            throw TextSpanError(.tooFewImages, "\(k) image(s); TextSpan needs at least 2 (a variance over images)")
        }
        guard m > 0 else { throw TextSpanError(.emptyPool, "the description pool is empty (0 text embeddings)") }
        guard steps >= 0 else { throw TextSpanError(.steps, "steps must not be negative, got \(steps)") }
        guard steps <= m else {
            throw TextSpanError(.steps, "\(steps) steps asked for but the pool has only \(m) descriptions")
        }
        guard rank >= 1 else { throw TextSpanError(.rank, "rank must be at least 1, got \(rank)") }
        guard rank <= d else {
            throw TextSpanError(.rank, "rank \(rank) is larger than the width \(d) of the contributions (and so than their rank)")
        }
        guard steps <= rank else {
            throw TextSpanError(.steps, "\(steps) steps asked for but the pool is projected onto a span of rank \(rank): "
                                + "at most \(rank) directions can be removed")
        }
        return (k, d, m)
    }

    static func checkFinite(_ x: Tensor, _ what: String) throws {
        let d = x.shape[1]
        let bad = x.data.withUnsafeBufferPointer { p -> Int? in
            for i in 0..<p.count where !p[i].isFinite { return i }
            return nil
        }
        if let i = bad {
            throw TextSpanError(.notFinite, "the \(what) have a non-finite value (\(x.data[i])) at row \(i / d), column \(i % d)")
        }
    }

    // MARK: Kernels

    static func clock() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Column means and the total centred variance Σ_j var_j (sample, /(K−1)), in double, over row
    /// chunks in parallel; throws on a non-finite contribution.
    static func columnStatistics(_ c: Tensor) throws -> (mean: [Double], totalVariance: Double) {
        let k = c.shape[0], d = c.shape[1]
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, k / 1024))
        var sums = [Double](repeating: 0, count: workers * 2 * d)             // per worker: Σx [D'], Σx² [D']
        c.data.withUnsafeBufferPointer { cp in
            sums.withUnsafeMutableBufferPointer { sp in
                let cs = SendablePointer(cp.baseAddress!), ss = SendablePointer(sp.baseAddress!)
                Parallel.forEach(workers) { wk in
                    let x0 = UnsafePointer(cs.pointer)
                    let sum = ss.pointer + wk * 2 * d, sq = sum + d
                    for row in (wk * k / workers)..<((wk + 1) * k / workers) {
                        let x = x0 + row * d
                        for j in 0..<d {
                            let v = Double(x[j])
                            sum[j] += v
                            sq[j] += v * v
                        }
                    }
                }
            }
        }
        var mean = [Double](repeating: 0, count: d)
        var total = 0.0
        for j in 0..<d {
            var s = 0.0, q = 0.0
            for wk in 0..<workers { s += sums[wk * 2 * d + j]; q += sums[wk * 2 * d + d + j] }
            guard s.isFinite && q.isFinite else {
                try checkFinite(c, "contributions")
                break
            }
            mean[j] = s / Double(k)
            total += max(0, q - s * mean[j])
        }
        return (mean, total / Double(k - 1))
    }

    /// Σ_k (c_k − μ)ᵀ(c_k − μ) [D', D'], upper triangle (row-major) filled, the lower mirrored; the
    /// rows are centred block by block into a small buffer for ssyrk.
    static func centredGram(_ c: Tensor, mean: [Double]) throws -> [Float] {
        let k = c.shape[0], d = c.shape[1]
        let block = max(1, min(k, (1 << 21) / d))
        var buffer = [Float](repeating: 0, count: block * d)
        var g = [Float](repeating: 0, count: d * d)
        let mu = mean.map { Float($0) }
        try c.data.withUnsafeBufferPointer { cp in
            try g.withUnsafeMutableBufferPointer { gp in
                try buffer.withUnsafeMutableBufferPointer { bp in
                    var start = 0
                    while start < k {
                        let rows = min(block, k - start)
                        for i in 0..<rows {
                            let x = cp.baseAddress! + (start + i) * d, y = bp.baseAddress! + i * d
                            for j in 0..<d { y[j] = x[j] - mu[j] }
                        }
                        try LAPACK.ssyrkUpperTransposed(n: d, k: rows, a: bp.baseAddress!, lda: d,
                                                        beta: start == 0 ? 0 : 1, c: gp.baseAddress!, ldc: d)
                        start += rows
                    }
                }
            }
        }
        for i in 0..<d { for j in 0..<i { g[i * d + j] = g[j * d + i] } }
        return g
    }

    /// R·Vᵀ·V for R [M, D'] and orthonormal rows V [r, D'].
    static func project(_ texts: Tensor, onto v: Tensor) -> [Float] {
        let m = texts.shape[0], d = texts.shape[1], r = v.shape[0]
        var coef = [Float](repeating: 0, count: m * r)                        // [M, r]
        var out = [Float](repeating: 0, count: m * d)                         // [M, D']
        texts.data.withUnsafeBufferPointer { tp in
            v.data.withUnsafeBufferPointer { vp in
                coef.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(.none, .transpose, m: m, n: r, k: d, a: tp.baseAddress!, lda: d,
                               b: vp.baseAddress!, ldb: d, c: cp.baseAddress!, ldc: r)
                }
                coef.withUnsafeBufferPointer { cp in
                    out.withUnsafeMutableBufferPointer { op in
                        BLAS.sgemm(.none, .none, m: m, n: d, k: r, a: cp.baseAddress!, lda: r,
                                   b: vp.baseAddress!, ldb: d, c: op.baseAddress!, ldc: d)
                    }
                }
            }
        }
        return out
    }

    /// A [rows, D'] · S [D', D'].
    static func matmul(_ a: [Float], rows: Int, _ s: [Float], d: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * d)
        a.withUnsafeBufferPointer { ap in
            s.withUnsafeBufferPointer { sp in
                out.withUnsafeMutableBufferPointer { op in
                    BLAS.sgemm(.none, .none, m: rows, n: d, k: d, a: ap.baseAddress!, lda: d,
                               b: sp.baseAddress!, ldb: d, c: op.baseAddress!, ldc: d)
                }
            }
        }
        return out
    }

    static func rowDots(_ a: [Float], _ b: [Float], rows: Int, d: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                for j in 0..<rows { out[j] = dot(ap.baseAddress! + j * d, bp.baseAddress! + j * d, d) }
            }
        }
        return out
    }

    /// The fused per-row deflation of R and T and the next variances, over row chunks in parallel.
    static func deflate(r: inout [Float], t: inout [Float], vars: inout [Float], rows m: Int, d: Int,
                        u: [Float], w: [Float], nu: Double, uw: Double) {
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, m / 256))
        r.withUnsafeMutableBufferPointer { rp in
            t.withUnsafeMutableBufferPointer { tp in
                vars.withUnsafeMutableBufferPointer { vp in
                    u.withUnsafeBufferPointer { up in
                        w.withUnsafeBufferPointer { wp in
                            let rs = SendablePointer(rp.baseAddress!), ts = SendablePointer(tp.baseAddress!)
                            let vs = SendablePointer(vp.baseAddress!)
                            let us = SendablePointer(up.baseAddress!), ws = SendablePointer(wp.baseAddress!)
                            Parallel.forEach(workers) { wk in
                                let u = UnsafePointer(us.pointer), w = UnsafePointer(ws.pointer)
                                for j in (wk * m / workers)..<((wk + 1) * m / workers) {
                                    let rj = rs.pointer + j * d, tj = ts.pointer + j * d
                                    let ru = Double(dot(rj, u, d)), tu = Double(dot(tj, u, d))
                                    let a = ru / nu, b = (tu - a * uw) / nu
                                    let af = Float(a), bf = Float(b)
                                    for i in 0..<d {
                                        rj[i] -= af * u[i]
                                        tj[i] -= af * w[i] + bf * u[i]
                                    }
                                    vs.pointer[j] = dot(rj, tj, d)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Σ a[i]·b[i] in float with 16 lanes of partial sums.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            acc0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: i * 4 + 32, as: SIMD8<Float>.self)
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }
}
