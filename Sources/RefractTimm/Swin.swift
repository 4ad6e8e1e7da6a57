// MARK: - Swin Transformer (timm SwinTransformer, v1)
//
// timm's `SwinTransformer` as its hub checkpoints use it (NHWC): a p×p stride-p patch embedding
// with bias and LayerNorm; stages of shifted-window blocks, every stage after the first opening
// with patch merging (2×2 gather, LayerNorm over 4C, linear 4C → 2C without bias); final
// LayerNorm on every token, then the mean over tokens (timm's pre-logits); `head.fc` gives logits.
//
// A block is pre-LN and, apart from attention, acts on every token alone. So the stream is put
// into window order (cyclic shift by −⌊w/2⌋ on odd blocks, then windows row-major, tokens
// row-major in a window), run through RefractCLIP's `ResidualBlock` with one segment per window
// and an additive bias (relative position bias, plus the shifted-window mask of −100), and put
// back: exactly timm's roll → partition → attention → reverse → roll back, with every linear
// layer one packed GEMM over all windows of the batch. LayerNorm eps 1e-5, exact GELU.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor

// MARK: Configuration

public struct SwinConfig: Sendable, Equatable, Codable {
    public var imageSize: Int
    public var patchSize: Int
    public var embedDim: Int
    public var depths: [Int]
    public var heads: [Int]
    /// The window size asked for; a stage whose grid is smaller uses its grid (and no shift).
    public var windowSize: Int
    public var mlpRatio: Double
    public var qkvBias: Bool
    public var numClasses: Int
    public var layerNormEps: Float { 1e-5 }

    public var stages: Int { depths.count }
    public func width(stage s: Int) -> Int { embedDim << s }
    /// Tokens per side of stage `s`'s grid.
    public func resolution(stage s: Int) -> Int { (imageSize / patchSize) >> s }
    public func window(stage s: Int) -> Int { min(windowSize, resolution(stage: s)) }
    /// The cyclic shift of block `b` of stage `s` (timm `_calc_window_shift`).
    public func shift(stage s: Int, block b: Int) -> Int {
        b % 2 == 1 && resolution(stage: s) > window(stage: s) ? windowSize / 2 : 0
    }
    public var featureWidth: Int { width(stage: stages - 1) }

    func tower(stage s: Int) -> TowerArchitecture {
        let d = width(stage: s)
        return TowerArchitecture(width: d, layers: depths[s], heads: heads[s], mlpWidth: Int(Double(d) * mlpRatio),
                                 layerNormEps: layerNormEps, activation: .gelu)
    }

    public var parameterCount: Int {
        var n = embedDim * (3 * patchSize * patchSize + 3)
        for s in 0..<stages {
            let d = width(stage: s), f = Int(Double(d) * mlpRatio), w = window(stage: s)
            if s > 0 { n += 8 * (d / 2) + 2 * d * d }
            n += depths[s] * (4 * d + 4 * d * d + 4 * d + 2 * f * d + f + d + (2 * w - 1) * (2 * w - 1) * heads[s])
        }
        return n + 2 * featureWidth + numClasses * (featureWidth + 1)
    }

    static func resolve(_ args: ConfigObject, config: TimmConfigFile) throws -> SwinConfig {
        let known: Set<String> = ["img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depths",
                                  "num_heads", "head_dim", "window_size", "always_partition", "strict_img_size", "mlp_ratio",
                                  "qkv_bias", "ape", "patch_norm", "drop_rate", "proj_drop_rate", "attn_drop_rate",
                                  "drop_path_rate", "weight_init", "embed_layer", "norm_layer", "act_layer"]
        try args.requireKnown(known, of: "SwinTransformer")
        try args.requireCommon(customLayers: ["embed_layer", "norm_layer"])
        let b = ConfigBounds(file: args.file)
        func key(_ k: String) -> String { args.prefix + k }
        let require = args.require
        try require("always_partition", try args.bool("always_partition") ?? false == false, "false")
        try require("ape", try args.bool("ape") ?? false == false, "false (absolute position embedding is not supported)")
        try require("patch_norm", try args.bool("patch_norm") ?? true, "true")
        try require("head_dim", !args.has("head_dim"), "absent (the head width is the stage width / heads)")
        try require("act_layer", (try args.string("act_layer") ?? "gelu") == "gelu", "\"gelu\"")
        let pool = try args.string("global_pool") ?? config.globalPool ?? "avg"
        try require("global_pool", pool == "avg", "avg")
        let imageSize = try b.int(key("img_size"), try args.square("img_size"), default: 224, in: ConfigLimits.imageSize)
        let patch = try b.int(key("patch_size"), try args.square("patch_size"), default: 4, in: ConfigLimits.patchSize)
        try b.multiple(key("img_size"), imageSize, of: key("patch_size"), patch)
        let embed = try b.int(key("embed_dim"), try args.int("embed_dim"), default: 96, in: ConfigLimits.width)
        let depths = try args.ints("depths") ?? [2, 2, 6, 2]
        let heads = try args.ints("num_heads") ?? [3, 6, 12, 24]
        guard (1...8).contains(depths.count), heads.count == depths.count else {
            throw ConfigValueError(file: args.file, key: key("depths") + "/" + key("num_heads"), value: "\(depths) / \(heads)",
                                   allowed: "1 to 8 stages, one head count per stage")
        }
        let window = try b.int(key("window_size"), try args.square("window_size"), default: 7, in: 1...64)
        let ratio = try b.double(key("mlp_ratio"), try args.double("mlp_ratio"), default: 4, in: ConfigLimits.mlpRatio)
        let grid = imageSize / patch
        for s in 0..<depths.count {
            _ = try b.int(key("depths") + "[\(s)]", depths[s], in: ConfigLimits.layers)
            _ = try b.int(key("num_heads") + "[\(s)]", heads[s], in: ConfigLimits.heads)
            let width = embed << s
            _ = try b.derived("\(key("embed_dim")) * 2^\(s)", width, in: ConfigLimits.width)
            try b.multiple("\(key("embed_dim")) * 2^\(s)", width, of: key("num_heads") + "[\(s)]", heads[s])
            let resolution = grid >> s
            guard resolution >= 1, resolution << s == grid, resolution % min(window, resolution) == 0 else {
                throw ConfigValueError(file: args.file, key: key("img_size"), value: "\(imageSize)",
                                       allowed: "a size whose grid (\(grid)) halves evenly over \(depths.count) stages into whole windows of \(window)")
            }
        }
        let numClasses = try b.int(key("num_classes"), try args.int("num_classes") ?? config.numClasses, default: 1000, in: 0...1_000_000)
        return SwinConfig(imageSize: imageSize, patchSize: patch, embedDim: embed, depths: depths, heads: heads, windowSize: window,
                          mlpRatio: ratio, qkvBias: try args.bool("qkv_bias") ?? true, numClasses: numClasses)
    }
}

// MARK: Checkpoint keys

enum SwinKeys {
    static let patchWeight = "patch_embed.proj.weight", patchBias = "patch_embed.proj.bias"
    static let patchNormWeight = "patch_embed.norm.weight", patchNormBias = "patch_embed.norm.bias"
    static let normWeight = "norm.weight", normBias = "norm.bias"
    static let headWeight = "head.fc.weight", headBias = "head.fc.bias"

    static func mergeNorm(_ s: Int) -> (String, String) { ("layers.\(s).downsample.norm.weight", "layers.\(s).downsample.norm.bias") }
    static func mergeReduction(_ s: Int) -> String { "layers.\(s).downsample.reduction.weight" }
    static func relativePositionTable(_ s: Int, _ b: Int) -> String { "layers.\(s).blocks.\(b).attn.relative_position_bias_table" }
    /// Buffers older timm versions saved; recomputed here.
    static func buffers(_ s: Int, _ b: Int) -> [String] {
        ["layers.\(s).blocks.\(b).attn.relative_position_index", "layers.\(s).blocks.\(b).attn_mask"]
    }

    static func block(_ s: Int, _ b: Int) -> BlockKeys {
        let p = "layers.\(s).blocks.\(b)."
        return BlockKeys(ln1Weight: p + "norm1.weight", ln1Bias: p + "norm1.bias",
                         qkvWeight: [p + "attn.qkv.weight"], qkvBias: [p + "attn.qkv.bias"],
                         outWeight: p + "attn.proj.weight", outBias: p + "attn.proj.bias",
                         ln2Weight: p + "norm2.weight", ln2Bias: p + "norm2.bias",
                         fc1Weight: p + "mlp.fc1.weight", fc1Bias: p + "mlp.fc1.bias",
                         fc2Weight: p + "mlp.fc2.weight", fc2Bias: p + "mlp.fc2.bias")
    }
}

// MARK: Windows

/// Where the tokens of one block's windows come from, and what its attention adds.
public struct WindowLayout: TokenPartition {
    /// Tokens per side of the stage grid, window side, cyclic shift.
    public let resolution: Int
    public let window: Int
    public let shift: Int
    /// For window-order row k of one image, the grid row (y·R + x) it holds.
    public let source: [Int]
    /// The inverse: for grid row r, its window-order row.
    public let position: [Int]
    /// Relative position bias plus, when shifted, the −100 mask: [windows, heads, n, n].
    public let bias: AttentionBias

    public var tokensPerWindow: Int { window * window }

    init(resolution r: Int, window w: Int, shift: Int, heads: Int, table: Tensor) {
        resolution = r
        window = w
        self.shift = shift
        let perSide = r / w, n = w * w
        var source = [Int](repeating: 0, count: r * r)
        for wy in 0..<perSide {
            for wx in 0..<perSide {
                for i in 0..<w {
                    for j in 0..<w {
                        let k = (wy * perSide + wx) * n + i * w + j
                        // torch.roll(x, -shift): the shifted grid at (y, x) holds (y + shift, x + shift).
                        source[k] = ((wy * w + i + shift) % r) * r + (wx * w + j + shift) % r
                    }
                }
            }
        }
        self.source = source
        position = Self.inverse(source)
        // Relative position bias: table[(yi − yj + w − 1)(2w − 1) + (xi − xj + w − 1), head].
        var relative = [Float](repeating: 0, count: heads * n * n)                  // [heads, n, n]
        for i in 0..<n {
            for j in 0..<n {
                let index = (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1)
                for h in 0..<heads { relative[(h * n + i) * n + j] = table.data[index * heads + h] }
            }
        }
        guard shift > 0 else {
            bias = AttentionBias(values: relative, groups: 1, heads: heads, n: n)
            return
        }
        // Regions of the shifted grid (timm calculate_attn_mask): [0, r − w), [r − w, r − shift), [r − shift, r).
        func region(_ c: Int) -> Int { c < r - w ? 0 : c < r - shift ? 1 : 2 }
        let windows = perSide * perSide
        var values = [Float](repeating: 0, count: windows * heads * n * n)         // [windows, heads, n, n]
        for win in 0..<windows {
            let wy = win / perSide, wx = win % perSide
            let label = (0..<n).map { region(wy * w + $0 / w) * 3 + region(wx * w + $0 % w) }
            for h in 0..<heads {
                for i in 0..<n {
                    for j in 0..<n {
                        values[((win * heads + h) * n + i) * n + j] = relative[(h * n + i) * n + j] + (label[i] == label[j] ? 0 : -100)
                    }
                }
            }
        }
        bias = AttentionBias(values: values, groups: windows, heads: heads, n: n)
    }

}

// MARK: Model

public struct SwinStage: Sendable {
    /// Patch merging into this stage (stages after the first): LayerNorm over 4C, then [2C, 4C].
    public var mergeNorm: (weight: Tensor, bias: Tensor)?
    public var mergeReduction: Tensor?
    public var blocks: [ResidualBlock]
    public var windows: [WindowLayout]
}

public struct SwinTransformer: Sendable {
    public let config: SwinConfig
    public var patchWeight: Tensor                   // [C, 3·p·p]
    public var patchBias: Tensor                     // [C]
    public var patchNorm: (weight: Tensor, bias: Tensor)
    public var stages: [SwinStage]
    public var norm: (weight: Tensor, bias: Tensor)  // [C_last]
    public var head: (weight: Tensor, bias: Tensor)? // [classes, C_last]

    init(source: TensorSource, config c: SwinConfig) throws {
        config = c
        let d0 = c.embedDim, p = c.patchSize
        patchWeight = try source.take(SwinKeys.patchWeight, shape: [d0, 3, p, p]).reshaped([d0, 3 * p * p])
        patchBias = try source.take(SwinKeys.patchBias, shape: [d0])
        patchNorm = (try source.take(SwinKeys.patchNormWeight, shape: [d0]), try source.take(SwinKeys.patchNormBias, shape: [d0]))
        stages = try (0..<c.stages).map { s in
            let d = c.width(stage: s), w = c.window(stage: s), tower = c.tower(stage: s)
            var mergeNorm: (Tensor, Tensor)?
            var reduction: Tensor?
            if s > 0 {
                let keys = SwinKeys.mergeNorm(s)
                mergeNorm = (try source.take(keys.0, shape: [2 * d]), try source.take(keys.1, shape: [2 * d]))
                reduction = try source.take(SwinKeys.mergeReduction(s), shape: [d, 2 * d])
            }
            var blocks: [ResidualBlock] = []
            var windows: [WindowLayout] = []
            for b in 0..<c.depths[s] {
                let keys = SwinKeys.block(s, b)
                blocks.append(try ResidualBlock(source: c.qkvBias ? source : ZeroQKVBias(source), keys: keys, arch: tower))
                let table = try source.take(SwinKeys.relativePositionTable(s, b), shape: [(2 * w - 1) * (2 * w - 1), c.heads[s]])
                windows.append(WindowLayout(resolution: c.resolution(stage: s), window: w, shift: c.shift(stage: s, block: b),
                                            heads: c.heads[s], table: table))
                for buffer in SwinKeys.buffers(s, b) { source.ignore(buffer) }
            }
            return SwinStage(mergeNorm: mergeNorm, mergeReduction: reduction, blocks: blocks, windows: windows)
        }
        let last = c.featureWidth
        norm = (try source.take(SwinKeys.normWeight, shape: [last]), try source.take(SwinKeys.normBias, shape: [last]))
        head = c.numClasses > 0 ? (try source.take(SwinKeys.headWeight, shape: [c.numClasses, last]),
                                   try source.take(SwinKeys.headBias, shape: [c.numClasses])) : nil
    }

    /// The patch embedding and its LayerNorm: [B·R², C] in grid order (row y·R + x).
    public func embed(_ images: [Tensor]) -> Tensor {
        let c = config, r = c.resolution(stage: 0)
        for image in images {
            precondition(image.shape == [3, c.imageSize, c.imageSize], "image tensor \(image.shape), expected [3, \(c.imageSize), \(c.imageSize)]")
        }
        let rows = Tensor(shape: [images.count * r * r, 3 * c.patchSize * c.patchSize],
                          data: images.flatMap { Ops.patchRows($0, patch: c.patchSize).data })    // [B·R², 3p²]
        let x = Ops.linear(rows, weight: patchWeight, bias: patchBias)                            // [B·R², C]
        return Ops.layerNorm(x, weight: patchNorm.weight, bias: patchNorm.bias, eps: c.layerNormEps)
    }

    /// Patch merging's 2×2 gather: [B·R², C] → [B·(R/2)², 4C], each output token
    /// [x(2i,2j), x(2i+1,2j), x(2i,2j+1), x(2i+1,2j+1)] (timm's reshape/permute order).
    public static func mergeGather(_ x: Tensor, images: Int, resolution r: Int) -> Tensor {
        let d = x.shape[1], h = r / 2
        var out = [Float](repeating: 0, count: images * h * h * 4 * d)                  // [B·(R/2)², 4C]
        x.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for b in 0..<images {
                    for i in 0..<h {
                        for j in 0..<h {
                            let o = dst.baseAddress! + ((b * h + i) * h + j) * 4 * d
                            for (part, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].enumerated() {
                                let from = src.baseAddress! + ((b * r + 2 * i + dy) * r + 2 * j + dx) * d
                                (o + part * d).update(from: from, count: d)
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [images * h * h, 4 * d], data: out)
    }

    /// The final stream [B·R², C_last] in grid order. `trace(stage, block, writes)` sees what every
    /// block wrote, in that block's window order (`stages[s].windows[b].source`); `merged(stage, x)`
    /// sees each patch merge's gathered input [B·R², 4C] (grid order of the merged stage) before its
    /// LayerNorm.
    public func residualStream(_ images: [Tensor], parallelAttention: Bool = true,
                               trace: ((Int, Int, BlockTrace) -> Void)? = nil,
                               merged: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        let c = config
        var x = embed(images)                                                                      // [B·R², C]
        for (s, stage) in stages.enumerated() {
            if let mergeNorm = stage.mergeNorm, let reduction = stage.mergeReduction {
                let gathered = Self.mergeGather(x, images: images.count, resolution: c.resolution(stage: s - 1))   // [B·R², 4C]
                merged?(s, gathered)
                let normed = Ops.layerNorm(gathered, weight: mergeNorm.weight, bias: mergeNorm.bias, eps: c.layerNormEps)
                x = Ops.linear(normed, weight: reduction, bias: nil)                               // [B·R², 2C]
            }
            for (b, block) in stage.blocks.enumerated() {
                let layout = stage.windows[b]
                let windowed = layout.reorder(x, images: images.count)                             // window order
                let y = block.forward(windowed, segments: layout.segments(images: images.count), arch: c.tower(stage: s),
                                      causal: false, parallelAttention: parallelAttention, attentionBias: layout.bias,
                                      trace: trace.map { t in { t(s, b, $0) } })
                x = layout.reorder(y, images: images.count, inverse: true)                         // grid order
            }
        }
        return x
    }

    /// Pre-logits features [B, C_last]: the final LayerNorm on every token, then their mean.
    public func readout(_ final: Tensor, images: Int) -> Tensor {
        let x = Ops.layerNorm(final, weight: norm.weight, bias: norm.bias, eps: config.layerNormEps)   // [B·T, C]
        return Ops.meanRows(x, groups: images)                                                       // [B, C]
    }

    /// Pre-logits features [B, C_last] of preprocessed images, one batch slice per core.
    public func callAsFunction(_ images: [Tensor]) -> Tensor {
        rowsInSlices(count: images.count, width: config.featureWidth) { range, parallel in
            let slice = Array(images[range])
            return readout(residualStream(slice, parallelAttention: parallel), images: slice.count)
        }
    }

    public func logits(_ features: Tensor) -> Tensor? {
        head.map { Ops.linear(features, weight: $0.weight, bias: $0.bias) }
    }
}
