// MARK: - Decomposition of timm models (ViT family and Swin)
//
// The representation (timm's pre-logits) written as a sum of named components: `init` (the stream
// entering the first decomposed block), every attention head and MLP of every decomposed block,
// and the constants on the path (faithful). Without autograd: one true forward pass with traces,
// then every component is carried to the representation through the path after it, which is
// linear once the LayerNorm statistics are frozen at the true pass.
//
// The path. A stage's stream [T_s, C_s] reaches the representation [D'] as
//
//     r = Σ_t w_s[t] · c[t] · M_{s, k_s(t)}
//
// with a per-image scalar weight per token (products of 1/σ of the LayerNorms on the way and the
// pooling's 1/T; zero for tokens the read-out never sees, such as a ViT's patches under class-token
// pooling) and a per-model matrix per token class (Swin: which of the 2×2 positions of every later
// patch merge the token takes; ViT: one class). M holds the gains, the patch merges' reductions
// and (faithful) every LayerNorm's centring of the component by its own mean. So a head's term is
// Σ_k (Σ_{t: k(t)=k} w[t] · o_h[t]) · (W_O,hᵀ · diag(γ1) · M_k): per-class weighted sums of its
// value-space output, then one small product per class.
//
// Conventions (docs/Decomposition.md):
// * faithful: each LayerNorm applied to each component with the true input's statistics (biased
//   variance, the model's eps), centred by its own mean; constants (out-projection biases, merge
//   LayerNorm β through the reduction, the final β) are components of their own. Exact.
// * balasubramanian2024: the official code's numbers (beyond-clip.md §1.2): no per-component
//   centring; every linearised LayerNorm uses the unbiased std and eps 1e-5 and adds
//   (β − γμ/σ̂)/n to each of the n leaves present; the attention value path uses that LayerNorm
//   too (V from LN*(x)); each head carries b_O/H; LayerScale multiplies everything of its term.

import Foundation
import RefractCLIP
import RefractTensor
import RefractTimm

public struct TimmDecompositionError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The components of a batch: values [B, C, D'] in `components` order, the representation
/// [B, D'], and the per-token terms of the chosen blocks.
public struct TimmDecompositionBatch: Sendable {
    public let components: [ComponentInfo]
    public var values: Tensor
    public var representation: Tensor
    /// Per chosen sub-block ("3"; MaxViT "3.window", "3.grid"): ViT [B, H, T, D'] (tokens in the
    /// model's order: class, registers, patches); Swin and MaxViT [B, H, R, R, D'] on the stage's
    /// real token grid (windows, shift and partitions undone).
    public var tokens: [String: Tensor]

    public var count: Int { representation.shape[0] }

    /// Σ over components, [B, D'].
    public func sum() -> Tensor {
        let b = count, c = components.count, d = representation.shape[1]
        var out = [Float](repeating: 0, count: b * d)
        for i in 0..<b { for k in 0..<c { for j in 0..<d { out[i * d + j] += values.data[(i * c + k) * d + j] } } }
        return Tensor(shape: [b, d], data: out)
    }
}

/// One attention-and-MLP sub-block as the decomposition sees it. ViT and Swin have one per block;
/// MaxViT two (block and grid attention), beside the block's MBConv branch.
struct BlockSite {
    var position: Int         // index into `sites`
    var index: Int            // the block, flat, 0-based from the input (what --from-block counts)
    var stage: Int
    var blockInStage: Int
    /// Name of the sub-block in component names: "3" (ViT, Swin), "3.window" / "3.grid" (MaxViT).
    var key: String
    /// The path level its stream is at (ViT, Swin: the stage; MaxViT: the stage + 1, level 0 being the stem).
    var level: Int
    var heads: Int
    var width: Int
    var module: String        // "blocks.3" / "layers.2.blocks.1" / "stages.1.blocks.0.attn_block"
    var block: ResidualBlock
    /// How its attention partitions the stage grid (Swin windows, MaxViT block/grid); nil for ViT.
    var partition: (any TokenPartition)?
    /// MaxViT: the official layer number offset of this sub-block within its block (grid 0, window 1).
    var officialOffset: Int = 0
}

public final class TimmDecomposer: Sendable {
    public let model: TimmModel
    public let convention: DecompositionConvention
    public let fromBlock: Int
    public let tokenBlocks: [Int]
    public let components: [ComponentInfo]
    let sites: [BlockSite]
    let paths: StagePaths
    /// Per decomposed block (index into `sites`), per class: W_O,ᵀ·diag(γ1)·M_{s,k} [C, D'].
    let headMaps: [[Tensor]]
    /// Per decomposed block, per class: the out-projection bias (× γ1) through M_{s,k} [D'].
    let biasMaps: [[[Float]]]
    /// Position of each component in the output (official order for balasubramanian2024).
    let slot: [String: Int]
    /// The first decomposed sub-block's position in `sites`, and the path level of `init`.
    let startPosition: Int
    let initLevel: Int

    public init(model: TimmModel, convention: DecompositionConvention = .faithful, fromBlock: Int = 0, tokenBlocks: [Int] = []) throws {
        guard convention != .gandelsman2024 else {
            throw TimmDecompositionError(message: "gandelsman2024 is the convention of Gandelsman et al.'s CLIP code; timm runs use faithful or balasubramanian2024")
        }
        self.model = model
        self.convention = convention
        let sites = Self.sites(model)
        let blocks = (sites.last?.index ?? -1) + 1
        guard (0..<blocks).contains(fromBlock) else {
            throw TimmDecompositionError(message: "--from-block \(fromBlock) does not exist: \(model.id) has blocks 0...\(blocks - 1)")
        }
        let chosen = Array(Set(tokenBlocks)).sorted()
        if let bad = chosen.first(where: { $0 < fromBlock || $0 >= blocks }) {
            throw TimmDecompositionError(message: "token block \(bad) is not decomposed: blocks \(fromBlock)...\(blocks - 1) are")
        }
        if convention == .balasubramanian2024 {
            if case .vit(let vit) = model.network, vit.config.globalPool != "token" {
                throw TimmDecompositionError(message: "balasubramanian2024 is defined for class-token models (the official code's); \(model.id) pools by average")
            }
            if !chosen.isEmpty {
                throw TimmDecompositionError(message: "per-token terms are computed in the faithful convention only (the official code's token split "
                                             + "reshares every bias over tokens and misplaces Swin's windows)")
            }
        }
        if case .vit(let vit) = model.network, vit.config.globalPool != "token", !chosen.isEmpty {
            throw TimmDecompositionError(message: "per-token terms are defined for the class-token read-out; \(model.id) pools by average")
        }
        self.fromBlock = fromBlock
        self.tokenBlocks = chosen
        self.sites = sites
        let start = sites.first { $0.index == fromBlock }!
        startPosition = start.position
        // The stream entering the first decomposed block: MaxViT's stage-first block takes its input
        // on the previous level (its shortcut pools it).
        if case .maxvit = model.network, start.blockInStage == 0 { initLevel = start.stage } else { initLevel = start.level }
        let paths = try StagePaths(model: model, convention: convention, firstLevel: initLevel)
        self.paths = paths
        headMaps = sites.map { site in
            guard site.index >= fromBlock else { return [] }
            var wo = Ops.transposed(site.block.outWeight)                                  // [C, C]
            if let g = site.block.layerScale1 {
                // W_Oᵀ·diag(γ1): column j of W_Oᵀ scaled by γ1[j].
                Ops.scaleColumns(&wo, g)
            }
            return paths.maps[site.level].map { Ops.matmul(wo, $0) }                       // [C, D'] per class
        }
        biasMaps = sites.map { site in
            guard site.index >= fromBlock else { return [] }
            var bias = site.block.outBias                                                  // [C]
            if let g = site.block.layerScale1 { for j in 0..<bias.count { bias.data[j] *= g.data[j] } }
            return paths.maps[site.level].map { Ops.matmul(bias.reshaped([1, bias.count]), $0).data }   // [D'] per class
        }
        (components, slot) = Self.components(sites: sites, from: fromBlock, convention: convention, model: model)
    }

    /// How many blocks a model has, flattened over stages.
    public static func blockCount(_ model: TimmModel) -> Int { (sites(model).last?.index ?? -1) + 1 }

    /// The sub-blocks of a model, flattened (stage by stage; MaxViT: block attention, then grid).
    static func sites(_ model: TimmModel) -> [BlockSite] {
        switch model.network {
        case .vit(let m):
            return m.blocks.enumerated().map {
                BlockSite(position: $0.offset, index: $0.offset, stage: 0, blockInStage: $0.offset, key: "\($0.offset)", level: 0,
                          heads: m.config.tower.heads, width: m.config.width, module: "blocks.\($0.offset)", block: $0.element,
                          partition: nil)
            }
        case .swin(let m):
            var out: [BlockSite] = []
            for (s, stage) in m.stages.enumerated() {
                for (b, block) in stage.blocks.enumerated() {
                    out.append(BlockSite(position: out.count, index: out.count, stage: s, blockInStage: b, key: "\(out.count)", level: s,
                                         heads: m.config.heads[s], width: m.config.width(stage: s), module: "layers.\(s).blocks.\(b)",
                                         block: block, partition: stage.windows[b]))
                }
            }
            return out
        case .maxvit(let m):
            var out: [BlockSite] = []
            var index = 0
            for (s, stage) in m.stages.enumerated() {
                for (b, block) in stage.enumerated() {
                    for (name, attention, partition, offset) in [("window", block.blockAttention, block.blockPartition, 1),
                                                                 ("grid", block.gridAttention, block.gridPartition, 0)] {
                        out.append(BlockSite(position: out.count, index: index, stage: s, blockInStage: b, key: "\(index).\(name)",
                                             level: s + 1, heads: m.config.heads(stage: s), width: m.config.width(stage: s),
                                             module: "stages.\(s).blocks.\(b).\(name == "window" ? "attn_block" : "attn_grid")",
                                             block: attention, partition: partition, officialOffset: offset))
                    }
                    index += 1
                }
            }
            return out
        }
    }

    /// The component list, in Refract's order, and each name's output slot (the official sorted
    /// order for balasubramanian2024).
    static func components(sites: [BlockSite], from start: Int, convention: DecompositionConvention, model: TimmModel)
        -> ([ComponentInfo], [String: Int]) {
        let faithful = convention == .faithful
        let maxvit: MaxViT? = { if case .maxvit(let m) = model.network { return m } else { return nil } }()
        let first = sites.first { $0.index == start }!
        let total = (sites.last?.index ?? 0) + 1 - start
        var list = [ComponentInfo(name: "init", official: "init", kind: .`init`, block: start, stage: first.stage,
                                  blockInStage: first.blockInStage)]
        var lastBlock = -1
        for site in sites where site.index >= start {
            if site.index != lastBlock {
                lastBlock = site.index
                if let maxvit {
                    // A MaxViT block opens with its MBConv: the shortcut's bias (a stage's first block with a
                    // width change), then the branch.
                    let p = "stages.\(site.stage).blocks.\(site.blockInStage).conv"
                    if faithful, maxvit.stages[site.stage][site.blockInStage].conv.shortcut != nil {
                        list.append(ComponentInfo(name: "shortcut_bias.\(site.index)", official: nil, kind: .shortcutBias, block: site.index,
                                                  stage: site.stage, blockInStage: site.blockInStage, module: "\(p).shortcut.expand.bias"))
                    }
                    let k = total - 1 - (site.index - start)
                    list.append(ComponentInfo(name: "conv.\(site.index)", official: String(format: "layer:(%02d, %02d), conv", 2 * k, 2 * k + 1),
                                              kind: .conv, block: site.index, stage: site.stage, blockInStage: site.blockInStage, module: p))
                } else if faithful, site.blockInStage == 0, site.stage > first.stage {
                    list.append(ComponentInfo(name: "merge_bias.\(site.stage)", official: nil, kind: .mergeBias, stage: site.stage,
                                              module: "layers.\(site.stage).downsample.norm.bias"))
                }
            }
            let layer = maxvit != nil
                ? String(format: "layer:%02d", 2 * (total - 1 - (site.index - start)) + site.officialOffset)
                : ComponentInfo.officialLayer(block: site.index - start, total: total)
            let attn = maxvit != nil ? "\(site.module).attn" : "\(site.module).attn"
            for h in 0..<site.heads {
                list.append(ComponentInfo(name: "attn.\(site.key).\(h)", official: "\(layer), attn_head:\(String(format: "%02d", h))",
                                          kind: .head, block: site.index, stage: site.stage, blockInStage: site.blockInStage,
                                          head: h, module: attn))
            }
            if faithful {
                list.append(ComponentInfo(name: "attn_bias.\(site.key)", official: nil, kind: .attnBias, block: site.index,
                                          stage: site.stage, blockInStage: site.blockInStage, module: "\(attn).proj.bias"))
            }
            list.append(ComponentInfo(name: "mlp.\(site.key)", official: "\(layer), mlp", kind: .mlp, block: site.index,
                                      stage: site.stage, blockInStage: site.blockInStage, module: "\(site.module).mlp"))
        }
        if faithful {
            if maxvit == nil {
                let norm: String
                if case .vit(let m) = model.network, m.config.fcNorm { norm = "fc_norm.bias" } else { norm = "norm.bias" }
                list.append(ComponentInfo(name: "readout_bias", official: nil, kind: .readoutBias, module: norm))
            }
            return (list, Dictionary(uniqueKeysWithValues: list.enumerated().map { ($1.name, $0) }))
        }
        // The official code stacks its dict in sorted key order.
        let ordered = list.sorted { $0.official! < $1.official! }
        return (ordered, Dictionary(uniqueKeysWithValues: ordered.enumerated().map { ($1.name, $0) }))
    }

    // MARK: Decomposing

    /// Decomposes preprocessed images [3, S, S]. Batches are split into one slice per core.
    public func callAsFunction(_ images: [Tensor]) -> TimmDecompositionBatch {
        if images.count <= 1 || BLAS.threads <= 1 { return decompose(images, parallelAttention: true) }
        let slots = TimmSliceResults()
        BLAS.forEachSlice(count: images.count) { range in
            slots.set(range.lowerBound, self.decompose(Array(images[range]), parallelAttention: false))
        }
        return TimmDecompositionBatch.concatenate(slots.values)
    }

    /// What the pass keeps of a decomposed block, per image: rows in grid order, or (Swin) in the
    /// block's window order with `order` mapping each row to its grid token.
    struct Record {
        /// Head outputs before the out-projection [B·T, C] (balasubramanian2024: from V of LN*(x)).
        var heads: Tensor
        var mlp: Tensor                   // [B·T, C] (LayerScale included)
        var tokenTerms: TokenTerms?       // chosen blocks only
        var order: [Int]? = nil
    }

    func decompose(_ images: [Tensor], parallelAttention: Bool) -> TimmDecompositionBatch {
        let b = images.count
        var records = [Record?](repeating: nil, count: sites.count)
        var merges: [Int: Tensor] = [:]
        var convs: [Int: Tensor] = [:]
        var initInput: Tensor?
        var initOrder: [Int]?
        let representation: Tensor
        let final: Tensor
        let wantTokens = Set(tokenBlocks)
        switch model.network {
        case .vit(let vit):
            let t = vit.config.tokens
            let tokenPool = vit.config.globalPool == "token"
            // Class-token pooling reads only the class rows: keep those ([B, C]); average pooling keeps every row.
            let keep = { (x: Tensor) -> Tensor in
                if !tokenPool { return x }
                return x.shape[0] == b ? x : Ops.gatherRows(x, (0..<b).map { $0 * t })
            }
            let (_, stream) = vit.residualStream(images, parallelAttention: parallelAttention) { layer, trace in
                guard layer >= self.fromBlock else { return }
                let site = self.sites[layer]
                let heads = self.convention == .balasubramanian2024
                    ? self.officialHeads(trace, site: site, layout: nil, images: b, tokens: t, classOnly: true)
                    : trace.heads
                if layer == self.fromBlock { initInput = keep(trace.input) }
                records[layer] = Record(heads: keep(heads), mlp: keep(trace.mlp),
                                        tokenTerms: wantTokens.contains(layer)
                                            ? TokenTerms.classQuery(qkv: trace.qkv, heads: site.heads, images: b, tokens: t) : nil)
            }
            final = stream
            representation = vit.readout(stream, images: b)
        case .swin(let swin):
            let stream = swin.residualStream(images, parallelAttention: parallelAttention, trace: { s, blockInStage, trace in
                let layer = self.sites.firstIndex { $0.stage == s && $0.blockInStage == blockInStage }!
                guard layer >= self.fromBlock else { return }
                let site = self.sites[layer]
                let layout = swin.stages[s].windows[blockInStage]
                let heads = self.convention == .balasubramanian2024
                    ? self.officialHeads(trace, site: site, layout: layout, images: b, tokens: layout.resolution * layout.resolution, classOnly: false)
                    : trace.heads
                if layer == self.fromBlock { (initInput, initOrder) = (trace.input, layout.source) }
                records[layer] = Record(heads: heads, mlp: trace.mlp,
                                        tokenTerms: wantTokens.contains(layer) ? .windows(qkv: trace.qkv, layout: layout) : nil,
                                        order: layout.source)
            }, merged: { s, gathered in merges[s] = gathered })
            final = stream
            representation = swin.readout(stream, images: b)
        case .maxvit(let maxvit):
            let stream = maxvit.residualStream(images, parallelAttention: parallelAttention) { s, blockInStage, trace in
                let pair = self.sites.filter { $0.stage == s && $0.blockInStage == blockInStage }      // window, grid
                let block = pair[0].index
                guard block >= self.fromBlock else { return }
                convs[block] = trace.branch
                if block == self.fromBlock { initInput = trace.input }
                for (site, t) in zip(pair, [trace.blockAttention, trace.gridAttention]) {
                    let layout = site.partition!
                    let heads = self.convention == .balasubramanian2024
                        ? self.officialHeads(t, site: site, layout: layout, images: b, tokens: layout.source.count, classOnly: false)
                        : t.heads
                    records[site.position] = Record(heads: heads, mlp: t.mlp,
                                                    tokenTerms: wantTokens.contains(block) ? .windows(qkv: t.qkv, layout: layout) : nil,
                                                    order: layout.source)
                }
            }
            final = stream
            representation = maxvit.readout(stream, images: b)
        }
        let frozen = paths.freeze(final: final, merges: merges, images: b)
        return assemble(records: records, convs: convs, initInput: initInput!, initOrder: initOrder, frozen: frozen,
                        representation: representation, images: b)
    }

    /// The official head outputs: A_h · V̂_h with V̂ from LN*(x) = γ1 ⊙ (x − μ)/sqrt(std_unbiased² + 1e-5) + β1.
    /// Per key token j, V̂[j] = α_j · (V[j] − c0) + c0 with α_j = σ_j/σ̂_j and c0 = β1·W_vᵀ + b_v, so
    /// A·V̂ = A·(α ⊙ (V − c0)) + c0 (attention rows sum to one). Rows as computed by the block.
    func officialHeads(_ trace: BlockTrace, site: BlockSite, layout: (any TokenPartition)?, images: Int, tokens t: Int, classOnly: Bool) -> Tensor {
        let c = site.width, h = site.heads, dh = c / h, ld = 3 * c
        let eps = Double(paths.modelEps)
        // α per key row of the block's input (its order: grid for ViT, window order for Swin).
        let rows = trace.input.shape[0]
        var alpha = [Float](repeating: 0, count: rows)
        trace.input.data.withUnsafeBufferPointer { x in
            for r in 0..<rows {
                let sq = StagePaths.moments(x.baseAddress! + r * c, c).squares
                let sigma = (sq / Double(c) + eps).squareRoot()
                let sigmaHat = (sq / Double(c - 1) + 1e-5).squareRoot()
                alpha[r] = Float(sigma / sigmaHat)
            }
        }
        // c0 = β1·W_vᵀ + b_v.
        let wv = Tensor(shape: [c, c], data: Array(site.block.qkvWeight.data[(2 * c * c)..<(3 * c * c)]))
        var c0 = Ops.linear(site.block.ln1Bias.reshaped([1, c]), weight: wv, bias: nil).data
        for j in 0..<c { c0[j] += site.block.qkvBias.data[2 * c + j] }
        // V − c0, scaled by α, in a copy of qkv (only the V block changes).
        var scaled = trace.qkv
        scaled.data.withUnsafeMutableBufferPointer { q in
            for r in 0..<rows { for j in 0..<c { q[r * ld + 2 * c + j] = alpha[r] * (q[r * ld + 2 * c + j] - c0[j]) } }
        }
        let segments: [Segment]
        let queries: QueryRows
        if let layout {
            segments = layout.segments(images: images)
            queries = .all
        } else {
            segments = (0..<images).map { Segment(start: $0 * t, length: t) }
            queries = classOnly ? .first : .all
        }
        var out = Ops.multiHeadAttention(qkv: scaled, segments: segments, heads: h, causal: false, queries: queries,
                                         parallel: false, bias: layout?.bias)                 // [R, C]
        out.data.withUnsafeMutableBufferPointer { o in
            for r in 0..<(o.count / c) { for j in 0..<c { o[r * c + j] += c0[j] } }
        }
        precondition(dh * h == c)
        return out
    }
}

/// Results of the batch slices, ordered by their first image.
final class TimmSliceResults: @unchecked Sendable {
    private var slots: [Int: TimmDecompositionBatch] = [:]
    private let lock = NSLock()
    func set(_ first: Int, _ v: TimmDecompositionBatch) { lock.lock(); slots[first] = v; lock.unlock() }
    var values: [TimmDecompositionBatch] { slots.keys.sorted().map { slots[$0]! } }
}

extension TimmDecompositionBatch {
    static func concatenate(_ parts: [TimmDecompositionBatch]) -> TimmDecompositionBatch {
        guard var first = parts.first else { preconditionFailure("no parts") }
        if parts.count == 1 { return first }
        func cat(_ xs: [Tensor]) -> Tensor {
            Tensor(shape: [xs.reduce(0) { $0 + $1.shape[0] }] + Array(xs[0].shape.dropFirst()), data: xs.flatMap(\.data))
        }
        first.values = cat(parts.map(\.values))
        first.representation = cat(parts.map(\.representation))
        for key in first.tokens.keys { first.tokens[key] = cat(parts.map { $0.tokens[key]! }) }
        return first
    }
}
