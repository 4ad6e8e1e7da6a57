// MARK: - Frozen read-out: residual stream → representation, as a linear map per image
//
// The generic half of the decomposition (docs/Decomposition.md). A model definition states how its
// representation is read from the final residual stream as a list of `ReadoutStep`s (token selection
// or pooling, then LayerNorms and linear maps). With every LayerNorm's statistics frozen at the values
// of the real forward pass, the chain is affine in the stream, so any split of the stream into
// components maps to an exact split of the representation:
//
//     representation = scale · (Σ_k c_k · M) + constant
//
// where `M` [D, D'] is fixed for the model (LayerNorm centring and gains folded in), `scale` is the
// per-image product of 1/σ of the LayerNorms, and `constant` collects what the chain adds itself
// (LayerNorm β, linear biases) mapped through the rest of the chain. How the constant and the means
// are attributed is the convention's business (`DecompositionConvention`).

import Foundation
import RefractTensor

/// How the components share what no single component writes: LayerNorm means, biases and β.
public enum DecompositionConvention: String, Sendable, Codable, CaseIterable {
    /// Each component centred by its own mean (LayerNorm's centring applied to it alone); the
    /// read-out's constant terms and every bias no image changes are separate components.
    case faithful
    /// Gandelsman et al.'s official code: the LayerNorm mean and β are split evenly over the `2L+1`
    /// layer-level components (and over tokens and heads inside an attention layer), the
    /// out-projection bias over that layer's (token, head) terms; everything is divided by the
    /// embedding's norm, so the components sum to the L2-normalised embedding.
    case gandelsman2024
    /// Balasubramanian et al.'s official code (timm models): every bias and LayerNorm constant split
    /// equally over the components present at its op; every linearised LayerNorm (the final norm,
    /// Swin's patch merges, the attention value path) with the unbiased std and eps 1e-5, so the
    /// components sum to the representation only approximately (about 1/(2D) relative per LayerNorm).
    case balasubramanian2024

    /// The conventions of CLIP runs and of timm runs.
    public static let clip: [DecompositionConvention] = [.faithful, .gandelsman2024]
    public static let timm: [DecompositionConvention] = [.faithful, .balasubramanian2024]
}

/// One step of reading the representation out of the final residual stream [T, D].
public enum ReadoutStep: Sendable {
    /// Select one token's row (a class token): [T, D] → [D]. Must be the first step.
    case token(Int)
    /// Mean over all tokens: [T, D] → [D]. Must be the first step.
    case meanPool
    /// LayerNorm with the model's own γ, β and ε; its statistics are frozen per image.
    case layerNorm(weight: Tensor, bias: Tensor, eps: Float)
    /// x·Wᵀ + b with W stored [out, in].
    case linear(weight: Tensor, bias: Tensor?)
}

public struct ReadoutError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The fixed part of a read-out, compiled once per model and convention.
public struct CompiledReadout: Sendable {
    public let convention: DecompositionConvention
    public let steps: [ReadoutStep]
    /// Width of the residual stream D and of the representation D'.
    public let width: Int, outputWidth: Int
    /// Per-token weight of the selection step for a stream of `tokens` rows.
    public let selection: Selection
    /// Stream → representation with centring (faithful) and gains folded in: [D, D'].
    public let map: Tensor
    /// Constants the chain adds (β, biases), each mapped through the rest of the chain: [D'] each,
    /// with the index of the first LayerNorm after them (their per-image scale is the product of
    /// 1/σ of the LayerNorms from there on).
    let constants: [(vector: [Float], firstNormAfter: Int)]
    /// gandelsman2024 only: γ mapped through the rest of the chain (what the LayerNorm mean is scaled by).
    let meanDirection: [Float]?
    let layerNormCount: Int

    public enum Selection: Sendable, Equatable { case token(Int), meanPool }

    public init(steps: [ReadoutStep], width: Int, convention: DecompositionConvention) throws {
        guard let first = steps.first else { throw ReadoutError(message: "a read-out needs at least a selection step") }
        switch first {
        case .token(let t): selection = .token(t)
        case .meanPool: selection = .meanPool
        default: throw ReadoutError(message: "a read-out must start by selecting or pooling tokens")
        }
        self.steps = steps
        self.width = width
        self.convention = convention
        var m: Tensor? = nil                                   // [D, current] (nil = identity)
        var current = width
        // Constants pending, in the current space, with the index of the next LayerNorm after them.
        var pending: [(vector: Tensor, firstNormAfter: Int)] = []
        var norms = 0
        var meanDir: Tensor? = nil                              // [current]
        for step in steps.dropFirst() {
            switch step {
            case .token, .meanPool:
                throw ReadoutError(message: "token selection or pooling may only be the first read-out step")
            case let .layerNorm(weight, bias, _):
                guard weight.shape == [current], bias.shape == [current] else {
                    throw ReadoutError(message: "read-out LayerNorm of width \(weight.shape) after a width-\(current) step")
                }
                // x ↦ (x − μ)·diag(γ)/σ + β. Faithful folds the centring into the map (each component
                // centred by its own mean); gandelsman2024 keeps the map uncentred and subtracts shares
                // of μ·γ instead.
                var g = Tensor(zeros: [current, current])     // [C, C]
                for i in 0..<current {
                    for j in 0..<current {
                        let centring: Float = convention == .faithful ? ((i == j ? 1 : 0) - 1 / Float(current)) : (i == j ? 1 : 0)
                        g.data[i * current + j] = centring * weight.data[j]
                    }
                }
                if convention == .gandelsman2024 {
                    if norms > 0 { throw ReadoutError(message: "gandelsman2024 is defined for read-outs with a single LayerNorm") }
                    meanDir = weight
                }
                m = m.map { Ops.matmul($0, g) } ?? g
                pending = pending.map { (Ops.matmul($0.vector.reshaped([1, current]), g).reshaped([current]), $0.firstNormAfter) }
                norms += 1
                pending.append((bias, norms))
            case let .linear(weight, bias):
                guard weight.rank == 2, weight.shape[1] == current else {
                    throw ReadoutError(message: "read-out linear map \(weight.shape) after a width-\(current) step")
                }
                let out = weight.shape[0]
                let wt = Ops.transposed(weight)                // [C, out]
                m = m.map { Ops.matmul($0, wt) } ?? wt
                pending = pending.map { (Ops.matmul($0.vector.reshaped([1, current]), wt).reshaped([out]), $0.firstNormAfter) }
                meanDir = meanDir.map { Ops.matmul($0.reshaped([1, current]), wt).reshaped([out]) }
                if let bias {
                    guard bias.shape == [out] else { throw ReadoutError(message: "read-out bias \(bias.shape) for \(out) outputs") }
                    pending.append((bias, norms))
                }
                current = out
            }
        }
        if convention == .gandelsman2024 && norms != 1 {
            throw ReadoutError(message: "gandelsman2024 is defined for read-outs with a single LayerNorm")
        }
        var identity = Tensor(zeros: [width, width])
        for i in 0..<width { identity.data[i * width + i] = 1 }
        map = m ?? identity
        outputWidth = current
        layerNormCount = norms
        constants = pending.map { ($0.vector.data, $0.firstNormAfter) }
        meanDirection = meanDir?.data
    }

    /// Rows [n, D] in stream space → [n, D'] (without the per-image scale).
    public func mapRows(_ rows: Tensor) -> Tensor { Ops.matmul(rows, map) }

    /// Per-token weights of the selection for a stream of `tokens` rows.
    public func tokenWeights(tokens: Int) -> [Float] {
        switch selection {
        case .token(let t): return (0..<tokens).map { $0 == t ? 1 : 0 }
        case .meanPool: return [Float](repeating: 1 / Float(tokens), count: tokens)
        }
    }

    /// Runs the read-out on one image's selected stream row [D] (the sum of all components) in
    /// double precision, freezing every LayerNorm's statistics.
    public func frame(selected row: [Float]) -> ReadoutFrame {
        precondition(row.count == width)
        var x = row.map(Double.init)
        var sigmas = [Double](), means = [Double]()
        for step in steps.dropFirst() {
            switch step {
            case .token, .meanPool: break
            case let .layerNorm(weight, bias, eps):
                let n = Double(x.count)
                let mu = x.reduce(0, +) / n
                let variance = x.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / n
                let sigma = (variance + Double(eps)).squareRoot()
                sigmas.append(sigma); means.append(mu)
                x = x.indices.map { (x[$0] - mu) / sigma * Double(weight.data[$0]) + Double(bias.data[$0]) }
            case let .linear(weight, bias):
                let out = weight.shape[0], inn = weight.shape[1]
                x = (0..<out).map { o in
                    var s = bias.map { Double($0.data[o]) } ?? 0
                    for i in 0..<inn { s += Double(weight.data[o * inn + i]) * x[i] }
                    return s
                }
            }
        }
        // scale from LayerNorm k on: Π_{j ≥ k} 1/σ_j.
        var tailScale = [Double](repeating: 1, count: sigmas.count + 1)
        for k in stride(from: sigmas.count - 1, through: 0, by: -1) { tailScale[k] = tailScale[k + 1] / sigmas[k] }
        var constant = [Double](repeating: 0, count: outputWidth)
        for c in constants {
            let s = tailScale[c.firstNormAfter]
            for j in 0..<outputWidth { constant[j] += Double(c.vector[j]) * s }
        }
        var meanTerm: [Double]? = nil
        if let dir = meanDirection {
            // The part of the output the LayerNorm mean removes: −μ·(γ mapped)/σ.
            meanTerm = dir.map { -means[0] * Double($0) * tailScale[0] }
        }
        let norm = x.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return ReadoutFrame(scale: tailScale[0], constant: constant, meanTerm: meanTerm,
                            representation: x, norm: norm)
    }
}

/// The per-image part of a read-out: representation = scale·(Σ c_k·M) + constant (+ meanTerm for
/// an uncentred map).
public struct ReadoutFrame: Sendable {
    /// Π 1/σ over the read-out's LayerNorms.
    public var scale: Double
    /// What the read-out adds itself, in representation space [D'].
    public var constant: [Double]
    /// gandelsman2024: −μ·γ-direction/σ [D'], shared out among the components.
    public var meanTerm: [Double]?
    /// The representation computed in double precision from the selected row [D'].
    public var representation: [Double]
    public var norm: Double
}
