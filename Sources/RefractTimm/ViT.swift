// MARK: - Vision Transformer (timm VisionTransformer: ViT, DeiT, DINO, DINOv2)
//
// timm's `VisionTransformer` as its hub checkpoints use it: a p×p stride-p patch embedding with
// bias, class token, optional register tokens, learned position embedding (added to the class and
// register tokens too unless `no_embed_class`), optional pre-norm, pre-LN blocks with optional
// LayerScale (DINOv2), exact GELU or packed SwiGLU (DINOv2 giant), LayerNorm eps 1e-6, final norm,
// then pooling: the class token (`global_pool: token`) or the mean of the patch tokens (`avg`,
// with `fc_norm` after pooling by default). The representation is timm's pre-logits
// (`forward_head(forward_features(x), pre_logits=True)`); the head, when there is one, gives logits.
//
// The blocks are RefractCLIP's `ResidualBlock`s (one packed GEMM per linear layer, attention in
// parallel over images and heads), so the decomposition reads them as it reads CLIP's.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor

// MARK: Configuration

/// Everything the ViT forward pass needs, resolved from the registry and `model_args`.
public struct ViTConfig: Sendable, Equatable, Codable {
    public var imageSize: Int
    public var patchSize: Int
    public var tower: TowerArchitecture
    public var qkvBias: Bool
    /// LayerScale gammas present (`init_values` set).
    public var layerScale: Bool
    public var classToken: Bool
    public var registers: Int
    /// Position embedding only on the patch tokens (DINOv2 with registers).
    public var noEmbedClass: Bool
    public var preNorm: Bool
    /// "token" or "avg".
    public var globalPool: String
    /// LayerNorm applied after pooling (`fc_norm`) instead of to every token before it.
    public var fcNorm: Bool
    /// LayerNorm on every token before pooling (`norm`).
    public var finalNorm: Bool
    public var numClasses: Int

    public var width: Int { tower.width }
    public var gridSize: Int { imageSize / patchSize }
    /// Class token and registers.
    public var prefixTokens: Int { (classToken ? 1 : 0) + registers }
    public var tokens: Int { prefixTokens + gridSize * gridSize }
    /// Rows of the position embedding.
    public var positionRows: Int { gridSize * gridSize + (noEmbedClass ? 0 : prefixTokens) }

    public var parameterCount: Int {
        let d = tower.width, f = tower.mlpWidth
        let fc2In = tower.activation == .swiGLU ? f / 2 : f
        let block = 4 * d + 3 * d * d + 3 * d + d * d + d + f * d + f + fc2In * d + d + (layerScale ? 2 * d : 0)
        return d * 3 * patchSize * patchSize + d + prefixTokens * d + positionRows * d + tower.layers * block
            + 4 * d + numClasses * (d + 1)
    }

    /// Resolves the arguments (registry defaults overridden by `model_args`), checking each.
    static func resolve(_ args: ConfigObject, config: TimmConfigFile) throws -> ViTConfig {
        let known: Set<String> = ["img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth",
                                  "num_heads", "mlp_ratio", "qkv_bias", "qk_norm", "proj_bias", "init_values", "class_token",
                                  "no_embed_class", "reg_tokens", "pre_norm", "final_norm", "fc_norm", "dynamic_img_size",
                                  "dynamic_img_pad", "act_layer", "mlp_layer", "pos_embed", "drop_rate", "pos_drop_rate",
                                  "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init",
                                  "fix_init", "embed_layer", "norm_layer", "block_fn"]
        try args.requireKnown(known, of: "VisionTransformer")
        try args.requireCommon(customLayers: ["embed_layer", "norm_layer", "block_fn"])
        let b = ConfigBounds(file: args.file)
        func key(_ k: String) -> String { args.prefix + k }
        let require = args.require
        try require("qk_norm", try args.bool("qk_norm") ?? false == false, "false (QK-norm is not supported)")
        try require("proj_bias", try args.bool("proj_bias") ?? true, "true")
        try require("dynamic_img_pad", try args.bool("dynamic_img_pad") ?? false == false, "false")
        try require("pos_embed", (try args.string("pos_embed") ?? "learn") == "learn", "\"learn\"")
        let act = try args.string("act_layer") ?? "gelu"
        let mlpLayer = try args.string("mlp_layer") ?? "mlp"
        let activation: Ops.Activation
        switch (mlpLayer, act) {
        case ("mlp", "gelu"): activation = .gelu
        case ("swiglu_packed", "silu"): activation = .swiGLU
        default:
            throw ConfigValueError(file: args.file, key: key("mlp_layer") + "/" + key("act_layer"), value: "\(mlpLayer)/\(act)",
                                   allowed: "mlp/gelu or swiglu_packed/silu")
        }
        let imageSize = try b.int(key("img_size"), try args.square("img_size"), default: 224, in: ConfigLimits.imageSize)
        let patch = try b.int(key("patch_size"), try args.square("patch_size"), default: 16, in: ConfigLimits.patchSize)
        try b.multiple(key("img_size"), imageSize, of: key("patch_size"), patch)
        _ = try b.derived(key("img_size") + " / " + key("patch_size"), imageSize / patch, in: ConfigLimits.gridSide)
        let width = try b.int(key("embed_dim"), try args.int("embed_dim"), default: 768, in: ConfigLimits.width)
        let depth = try b.int(key("depth"), try args.int("depth"), default: 12, in: ConfigLimits.layers)
        let heads = try b.int(key("num_heads"), try args.int("num_heads"), default: 12, in: ConfigLimits.heads)
        try b.multiple(key("embed_dim"), width, of: key("num_heads"), heads)
        let ratio = try b.double(key("mlp_ratio"), try args.double("mlp_ratio"), default: 4, in: ConfigLimits.mlpRatio)
        var mlpWidth = try b.derived("int(\(key("embed_dim")) * \(key("mlp_ratio")))", Int(Double(width) * ratio), in: ConfigLimits.mlpWidth)
        if activation == .swiGLU { mlpWidth -= mlpWidth % 2 }
        let registers = try b.int(key("reg_tokens"), try args.int("reg_tokens"), default: 0, in: 0...64)
        let classToken = try args.bool("class_token") ?? true
        let pool = try args.string("global_pool") ?? config.globalPool ?? "token"
        guard pool == "token" || pool == "avg" else {
            throw ConfigValueError(file: args.file, key: key("global_pool"), value: pool, allowed: "token or avg")
        }
        try require("global_pool", pool != "token" || classToken, "avg (there is no class token)")
        let fcNorm = try args.bool("fc_norm") ?? (pool == "avg")
        let numClasses = try b.int(key("num_classes"), try args.int("num_classes") ?? config.numClasses, default: 1000, in: 0...1_000_000)
        let initValues = args.has("init_values") ? try args.double("init_values") : nil
        return ViTConfig(imageSize: imageSize, patchSize: patch,
                         tower: TowerArchitecture(width: width, layers: depth, heads: heads, mlpWidth: mlpWidth,
                                                  layerNormEps: 1e-6, activation: activation),
                         qkvBias: try args.bool("qkv_bias") ?? true, layerScale: initValues != nil, classToken: classToken,
                         registers: registers, noEmbedClass: try args.bool("no_embed_class") ?? false,
                         preNorm: try args.bool("pre_norm") ?? false, globalPool: pool, fcNorm: fcNorm,
                         finalNorm: (try args.bool("final_norm") ?? true) && !fcNorm, numClasses: numClasses)
    }
}

// MARK: Checkpoint keys

/// Every tensor name of a timm VisionTransformer state_dict.
enum ViTKeys {
    static let patchWeight = "patch_embed.proj.weight", patchBias = "patch_embed.proj.bias"
    static let classToken = "cls_token", registers = "reg_token", positions = "pos_embed"
    static let preNormWeight = "norm_pre.weight", preNormBias = "norm_pre.bias"
    static let normWeight = "norm.weight", normBias = "norm.bias"
    static let fcNormWeight = "fc_norm.weight", fcNormBias = "fc_norm.bias"
    static let headWeight = "head.weight", headBias = "head.bias"

    static func block(_ i: Int, layerScale: Bool) -> BlockKeys {
        let p = "blocks.\(i)."
        return BlockKeys(ln1Weight: p + "norm1.weight", ln1Bias: p + "norm1.bias",
                         qkvWeight: [p + "attn.qkv.weight"], qkvBias: [p + "attn.qkv.bias"],
                         outWeight: p + "attn.proj.weight", outBias: p + "attn.proj.bias",
                         ln2Weight: p + "norm2.weight", ln2Bias: p + "norm2.bias",
                         fc1Weight: p + "mlp.fc1.weight", fc1Bias: p + "mlp.fc1.bias",
                         fc2Weight: p + "mlp.fc2.weight", fc2Bias: p + "mlp.fc2.bias",
                         layerScale1: layerScale ? p + "ls1.gamma" : nil, layerScale2: layerScale ? p + "ls2.gamma" : nil)
    }
}

/// A source that supplies a zero qkv bias for models built with `qkv_bias: false`.
final class ZeroQKVBias: TensorSource {
    let base: TensorSource
    init(_ base: TensorSource) { self.base = base }
    func take(_ key: String, shape: [Int]) throws -> Tensor {
        key.hasSuffix("attn.qkv.bias") ? Tensor(zeros: shape) : try base.take(key, shape: shape)
    }
    func ignore(_ key: String) { base.ignore(key) }
}

// MARK: Model

public struct VisionTransformer: Sendable {
    public let config: ViTConfig
    public var patchWeight: Tensor                  // [D, 3·p·p]
    public var patchBias: Tensor                    // [D]
    public var classToken: Tensor?                  // [D]
    public var registerTokens: Tensor?              // [R, D]
    public var positions: Tensor                    // [positionRows, D]
    public var preNorm: (weight: Tensor, bias: Tensor)?
    public var blocks: [ResidualBlock]
    /// LayerNorm on every token before pooling (`norm`), or after pooling (`fc_norm`).
    public var norm: (weight: Tensor, bias: Tensor)?
    public var fcNorm: (weight: Tensor, bias: Tensor)?
    public var head: (weight: Tensor, bias: Tensor)? // [C, D], [C]

    init(source: TensorSource, config c: ViTConfig) throws {
        config = c
        let d = c.width, p = c.patchSize
        patchWeight = try source.take(ViTKeys.patchWeight, shape: [d, 3, p, p]).reshaped([d, 3 * p * p])
        patchBias = try source.take(ViTKeys.patchBias, shape: [d])
        classToken = c.classToken ? try source.take(ViTKeys.classToken, shape: [1, 1, d]).reshaped([d]) : nil
        registerTokens = c.registers > 0 ? try source.take(ViTKeys.registers, shape: [1, c.registers, d]).reshaped([c.registers, d]) : nil
        positions = try source.take(ViTKeys.positions, shape: [1, c.positionRows, d]).reshaped([c.positionRows, d])
        func norm(_ w: String, _ b: String) throws -> (Tensor, Tensor) { (try source.take(w, shape: [d]), try source.take(b, shape: [d])) }
        preNorm = c.preNorm ? try norm(ViTKeys.preNormWeight, ViTKeys.preNormBias) : nil
        let blockSource: TensorSource = c.qkvBias ? source : ZeroQKVBias(source)
        blocks = try (0..<c.tower.layers).map {
            try ResidualBlock(source: blockSource, keys: ViTKeys.block($0, layerScale: c.layerScale), arch: c.tower)
        }
        self.norm = c.finalNorm ? try norm(ViTKeys.normWeight, ViTKeys.normBias) : nil
        fcNorm = c.fcNorm ? try norm(ViTKeys.fcNormWeight, ViTKeys.fcNormBias) : nil
        head = c.numClasses > 0 ? (try source.take(ViTKeys.headWeight, shape: [c.numClasses, d]),
                                   try source.take(ViTKeys.headBias, shape: [c.numClasses])) : nil
    }

    /// The stream entering the first block, for a batch packed as [B·T, D], and its segments.
    /// Token order per image: class token, registers, patches row-major.
    public func embed(_ images: [Tensor]) -> (x: Tensor, segments: [Segment]) {
        let c = config, d = c.width, t = c.tokens, prefix = c.prefixTokens, n = c.gridSize * c.gridSize
        for image in images {
            precondition(image.shape == [3, c.imageSize, c.imageSize], "image tensor \(image.shape), expected [3, \(c.imageSize), \(c.imageSize)]")
        }
        let rows = Tensor(shape: [images.count * n, 3 * c.patchSize * c.patchSize],
                          data: images.flatMap { Ops.patchRows($0, patch: c.patchSize).data })   // [B·N, 3p²]
        let patches = Ops.linear(rows, weight: patchWeight, bias: patchBias)                    // [B·N, D]
        var x = Tensor(zeros: [images.count * t, d])                                            // [B·T, D]
        x.data.withUnsafeMutableBufferPointer { xp in
            for b in 0..<images.count {
                for i in 0..<t {
                    let dst = xp.baseAddress! + (b * t + i) * d
                    let value: ArraySlice<Float>
                    if i < prefix {
                        value = c.classToken && i == 0 ? classToken!.data[0..<d]
                            : registerTokens!.data[((i - (c.classToken ? 1 : 0)) * d)..<((i - (c.classToken ? 1 : 0) + 1) * d)]
                    } else {
                        value = patches.data[((b * n + i - prefix) * d)..<((b * n + i - prefix + 1) * d)]
                    }
                    // Position row: every token's own, or the patches' only (no_embed_class).
                    let position = c.noEmbedClass ? (i < prefix ? nil : i - prefix) : i
                    value.withUnsafeBufferPointer { v in
                        for j in 0..<d { dst[j] = v[j] + (position.map { positions.data[$0 * d + j] } ?? 0) }
                    }
                }
            }
        }
        let segments = (0..<images.count).map { Segment(start: $0 * t, length: t) }
        if let preNorm { x = Ops.layerNorm(x, weight: preNorm.weight, bias: preNorm.bias, eps: c.tower.layerNormEps) }
        return (x, segments)
    }

    /// The residual stream of a batch: `x0` entering the blocks [B·T, D] and the final stream:
    /// the class-token rows [B, D] for token pooling (the last block computes only those), every
    /// row [B·T, D] for average pooling. `trace(block, writes)` sees what every block wrote.
    public func residualStream(_ images: [Tensor], parallelAttention: Bool = true,
                               trace: ((Int, BlockTrace) -> Void)? = nil) -> (x0: Tensor, final: Tensor) {
        let (x0, segments) = embed(images)                                                      // [B·T, D]
        let tokenPool = config.globalPool == "token"
        var x = x0
        for (l, block) in blocks.enumerated() {
            let last = l == blocks.count - 1
            x = block.forward(x, segments: segments, arch: config.tower, causal: false,
                              queries: last && tokenPool ? .first : .all, parallelAttention: parallelAttention,
                              trace: trace.map { t in { t(l, $0) } })
        }
        if blocks.isEmpty && tokenPool { x = Ops.gatherRows(x, segments.map(\.start)) }
        return (x0, x)
    }

    /// Pre-logits features [B, D] from the final stream (`residualStream(...).final`).
    public func readout(_ final: Tensor, images: Int) -> Tensor {
        let c = config, d = c.width
        var x = final
        if let norm { x = Ops.layerNorm(x, weight: norm.weight, bias: norm.bias, eps: c.tower.layerNormEps) }
        if c.globalPool == "avg" {
            let t = c.tokens, n = c.gridSize * c.gridSize
            var pooled = [Float](repeating: 0, count: images * d)                              // [B, D]
            for b in 0..<images {
                for i in c.prefixTokens..<t {
                    for j in 0..<d { pooled[b * d + j] += x.data[(b * t + i) * d + j] }
                }
                for j in 0..<d { pooled[b * d + j] /= Float(n) }
            }
            x = Tensor(shape: [images, d], data: pooled)
        }
        if let fcNorm { x = Ops.layerNorm(x, weight: fcNorm.weight, bias: fcNorm.bias, eps: c.tower.layerNormEps) }
        return x
    }

    /// Pre-logits features [B, D] of preprocessed images, one batch slice per core.
    public func callAsFunction(_ images: [Tensor]) -> Tensor {
        rowsInSlices(count: images.count, width: config.width) { range, parallel in
            let slice = Array(images[range])
            return readout(residualStream(slice, parallelAttention: parallel).final, images: slice.count)
        }
    }

    /// Logits [B, C] from pre-logits features, or nil without a head.
    public func logits(_ features: Tensor) -> Tensor? {
        head.map { Ops.linear(features, weight: $0.weight, bias: $0.bias) }
    }
}
