// MARK: - MaxViT (timm MaxxVit, the `_tf_` family)
//
// timm's `maxvit_{tiny,small,base,large}_tf_*`: a stem (3×3 stride-2 conv with TF "same" padding
// and bias, BatchNorm + GELU-tanh, 3×3 conv), then stages of MaxxVit blocks, each
//   x ← shortcut(x) + MBConv(x)      (pre-BatchNorm, 1×1 expand, BN + GELU-tanh, depthwise 3×3
//                                      (stride 2 in a stage's first block), BN + GELU-tanh,
//                                      squeeze-excite (SiLU, sigmoid), 1×1 project with bias;
//                                      shortcut: identity, or 2×2 average pool + 1×1 conv with bias
//                                      in a stage's first block)
//   x ← block attention (windows of w×w neighbours), then grid attention (w×w tokens strided over
//       the grid), each a pre-LN transformer block (LayerNorm eps 1e-5, relative position bias
//       indexed by key minus query, MLP with GELU-tanh).
// BatchNorm eps 1e-3 (running statistics: eval). The representation Refract decomposes is the
// spatial mean of the last stage's output (what the official code decomposes; not timm's
// pre-logits); the head (LayerNorm, pre-logits linear + tanh, classifier) runs on it.
//
// Activations are channels-last rows [B·H·W, C] throughout: 1×1 convolutions are one GEMM over
// the batch, 3×3 convolutions an im2col GEMM, depthwise convolutions a direct kernel (each with a
// plain reference implementation, `MaxViTReference`, tested against it), attention sub-blocks
// RefractCLIP's `ResidualBlock` on the stream put in partition order.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor

// MARK: Configuration

public struct MaxViTConfig: Sendable, Equatable, Codable {
    public var imageSize: Int
    public var stemWidth: Int
    public var embedDims: [Int]
    public var depths: [Int]
    public var dimHead: Int
    /// Window and grid side of the partition attention.
    public var partition: Int
    public var headHidden: Int
    public var numClasses: Int
    public var convEps: Float { 1e-3 }
    public var normEps: Float { 1e-5 }

    public var stages: Int { depths.count }
    public func width(stage s: Int) -> Int { embedDims[s] }
    public func heads(stage s: Int) -> Int { embedDims[s] / dimHead }
    /// Tokens per side: the stem halves the input, every stage halves again.
    public func resolution(stage s: Int) -> Int { imageSize >> (s + 2) }
    public var featureWidth: Int { embedDims[stages - 1] }
    /// MBConv's expanded width (timm `make_divisible(4·out, 8)`).
    public func mid(stage s: Int) -> Int { Self.makeDivisible(4 * Double(width(stage: s)), 8) }
    /// Squeeze-excite width (`int(0.25·out)`).
    public func seWidth(stage s: Int) -> Int { Int(0.25 * Double(width(stage: s))) }

    static func makeDivisible(_ v: Double, _ divisor: Int) -> Int {
        var n = max(divisor, Int(v + Double(divisor) / 2) / divisor * divisor)
        if Double(n) < 0.9 * v { n += divisor }
        return n
    }

    func tower(stage s: Int) -> TowerArchitecture {
        TowerArchitecture(width: width(stage: s), layers: depths[s], heads: heads(stage: s), mlpWidth: 4 * width(stage: s),
                          layerNormEps: normEps, activation: .geluTanh)
    }

    public var parameterCount: Int {
        var n = stemWidth * 27 + stemWidth * stemWidth * 9 + 6 * stemWidth
        var previous = stemWidth
        for s in 0..<stages {
            let c = width(stage: s), m = mid(stage: s), r = seWidth(stage: s), w = partition
            for b in 0..<depths[s] {
                let input = b == 0 ? previous : c
                n += (b == 0 ? input * c + c : 0) + 4 * input + input * m + 8 * m + 9 * m + 2 * m * r + r + m + m * c + c
                n += 2 * (4 * c + 3 * c * c + 3 * c + c * c + c + 8 * c * c + 5 * c + heads(stage: s) * (2 * w - 1) * (2 * w - 1))
            }
            previous = c
        }
        return n + 2 * featureWidth + headHidden * (featureWidth + 1) + numClasses * (headHidden + 1)
    }

    static func resolve(_ args: ConfigObject, config: TimmConfigFile) throws -> MaxViTConfig {
        let known: Set<String> = ["img_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depths", "stem_width",
                                  "head_hidden_size", "transformer_dim_head", "transformer_window_size", "transformer_grid_size",
                                  "transformer_partition_ratio", "drop_rate", "drop_path_rate", "weight_init", "stem_bias", "block_type"]
        try args.requireKnown(known, of: "MaxxVit (maxvit_*_tf)")
        try args.requireCommon(customLayers: [])
        let b = ConfigBounds(file: args.file)
        func key(_ k: String) -> String { args.prefix + k }
        try args.require("stem_bias", try args.bool("stem_bias") ?? true, "true")
        try args.require("block_type", !args.has("block_type"), "the default (every block 'M', MaxxVit)")
        let pool = try args.string("global_pool") ?? config.globalPool ?? "avg"
        try args.require("global_pool", pool == "avg", "avg")
        let imageSize = try b.int(key("img_size"), try args.square("img_size"), default: 224, in: ConfigLimits.imageSize)
        let dims = try args.ints("embed_dim") ?? [64, 128, 256, 512]
        let depths = try args.ints("depths") ?? [2, 2, 5, 2]
        guard (1...6).contains(dims.count), depths.count == dims.count else {
            throw ConfigValueError(file: args.file, key: key("embed_dim") + "/" + key("depths"), value: "\(dims) / \(depths)",
                                   allowed: "1 to 6 stages, one depth per stage")
        }
        let dimHead = try b.int(key("transformer_dim_head"), try args.int("transformer_dim_head"), default: 32, in: ConfigLimits.headWidth)
        let ratio = try b.int(key("transformer_partition_ratio"), try args.int("transformer_partition_ratio"), default: 32, in: 1...1024)
        let window = try args.square("transformer_window_size")
        let grid = try args.square("transformer_grid_size")
        if let window, let grid, window != grid {
            throw ConfigValueError(file: args.file, key: key("transformer_grid_size"), value: "\(grid)",
                                   allowed: "the window size (\(window)): different block and grid sizes are not supported")
        }
        let partition = try b.int(key("transformer_window_size"), window ?? grid, default: imageSize / ratio, in: 1...64)
        for (s, d) in dims.enumerated() {
            _ = try b.int(key("embed_dim") + "[\(s)]", d, in: ConfigLimits.width)
            _ = try b.int(key("depths") + "[\(s)]", depths[s], in: ConfigLimits.layers)
            try b.multiple(key("embed_dim") + "[\(s)]", d, of: key("transformer_dim_head"), dimHead)
            let r = imageSize >> (s + 2)
            guard r >= 1, r << (s + 2) == imageSize, r % partition == 0 else {
                throw ConfigValueError(file: args.file, key: key("img_size"), value: "\(imageSize)",
                                       allowed: "a size that halves evenly \(dims.count + 1) times into grids divisible by the partition (\(partition))")
            }
        }
        let stemWidth = try b.int(key("stem_width"), try args.int("stem_width"), default: 64, in: ConfigLimits.width)
        let headHidden = try b.int(key("head_hidden_size"), try args.int("head_hidden_size"), default: dims.last!, in: ConfigLimits.width)
        let numClasses = try b.int(key("num_classes"), try args.int("num_classes") ?? config.numClasses, default: 1000, in: 0...1_000_000)
        return MaxViTConfig(imageSize: imageSize, stemWidth: stemWidth, embedDims: dims, depths: depths, dimHead: dimHead,
                            partition: partition, headHidden: headHidden, numClasses: numClasses)
    }
}

// MARK: Checkpoint keys

enum MaxViTKeys {
    static func block(_ s: Int, _ b: Int) -> String { "stages.\(s).blocks.\(b)." }
    /// BatchNorm buffers `take` does not use (the step counter).
    static func batchNormCounter(_ prefix: String) -> String { prefix + ".num_batches_tracked" }

    static func attention(_ s: Int, _ b: Int, grid: Bool) -> (BlockKeys, table: String) {
        let p = block(s, b) + (grid ? "attn_grid." : "attn_block.")
        return (BlockKeys(ln1Weight: p + "norm1.weight", ln1Bias: p + "norm1.bias",
                          qkvWeight: [p + "attn.qkv.weight"], qkvBias: [p + "attn.qkv.bias"],
                          outWeight: p + "attn.proj.weight", outBias: p + "attn.proj.bias",
                          ln2Weight: p + "norm2.weight", ln2Bias: p + "norm2.bias",
                          fc1Weight: p + "mlp.fc1.weight", fc1Bias: p + "mlp.fc1.bias",
                          fc2Weight: p + "mlp.fc2.weight", fc2Bias: p + "mlp.fc2.bias"),
                p + "attn.rel_pos.relative_position_bias_table")
    }
}

// MARK: Layers

/// BatchNorm in eval mode, folded: y = x·scale + shift per channel.
public struct BatchNorm: Sendable {
    public var scale: [Float]
    public var shift: [Float]

    init(source: TensorSource, prefix: String, channels c: Int, eps: Float) throws {
        let gamma = try source.take(prefix + ".weight", shape: [c]), beta = try source.take(prefix + ".bias", shape: [c])
        let mean = try source.take(prefix + ".running_mean", shape: [c]), variance = try source.take(prefix + ".running_var", shape: [c])
        source.ignore(MaxViTKeys.batchNormCounter(prefix))
        scale = (0..<c).map { gamma.data[$0] / (variance.data[$0] + eps).squareRoot() }
        shift = (0..<c).map { beta.data[$0] - mean.data[$0] * gamma.data[$0] / (variance.data[$0] + eps).squareRoot() }
    }

    /// Rows [N, C] in place, then the activation if any.
    func apply(_ x: inout Tensor, activation: Ops.Activation? = nil) {
        let c = scale.count
        x.data.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / c) { for j in 0..<c { p[r * c + j] = p[r * c + j] * scale[j] + shift[j] } }
        }
        if let activation { Ops.activate(&x, activation) }
    }
}

/// A k×k convolution with TF "same" padding (the extra pixel after), on channels-last rows.
public struct Conv2d: Sendable {
    /// [out, k·k·in] in (ky, kx, in) order.
    public var weight: Tensor
    public var bias: Tensor?
    public let kernel: Int, stride: Int

    init(source: TensorSource, key: String, input: Int, output: Int, kernel: Int, stride: Int, bias: Bool) throws {
        let w = try source.take(key + ".weight", shape: [output, input, kernel, kernel])   // [out, in, ky, kx]
        var reordered = [Float](repeating: 0, count: w.count)
        for o in 0..<output {
            for i in 0..<input {
                for ky in 0..<kernel {
                    for kx in 0..<kernel {
                        reordered[o * kernel * kernel * input + (ky * kernel + kx) * input + i] = w.data[((o * input + i) * kernel + ky) * kernel + kx]
                    }
                }
            }
        }
        weight = Tensor(shape: [output, kernel * kernel * input], data: reordered)
        self.bias = bias ? try source.take(key + ".bias", shape: [output]) : nil
        self.kernel = kernel
        self.stride = stride
    }

    /// TF "same": output ceil(n / stride); padding before = total / 2.
    static func samePadding(size n: Int, kernel k: Int, stride s: Int) -> (output: Int, before: Int) {
        let out = (n + s - 1) / s
        let total = max((out - 1) * s + k - n, 0)
        return (out, total / 2)
    }

    /// x: images × [H·W, C] rows → images × [H'·W', out] rows (im2col + one GEMM).
    func callAsFunction(_ x: Tensor, images: Int, size n: Int) -> (Tensor, Int) {
        let c = x.shape[1], k = kernel
        let (out, before) = Self.samePadding(size: n, kernel: k, stride: stride)
        var columns = [Float](repeating: 0, count: images * out * out * k * k * c)       // [B·H'·W', k·k·C]
        x.data.withUnsafeBufferPointer { src in
            columns.withUnsafeMutableBufferPointer { dst in
                for b in 0..<images {
                    for oy in 0..<out {
                        for ox in 0..<out {
                            let row = dst.baseAddress! + ((b * out + oy) * out + ox) * k * k * c
                            for ky in 0..<k {
                                let y = oy * stride + ky - before
                                if y < 0 || y >= n { continue }
                                for kx in 0..<k {
                                    let xx = ox * stride + kx - before
                                    if xx < 0 || xx >= n { continue }
                                    (row + (ky * k + kx) * c).update(from: src.baseAddress! + ((b * n + y) * n + xx) * c, count: c)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (Ops.linear(Tensor(shape: [images * out * out, k * k * c], data: columns), weight: weight, bias: bias), out)
    }
}

/// Depthwise 3×3 convolution (no bias) with TF "same" padding on channels-last rows.
public struct DepthwiseConv: Sendable {
    /// [9, C]: tap (ky, kx) of every channel.
    public var taps: [Float]
    public let channels: Int, stride: Int

    init(source: TensorSource, key: String, channels c: Int, stride: Int) throws {
        let w = try source.take(key + ".weight", shape: [c, 1, 3, 3])
        taps = [Float](repeating: 0, count: 9 * c)
        for ch in 0..<c { for t in 0..<9 { taps[t * c + ch] = w.data[ch * 9 + t] } }
        channels = c
        self.stride = stride
    }

    func callAsFunction(_ x: Tensor, images: Int, size n: Int) -> (Tensor, Int) {
        let c = channels
        let (out, before) = Conv2d.samePadding(size: n, kernel: 3, stride: stride)
        var y = [Float](repeating: 0, count: images * out * out * c)
        x.data.withUnsafeBufferPointer { src in
            y.withUnsafeMutableBufferPointer { dst in
                taps.withUnsafeBufferPointer { w in
                    for b in 0..<images {
                        for oy in 0..<out {
                            for ox in 0..<out {
                                let o = dst.baseAddress! + ((b * out + oy) * out + ox) * c
                                for ky in 0..<3 {
                                    let iy = oy * stride + ky - before
                                    if iy < 0 || iy >= n { continue }
                                    for kx in 0..<3 {
                                        let ix = ox * stride + kx - before
                                        if ix < 0 || ix >= n { continue }
                                        let i = src.baseAddress! + ((b * n + iy) * n + ix) * c
                                        let t = w.baseAddress! + (ky * 3 + kx) * c
                                        for ch in 0..<c { o[ch] += i[ch] * t[ch] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (Tensor(shape: [images * out * out, c], data: y), out)
    }
}

/// 2×2 average pooling, stride 2, on channels-last rows of even grids.
func averagePool2(_ x: Tensor, images: Int, size n: Int) -> Tensor {
    let c = x.shape[1], h = n / 2
    var y = [Float](repeating: 0, count: images * h * h * c)
    for b in 0..<images {
        for i in 0..<h {
            for j in 0..<h {
                let o = ((b * h + i) * h + j) * c
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let s = ((b * n + 2 * i + dy) * n + 2 * j + dx) * c
                    for ch in 0..<c { y[o + ch] += 0.25 * x.data[s + ch] }
                }
            }
        }
    }
    return Tensor(shape: [images * h * h, c], data: y)
}

/// MBConv: the branch (pre-BN, expand, BN-GELU, depthwise, BN-GELU, squeeze-excite, project) and
/// the shortcut (a stage's first block: 2×2 average pool, then a 1×1 conv with bias when the width
/// changes).
public struct MBConv: Sendable {
    public let stride: Int
    public var shortcut: (weight: Tensor, bias: Tensor)?      // [out, in], [out]
    public var preNorm: BatchNorm
    public var expand: Tensor                                  // [mid, in]
    public var norm1: BatchNorm
    public var depthwise: DepthwiseConv
    public var norm2: BatchNorm
    public var se1: (weight: Tensor, bias: Tensor), se2: (weight: Tensor, bias: Tensor)   // [rd, mid], [mid, rd]
    public var project: (weight: Tensor, bias: Tensor)        // [out, mid]

    init(source: TensorSource, prefix p: String, input: Int, output: Int, mid: Int, se: Int, stride: Int, eps: Float) throws {
        func conv1x1(_ key: String, _ o: Int, _ i: Int, bias: Bool) throws -> (Tensor, Tensor?) {
            (try source.take(key + ".weight", shape: [o, i, 1, 1]).reshaped([o, i]), bias ? try source.take(key + ".bias", shape: [o]) : nil)
        }
        self.stride = stride
        if stride == 2 && input != output {
            let (w, b) = try conv1x1(p + "shortcut.expand", output, input, bias: true)
            shortcut = (w, b!)
        }
        preNorm = try BatchNorm(source: source, prefix: p + "pre_norm", channels: input, eps: eps)
        expand = try conv1x1(p + "conv1_1x1", mid, input, bias: false).0
        norm1 = try BatchNorm(source: source, prefix: p + "norm1", channels: mid, eps: eps)
        depthwise = try DepthwiseConv(source: source, key: p + "conv2_kxk", channels: mid, stride: stride)
        norm2 = try BatchNorm(source: source, prefix: p + "norm2", channels: mid, eps: eps)
        let s1 = try conv1x1(p + "se.fc1", se, mid, bias: true), s2 = try conv1x1(p + "se.fc2", mid, se, bias: true)
        se1 = (s1.0, s1.1!)
        se2 = (s2.0, s2.1!)
        let pr = try conv1x1(p + "conv3_1x1", output, mid, bias: true)
        project = (pr.0, pr.1!)
    }

    /// The branch's output and the shortcut's, both [B·R'², out], for x [B·R², in] on an R×R grid.
    func callAsFunction(_ x: Tensor, images: Int, size n: Int) -> (branch: Tensor, shortcut: Tensor, size: Int) {
        var h = x
        preNorm.apply(&h)
        var e = Ops.linear(h, weight: expand, bias: nil)                                   // [B·R², mid]
        norm1.apply(&e, activation: .geluTanh)
        var (d, out) = depthwise(e, images: images, size: n)                               // [B·R'², mid]
        norm2.apply(&d, activation: .geluTanh)
        // Squeeze-excite: the mean over positions, fc1, SiLU, fc2, sigmoid, per image.
        let m = d.shape[1], per = out * out
        var g = Ops.linear(Ops.meanRows(d, groups: images), weight: se1.weight, bias: se1.bias)   // [B, rd]
        g.data.withUnsafeMutableBufferPointer { Kernels.silu($0) }
        var gate = Ops.linear(g, weight: se2.weight, bias: se2.bias)                      // [B, mid]
        gate.data.withUnsafeMutableBufferPointer { Kernels.sigmoid($0) }
        for b in 0..<images { for r in 0..<per { for j in 0..<m { d.data[(b * per + r) * m + j] *= gate.data[b * m + j] } } }
        let branch = Ops.linear(d, weight: project.weight, bias: project.bias)            // [B·R'², out]
        var skip = stride == 2 ? averagePool2(x, images: images, size: n) : x
        if let shortcut { skip = Ops.linear(skip, weight: shortcut.weight, bias: shortcut.bias) }
        return (branch, skip, out)
    }
}

/// Block (window) or grid partition of a MaxViT stage grid, with the TF relative position bias
/// (table[h, k_y − q_y + w − 1, k_x − q_x + w − 1]: key minus query).
public struct MaxViTPartition: TokenPartition {
    public let resolution: Int
    public let side: Int
    public let grid: Bool
    public let source: [Int]
    public let position: [Int]
    public let bias: AttentionBias
    public var tokensPerWindow: Int { side * side }

    init(resolution r: Int, side w: Int, grid: Bool, heads: Int, table: Tensor) {
        resolution = r
        side = w
        self.grid = grid
        let per = r / w
        var source = [Int](repeating: 0, count: r * r)
        for a in 0..<per {
            for c in 0..<per {
                for i in 0..<w {
                    for j in 0..<w {
                        let k = (a * per + c) * w * w + i * w + j
                        // Block: window (a, c) holds the w×w neighbours; grid: (a, c) holds tokens strided by R/w.
                        source[k] = grid ? (i * per + a) * r + (j * per + c) : (a * w + i) * r + (c * w + j)
                    }
                }
            }
        }
        self.source = source
        position = Self.inverse(source)
        let n = w * w, span = 2 * w - 1
        var values = [Float](repeating: 0, count: heads * n * n)
        for h in 0..<heads {
            for q in 0..<n {
                for k in 0..<n {
                    let dy = k / w - q / w + w - 1, dx = k % w - q % w + w - 1
                    values[(h * n + q) * n + k] = table.data[(h * span + dy) * span + dx]
                }
            }
        }
        bias = AttentionBias(values: values, groups: 1, heads: heads, n: n)
    }
}

// MARK: Model

public struct MaxViTBlock: Sendable {
    public var conv: MBConv
    public var blockAttention: ResidualBlock
    public var gridAttention: ResidualBlock
    public var blockPartition: MaxViTPartition
    public var gridPartition: MaxViTPartition
}

/// What a MaxViT block wrote, for the decomposition: the MBConv branch (and the shortcut's input
/// for a stage's first block), then each attention sub-block's trace in its partition order.
public struct MaxViTBlockTrace: Sendable {
    public var input: Tensor          // [B·R², C_in] entering the block
    public var branch: Tensor         // [B·R'², C] the MBConv branch output (conv3 bias included)
    public var blockAttention: BlockTrace
    public var gridAttention: BlockTrace
}

public struct MaxViT: Sendable {
    public let config: MaxViTConfig
    public var stem1: Conv2d
    public var stemNorm: BatchNorm
    public var stem2: Conv2d
    public var stages: [[MaxViTBlock]]
    public var headNorm: (weight: Tensor, bias: Tensor)
    public var preLogits: (weight: Tensor, bias: Tensor)
    public var head: (weight: Tensor, bias: Tensor)?

    init(source: TensorSource, config c: MaxViTConfig) throws {
        config = c
        stem1 = try Conv2d(source: source, key: "stem.conv1", input: 3, output: c.stemWidth, kernel: 3, stride: 2, bias: true)
        stemNorm = try BatchNorm(source: source, prefix: "stem.norm1", channels: c.stemWidth, eps: c.convEps)
        stem2 = try Conv2d(source: source, key: "stem.conv2", input: c.stemWidth, output: c.stemWidth, kernel: 3, stride: 1, bias: true)
        var previous = c.stemWidth
        var stages: [[MaxViTBlock]] = []
        for s in 0..<c.stages {
            let width = c.width(stage: s), r = c.resolution(stage: s), heads = c.heads(stage: s), w = c.partition
            var blocks: [MaxViTBlock] = []
            for b in 0..<c.depths[s] {
                let conv = try MBConv(source: source, prefix: MaxViTKeys.block(s, b) + "conv.", input: b == 0 ? previous : width,
                                      output: width, mid: c.mid(stage: s), se: c.seWidth(stage: s), stride: b == 0 ? 2 : 1, eps: c.convEps)
                let (blockKeys, blockTable) = MaxViTKeys.attention(s, b, grid: false)
                let (gridKeys, gridTable) = MaxViTKeys.attention(s, b, grid: true)
                let tableShape = [heads, 2 * w - 1, 2 * w - 1]
                blocks.append(MaxViTBlock(
                    conv: conv,
                    blockAttention: try ResidualBlock(source: source, keys: blockKeys, arch: c.tower(stage: s)),
                    gridAttention: try ResidualBlock(source: source, keys: gridKeys, arch: c.tower(stage: s)),
                    blockPartition: MaxViTPartition(resolution: r, side: w, grid: false, heads: heads,
                                                    table: try source.take(blockTable, shape: tableShape)),
                    gridPartition: MaxViTPartition(resolution: r, side: w, grid: true, heads: heads,
                                                   table: try source.take(gridTable, shape: tableShape))))
            }
            stages.append(blocks)
            previous = width
        }
        self.stages = stages
        let f = c.featureWidth
        headNorm = (try source.take("head.norm.weight", shape: [f]), try source.take("head.norm.bias", shape: [f]))
        preLogits = (try source.take("head.pre_logits.fc.weight", shape: [c.headHidden, f]),
                     try source.take("head.pre_logits.fc.bias", shape: [c.headHidden]))
        head = c.numClasses > 0 ? (try source.take("head.fc.weight", shape: [c.numClasses, c.headHidden]),
                                   try source.take("head.fc.bias", shape: [c.numClasses])) : nil
    }

    /// The stem: images [3, S, S] → [B·(S/2)², stem] channels-last rows.
    public func stem(_ images: [Tensor]) -> Tensor {
        let s = config.imageSize
        var rows = [Float](repeating: 0, count: images.count * s * s * 3)             // [B·S², 3]
        for (b, image) in images.enumerated() {
            precondition(image.shape == [3, s, s], "image tensor \(image.shape), expected [3, \(s), \(s)]")
            for c in 0..<3 { for p in 0..<(s * s) { rows[(b * s * s + p) * 3 + c] = image.data[c * s * s + p] } }
        }
        var (x, n) = stem1(Tensor(shape: [images.count * s * s, 3], data: rows), images: images.count, size: s)
        stemNorm.apply(&x, activation: .geluTanh)
        (x, _) = stem2(x, images: images.count, size: n)
        return x
    }

    /// One MaxxVit block: MBConv with its shortcut, block attention, grid attention.
    func forward(_ block: MaxViTBlock, _ x: Tensor, stage s: Int, images: Int, size n: Int, parallelAttention: Bool,
                 trace: ((MaxViTBlockTrace) -> Void)?) -> (Tensor, Int) {
        let (branch, skip, out) = block.conv(x, images: images, size: n)
        var y = skip
        Ops.addInPlace(&y, branch)
        var traces: [BlockTrace] = []
        for (attention, partition) in [(block.blockAttention, block.blockPartition), (block.gridAttention, block.gridPartition)] {
            let ordered = partition.reorder(y, images: images)
            let z = attention.forward(ordered, segments: partition.segments(images: images), arch: config.tower(stage: s), causal: false,
                                      parallelAttention: parallelAttention, attentionBias: partition.bias,
                                      trace: trace == nil ? nil : { traces.append($0) })
            y = partition.reorder(z, images: images, inverse: true)
        }
        trace?(MaxViTBlockTrace(input: x, branch: branch, blockAttention: traces[0], gridAttention: traces[1]))
        return (y, out)
    }

    /// The last stage's output [B·R², C] (grid order). `trace(stage, block, writes)` sees every block.
    public func residualStream(_ images: [Tensor], parallelAttention: Bool = true,
                               trace: ((Int, Int, MaxViTBlockTrace) -> Void)? = nil) -> Tensor {
        var x = stem(images)
        var n = config.imageSize / 2
        for (s, stage) in stages.enumerated() {
            for (b, block) in stage.enumerated() {
                (x, n) = forward(block, x, stage: s, images: images.count, size: n, parallelAttention: parallelAttention,
                                 trace: trace.map { t in { t(s, b, $0) } })
            }
        }
        return x
    }

    /// The representation [B, C]: the spatial mean of the last stage's output.
    public func readout(_ final: Tensor, images: Int) -> Tensor {
        Ops.meanRows(final, groups: images)                                               // [B, C]
    }

    public func callAsFunction(_ images: [Tensor]) -> Tensor {
        rowsInSlices(count: images.count, width: config.featureWidth) { range, parallel in
            let slice = Array(images[range])
            return readout(residualStream(slice, parallelAttention: parallel), images: slice.count)
        }
    }

    /// The head on representations [B, C]: LayerNorm, pre-logits linear + tanh, classifier.
    public func logits(_ features: Tensor) -> Tensor? {
        guard let head else { return nil }
        let normed = Ops.layerNorm(features, weight: headNorm.weight, bias: headNorm.bias, eps: config.normEps)
        var hidden = Ops.linear(normed, weight: preLogits.weight, bias: preLogits.bias)
        hidden.data = hidden.data.map { Foundation.tanh($0) }
        return Ops.linear(hidden, weight: head.weight, bias: head.bias)
    }

    /// ∂logit_k/∂f at the representation `features` [C] (float64 inside): the head's LayerNorm,
    /// pre-logits linear and tanh linearised at f, back through the classifier row k. nil without a head.
    public func logitGradient(_ features: [Float], class k: Int) -> [Float]? {
        guard let head else { return nil }
        let c = features.count, h = preLogits.weight.shape[0]
        let x = features.map(Double.init)
        let mean = x.reduce(0, +) / Double(c)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
        let inv = 1 / (variance + Double(config.normEps)).squareRoot()
        let xhat = x.map { ($0 - mean) * inv }
        let normed = (0..<c).map { xhat[$0] * Double(headNorm.weight.data[$0]) + Double(headNorm.bias.data[$0]) }
        // g_hidden = w_k ⊙ (1 − tanh²(pre)); g_normed = W_preᵀ g_hidden; g_x = LN's Jacobianᵀ g_normed.
        var gNormed = [Double](repeating: 0, count: c)
        for o in 0..<h {
            var pre = Double(preLogits.bias.data[o])
            for i in 0..<c { pre += Double(preLogits.weight.data[o * c + i]) * normed[i] }
            let t = Foundation.tanh(pre)
            let g = Double(head.weight.data[k * h + o]) * (1 - t * t)
            for i in 0..<c { gNormed[i] += g * Double(preLogits.weight.data[o * c + i]) }
        }
        let v = (0..<c).map { gNormed[$0] * Double(headNorm.weight.data[$0]) }
        let meanV = v.reduce(0, +) / Double(c)
        let meanVX = zip(v, xhat).reduce(0) { $0 + $1.0 * $1.1 } / Double(c)
        return (0..<c).map { Float(inv * (v[$0] - meanV - xhat[$0] * meanVX)) }
    }
}
