// MARK: - TextSpan, reference
//
// The algorithm literally (Gandelsman et al., Algorithm 1, as the official code runs it), in double
// precision, with nothing clever: right singular vectors from a Jacobi eigendecomposition of CᵀC,
// the projection R·Vᵀ·V, then every step the full product D = C·Rᵀ, the sample standard deviation
// of each column, the first argmax, and explicit deflation of C and R. Slow (K·M·D' per step); for
// tests only, on small inputs.

import Foundation
import RefractTensor

public struct TextSpanReferenceResult: Sendable {
    public var indices: [Int]
    /// Per step: (centred variance before − after) / total centred variance, and the running sum.
    public var varianceExplained: [Double]
    public var cumulative: [Double]
    /// Total centred variance (sum of the per-dimension sample variances).
    public var totalVariance: Double
    /// The reconstruction of the fitted contributions [K][D'].
    public var reconstruction: [[Double]]
}

public enum TextSpanReference {
    /// `project: false` skips step 1 (the span projection of the pool).
    public static func run(contributions: Tensor, texts: Tensor, steps: Int, rank: Int,
                           project: Bool = true) -> TextSpanReferenceResult {
        let k = contributions.shape[0], d = contributions.shape[1], m = texts.shape[0]
        var c = (0..<k).map { i in (0..<d).map { Double(contributions.data[i * d + $0]) } }
        var r = (0..<m).map { i in (0..<d).map { Double(texts.data[i * d + $0]) } }

        // 1. V = top-r right singular vectors of the uncentred C (eigenvectors of CᵀC); R ← R·Vᵀ·V.
        if project {
            var g = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
            for row in c { for i in 0..<d { for j in 0..<d { g[i][j] += row[i] * row[j] } } }
            let v = Array(ReferenceEigen.jacobi(g).vectors.prefix(rank))
            r = r.map { row in
                var out = [Double](repeating: 0, count: d)
                for vec in v {
                    let p = zip(row, vec).reduce(0) { $0 + $1.0 * $1.1 }
                    for i in 0..<d { out[i] += p * vec[i] }
                }
                return out
            }
        }

        // 2. Centre; the reconstruction starts at the mean.
        let mean = (0..<d).map { j in c.reduce(0) { $0 + $1[j] } / Double(k) }
        c = c.map { row in (0..<d).map { row[$0] - mean[$0] } }
        var recon = [[Double]](repeating: mean, count: k)
        func totalVariance(_ x: [[Double]]) -> Double {
            var t = 0.0
            for j in 0..<d {
                let mu = x.reduce(0) { $0 + $1[j] } / Double(k)
                t += x.reduce(0) { $0 + ($1[j] - mu) * ($1[j] - mu) } / Double(k - 1)
            }
            return t
        }
        let total = totalVariance(c)
        var before = total

        // 3. Greedy steps.
        func dot(_ a: [Double], _ b: [Double]) -> Double {
            var s = 0.0
            for i in 0..<a.count { s += a[i] * b[i] }
            return s
        }
        var indices = [Int](), explained = [Double](), cumulative = [Double]()
        var column = [Double](repeating: 0, count: k)
        for _ in 0..<steps {
            var bestStd = -Double.infinity, best = 0
            for j in 0..<m {
                for i in 0..<k { column[i] = dot(c[i], r[j]) }                // D[:, j] = C · R[j]
                let mu = column.reduce(0, +) / Double(k)
                var ss = 0.0
                for v in column { ss += (v - mu) * (v - mu) }
                let std = (ss / Double(k - 1)).squareRoot()                    // sample std
                if std > bestStd { bestStd = std; best = j }
            }
            indices.append(best)
            let u = r[best]
            let nu = dot(u, u)
            for i in 0..<k {
                let coef = dot(c[i], u) / nu
                for j in 0..<d { recon[i][j] += coef * u[j]; c[i][j] -= coef * u[j] }
            }
            for i in 0..<m {
                let coef = dot(r[i], u) / nu
                for j in 0..<d { r[i][j] -= coef * u[j] }
            }
            let after = totalVariance(c)
            explained.append((before - after) / total)
            cumulative.append((cumulative.last ?? 0) + (before - after) / total)
            before = after
        }
        return TextSpanReferenceResult(indices: indices, varianceExplained: explained, cumulative: cumulative,
                                       totalVariance: total, reconstruction: recon)
    }
}
