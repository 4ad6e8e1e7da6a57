// MARK: - CLIP image tower: model definition for the decomposition
//
// What is specific to CLIP is only (1) where components are written: `pre` = x0[cls], every block's
// MLP output and per-head attention output at the class-token row (`BlockTrace`, no extra forward
// work), and (2) the read-out: class token → ln_post → projection. Everything else (frozen
// statistics, centring, conventions, mapping into the representation space) is the generic
// `CompiledReadout` and `ComponentAssembler`.
//
// Cost: per-head terms need only the class-token query row of each layer, which the forward pass
// computes anyway; we recompute that row's attention probabilities (T·D per layer) for the
// class-token and per-token terms. Each head's value-space vector [dh] is mapped straight into the
// representation by a precomputed Wo_hᵀ·M [dh, D'], so even per-token terms cost T·D·D' per layer.

import Foundation
import RefractCLIP
import RefractTensor

public final class CLIPDecomposer: Sendable {
    public let tower: CLIPVisionTower
    public let convention: DecompositionConvention
    public let shape: DecompositionShape
    let readout: CompiledReadout
    /// Per layer: Woᵀ·M [D, D'], rows h·dh ..< (h+1)·dh belong to head h.
    let headMaps: [Tensor]
    /// Per layer: bo·M [D'].
    let biasMaps: [[Float]]

    public struct Error: Swift.Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// `tokenLayers`: layers whose per-token contributions are kept (0-based, any order).
    /// `tokenSumHeads`: heads whose per-token terms are summed over heads and layers into
    /// `attn_token_sum` [T, D'] (heatmaps, segmentation) without materialising `attn_tokens`.
    public init(tower: CLIPVisionTower, convention: DecompositionConvention = .faithful, tokenLayers: [Int] = [],
                tokenSumHeads: HeadSet? = nil) throws {
        guard convention != .balasubramanian2024 else {
            throw Error(message: "balasubramanian2024 is the convention of Balasubramanian et al.'s code for timm models; "
                        + "CLIP runs use faithful or gandelsman2024")
        }
        let arch = tower.arch
        let layers = arch.vision.layers
        let sortedTokenLayers = Array(Set(tokenLayers)).sorted()
        if let bad = sortedTokenLayers.first(where: { $0 < 0 || $0 >= layers }) {
            throw Error(message: "token layer \(bad) does not exist: the model has layers 0...\(layers - 1)")
        }
        if let set = tokenSumHeads, set.layers != layers || set.heads != arch.vision.heads {
            throw Error(message: "head set for \(set.layers) layers x \(set.heads) heads, but the model has "
                + "\(layers) x \(arch.vision.heads)")
        }
        self.tower = tower
        self.convention = convention
        shape = DecompositionShape(layers: layers, heads: arch.vision.heads, tokens: arch.visionTokens,
                                   width: arch.vision.width, outputWidth: arch.embedDim, tokenLayers: sortedTokenLayers,
                                   tokenSumHeads: tokenSumHeads)
        let readout = try CompiledReadout(steps: [.token(0),
                                                  .layerNorm(weight: tower.lnPostWeight, bias: tower.lnPostBias, eps: arch.vision.layerNormEps),
                                                  .linear(weight: tower.projection, bias: nil)],
                                          width: arch.vision.width, convention: convention)
        self.readout = readout
        headMaps = tower.blocks.map { readout.mapRows(Ops.transposed($0.outWeight)) }          // [D, D'] each
        biasMaps = tower.blocks.map { readout.mapRows($0.outBias.reshaped([1, arch.vision.width])).data }
    }

    /// Decomposes preprocessed images [3, S, S]. Batches are split into one slice per core.
    public func callAsFunction(_ images: [Tensor]) -> DecompositionBatch {
        if images.count <= 1 || BLAS.threads <= 1 {
            return decompose(images, parallelAttention: true)
        }
        let slots = SliceResults()
        BLAS.forEachSlice(count: images.count) { range in
            slots.set(range.lowerBound, self.decompose(Array(images[range]), parallelAttention: false))
        }
        return DecompositionBatch.concatenate(slots.values)
    }

    /// Decomposes one image.
    public func decompose(_ image: Tensor) -> ImageDecomposition {
        decompose([image], parallelAttention: true).image(0)
    }

    // MARK: Recording

    /// What the pass keeps per layer, in value space (before the out-projection).
    struct LayerRecord {
        var heads: [Float]          // [B, D]    class-row attention output, head h at h·dh
        var classTerm: [Float]      // [B, D]    a[h, cls, 0] · v_h[0]
        var tokens: [Float]?        // [B, H, T, dh] a[h, cls, i] · v_h[i]
        var mlp: [Float]            // [B, D]
    }

    /// Per layer, the chosen heads of `shape.tokenSumHeads` (empty when none or not asked for).
    private func tokenSumHeads(layer: Int) -> [Int] { shape.tokenSumHeads?.perLayer[layer] ?? [] }

    func decompose(_ images: [Tensor], parallelAttention: Bool) -> DecompositionBatch {
        let b = images.count
        let d = shape.width, h = shape.heads, t = shape.tokens, dh = d / h
        var records = [LayerRecord?](repeating: nil, count: shape.layers)
        let tokenLayers = Set(shape.tokenLayers)
        // Σ over layers of the chosen heads' per-token terms, M-mapped, before the per-image frame.
        var tokenSumMapped: Tensor? = shape.tokenSumHeads == nil ? nil : Tensor(zeros: [b * t, shape.outputWidth])  // [B·T, D']
        let (x0, final) = tower.residualStream(images, parallelAttention: parallelAttention) { layer, trace in
            let lastLayer = layer == self.shape.layers - 1
            let rows = (0..<b).map { lastLayer ? $0 : $0 * t }
            let sumHeads = self.tokenSumHeads(layer: layer)
            let terms = Self.classQueryTerms(qkv: trace.qkv, images: b, tokens: t, heads: h,
                                             keepTokens: tokenLayers.contains(layer), sumHeads: sumHeads)
            if let sum = terms.tokenSum {
                // [B·T, D] (chosen heads' columns, others zero) · Woᵀ·M [D, D'] → [B·T, D'], accumulated.
                Ops.addInPlace(&tokenSumMapped!, Ops.matmul(Tensor(shape: [b * t, d], data: sum), self.headMaps[layer]))
            }
            records[layer] = LayerRecord(heads: Ops.gatherRows(trace.heads, rows).data, classTerm: terms.classTerm,
                                         tokens: terms.tokens, mlp: Ops.gatherRows(trace.mlp, rows).data)
        }
        let pre = Ops.gatherRows(x0, (0..<b).map { $0 * t })                          // [B, D]
        let embedding = tower.readout(final)                                           // [B, D']
        let frames = (0..<b).map { readout.frame(selected: final.row($0)) }
        let norms = (0..<b).map { i -> Float in
            Float(embedding.row(i).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
        }
        var assembler = ComponentAssembler(convention: convention, shape: shape, frames: frames, norms: norms)
        assembler.tensors[.embedding] = embedding
        assembler.tensors[.norm] = Tensor(shape: [b], data: norms)
        assembler.setLayerLevel(.pre, readout.mapRows(pre), index: 0, of: 1)
        for l in 0..<shape.layers {
            let r = records[l]!
            assembler.setLayerLevel(.mlp, readout.mapRows(Tensor(shape: [b, d], data: r.mlp)), index: l, of: shape.layers)
            // Per head: value-space rows [B, dh] of each head through its Wo_hᵀ·M block.
            var perHead = Tensor(zeros: [b, h, shape.outputWidth])                    // [B, H, D']
            var classPart = Tensor(zeros: [b, h, shape.outputWidth])                  // [B, H, D']
            Self.mapHeads(r.heads, rows: b, heads: h, dh: dh, map: headMaps[l], into: &perHead)
            Self.mapHeads(r.classTerm, rows: b, heads: h, dh: dh, map: headMaps[l], into: &classPart)
            assembler.setAttention(layer: l, perHead: perHead, classToken: classPart, bias: biasMaps[l])
            if let tokens = r.tokens, let li = shape.tokenLayers.firstIndex(of: l) {
                // [B, H, T, dh] → [B, H, T, D'], head h through its block of the map.
                var mapped = Tensor(zeros: [b, h, t, shape.outputWidth])
                Self.mapTokenHeads(tokens, images: b, heads: h, tokens: t, dh: dh, map: headMaps[l], into: &mapped)
                assembler.setTokens(layerSlot: li, layer: l, mapped, bias: biasMaps[l])
            }
        }
        if let tokenSumMapped {
            assembler.setTokenSums(tokenSumMapped, headsPerLayer: (0..<shape.layers).map { tokenSumHeads(layer: $0).count },
                                   biases: biasMaps)
        }
        return assembler.finish()
    }

    /// For the class-token query of every image and head: a[h, 0]·v_h[0] as [B, D] (head h at
    /// h·dh), with `keepTokens` every a[h, i]·v_h[i] as [B, H, T, dh], and with a non-empty
    /// `sumHeads` the rows [B, T, D] holding a[h, i]·v_h[i] at h·dh for the heads in `sumHeads`
    /// (zero for the others), ready for one product with the layer's Woᵀ·M.
    static func classQueryTerms(qkv: Tensor, images: Int, tokens t: Int, heads: Int, keepTokens: Bool, sumHeads: [Int] = [])
        -> (classTerm: [Float], tokens: [Float]?, tokenSum: [Float]?) {
        let d = qkv.shape[1] / 3, dh = d / heads, ld = 3 * d
        let scale = 1 / Float(dh).squareRoot()
        let summed = Set(sumHeads)
        var classTerm = [Float](repeating: 0, count: images * d)                                          // [B, D]
        var tokenTerms: [Float]? = keepTokens ? [Float](repeating: 0, count: images * heads * t * dh) : nil  // [B, H, T, dh]
        var tokenSum: [Float]? = summed.isEmpty ? nil : [Float](repeating: 0, count: images * t * d)        // [B, T, D]
        var probs = [Float](repeating: 0, count: t)
        qkv.data.withUnsafeBufferPointer { qp in
            for b in 0..<images {
                let base = qp.baseAddress! + b * t * ld
                for hh in 0..<heads {
                    probs.withUnsafeMutableBufferPointer { pp in
                        BLAS.sgemm(.none, .transpose, m: 1, n: t, k: dh, a: base + hh * dh, lda: ld,
                                   b: base + d + hh * dh, ldb: ld, c: pp.baseAddress!, ldc: t)   // [1, T]
                        Kernels.softmaxRows(pp.baseAddress!, rows: 1, cols: t, ld: t, scale: scale, causal: false)
                    }
                    let v0 = base + 2 * d + hh * dh
                    for j in 0..<dh { classTerm[b * d + hh * dh + j] = probs[0] * v0[j] }
                    if keepTokens {
                        tokenTerms!.withUnsafeMutableBufferPointer { tp in
                            for i in 0..<t {
                                let v = base + i * ld + 2 * d + hh * dh
                                let dst = tp.baseAddress! + ((b * heads + hh) * t + i) * dh
                                for j in 0..<dh { dst[j] = probs[i] * v[j] }
                            }
                        }
                    }
                    if summed.contains(hh) {
                        tokenSum!.withUnsafeMutableBufferPointer { sp in
                            for i in 0..<t {
                                let v = base + i * ld + 2 * d + hh * dh
                                let dst = sp.baseAddress! + (b * t + i) * d + hh * dh
                                for j in 0..<dh { dst[j] = probs[i] * v[j] }
                            }
                        }
                    }
                }
            }
        }
        return (classTerm, tokenTerms, tokenSum)
    }

    /// rows [B, H·dh] (head h at h·dh) → out [B, H, D'] with head h mapped by map rows h·dh ..< (h+1)·dh.
    static func mapHeads(_ rows: [Float], rows b: Int, heads: Int, dh: Int, map: Tensor, into out: inout Tensor) {
        let dOut = map.shape[1], d = heads * dh
        rows.withUnsafeBufferPointer { rp in
            map.data.withUnsafeBufferPointer { mp in
                out.data.withUnsafeMutableBufferPointer { op in
                    for hh in 0..<heads {
                        BLAS.sgemm(.none, .none, m: b, n: dOut, k: dh, a: rp.baseAddress! + hh * dh, lda: d,
                                   b: mp.baseAddress! + hh * dh * dOut, ldb: dOut,
                                   c: op.baseAddress! + hh * dOut, ldc: heads * dOut)
                    }
                }
            }
        }
    }

    /// tokens [B, H, T, dh] → out [B, H, T, D'].
    static func mapTokenHeads(_ tokens: [Float], images: Int, heads: Int, tokens t: Int, dh: Int, map: Tensor,
                              into out: inout Tensor) {
        let dOut = map.shape[1]
        tokens.withUnsafeBufferPointer { tp in
            map.data.withUnsafeBufferPointer { mp in
                out.data.withUnsafeMutableBufferPointer { op in
                    for b in 0..<images {
                        for hh in 0..<heads {
                            let off = (b * heads + hh) * t
                            BLAS.sgemm(.none, .none, m: t, n: dOut, k: dh, a: tp.baseAddress! + off * dh, lda: dh,
                                       b: mp.baseAddress! + hh * dh * dOut, ldb: dOut,
                                       c: op.baseAddress! + off * dOut, ldc: dOut)
                        }
                    }
                }
            }
        }
    }
}

/// Results of the batch slices, ordered by their first image.
final class SliceResults: @unchecked Sendable {
    private var slots: [Int: DecompositionBatch] = [:]
    private let lock = NSLock()
    func set(_ first: Int, _ v: DecompositionBatch) { lock.lock(); slots[first] = v; lock.unlock() }
    var values: [DecompositionBatch] { slots.keys.sorted().map { slots[$0]! } }
}
