// MARK: - CompAlign: linear maps of every component into CLIP space
//
// Balasubramanian et al. (NeurIPS 2024), `align_with_clip` in the official code (beyond-clip.md §2):
// one map W_c [d, D] per component and a shared bias b [D]; the aligned sum ẑ = Σ_c x_c·W_c + b is
// trained towards the CLIP image embedding t with
//
//     L = mean_i (1 − cos(ẑ_i, t_i)) + λ · (1/(C·D)) · Σ_c ‖W_cᵀW_c − I‖²_F
//
// by Adam (lr 3e-4, coupled weight decay 1e-6, β 0.9/0.999, eps 1e-8). Gradients are analytic:
// with u_i = ẑ_i/‖ẑ_i‖ and t̂_i = t_i/‖t_i‖, g_i = −(t̂_i − (u_i·t̂_i)·u_i)/(B·‖ẑ_i‖);
// ∂L/∂W_c = Σ_i x_{c,i}ᵀ g_i + (4λ/(C·D))·W_c(W_cᵀW_c − I); ∂L/∂b = Σ_i g_i. The data term is one
// GEMM over all components at once (X [B, C·d] as rows, W stacked [C·d, D]).

import Foundation
import RefractTensor

/// The official hyper-parameters (beyond-clip.md §2), all overridable.
public struct AlignerHyperparameters: Codable, Sendable, Equatable {
    public var learningRate: Double = 3e-4
    public var weightDecay: Double = 1e-6
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8
    /// λ, the weight of the orthonormality term.
    public var orthonormality: Double = 1
    public var batchSize: Int = 32
    public var epochs: Int = 2
    /// Stop after this many batches without a new lowest batch loss.
    public var patience: Int = 50
    /// Standard deviation of the initial weights and bias.
    public var initialStd: Double = 0.02
    public init() {}
}

/// The maps: weights [C, d, D] (component c's map W_c = weights[c]) and bias [D].
public struct AlignerWeights: Sendable, Equatable {
    public var components: Int
    public var width: Int
    public var clipWidth: Int
    public var weights: [Float]
    public var bias: [Float]

    /// N(0, std²) for every weight and bias entry, from a seeded generator (Box–Muller on SplitMix64).
    public static func initial(components c: Int, width d: Int, clipWidth e: Int, std: Double, seed: UInt64) -> AlignerWeights {
        var rng = SplitMix64(seed: seed)
        func normal() -> Float {
            let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-300), u2 = Double(rng.next() >> 11) / Double(1 << 53)
            return Float(std * (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
        }
        return AlignerWeights(components: c, width: d, clipWidth: e, weights: (0..<(c * d * e)).map { _ in normal() },
                              bias: (0..<e).map { _ in normal() })
    }

    /// The aligned sums ẑ [B, D] of components x [B, C, d]: Σ_c x_c·W_c + b.
    public func alignedSums(_ x: Tensor) -> Tensor {
        precondition(x.rank == 3 && x.shape[1] == components && x.shape[2] == width, "aligner input \(x.shape)")
        let b = x.shape[0]
        var z = Ops.matmul(x.reshaped([b, components * width]), Tensor(shape: [components * width, clipWidth], data: weights))  // [B, D]
        for i in 0..<b { for j in 0..<clipWidth { z.data[i * clipWidth + j] += bias[j] } }
        return z
    }

    /// Each component aligned on its own: a_c = x_c·W_c + b/C, [B, C, D] (the bias split equally, as the official code).
    public func alignedComponents(_ x: Tensor, bias withBias: Bool = true) -> Tensor {
        precondition(x.rank == 3 && x.shape[1] == components && x.shape[2] == width, "aligner input \(x.shape)")
        let b = x.shape[0]
        var out = [Float](repeating: 0, count: b * components * clipWidth)
        x.data.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in align(xp.baseAddress!, rows: b, bias: withBias, into: op.baseAddress!) }
        }
        return Tensor(shape: [b, components, clipWidth], data: out)
    }

    /// `alignedComponents` on raw memory: `x` [rows, C, d] row-major (a mapped shard, say) into `out`
    /// [rows, C, D]; one GEMM per component reading its strided rows in place.
    public func align(_ x: UnsafePointer<Float>, rows b: Int, bias withBias: Bool, into out: UnsafeMutablePointer<Float>) {
        let c = components, d = width, e = clipWidth
        guard b > 0 else { return }
        weights.withUnsafeBufferPointer { w in
            for k in 0..<c {
                BLAS.sgemm(.none, .none, m: b, n: e, k: d, a: x + k * d, lda: c * d, b: w.baseAddress! + k * d * e, ldb: e,
                           c: out + k * e, ldc: c * e)                                          // x_c [B, d] · W_c [d, D]
            }
        }
        guard withBias else { return }
        let share = 1 / Float(c)
        for i in 0..<(b * c) { for t in 0..<e { out[i * e + t] += share * bias[t] } }
    }
}

/// The loss of a batch, in its parts.
public struct AlignerLoss: Sendable, Equatable {
    /// mean_i (1 − cos(ẑ_i, t_i)).
    public var cosine: Double
    /// (1/(C·D)) Σ_c ‖W_cᵀW_c − I‖².
    public var orthonormality: Double
    /// cosine + λ·orthonormality.
    public var total: Double
}

/// Adam on the maps, one batch at a time.
///
/// `train` is the fast path: the data term as two GEMMs over all components, each component's Gram
/// matrix W_cᵀW_c by a symmetric rank-k update (half a GEMM's flops) and W_c·(W_cᵀW_c − I) by a
/// symmetric product that reads the Gram's upper triangle as it is, the Adam update in float32 (as
/// PyTorch keeps it) on all cores. `referenceLossAndGradients` is the plain version (per-row float64
/// cosine, full products, copies), which the tests hold the fast one to.
public struct AlignerTrainer: Sendable {
    public var maps: AlignerWeights
    public let hyper: AlignerHyperparameters
    public private(set) var step = 0
    /// Adam's first and second moments, weights [C·d·D] then bias [D], float32.
    public private(set) var firstMoment: [Float]
    public private(set) var secondMoment: [Float]
    private var gradient: [Float]                                                  // [C·d·D + D] workspace
    private var gram: [Float]                                                      // [D, D] workspace

    public init(maps: AlignerWeights, hyper: AlignerHyperparameters = .init()) {
        self.maps = maps
        self.hyper = hyper
        let n = maps.weights.count + maps.bias.count
        firstMoment = [Float](repeating: 0, count: n)
        secondMoment = firstMoment
        gradient = firstMoment
        gram = [Float](repeating: 0, count: maps.clipWidth * maps.clipWidth)
    }

    /// A trainer restored from a checkpoint: the maps, the step count and Adam's moments as saved.
    public init(maps: AlignerWeights, hyper: AlignerHyperparameters, step: Int, firstMoment: [Float], secondMoment: [Float]) {
        self.init(maps: maps, hyper: hyper)
        precondition(firstMoment.count == gradient.count && secondMoment.count == gradient.count, "Adam moments of another size")
        self.step = step
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
    }

    /// Frees Adam's moments and the gradient workspace (training cannot go on afterwards): what is
    /// left is the maps, for the work after training.
    public mutating func releaseOptimizerState() {
        firstMoment = []; secondMoment = []; gradient = []; gram = []
    }

    /// The loss and its gradients for components x [B, C, d] and CLIP targets t [B, D], computed the
    /// fast way (what `train` steps with).
    public func lossAndGradients(_ x: Tensor, _ t: Tensor) -> (AlignerLoss, weights: [Float], bias: [Float]) {
        var copy = self
        let loss = copy.computeGradient(x, t)
        let w = maps.weights.count
        return (loss, Array(copy.gradient[0..<w]), Array(copy.gradient[w...]))
    }

    /// One Adam step on a batch; returns the batch's loss before the step.
    @discardableResult
    public mutating func train(_ x: Tensor, _ t: Tensor) -> AlignerLoss {
        let loss = computeGradient(x, t)
        step += 1
        adamStep()
        return loss
    }

    // MARK: Fast gradient

    /// Fills `gradient` with ∂L/∂(weights, bias) and returns the loss.
    private mutating func computeGradient(_ x: Tensor, _ t: Tensor) -> AlignerLoss {
        let b = x.shape[0], c = maps.components, d = maps.width, e = maps.clipWidth, cd = c * d
        precondition(x.rank == 3 && x.shape[1] == c && x.shape[2] == d, "aligner input \(x.shape)")
        precondition(t.shape == [b, e], "targets \(t.shape) for \(b) rows of width \(e)")
        var z = [Float](repeating: 0, count: b * e)                                  // ẑ [B, D]
        maps.weights.withUnsafeBufferPointer { w in
            x.data.withUnsafeBufferPointer { xp in
                z.withUnsafeMutableBufferPointer { zp in
                    BLAS.sgemm(.none, .none, m: b, n: e, k: cd, a: xp.baseAddress!, lda: cd, b: w.baseAddress!, ldb: e,
                               c: zp.baseAddress!, ldc: e)                            // X [B, C·d] · W [C·d, D]
                }
            }
        }
        // ∂L/∂ẑ per row, and the cosine term (float64 per row).
        var g = [Float](repeating: 0, count: b * e)                                  // [B, D]
        var cosine = 0.0
        for i in 0..<b {
            var zz = 0.0, tt = 0.0, zt = 0.0
            for j in 0..<e {
                let zj = Double(z[i * e + j] + maps.bias[j]), tj = Double(t.data[i * e + j])
                z[i * e + j] = Float(zj)
                zz += zj * zj; tt += tj * tj; zt += zj * tj
            }
            let zn = max(zz.squareRoot(), 1e-12), tn = max(tt.squareRoot(), 1e-12)
            let cos = zt / (zn * tn)
            cosine += 1 - cos
            let scale = -1 / (Double(b) * zn)
            for j in 0..<e {
                let u = Double(z[i * e + j]) / zn, that = Double(t.data[i * e + j]) / tn
                g[i * e + j] = Float(scale * (that - cos * u))
            }
        }
        cosine /= Double(b)
        let regScale = Float(4 * hyper.orthonormality / Double(c * e))
        var ortho = 0.0
        gradient.withUnsafeMutableBufferPointer { gp in
            let gw = gp.baseAddress!
            x.data.withUnsafeBufferPointer { xp in
                g.withUnsafeBufferPointer { gg in
                    BLAS.sgemm(.transpose, .none, m: cd, n: e, k: b, a: xp.baseAddress!, lda: cd, b: gg.baseAddress!, ldb: e,
                               c: gw, ldc: e)                                         // Xᵀ [C·d, B] · G [B, D]
                }
            }
            for j in 0..<e {                                                          // ∂L/∂b = Σ_i g_i
                var s: Float = 0
                for i in 0..<b { s += g[i * e + j] }
                gw[cd * e + j] = s
            }
            maps.weights.withUnsafeBufferPointer { wp in
                gram.withUnsafeMutableBufferPointer { sp in
                    let s = sp.baseAddress!
                    for k in 0..<c {
                        let wk = wp.baseAddress! + k * d * e                               // W_c [d, D]
                        try! LAPACK.ssyrkUpperTransposed(n: e, k: d, a: wk, lda: e, beta: 0, c: s, ldc: e)  // W_cᵀW_c, upper
                        var sum = 0.0
                        for r in 0..<e {
                            s[r * e + r] -= 1
                            let diag = Double(s[r * e + r])
                            sum += diag * diag
                            var off = 0.0
                            for q in (r + 1)..<max(r + 1, e) { off += Double(s[r * e + q]) * Double(s[r * e + q]) }
                            sum += 2 * off
                        }
                        ortho += sum
                        try! LAPACK.ssymmRightUpper(m: d, n: e, alpha: regScale, s: s, lds: e, b: wk, ldb: e, beta: 1,
                                                    c: gw + k * d * e, ldc: e)   // += (4λ/(C·D))·W_c(W_cᵀW_c − I)
                    }
                }
            }
        }
        ortho /= Double(c * e)
        return AlignerLoss(cosine: cosine, orthonormality: ortho, total: cosine + hyper.orthonormality * ortho)
    }

    /// Adam with coupled weight decay over weights and bias, float32, in slices on all cores.
    private mutating func adamStep() {
        let h = hyper
        let b1 = Float(h.beta1), b2 = Float(h.beta2), wd = Float(h.weightDecay), eps = Float(h.epsilon)
        let stepSize = Float(h.learningRate / (1 - Foundation.pow(h.beta1, Double(step))))
        let c2Root = Float((1 - Foundation.pow(h.beta2, Double(step))).squareRoot())
        let nw = maps.weights.count, n = gradient.count
        let slices = max(1, min(64, n / 65_536))
        maps.weights.withUnsafeMutableBufferPointer { wp in
            maps.bias.withUnsafeMutableBufferPointer { bp in
                firstMoment.withUnsafeMutableBufferPointer { mp in
                    secondMoment.withUnsafeMutableBufferPointer { vp in
                        gradient.withUnsafeBufferPointer { gp in
                            let w = SendablePointer(wp.baseAddress!), bias = SendablePointer(bp.baseAddress!)
                            let m = SendablePointer(mp.baseAddress!), v = SendablePointer(vp.baseAddress!)
                            let g = SendablePointer(gp.baseAddress!)
                            Parallel.forEach(slices) { s in
                                let lo = n * s / slices, hi = n * (s + 1) / slices
                                for i in lo..<hi {
                                    let theta = i < nw ? w.pointer + i : bias.pointer + (i - nw)
                                    let gi = g.pointer[i] + wd * theta.pointee                 // coupled weight decay
                                    let mi = b1 * m.pointer[i] + (1 - b1) * gi
                                    let vi = b2 * v.pointer[i] + (1 - b2) * gi * gi
                                    m.pointer[i] = mi
                                    v.pointer[i] = vi
                                    theta.pointee -= stepSize * mi / (vi.squareRoot() / c2Root + eps)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: Reference

    /// The loss and its gradients the plain way: float64 per row, every product a fresh tensor, the
    /// full Gram matrix. The reference `lossAndGradients` is tested against.
    public func referenceLossAndGradients(_ x: Tensor, _ t: Tensor) -> (AlignerLoss, weights: [Float], bias: [Float]) {
        let b = x.shape[0], c = maps.components, d = maps.width, e = maps.clipWidth
        precondition(t.shape == [b, e], "targets \(t.shape) for \(b) rows of width \(e)")
        let z = maps.alignedSums(x)                                                         // [B, D]
        var g = [Float](repeating: 0, count: b * e)                                         // ∂L/∂ẑ [B, D]
        var cosine = 0.0
        for i in 0..<b {
            let zi = z.data[(i * e)..<((i + 1) * e)].map(Double.init), ti = t.data[(i * e)..<((i + 1) * e)].map(Double.init)
            let zn = max(zi.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12), tn = max(ti.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            var dot = 0.0
            for j in 0..<e { dot += zi[j] / zn * ti[j] / tn }
            cosine += 1 - dot
            for j in 0..<e { g[i * e + j] = Float(-(ti[j] / tn - dot * zi[j] / zn) / (Double(b) * zn)) }
        }
        cosine /= Double(b)
        // Data term: Xᵀ [C·d, B] · G [B, D].
        let gTensor = Tensor(shape: [b, e], data: g)
        var gradW = Ops.matmul(Ops.transposed(x.reshaped([b, c * d])), gTensor).data      // [C·d, D]
        // Orthonormality: (1/(C·D)) Σ ‖WᵀW − I‖², gradient (4/(C·D))·W(WᵀW − I).
        var ortho = 0.0
        let scale = Float(4 * hyper.orthonormality / Double(c * e))
        for k in 0..<c {
            let w = Tensor(shape: [d, e], data: Array(maps.weights[(k * d * e)..<((k + 1) * d * e)]))     // [d, D]
            var gram = Ops.matmul(Ops.transposed(w), w)                                     // [D, D]
            for j in 0..<e { gram.data[j * e + j] -= 1 }
            ortho += gram.data.reduce(0.0) { $0 + Double($1) * Double($1) }
            let reg = Ops.matmul(w, gram)                                                   // [d, D]
            for i in 0..<(d * e) { gradW[k * d * e + i] += scale * reg.data[i] }
        }
        ortho /= Double(c * e)
        var gradB = [Float](repeating: 0, count: e)
        for i in 0..<b { for j in 0..<e { gradB[j] += g[i * e + j] } }
        let loss = AlignerLoss(cosine: cosine, orthonormality: ortho, total: cosine + hyper.orthonormality * ortho)
        return (loss, gradW, gradB)
    }
}
