// MARK: - Token partitions (Swin windows, MaxViT block and grid attention)
//
// A partition permutes a stage's token grid (row-major, per image) into windows of equal size;
// attention runs inside each window with an additive bias. Every other part of a pre-LN block acts
// on each token alone, so a block runs on the stream put into partition order and put back.

import Foundation
import RefractTensor

public protocol TokenPartition: Sendable {
    /// Tokens per side of the stage's grid.
    var resolution: Int { get }
    /// For partition-order row k of one image, the grid row (y·R + x) it holds.
    var source: [Int] { get }
    /// The inverse: for grid row r, its partition-order row.
    var position: [Int] { get }
    var tokensPerWindow: Int { get }
    /// What attention adds to the scaled scores: [groups, heads, n, n] (window w uses group w % groups).
    var bias: AttentionBias { get }
}

extension TokenPartition {
    public var windows: Int { source.count / tokensPerWindow }

    /// Rows of a batch [B·R², ·] in grid order → partition order (`inverse` false) or back.
    public func reorder(_ x: Tensor, images: Int, inverse: Bool = false) -> Tensor {
        let map = inverse ? position : source
        let per = source.count
        var rows = [Int](repeating: 0, count: images * per)
        for b in 0..<images { for k in 0..<per { rows[b * per + k] = b * per + map[k] } }
        return Ops.gatherRows(x, rows)
    }

    /// One segment per window of every image, in partition order.
    public func segments(images: Int) -> [Segment] {
        let n = tokensPerWindow
        return (0..<(images * windows)).map { Segment(start: $0 * n, length: n) }
    }

    /// The inverse permutation of `source`.
    static func inverse(_ source: [Int]) -> [Int] {
        var position = [Int](repeating: 0, count: source.count)
        for (k, row) in source.enumerated() { position[row] = k }
        return position
    }
}
