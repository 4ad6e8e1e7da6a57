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
        let b = x.shape[0], c = components, d = width, e = clipWidth
        var out = [Float](repeating: 0, count: b * c * e)
        let share: Float = withBias ? 1 / Float(c) : 0
        for k in 0..<c {
            var rows = [Float]()
            rows.reserveCapacity(b * d)
            for i in 0..<b {
                let start = (i * c + k) * d
                rows += x.data[start..<(start + d)]
            }
            let map = Tensor(shape: [d, e], data: Array(weights[(k * d * e)..<((k + 1) * d * e)]))
            let a = Ops.matmul(Tensor(shape: [b, d], data: rows), map)                       // [B, D]
            for i in 0..<b {
                for j in 0..<e { out[(i * c + k) * e + j] = a.data[i * e + j] + share * bias[j] }
            }
        }
        return Tensor(shape: [b, c, e], data: out)
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
public struct AlignerTrainer: Sendable {
    public var maps: AlignerWeights
    public let hyper: AlignerHyperparameters
    public private(set) var step = 0
    var mWeights: [Double], vWeights: [Double], mBias: [Double], vBias: [Double]

    public init(maps: AlignerWeights, hyper: AlignerHyperparameters = .init()) {
        self.maps = maps
        self.hyper = hyper
        mWeights = [Double](repeating: 0, count: maps.weights.count)
        vWeights = mWeights
        mBias = [Double](repeating: 0, count: maps.bias.count)
        vBias = mBias
    }

    /// The loss and its gradients for components x [B, C, d] and CLIP targets t [B, D].
    public func lossAndGradients(_ x: Tensor, _ t: Tensor) -> (AlignerLoss, weights: [Float], bias: [Float]) {
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

    /// One Adam step on a batch; returns the batch's loss before the step.
    @discardableResult
    public mutating func train(_ x: Tensor, _ t: Tensor) -> AlignerLoss {
        let (loss, gradW, gradB) = lossAndGradients(x, t)
        step += 1
        let h = hyper
        let c1 = 1 - Foundation.pow(h.beta1, Double(step)), c2 = 1 - Foundation.pow(h.beta2, Double(step))
        func update(_ theta: inout [Float], _ grad: [Float], _ m: inout [Double], _ v: inout [Double]) {
            for i in 0..<theta.count {
                let gi = Double(grad[i]) + h.weightDecay * Double(theta[i])                // coupled weight decay
                m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi
                v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi
                theta[i] -= Float(h.learningRate * (m[i] / c1) / ((v[i] / c2).squareRoot() + h.epsilon))
            }
        }
        update(&maps.weights, gradW, &mWeights, &vWeights)
        update(&maps.bias, gradB, &mBias, &vBias)
        return loss
    }
}
