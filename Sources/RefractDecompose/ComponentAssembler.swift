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
        case .balasubramanian2024:
            preconditionFailure("balasubramanian2024 is the timm decomposition's convention (checked by CLIPDecomposer.init)")
        case .gandelsman2024:
            scales = zip(frames, norms).map { Float($0.scale / Double($1)) }
            constants = zip(frames, norms).map { f, n in
                f.constant.indices.map { Float((f.constant[$0] + (f.meanTerm?[$0] ?? 0)) / Double(n)) }
            }
        }
        let b = frames.count
        for (name, perImage) in shape.tensorShapes(convention) where name != .embedding && name != .norm {
            tensors[name] = Tensor(zeros: [b] + perImage)
        }
    }

    private var images: Int { scales.count }
    private var layerLevelCount: Float { Float(2 * shape.layers + 1) }

    /// Runs `body` on the storage of tensor `name` (taken out of the dictionary so it is mutated in place).
    private mutating func with(_ name: ComponentTensor, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        var t = tensors.removeValue(forKey: name)!
        t.data.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
        tensors[name] = t
    }

    /// `pre` (index 0 of 1) or `mlp` layer `index`: mapped [B, D'].
    mutating func setLayerLevel(_ name: ComponentTensor, _ mapped: Tensor, index: Int, of count: Int) {
        let dOut = shape.outputWidth, scales = scales, constants = constants
        let share: Float = convention == .gandelsman2024 ? 1 / layerLevelCount : 0
        with(name) { out in
            for b in 0..<scales.count {
                let s = scales[b], c = constants[b]
                let dst = out + (b * count + index) * dOut
                mapped.data.withUnsafeBufferPointer { src in
                    for j in 0..<dOut { dst[j] = src[b * dOut + j] * s + share * c[j] }
                }
            }
        }
    }

    /// Per (token, head) term's share of what no component writes, for image b (gandelsman2024;
    /// zeros for faithful, whose bias is its own component).
    private func perTermShare(_ b: Int, bias: [Float]) -> [Float] {
        let dOut = shape.outputWidth
        guard convention == .gandelsman2024 else { return [Float](repeating: 0, count: dOut) }
        let terms = Float(shape.tokens * shape.heads)
        return (0..<dOut).map { (bias[$0] * scales[b] + constants[b][$0] / layerLevelCount) / terms }
    }

    /// Layer `layer`'s heads: perHead and classToken mapped [B, H, D']; its out-projection bias mapped [D'].
    mutating func setAttention(layer: Int, perHead: Tensor, classToken: Tensor, bias: [Float]) {
        let h = shape.heads, dOut = shape.outputWidth, l = shape.layers
        let tokens = Float(shape.tokens)
        let shares = (0..<images).map { perTermShare($0, bias: bias) }
        if convention == .faithful {
            let scales = scales
            with(.attnBias) { out in
                for b in 0..<scales.count { for j in 0..<dOut { out[(b * l + layer) * dOut + j] = bias[j] * scales[b] } }
            }
        }
        for (name, source, multiplier) in [(ComponentTensor.attn, perHead, tokens), (.attnClassToken, classToken, Float(1))] {
            let scales = scales
            with(name) { out in
                source.data.withUnsafeBufferPointer { src in
                    for b in 0..<scales.count {
                        let s = scales[b], share = shares[b]
                        for hh in 0..<h {
                            let from = (b * h + hh) * dOut
                            let dst = out + ((b * l + layer) * h + hh) * dOut
                            for j in 0..<dOut { dst[j] = src[from + j] * s + multiplier * share[j] }
                        }
                    }
                }
            }
        }
    }

    /// Per-token terms of layer `layer` (slot `layerSlot` of the token layers): mapped [B, H, T, D'].
    mutating func setTokens(layerSlot: Int, layer: Int, _ mapped: Tensor, bias: [Float]) {
        let h = shape.heads, t = shape.tokens, dOut = shape.outputWidth, nl = shape.tokenLayers.count
        let shares = (0..<images).map { perTermShare($0, bias: bias) }
        let scales = scales
        with(.attnTokens) { out in
            mapped.data.withUnsafeBufferPointer { src in
                for b in 0..<scales.count {
                    let s = scales[b], share = shares[b]
                    for hh in 0..<h {
                        for i in 0..<t {
                            let from = ((b * h + hh) * t + i) * dOut
                            let dst = out + (((b * nl + layerSlot) * h + hh) * t + i) * dOut
                            for j in 0..<dOut { dst[j] = src[from + j] * s + share[j] }
                        }
                    }
                }
            }
        }
    }

    /// Per-token sums over a head set: `mapped` [B·T, D'] is Σ over layers of the chosen heads'
    /// M-mapped terms; `headsPerLayer[l]` chosen heads of layer l, whose out-projection bias mapped
    /// is `biases[l]`. Each (token, head) term gets the same frame and share as in `setTokens`, so
    /// the result equals Σ_{(l,h) ∈ S} attn_tokens[l, h, t].
    mutating func setTokenSums(_ mapped: Tensor, headsPerLayer: [Int], biases: [[Float]]) {
        let t = shape.tokens, dOut = shape.outputWidth, scales = scales
        // Per image: Σ_l |S_l| · share_l [D'] (zero for faithful).
        let shared = (0..<images).map { b -> [Float] in
            var acc = [Float](repeating: 0, count: dOut)
            for (l, n) in headsPerLayer.enumerated() where n > 0 {
                let share = perTermShare(b, bias: biases[l])
                for j in 0..<dOut { acc[j] += Float(n) * share[j] }
            }
            return acc
        }
        with(.attnTokenSum) { out in
            mapped.data.withUnsafeBufferPointer { src in
                for b in 0..<scales.count {
                    let s = scales[b], add = shared[b]
                    for i in 0..<t {
                        let at = (b * t + i) * dOut
                        for j in 0..<dOut { out[at + j] = src[at + j] * s + add[j] }
                    }
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
