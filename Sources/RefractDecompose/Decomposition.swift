// MARK: - Decomposition results: named components of a batch of images
//
// Every tensor has a leading image axis and uses the same names as a run store (docs/Store.md):
//
//   embedding   [B, D']          the model's own output before L2 normalisation
//   norm        [B]              ‖embedding‖
//   pre         [B, D']          the embedding term (class token after ln_pre)
//   mlp         [B, L, D']       each layer's MLP
//   attn        [B, L, H, D']    each head, summed over source tokens
//   attn_cls    [B, L, H, D']    the part of each head that comes from the class token itself
//   attn_tokens [B, L*, H, T, D'] each head split by source token, for the requested layers L*
//   attn_token_sum [B, T, D']    per source token, the sum over a chosen head set of its terms
//   attn_bias   [B, L, D']       faithful only: each layer's out-projection bias
//   readout_bias [B, D']         faithful only: what the read-out adds (ln_post β·P for CLIP)
//
// faithful:        embedding   = pre + Σ mlp + Σ attn + Σ attn_bias + readout_bias
// gandelsman2024:  embedding/‖·‖ = pre + Σ mlp + Σ attn
// In both, attn[l, h] = Σ_t attn_tokens[l, h, t] and attn_cls[l, h] = attn_tokens[l, h, 0];
// attn_token_sum[t] = Σ_{(l,h) ∈ S} attn_tokens[l, h, t] for the head set S.

import Foundation
import RefractTensor

/// Names of the decomposition's tensors, in store order.
public enum ComponentTensor: String, Sendable, CaseIterable, Codable {
    case embedding, norm, pre, mlp, attn
    case attnClassToken = "attn_cls"
    case attnTokens = "attn_tokens"
    case attnBias = "attn_bias"
    case readoutBias = "readout_bias"
    case attnTokenSum = "attn_token_sum"

    public var name: String { rawValue }

    public var summary: String {
        switch self {
        case .embedding: return "the model's image embedding before L2 normalisation"
        case .norm: return "L2 norm of the embedding"
        case .pre: return "the embedding term: class token after ln_pre, through the read-out"
        case .mlp: return "each layer's MLP output at the class token, through the read-out"
        case .attn: return "each attention head's output at the class token, summed over source tokens"
        case .attnClassToken: return "the part of each head's output that comes from the class token itself"
        case .attnTokens: return "each head's output split by source token, for the selected layers"
        case .attnBias: return "each layer's attention out-projection bias, through the read-out"
        case .readoutBias: return "what the read-out adds itself (ln_post beta times the projection)"
        case .attnTokenSum: return "per source token, the sum of a chosen head set's terms over heads and layers"
        }
    }
}

/// Sizes of a decomposition.
public struct DecompositionShape: Sendable, Equatable, Codable {
    public var layers: Int
    public var heads: Int
    /// Tokens of the image (class token + patches).
    public var tokens: Int
    /// Residual width D and representation width D'.
    public var width: Int
    public var outputWidth: Int
    /// Layers whose per-token contributions are kept, ascending.
    public var tokenLayers: [Int]
    /// Heads whose per-token terms are summed into `attn_token_sum` (nil: not computed).
    public var tokenSumHeads: HeadSet? = nil

    /// Per-image shape of each tensor present under `convention`.
    public func tensorShapes(_ convention: DecompositionConvention) -> [(ComponentTensor, [Int])] {
        var out: [(ComponentTensor, [Int])] = [
            (.embedding, [outputWidth]), (.norm, []), (.pre, [outputWidth]), (.mlp, [layers, outputWidth]),
            (.attn, [layers, heads, outputWidth]), (.attnClassToken, [layers, heads, outputWidth]),
        ]
        if !tokenLayers.isEmpty { out.append((.attnTokens, [tokenLayers.count, heads, tokens, outputWidth])) }
        if tokenSumHeads != nil { out.append((.attnTokenSum, [tokens, outputWidth])) }
        if convention == .faithful {
            out.append((.attnBias, [layers, outputWidth]))
            out.append((.readoutBias, [outputWidth]))
        }
        return out
    }
}

// MARK: - Head sets

/// A set of attention heads of a model with `layers` × `heads` heads, e.g. the heads whose
/// per-token terms are summed into `attn_token_sum`.
public struct HeadSet: Sendable, Equatable, Codable {
    public let layers: Int
    public let heads: Int
    /// Per layer (index = layer), the chosen heads in ascending order; empty when none.
    public let perLayer: [[Int]]

    /// Every head of every layer.
    public static func all(layers: Int, heads: Int) -> HeadSet {
        HeadSet(layers: layers, heads: heads, perLayer: Array(repeating: Array(0..<heads), count: layers))
    }

    /// Every head of the given layers.
    public static func layers(_ chosen: [Int], layers: Int, heads: Int) throws -> HeadSet {
        try HeadSet(layers: layers, heads: heads, members: chosen.flatMap { l in (0..<heads).map { (l, $0) } })
    }

    /// The given (layer, head) pairs (repeats ignored); fails on a head the model does not have
    /// or an empty set.
    public init(layers: Int, heads: Int, members: [(layer: Int, head: Int)]) throws {
        var perLayer = [Set<Int>](repeating: [], count: layers)
        for (l, h) in members {
            guard l >= 0 && l < layers && h >= 0 && h < heads else {
                throw SelectionError(message: "head \(l).\(h) does not exist: the model has layers 0...\(layers - 1) "
                    + "with heads 0...\(heads - 1)")
            }
            perLayer[l].insert(h)
        }
        guard perLayer.contains(where: { !$0.isEmpty }) else { throw SelectionError(message: "the head set is empty") }
        self.init(layers: layers, heads: heads, perLayer: perLayer.map { $0.sorted() })
    }

    private init(layers: Int, heads: Int, perLayer: [[Int]]) {
        self.layers = layers; self.heads = heads; self.perLayer = perLayer
    }

    /// Number of heads in the set.
    public var count: Int { perLayer.reduce(0) { $0 + $1.count } }

    public func contains(layer: Int, head: Int) -> Bool {
        layer >= 0 && layer < layers && perLayer[layer].contains(head)
    }

    /// `all`, or the members as `LAYER.HEAD` joined by commas.
    public var description: String {
        if count == layers * heads { return "all" }
        return perLayer.enumerated().flatMap { l, hs in hs.map { "\(l).\($0)" } }.joined(separator: ",")
    }
}

/// The decomposition of a batch of images: named tensors with a leading image axis.
public struct DecompositionBatch: Sendable {
    public let convention: DecompositionConvention
    public let shape: DecompositionShape
    public internal(set) var tensors: [ComponentTensor: Tensor]

    public var count: Int { tensors[.embedding]?.shape[0] ?? 0 }

    public subscript(_ name: ComponentTensor) -> Tensor? { tensors[name] }

    /// One image's decomposition.
    public func image(_ i: Int) -> ImageDecomposition {
        precondition(i >= 0 && i < count, "image \(i) of \(count)")
        var rows = [ComponentTensor: [Float]]()
        for (name, t) in tensors { rows[name] = t.row(i) }
        return ImageDecomposition(convention: convention, shape: shape, rows: rows)
    }

    /// Concatenates batches along the image axis.
    public static func concatenate(_ parts: [DecompositionBatch]) -> DecompositionBatch {
        precondition(!parts.isEmpty)
        var tensors = [ComponentTensor: Tensor]()
        for (name, t) in parts[0].tensors {
            let rows = parts.reduce(0) { $0 + $1.count }
            var data = [Float]()
            data.reserveCapacity(rows * t.shape.dropFirst().reduce(1, *))
            for p in parts { data += p.tensors[name]!.data }
            tensors[name] = Tensor(shape: [rows] + t.shape.dropFirst(), data: data)
        }
        return DecompositionBatch(convention: parts[0].convention, shape: parts[0].shape, tensors: tensors)
    }
}

/// Identifies one component of an image's decomposition.
public enum ComponentID: Hashable, Sendable, CustomStringConvertible {
    case pre
    case mlp(layer: Int)
    case head(layer: Int, head: Int)
    case headToken(layer: Int, head: Int, token: Int)
    case attentionBias(layer: Int)
    case readoutBias

    /// Short names used in reports and on the command line: `pre`, `mlp.3`, `attn.11.3` (layer 11,
    /// head 3), `attn.11.3.t0` (its class-token term), `attn_bias.11`, `readout_bias`.
    public var description: String {
        switch self {
        case .pre: return "pre"
        case .mlp(let l): return "mlp.\(l)"
        case let .head(l, h): return "attn.\(l).\(h)"
        case let .headToken(l, h, t): return "attn.\(l).\(h).t\(t)"
        case .attentionBias(let l): return "attn_bias.\(l)"
        case .readoutBias: return "readout_bias"
        }
    }
}

/// One image's decomposition, read by (layer, head, token) rather than by index arithmetic.
public struct ImageDecomposition: Sendable {
    public let convention: DecompositionConvention
    public let shape: DecompositionShape
    let rows: [ComponentTensor: [Float]]

    private var dim: Int { shape.outputWidth }

    private func slice(_ name: ComponentTensor, _ index: Int) -> [Float] {
        guard let r = rows[name] else { return [] }
        return Array(r[(index * dim)..<((index + 1) * dim)])
    }

    /// The model's own embedding before L2 normalisation [D'].
    public var embedding: [Float] { rows[.embedding]! }
    public var norm: Float { rows[.norm]![0] }
    public var pre: [Float] { rows[.pre]! }

    public func mlp(layer: Int) -> [Float] {
        precondition(layer >= 0 && layer < shape.layers, "layer \(layer) of \(shape.layers)")
        return slice(.mlp, layer)
    }

    /// Head `head` of layer `layer`, summed over source tokens.
    public func attention(layer: Int, head: Int) -> [Float] {
        precondition(layer >= 0 && layer < shape.layers && head >= 0 && head < shape.heads,
                     "head \(layer).\(head) of \(shape.layers)x\(shape.heads)")
        return slice(.attn, layer * shape.heads + head)
    }

    /// The part of a head that comes from the class token.
    public func attentionFromClassToken(layer: Int, head: Int) -> [Float] {
        precondition(layer >= 0 && layer < shape.layers && head >= 0 && head < shape.heads)
        return slice(.attnClassToken, layer * shape.heads + head)
    }

    /// The part of a head that comes from source token `token` (0 = class token), or nil when the
    /// layer's per-token contributions were not requested.
    public func attention(layer: Int, head: Int, token: Int) -> [Float]? {
        guard let li = shape.tokenLayers.firstIndex(of: layer) else { return nil }
        precondition(head >= 0 && head < shape.heads && token >= 0 && token < shape.tokens)
        return slice(.attnTokens, (li * shape.heads + head) * shape.tokens + token)
    }

    /// Faithful only: layer `layer`'s out-projection bias term.
    public func attentionBias(layer: Int) -> [Float]? {
        rows[.attnBias] == nil ? nil : slice(.attnBias, layer)
    }

    public var readoutBias: [Float]? { rows[.readoutBias] }

    /// Per source token, the sum over `shape.tokenSumHeads` of its terms: [T·D'] row-major (token t
    /// at t·D'), or nil when the decomposer was not asked for it.
    public var tokenSums: [Float]? { rows[.attnTokenSum] }

    /// Source token `token`'s summed term [D'] (0 = class token), or nil when not computed.
    public func tokenSum(token: Int) -> [Float]? {
        guard rows[.attnTokenSum] != nil else { return nil }
        precondition(token >= 0 && token < shape.tokens, "token \(token) of \(shape.tokens)")
        return slice(.attnTokenSum, token)
    }

    /// A component by id (nil when not stored: per-token terms of other layers, faithful-only terms).
    public subscript(_ id: ComponentID) -> [Float]? {
        switch id {
        case .pre: return pre
        case .mlp(let l): return mlp(layer: l)
        case let .head(l, h): return attention(layer: l, head: h)
        case let .headToken(l, h, t): return attention(layer: l, head: h, token: t)
        case .attentionBias(let l): return attentionBias(layer: l)
        case .readoutBias: return readoutBias
        }
    }

    /// The components that add up to the representation (per head, not per token).
    public var components: [ComponentID] {
        var ids: [ComponentID] = [.pre]
        for l in 0..<shape.layers {
            ids.append(.mlp(layer: l))
            for h in 0..<shape.heads { ids.append(.head(layer: l, head: h)) }
            if convention == .faithful { ids.append(.attentionBias(layer: l)) }
        }
        if convention == .faithful { ids.append(.readoutBias) }
        return ids
    }

    /// Σ of `components` in double precision: the embedding (faithful) or the L2-normalised
    /// embedding (gandelsman2024).
    public func sum() -> [Double] {
        var s = [Double](repeating: 0, count: dim)
        for id in components { for (j, v) in self[id]!.enumerated() { s[j] += Double(v) } }
        return s
    }
}
