// MARK: - Conventions: turning mapped component vectors into the stored components
//
// Components arrive already mapped by the read-out's fixed matrix M (stream → representation,
// without the per-image scale). The assembler applies each image's frozen read-out frame and the
// convention's rule for what no single component writes:
//
// faithful        value·scale; the read-out's constant (β·P) is `readout_bias`, each layer's
//                 out-projection bias is `attn_bias` (bo·M·scale).
// gandelsman2024  value·scale/‖e‖ plus a share of κ = (constant − μ·γ·P/σ)/‖e‖: 1/K for each of the
//                 K = 2L+1 layer-level components, an attention layer's 1/K (and its bias bo) split
//                 evenly over its T·H (token, head) terms, so a head summed over tokens gets 1/H of it.

import Foundation
import RefractTensor

struct ComponentAssembler {
    let convention: DecompositionConvention
    let shape: DecompositionShape
    /// Per image: multiplier of M-mapped values, and the constant κ to share out (gandelsman2024)
    /// or the read-out bias (faithful), [D'] each.
    let scales: [Float]
    let constants: [[Float]]
    var tensors: [ComponentTensor: Tensor] = [:]

    init(convention: DecompositionConvention, shape: DecompositionShape, frames: [ReadoutFrame], norms: [Float]) {
        self.convention = convention
        self.shape = shape
        switch convention {
        case .faithful:
            scales = frames.map { Float($0.scale) }
            constants = frames.map { $0.constant.map(Float.init) }
        case .gandelsman2024:
            scales = zip(frames, norms).map { Float($0.scale / Double($1)) }
            constants = zip(frames, norms).map { f, n in
                f.constant.indices.map { Float((f.constant[$0] + (f.meanTerm?[$0] ?? 0)) / Double(n)) }
            }
        }
        let b = frames.count, dOut = shape.outputWidth
        for (name, perImage) in shape.tensorShapes(convention) where name != .embedding && name != .norm {
            tensors[name] = Tensor(zeros: [b] + perImage)
        }
        _ = dOut
    }

    private var images: Int { scales.count }
    private var layerLevelCount: Float { Float(2 * shape.layers + 1) }

    /// `pre` (index 0 of 1) or `mlp` layer `index`: mapped [B, D'].
    mutating func setLayerLevel(_ name: ComponentTensor, _ mapped: Tensor, index: Int, of count: Int) {
        let dOut = shape.outputWidth
        let share: Float = convention == .gandelsman2024 ? 1 / layerLevelCount : 0
        for b in 0..<images {
            let s = scales[b]
            let dst = (b * count + index) * dOut
            for j in 0..<dOut {
                tensors[name]!.data[dst + j] = mapped.data[b * dOut + j] * s + share * constants[b][j]
            }
        }
    }

    /// Layer `layer`'s heads: perHead and classToken mapped [B, H, D']; its out-projection bias mapped [D'].
    mutating func setAttention(layer: Int, perHead: Tensor, classToken: Tensor, bias: [Float]) {
        let h = shape.heads, dOut = shape.outputWidth, l = shape.layers
        let tokens = Float(shape.tokens)
        for b in 0..<images {
            let s = scales[b]
            // Per (token, head) term's share of what no component writes (gandelsman2024).
            var perTerm = [Float](repeating: 0, count: dOut)
            if convention == .gandelsman2024 {
                for j in 0..<dOut { perTerm[j] = (bias[j] * s + constants[b][j] / layerLevelCount) / (tokens * Float(h)) }
            } else {
                for j in 0..<dOut { tensors[.attnBias]!.data[(b * l + layer) * dOut + j] = bias[j] * s }
            }
            for hh in 0..<h {
                let src = (b * h + hh) * dOut
                let dst = ((b * l + layer) * h + hh) * dOut
                for j in 0..<dOut {
                    tensors[.attn]!.data[dst + j] = perHead.data[src + j] * s + tokens * perTerm[j]
                    tensors[.attnClassToken]!.data[dst + j] = classToken.data[src + j] * s + perTerm[j]
                }
            }
        }
    }

    /// Per-token terms of layer `layer` (slot `layerSlot` of the token layers): mapped [B, H, T, D'].
    mutating func setTokens(layerSlot: Int, layer: Int, _ mapped: Tensor, bias: [Float]) {
        let h = shape.heads, t = shape.tokens, dOut = shape.outputWidth, nl = shape.tokenLayers.count
        for b in 0..<images {
            let s = scales[b]
            var perTerm = [Float](repeating: 0, count: dOut)
            if convention == .gandelsman2024 {
                for j in 0..<dOut { perTerm[j] = (bias[j] * s + constants[b][j] / layerLevelCount) / Float(t * h) }
            }
            for hh in 0..<h {
                for i in 0..<t {
                    let src = ((b * h + hh) * t + i) * dOut
                    let dst = (((b * nl + layerSlot) * h + hh) * t + i) * dOut
                    for j in 0..<dOut { tensors[.attnTokens]!.data[dst + j] = mapped.data[src + j] * s + perTerm[j] }
                }
            }
        }
    }

    mutating func finish() -> DecompositionBatch {
        if convention == .faithful {
            tensors[.readoutBias] = Tensor(shape: [images, shape.outputWidth], data: constants.flatMap { $0 })
        }
        return DecompositionBatch(convention: convention, shape: shape, tensors: tensors)
    }
}
