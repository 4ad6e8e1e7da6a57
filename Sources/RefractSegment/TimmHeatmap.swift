// MARK: - Token heatmaps of timm models, read in CLIP space through an alignment
//
// A timm model's components live in its own space R^d; an alignment (`refract align`, CompAlign)
// maps component c into CLIP space with W_c [d, D] (and a shared bias, which token maps do not use:
// beyond-clip.md §2, "token heat maps: W_c only, no bias"). With x_{c,i} ∈ R^d the per-token term of
// head c for source token i (TimmDecomposer's `tokens`), the map for a text direction t is
//
//     map[i] = Σ_{c ∈ S} (x_{c,i} · W_c) · t = Σ_{c ∈ S} x_{c,i} · u_c,   u_c = W_c · t ∈ R^d,
//
// so each chosen head costs one [T, d] × [d, K] product per image. Since Σ_i x_{c,i} = x_c (the head's
// pooled component), the sum of the map over every token (ViT: class token and registers too) is
// (Σ_{c ∈ S} x_c · W_c) · t: the chosen heads' aligned contribution along t, without the bias share.
//
// Grids: ViT family, the patch grid (token 1 + registers + r·G + c), the class token and registers
// reported apart; Swin and MaxViT, the stage's real grid as the decomposer gives it (windows, shift
// and partitions undone). Heads of stages with different grids are not summed into one map.

import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractStore
import RefractTensor
import RefractTimm

/// An attention head of a timm decomposition: where its per-token terms are.
public struct TimmTokenComponent: Sendable, Equatable {
    /// `attn.B.H`, MaxViT `attn.B.window.H` / `attn.B.grid.H`.
    public var name: String
    /// Its position in the alignment's (= the decomposer's) component list.
    public var index: Int
    /// The decomposition's token key: "B", MaxViT "B.window" / "B.grid".
    public var key: String
    public var block: Int
    public var head: Int

    public init(name: String, index: Int, key: String, block: Int, head: Int) {
        self.name = name; self.index = index; self.key = key; self.block = block; self.head = head
    }

    /// Parses a head's name; nil for any other component.
    public static func parse(_ name: String, index: Int) -> TimmTokenComponent? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.first == "attn", parts.count == 3 || parts.count == 4, let block = Int(parts[1]), let head = Int(parts.last!),
              block >= 0, head >= 0 else { return nil }
        if parts.count == 4 && parts[2] != "window" && parts[2] != "grid" { return nil }
        let key = parts.count == 3 ? parts[1] : "\(parts[1]).\(parts[2])"
        return TimmTokenComponent(name: name, index: index, key: key, block: block, head: head)
    }
}

/// What is drawn for one model and alignment: the decomposer (the alignment's convention and start
/// block, per-token terms for the chosen heads' blocks) and the chosen heads.
public struct TimmHeatmapPlan: Sendable {
    public let decomposer: TimmDecomposer
    public let components: [TimmTokenComponent]
    /// Grid side of the maps.
    public let grid: Int
    /// ViT: the class token and registers, ahead of the patches in the token terms; 0 for Swin and MaxViT.
    public let prefixTokens: Int
    /// How the heads were chosen, for the report.
    public let selection: String
}

/// One image's maps for K directions.
public struct TimmTokenHeatmap: Sendable {
    public let grid: Int
    public let prefixTokens: Int
    /// Per direction, every token's score (ViT: class, registers, patches; Swin/MaxViT: the grid row-major), [K, T].
    public let tokenScores: Tensor
    /// Per direction, the grid's scores row-major, [K, G, G].
    public let maps: Tensor

    public var directions: Int { tokenScores.shape[0] }
    var tokens: Int { tokenScores.shape[1] }

    /// The class token's and registers' terms of direction k (not in the map).
    public func prefixTerms(_ k: Int) -> [Float] { Array(tokenScores.data[(k * tokens)..<(k * tokens + prefixTokens)]) }

    /// Σ over every token of direction k (float64 sum): (Σ_S x_c·W_c)·t.
    public func total(_ k: Int) -> Double { tokenScores.data[(k * tokens)..<((k + 1) * tokens)].reduce(0) { $0 + Double($1) } }

    /// Direction k's G×G map, row-major.
    public func map(_ k: Int) -> [Float] { Array(maps.data[(k * grid * grid)..<((k + 1) * grid * grid)]) }
}

public enum TimmHeatmaps {
    // MARK: Checking the alignment against the model

    /// The decomposition's start block, from the alignment's component names (`init` first, then the
    /// components of blocks B…: `attn.B.H`, `attn_bias.B`, `mlp.B`, `conv.B`, `shortcut_bias.B`).
    public static func fromBlock(components names: [String]) throws -> Int {
        guard names.first == "init" else {
            throw HeatmapError("the alignment's components do not start with init: not a decomposition of a timm model by Refract")
        }
        let prefixes: Set<String> = ["attn", "attn_bias", "mlp", "conv", "shortcut_bias"]
        let blocks = names.compactMap { name -> Int? in
            let parts = name.split(separator: ".")
            guard parts.count >= 2, prefixes.contains(String(parts[0])) else { return nil }
            return Int(parts[1])
        }
        guard let first = blocks.min() else { throw HeatmapError("the alignment lists no block components (attn.B.H, mlp.B)") }
        return first
    }

    /// Grid side of the per-token terms of `block`.
    static func gridSide(_ model: TimmModel, block: Int) -> Int {
        func stage(_ depths: [Int]) -> Int {
            var start = 0
            for (s, n) in depths.enumerated() { if block < start + n { return s }; start += n }
            return depths.count - 1
        }
        switch model.network {
        case .vit(let m): return m.config.gridSize
        case .swin(let m): return m.config.resolution(stage: stage(m.config.depths))
        case .maxvit(let m): return m.config.resolution(stage: stage(m.config.depths))
        }
    }

    /// Checks the alignment against the model (weights, convention, width, component list) and chooses
    /// the heads: `names` (`attn.B.H`, or `attn.B.*` for every head of a sub-block), else every head of
    /// the decomposed blocks (Swin, MaxViT: of those on the last grid, the final stage's).
    public static func plan(model: TimmModel, weightsSHA256: String, alignment: Alignment, components names: [String]?) throws -> TimmHeatmapPlan {
        let m = alignment.manifest
        let here = alignment.directory.path
        guard m.model.weightsSHA256 == weightsSHA256 else {
            throw HeatmapError("\(here) is an alignment of \(m.model.id) (weights \(m.model.weightsSHA256.prefix(12))…), "
                + "not of \(model.id) (weights \(weightsSHA256.prefix(12))…): align a run of this model with refract align")
        }
        guard let convention = DecompositionConvention(rawValue: m.convention) else {
            throw HeatmapError("\(here): unknown convention '\(m.convention)'")
        }
        guard convention == .faithful else {
            throw HeatmapError("\(here) was trained on a \(m.convention) run; per-token terms are computed in the faithful convention only "
                + "(the official token split reshares every bias over tokens), so its maps do not apply to them: "
                + "align a faithful run (refract decompose --convention faithful, the default) for heatmaps")
        }
        guard m.width == model.representationWidth else {
            throw HeatmapError("\(here): maps of width \(m.width), \(model.id)'s components have width \(model.representationWidth)")
        }
        if case .vit(let vit) = model.network, vit.config.globalPool != "token" {
            throw HeatmapError("\(model.id) pools by average: per-token terms are defined for the class-token read-out")
        }
        let from = try fromBlock(components: m.components)
        let heads = m.components.enumerated().compactMap { TimmTokenComponent.parse($1, index: $0) }
        guard !heads.isEmpty else { throw HeatmapError("\(here): the alignment lists no attention heads") }
        let drawable = "only attention heads (attn.B.H\(heads.contains { $0.key.contains(".") } ? ", attn.B.window.H, attn.B.grid.H" : "")) "
            + "have per-token terms"
        var chosen: [TimmTokenComponent] = []
        let selection: String
        if let names {
            guard !names.isEmpty else { throw HeatmapError("--components is empty") }
            for raw in names {
                let name = raw.trimmingCharacters(in: .whitespaces)
                if name.hasSuffix(".*") {
                    let key = String(name.dropFirst("attn.".count).dropLast(2))
                    let all = heads.filter { name.hasPrefix("attn.") && $0.key == key }
                    guard !all.isEmpty else { throw HeatmapError("--components \(name): no heads attn.\(key).H in this decomposition") }
                    chosen += all
                } else if let head = heads.first(where: { $0.name == name }) {
                    chosen.append(head)
                } else if m.components.contains(name) {
                    throw HeatmapError("--components \(name) has no per-token terms: \(drawable) (here \(heads.first!.name) … \(heads.last!.name))")
                } else {
                    throw HeatmapError("--components \(name) is not a component of this decomposition (\(m.components.count) components, "
                        + "\(heads.first!.name) … \(heads.last!.name) drawable)")
                }
            }
            var seen = Set<String>()
            chosen = chosen.filter { seen.insert($0.name).inserted }
            selection = "--components"
        } else {
            let last = heads.map { gridSide(model, block: $0.block) }.min()!
            chosen = heads.filter { gridSide(model, block: $0.block) == last }
            selection = model.family == .vit ? "every head of the decomposed blocks"
                : "every head of the decomposed blocks on the last grid (\(last)x\(last))"
        }
        let grids = Set(chosen.map { gridSide(model, block: $0.block) })
        guard grids.count == 1 else {
            let list = grids.sorted().map { g in "\(g)x\(g): \(chosen.first { gridSide(model, block: $0.block) == g }!.name)" }
            throw HeatmapError("the chosen heads lie on grids of different sizes (\(list.joined(separator: ", "))): choose heads of one stage")
        }
        let decomposer: TimmDecomposer
        do {
            decomposer = try TimmDecomposer(model: model, convention: convention, fromBlock: from,
                                            tokenBlocks: Array(Set(chosen.map(\.block))).sorted())
        } catch {
            throw HeatmapError("\(here): \(error)")
        }
        let names = decomposer.components.map(\.name)
        guard names == m.components else {
            throw HeatmapError("\(here) is aligned for \(m.components.count) components, but \(model.id) decomposed from block \(from) "
                + "(convention \(m.convention)) has \(names.count)\(firstDifference(names, m.components)): another decomposition of the model")
        }
        let prefix: Int
        if case .vit(let vit) = model.network { prefix = vit.config.prefixTokens } else { prefix = 0 }
        return TimmHeatmapPlan(decomposer: decomposer, components: chosen, grid: grids.first!, prefixTokens: prefix, selection: selection)
    }

    static func firstDifference(_ a: [String], _ b: [String]) -> String {
        for i in 0..<min(a.count, b.count) where a[i] != b[i] { return " (component \(i): \(a[i]), the alignment's \(b[i]))" }
        return ""
    }

    // MARK: Maps

    /// u_c = W_c · tᵀ for each chosen head: [d, K] (no bias).
    public static func folded(_ maps: AlignerWeights, components: [TimmTokenComponent], directions: Tensor) -> [Tensor] {
        let d = maps.width, e = maps.clipWidth
        precondition(directions.rank == 2 && directions.shape[1] == e, "directions \(directions.shape) are not of width \(e)")
        let t = Ops.transposed(directions)                                                   // [D, K]
        return components.map { c in
            Ops.matmul(Tensor(shape: [d, e], data: Array(maps.weights[(c.index * d * e)..<((c.index + 1) * d * e)])), t)
        }
    }

    /// Image `j` of a decomposed batch: Σ_c x_{c,i} · u_c per token, laid out on the grid.
    public static func heatmap(_ batch: TimmDecompositionBatch, image j: Int, components: [TimmTokenComponent], folded: [Tensor],
                               grid: Int, prefixTokens: Int) throws -> TimmTokenHeatmap {
        precondition(components.count == folded.count)
        let k = folded.first?.shape[1] ?? 0
        var scores: Tensor?                                                                  // [T, K]
        for (c, u) in zip(components, folded) {
            guard let terms = batch.tokens[c.key] else { throw HeatmapError("the decomposition has no per-token terms for \(c.name)") }
            let h = terms.shape[1], d = terms.shape.last!
            let t = terms.shape.dropFirst(2).dropLast().reduce(1, *)
            guard c.head < h, d == u.shape[0] else { throw HeatmapError("per-token terms \(terms.shape) do not fit \(c.name)") }
            let start = ((j * h + c.head) * t) * d
            let x = Tensor(shape: [t, d], data: Array(terms.data[start..<(start + t * d)]))
            let s = Ops.matmul(x, u)                                                         // [T, K]
            if scores == nil { scores = s } else {
                guard scores!.shape == s.shape else { throw HeatmapError("\(c.name)'s tokens \(t) differ from the other heads'") }
                for i in 0..<s.data.count { scores!.data[i] += s.data[i] }
            }
        }
        guard let scores else { throw HeatmapError("no heads chosen") }
        let t = scores.shape[0]
        guard t == prefixTokens + grid * grid else {
            throw HeatmapError("\(t) tokens are not \(prefixTokens) prefix tokens and a \(grid)x\(grid) grid")
        }
        let byDirection = Ops.transposed(scores)                                             // [K, T]
        var maps = [Float](repeating: 0, count: k * grid * grid)
        for a in 0..<k { for i in 0..<(grid * grid) { maps[a * grid * grid + i] = byDirection.data[a * t + prefixTokens + i] } }
        return TimmTokenHeatmap(grid: grid, prefixTokens: prefixTokens, tokenScores: byDirection,
                                maps: Tensor(shape: [k, grid, grid], data: maps))
    }

    // MARK: Choosing heads by variance_explained (visualize_tokens.py)

    /// The `k` heads among `candidates` whose aligned contributions have the largest variance_explained
    /// (beyond-clip.md §3.3) by the span of `embeddings` [N, D] over the run the alignment was trained
    /// on, with their scores, best first.
    public static func topHeads(run reader: StoreReader, alignment: Alignment, candidates: [TimmTokenComponent], texts: [String],
                                embeddings: Tensor, k: Int, progress: ((Int) -> Void)? = nil) throws
        -> [(component: TimmTokenComponent, score: Double)] {
        guard k > 0 else { throw HeatmapError("--top-heads must be positive") }
        let source = try ScoreSource.resolve(reader, alignment: alignment)
        let property = ScoreProperty(name: "heatmap texts", texts: texts, embeddings: embeddings)
        let result = try ComponentScoring.score(reader, source: source, properties: [property], varianceExplained: true, progress: progress)
        guard let explained = result.properties.first?.varianceExplained else { throw HeatmapError("variance_explained was not computed") }
        let ranked = candidates.map { ($0, explained[$0.index]) }.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0.index < $1.0.index) }
        return Array(ranked.prefix(k)).map { (component: $0.0, score: $0.1) }
    }
}
