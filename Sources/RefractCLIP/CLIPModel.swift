// MARK: - CLIP towers
//
// Pre-LN transformer towers for CLIP's image and text encoders, computing in float32 with BLAS.
// Sequences of a batch are packed into one [S, D] matrix so that every linear layer is one GEMM;
// attention runs per (sequence, head) in parallel. The last block of each tower computes only the
// row that is read out (class token / end-of-text token): exact, and a layer's worth cheaper.

import Foundation
import RefractCheckpoint
import RefractTensor

/// Source of named tensors with shape checks (a strict safetensors loader in practice).
public protocol TensorSource: AnyObject {
    func take(_ key: String, shape: [Int]) throws -> Tensor
    /// Marks a known buffer as consumed if it is present.
    func ignore(_ key: String)
}

extension TensorLoader: TensorSource {}

/// A projection into the joint space as [out, in] (applied as x·Wᵀ): OpenCLIP stores P as
/// [in, out] and applies x·P, transformers stores a Linear weight [out, in].
func takeProjection(_ source: TensorSource, _ key: String, layout: CLIPLayout, from width: Int, to dim: Int) throws -> Tensor {
    switch layout {
    case .openCLIP: return Ops.transposed(try source.take(key, shape: [width, dim]))
    case .transformers: return try source.take(key, shape: [dim, width])
    }
}

// MARK: Residual block

/// Weights of one pre-LN residual block, in torch.nn.Linear layout ([out, in]); q,k,v fused.
public struct ResidualBlock: Sendable {
    public var ln1Weight, ln1Bias: Tensor        // [D]
    public var qkvWeight: Tensor                 // [3D, D]
    public var qkvBias: Tensor                   // [3D]
    public var outWeight: Tensor                 // [D, D]
    public var outBias: Tensor                   // [D]
    public var ln2Weight, ln2Bias: Tensor        // [D]
    public var fc1Weight: Tensor                 // [F, D]
    public var fc1Bias: Tensor                   // [F]
    public var fc2Weight: Tensor                 // [D, F] ([D, F/2] for a gated MLP)
    public var fc2Bias: Tensor                   // [D]
    /// LayerScale: attention and MLP outputs multiplied by these before they are added (DINOv2).
    public var layerScale1, layerScale2: Tensor? // [D]

    public init(source: TensorSource, keys: BlockKeys, arch: TowerArchitecture) throws {
        let d = arch.width, f = arch.mlpWidth
        ln1Weight = try source.take(keys.ln1Weight, shape: [d])
        ln1Bias = try source.take(keys.ln1Bias, shape: [d])
        if keys.qkvWeight.count == 1 {
            qkvWeight = try source.take(keys.qkvWeight[0], shape: [3 * d, d])
            qkvBias = try source.take(keys.qkvBias[0], shape: [3 * d])
        } else {
            let ws = try keys.qkvWeight.map { try source.take($0, shape: [d, d]) }
            let bs = try keys.qkvBias.map { try source.take($0, shape: [d]) }
            qkvWeight = Tensor(shape: [3 * d, d], data: ws.flatMap(\.data))
            qkvBias = Tensor(shape: [3 * d], data: bs.flatMap(\.data))
        }
        outWeight = try source.take(keys.outWeight, shape: [d, d])
        outBias = try source.take(keys.outBias, shape: [d])
        ln2Weight = try source.take(keys.ln2Weight, shape: [d])
        ln2Bias = try source.take(keys.ln2Bias, shape: [d])
        fc1Weight = try source.take(keys.fc1Weight, shape: [f, d])
        fc1Bias = try source.take(keys.fc1Bias, shape: [f])
        fc2Weight = try source.take(keys.fc2Weight, shape: [d, arch.activation == .swiGLU ? f / 2 : f])
        fc2Bias = try source.take(keys.fc2Bias, shape: [d])
        layerScale1 = try keys.layerScale1.map { try source.take($0, shape: [d]) }
        layerScale2 = try keys.layerScale2.map { try source.take($0, shape: [d]) }
    }

    /// x[S, D] → x + MSA(ln1 x), then + MLP(ln2 ·). With `queries` other than `.all`, the result
    /// has one row per segment (that segment's first or last token).
    /// `parallelAttention` false runs attention heads on the calling thread (the caller already
    /// runs one batch slice per core).
    /// `trace`, when given, receives what the block wrote (for decomposition); it costs no extra work.
    /// `attentionBias` is added to the scaled attention scores (Swin's windows).
    public func forward(_ x: Tensor, segments: [Segment], arch: TowerArchitecture, causal: Bool,
                        queries: QueryRows = .all, parallelAttention: Bool = true, attentionBias: AttentionBias? = nil,
                        trace: ((BlockTrace) -> Void)? = nil) -> Tensor {
        let h = Ops.layerNorm(x, weight: ln1Weight, bias: ln1Bias, eps: arch.layerNormEps)      // [S, D]
        let qkv = Ops.linear(h, weight: qkvWeight, bias: qkvBias)                               // [S, 3D]
        let attn = Ops.multiHeadAttention(qkv: qkv, segments: segments, heads: arch.heads, causal: causal,
                                          queries: queries, parallel: parallelAttention, bias: attentionBias) // [R, D]
        var y: Tensor                                                                            // [R, D]
        switch queries {
        case .all: y = x
        case .first: y = Ops.gatherRows(x, segments.map(\.start))
        case .last: y = Ops.gatherRows(x, segments.map { $0.start + $0.length - 1 })
        }
        var written = Ops.linear(attn, weight: outWeight, bias: outBias)                         // [R, D]
        if let layerScale1 { Ops.scaleColumns(&written, layerScale1) }
        Ops.addInPlace(&y, written)
        let h2 = Ops.layerNorm(y, weight: ln2Weight, bias: ln2Bias, eps: arch.layerNormEps)     // [R, D]
        var m = Ops.linear(h2, weight: fc1Weight, bias: fc1Bias)                                // [R, F]
        if arch.activation == .swiGLU { m = Ops.swiGLU(m) } else { Ops.activate(&m, arch.activation) } // [R, F or F/2]
        var mlp = Ops.linear(m, weight: fc2Weight, bias: fc2Bias)                               // [R, D]
        if let layerScale2 { Ops.scaleColumns(&mlp, layerScale2) }
        Ops.addInPlace(&y, mlp)
        trace?(BlockTrace(input: x, qkv: qkv, heads: attn, mlp: mlp))
        return y
    }
}

/// What one residual block computed, for the decomposition pass. Row `r` of `heads` and `mlp` is the
/// r-th computed query row (every row for `.all`, one per segment otherwise).
public struct BlockTrace: Sendable {
    /// The block's input x (the true residual stream): [S, D].
    public var input: Tensor
    /// ln_1(x)·W_qkv + b_qkv: [S, 3D], q | k | v blocks, heads of width D/H inside each.
    public var qkv: Tensor
    /// Attention output before the out-projection: [R, D], head h in columns h·dh ..< (h+1)·dh.
    public var heads: Tensor
    /// MLP output (fc2 bias and LayerScale included) written into the residual stream: [R, D].
    public var mlp: Tensor
}

// MARK: Image tower

public struct CLIPVisionTower: Sendable {
    public let arch: CLIPArchitecture
    public var patchWeight: Tensor               // [D, 3·p·p] (conv weight [D, 3, p, p] flattened)
    public var classEmbedding: Tensor            // [D]
    public var positionalEmbedding: Tensor       // [T, D]
    public var lnPreWeight, lnPreBias: Tensor    // [D]
    public var blocks: [ResidualBlock]
    public var lnPostWeight, lnPostBias: Tensor  // [D]
    public var projection: Tensor                // [D', D] (applied as x·Pᵀ)

    init(source: TensorSource, layout: CLIPLayout, arch: CLIPArchitecture) throws {
        self.arch = arch
        let d = arch.vision.width, p = arch.patchSize
        let k = CLIPCheckpointKeys.vision(layout)
        patchWeight = try source.take(k.patchWeight, shape: [d, 3, p, p]).reshaped([d, 3 * p * p])
        classEmbedding = try source.take(k.classEmbedding, shape: [d])
        positionalEmbedding = try source.take(k.positionalEmbedding, shape: [arch.visionTokens, d])
        lnPreWeight = try source.take(k.lnPreWeight, shape: [d])
        lnPreBias = try source.take(k.lnPreBias, shape: [d])
        blocks = try (0..<arch.vision.layers).map {
            try ResidualBlock(source: source, keys: CLIPCheckpointKeys.block(layout, .vision, $0), arch: arch.vision)
        }
        lnPostWeight = try source.take(k.lnPostWeight, shape: [d])
        lnPostBias = try source.take(k.lnPostBias, shape: [d])
        projection = try takeProjection(source, k.projection, layout: layout, from: d, to: arch.embedDim)
    }

    /// Patch rows of one preprocessed image [3, S, S] → [G·G, 3·p·p] (`Ops.patchRows`).
    func patches(_ image: Tensor) -> Tensor {
        let s = arch.imageSize
        precondition(image.shape == [3, s, s], "image tensor \(image.shape), expected [3, \(s), \(s)]")
        return Ops.patchRows(image, patch: arch.patchSize)
    }

    /// Residual stream after ln_pre, for a batch packed as [B·T, D], and its segments.
    public func embed(_ images: [Tensor]) -> (x: Tensor, segments: [Segment]) {
        let t = arch.visionTokens, d = arch.vision.width
        var x = Tensor(zeros: [images.count * t, d])                                    // [B·T, D]
        let patchRows = Tensor(shape: [images.count * (t - 1), 3 * arch.patchSize * arch.patchSize],
                               data: images.flatMap { patches($0).data })              // [B·(T−1), 3p²]
        let emb = Ops.linear(patchRows, weight: patchWeight, bias: nil)                // [B·(T−1), D]
        x.data.withUnsafeMutableBufferPointer { xp in
            for b in 0..<images.count {
                for i in 0..<t {
                    let dst = xp.baseAddress! + (b * t + i) * d
                    for j in 0..<d {
                        let tokenValue = i == 0 ? classEmbedding.data[j] : emb.data[(b * (t - 1) + i - 1) * d + j]
                        dst[j] = tokenValue + positionalEmbedding.data[i * d + j]
                    }
                }
            }
        }
        let segments = (0..<images.count).map { Segment(start: $0 * t, length: t) }
        return (Ops.layerNorm(x, weight: lnPreWeight, bias: lnPreBias, eps: arch.vision.layerNormEps), segments)
    }

    /// Image embeddings before L2 normalisation: [B, D'] for preprocessed images [3, S, S].
    /// A batch is split into one slice per BLAS thread, each computed on its own core.
    public func callAsFunction(_ images: [Tensor]) -> Tensor {
        rowsInSlices(count: images.count, width: arch.embedDim) { range, parallel in
            forward(Array(images[range]), parallelAttention: parallel)
        }
    }

    func forward(_ images: [Tensor], parallelAttention: Bool) -> Tensor {
        if images.isEmpty { return Tensor(zeros: [0, arch.embedDim]) }
        return readout(residualStream(images, parallelAttention: parallelAttention).final)
    }

    /// The residual stream of a batch: `x0` after ln_pre [B·T, D] (image b at rows b·T ..< (b+1)·T)
    /// and the final class-token rows [B, D]. `trace(layer, writes)` sees what every block wrote; in
    /// the last block only the class-token query rows are computed (row b of its trace is image b).
    public func residualStream(_ images: [Tensor], parallelAttention: Bool = true,
                               trace: ((Int, BlockTrace) -> Void)? = nil) -> (x0: Tensor, final: Tensor) {
        let (x0, segments) = embed(images)                                              // [B·T, D]
        var x = x0
        for (l, block) in blocks.enumerated() {
            let last = l == blocks.count - 1
            x = block.forward(x, segments: segments, arch: arch.vision, causal: false,
                              queries: last ? .first : .all, parallelAttention: parallelAttention,
                              trace: trace.map { t in { t(l, $0) } })
        }
        if blocks.isEmpty { x = Ops.gatherRows(x, segments.map(\.start)) }
        return (x0, x)                                                                  // [B·T, D], [B, D]
    }

    /// ln_post and the projection applied to final class-token rows [B, D] → [B, D'].
    public func readout(_ final: Tensor) -> Tensor {
        let pooled = Ops.layerNorm(final, weight: lnPostWeight, bias: lnPostBias, eps: arch.vision.layerNormEps) // [B, D]
        return Ops.linear(pooled, weight: projection, bias: nil)                       // [B, D']
    }
}

/// Computes `count` independent output rows of `width` in slices, one per BLAS thread
/// (`BLAS.forEachSlice`), and stacks them in order: [count, width]. `body(range, parallel)`
/// returns the rows of `range`; `parallel` says whether it may parallelise internally.
public func rowsInSlices(count: Int, width: Int, _ body: @Sendable (Range<Int>, Bool) -> Tensor) -> Tensor {
    if count == 0 { return Tensor(zeros: [0, width]) }
    if Swift.min(count, BLAS.threads) <= 1 { return body(0..<count, true) }
    var out = [Float](repeating: 0, count: count * width)                              // [count, width]
    out.withUnsafeMutableBufferPointer { buf in
        let dst = SendablePointer(buf.baseAddress!)
        BLAS.forEachSlice(count: count) { range in
            let rows = body(range, false)
            precondition(rows.shape == [range.count, width])
            rows.data.withUnsafeBufferPointer {
                (dst.pointer + range.lowerBound * width).update(from: $0.baseAddress!, count: rows.count)
            }
        }
    }
    return Tensor(shape: [count, width], data: out)
}

// MARK: Text tower

public struct CLIPTextTower: Sendable {
    public let arch: CLIPArchitecture
    public var tokenEmbedding: Tensor            // [V, W]
    public var positionalEmbedding: Tensor       // [ctx, W]
    public var blocks: [ResidualBlock]
    public var lnFinalWeight, lnFinalBias: Tensor // [W]
    public var projection: Tensor                // [D', W] (applied as x·Pᵀ)

    init(source: TensorSource, layout: CLIPLayout, arch: CLIPArchitecture) throws {
        self.arch = arch
        let w = arch.text.width
        let k = CLIPCheckpointKeys.text(layout)
        tokenEmbedding = try source.take(k.tokenEmbedding, shape: [arch.vocabSize, w])
        positionalEmbedding = try source.take(k.positionalEmbedding, shape: [arch.contextLength, w])
        blocks = try (0..<arch.text.layers).map {
            try ResidualBlock(source: source, keys: CLIPCheckpointKeys.block(layout, .text, $0), arch: arch.text)
        }
        lnFinalWeight = try source.take(k.lnFinalWeight, shape: [w])
        lnFinalBias = try source.take(k.lnFinalBias, shape: [w])
        projection = try takeProjection(source, k.projection, layout: layout, from: w, to: arch.embedDim)
    }

    /// Text embeddings before L2 normalisation, [N, D'], for token rows (any padding) and the
    /// position each row is read out at (its first end-of-text token). Positions after the
    /// read-out cannot influence it under the causal mask, so only tokens 0...eot are computed.
    public func callAsFunction(tokens: [[Int32]], readout: [Int]) -> Tensor {
        precondition(tokens.count == readout.count)
        return rowsInSlices(count: tokens.count, width: arch.embedDim) { range, parallel in
            forward(tokens: Array(tokens[range]), readout: Array(readout[range]), parallelAttention: parallel)
        }
    }

    func forward(tokens: [[Int32]], readout: [Int], parallelAttention: Bool) -> Tensor {
        if tokens.isEmpty { return Tensor(zeros: [0, arch.embedDim]) }
        let w = arch.text.width
        var segments = [Segment]()
        var total = 0
        for (row, eot) in zip(tokens, readout) {
            precondition(eot >= 0 && eot < row.count && eot < arch.contextLength, "read-out position \(eot)")
            segments.append(Segment(start: total, length: eot + 1))
            total += eot + 1
        }
        var x = Tensor(zeros: [total, w])                                              // [S, W]
        x.data.withUnsafeMutableBufferPointer { xp in
            for (n, seg) in segments.enumerated() {
                for i in 0..<seg.length {
                    let id = Int(tokens[n][i])
                    precondition(id >= 0 && id < arch.vocabSize, "token id \(id) outside the vocabulary")
                    let dst = xp.baseAddress! + (seg.start + i) * w
                    for j in 0..<w { dst[j] = tokenEmbedding.data[id * w + j] + positionalEmbedding.data[i * w + j] }
                }
            }
        }
        for (l, block) in blocks.enumerated() {
            let last = l == blocks.count - 1
            x = block.forward(x, segments: segments, arch: arch.text, causal: true,
                              queries: last ? .last : .all, parallelAttention: parallelAttention)
        }
        if blocks.isEmpty { x = Ops.gatherRows(x, segments.map { $0.start + $0.length - 1 }) }
        let pooled = Ops.layerNorm(x, weight: lnFinalWeight, bias: lnFinalBias, eps: arch.text.layerNormEps) // [N, W]
        return Ops.linear(pooled, weight: projection, bias: nil)                       // [N, D']
    }
}
