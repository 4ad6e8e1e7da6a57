// MARK: - Token heatmaps: how much each image patch writes along a text direction
//
// With c_i = Σ_{(l,h) ∈ S} attn[l, h, i] ∈ R^{D'} the summed direct contribution of source token i
// over a head set S (`attn_token_sum`, docs/Decomposition.md), the heatmap for a direction t is
//
//     map[i] = c_i · t,   i ≥ 1 (patch tokens), reshaped to the G×G patch grid (G = S/p).
//
// For a text, t is its L2-normalised embedding minus the mean of the contrast texts' embeddings
// (no contrast: t itself). Σ_{i ≥ 0} c_i · t = (Σ_S attn[l, h]) · t: the maps and the class-token
// term add up to the head set's whole contribution along t. Maps are upsampled to the input size
// with PyTorch's bilinear interpolation (`F.interpolate(scale_factor=p, mode='bilinear',
// align_corners=False)`), as the official segmentation code does.

import Foundation
import RefractDecompose
import RefractTensor

public struct HeatmapError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One image's heatmaps for K directions.
public struct TokenHeatmap: Sendable {
    /// Patch grid side G (the model's input size over its patch size).
    public let grid: Int
    /// Per direction and source token (token 0 = class token): c_i · t, [K, T].
    public let tokenScores: Tensor
    /// Per direction, the patch tokens' scores on the grid (row-major): [K, G, G].
    public let maps: Tensor

    public var directions: Int { tokenScores.shape[0] }

    /// The class token's term c_0 · t of direction k (not part of the map).
    public func classTokenTerm(_ k: Int) -> Float { tokenScores.data[k * tokenScores.shape[1]] }

    /// Direction k's G×G map, row-major.
    public func map(_ k: Int) -> [Float] { Array(maps.data[(k * grid * grid)..<((k + 1) * grid * grid)]) }

    /// Scores of one image's per-token sums `tokenSums` [T·D'] (token-major) along the rows of
    /// `directions` [K, D'], laid out on a G×G grid (T = 1 + G²).
    public init(tokenSums: [Float], tokens: Int, directions: Tensor) throws {
        let d = directions.shape[1], k = directions.shape[0]
        guard tokenSums.count == tokens * d else {
            throw HeatmapError("per-token sums hold \(tokenSums.count) values, expected \(tokens) tokens x \(d)")
        }
        let g = Int(Double(tokens - 1).squareRoot().rounded())
        guard g * g == tokens - 1 else { throw HeatmapError("\(tokens - 1) patch tokens do not form a square grid") }
        // [K, D'] · [T, D']ᵀ → [K, T]
        let scores = Ops.matmul(directions, Ops.transposed(Tensor(shape: [tokens, d], data: tokenSums)))
        var maps = [Float](repeating: 0, count: k * g * g)                                    // [K, G, G]
        for j in 0..<k {
            for i in 1..<tokens { maps[j * g * g + i - 1] = scores.data[j * tokens + i] }
        }
        self.grid = g
        self.tokenScores = scores
        self.maps = Tensor(shape: [k, g, g], data: maps)
    }
}

public enum TokenHeatmaps {
    /// Heatmap directions [K, D']: each text embedding L2-normalised, minus the mean of the
    /// L2-normalised contrast embeddings [M, D'] when given.
    public static func directions(texts: Tensor, contrast: Tensor? = nil) throws -> Tensor {
        guard texts.rank == 2, texts.shape[0] > 0 else { throw HeatmapError("no text directions") }
        var out = Ops.l2Normalized(texts)                                                     // [K, D']
        guard let contrast else { return out }
        let d = texts.shape[1]
        guard contrast.rank == 2, contrast.shape[1] == d, contrast.shape[0] > 0 else {
            throw HeatmapError("contrast embeddings \(contrast.shape) do not match the texts' width \(d)")
        }
        let c = Ops.l2Normalized(contrast)                                                    // [M, D']
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<c.shape[0] { for j in 0..<d { mean[j] += Double(c.data[r * d + j]) } }
        let m = Double(c.shape[0])
        for r in 0..<out.shape[0] { for j in 0..<d { out.data[r * d + j] -= Float(mean[j] / m) } }
        return out
    }

    /// Bilinear upsampling of a row-major `size`×`size` map by an integer `factor`, with PyTorch's
    /// `F.interpolate(scale_factor=factor, mode='bilinear', align_corners=False)` arithmetic:
    /// source coordinate max(0, (dst + 0.5)/factor − 0.5), edge rows and columns clamped.
    /// Returns a row-major (size·factor)² map.
    public static func upsampleBilinear(_ map: [Float], size: Int, factor: Int) -> [Float] {
        precondition(map.count == size * size && factor > 0, "map of \(map.count) values is not \(size)x\(size)")
        let n = size * factor
        let scale = Float(1.0 / Double(factor))
        // Per output index: lower source index, step to the upper one (0 at the edge), weights.
        var lo = [Int](repeating: 0, count: n), step = [Int](repeating: 0, count: n)
        var w0 = [Float](repeating: 0, count: n), w1 = [Float](repeating: 0, count: n)
        for o in 0..<n {
            let src = max(0, scale * (Float(o) + 0.5) - 0.5)
            let i = min(Int(src), size - 1)
            lo[o] = i
            step[o] = i < size - 1 ? 1 : 0
            w1[o] = src - Float(i)
            w0[o] = 1 - w1[o]
        }
        var out = [Float](repeating: 0, count: n * n)                                          // [S, S]
        for y in 0..<n {
            let r0 = lo[y] * size, r1 = (lo[y] + step[y]) * size, h0 = w0[y], h1 = w1[y]
            for x in 0..<n {
                let c0 = lo[x], c1 = lo[x] + step[x], v0 = w0[x], v1 = w1[x]
                out[y * n + x] = h0 * (v0 * map[r0 + c0] + v1 * map[r0 + c1]) + h1 * (v0 * map[r1 + c0] + v1 * map[r1 + c1])
            }
        }
        return out
    }
}
