// MARK: - Heads of a run: reading their contributions, TextSpan over them, ranking by a text
//
// Head contributions are read from a run's `attn` tensor [N, L, H, D'] in groups of heads that fit
// a memory budget, each group by one strided read that touches only its heads' bytes, so a run never
// has to fit in memory and all heads are never held at once.

import Foundation
import RefractDecompose
import RefractStore
import RefractTensor

/// One attention head: layer and head, 0-based. Written `11.3` on the command line.
public struct HeadID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var layer: Int
    public var head: Int
    public init(layer: Int, head: Int) { self.layer = layer; self.head = head }
    public var description: String { "\(layer).\(head)" }
    public static func < (a: HeadID, b: HeadID) -> Bool { (a.layer, a.head) < (b.layer, b.head) }

    /// Parses `11.3,10.7` for a model with `layers` × `heads`; negative layers count from the end.
    public static func parseList(_ text: String, layers: Int, heads: Int) throws -> [HeadID] {
        var out = [HeadID]()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let p = part.trimmingCharacters(in: .whitespaces)
            let bits = p.split(separator: ".", omittingEmptySubsequences: false)
            guard bits.count == 2, let l0 = Int(bits[0]), let h = Int(bits[1]) else {
                throw SelectionError(message: "head '\(p)': write heads as LAYER.HEAD, e.g. 11.3,10.7")
            }
            let l = l0 < 0 ? layers + l0 : l0
            guard l >= 0 && l < layers, h >= 0 && h < heads else {
                throw SelectionError(message: "head \(p) does not exist: the run has layers 0...\(layers - 1) and heads 0...\(heads - 1)")
            }
            let id = HeadID(layer: l, head: h)
            if !out.contains(id) { out.append(id) }
        }
        return out.sorted()
    }
}

public enum HeadContributions {
    static func dims(_ reader: StoreReader) throws -> (layers: Int, heads: Int, width: Int) {
        let m = reader.manifest.dimensions
        guard let l = m["layers"], let h = m["heads"], let d = m["embedDim"],
              reader.manifest.tensors.contains(where: { $0.name == "attn" && $0.shape == [l, h, d] }) else {
            throw TextSpanInputError(path: reader.run.appendingPathComponent("manifest.json").path,
                                     message: "no per-head 'attn' tensor [layers, heads, embedDim]; not a decomposition run")
        }
        return (l, h, d)
    }

    /// Calls `body(head, contributions [N, D'])` for every head, reading the heads in groups whose
    /// contributions fit in `budgetBytes`; each group is one strided read of the store that touches
    /// only the group's bytes (`StoreReader.slices`).
    public static func forEachHead(_ reader: StoreReader, heads: [HeadID], budgetBytes: Int = 1 << 30,
                                   _ body: (HeadID, Tensor) throws -> Void) throws {
        let (_, _, d) = try dims(reader)
        let n = reader.rowCount
        let perHead = max(1, n * d * 4)
        let group = max(1, budgetBytes / perHead)
        var start = 0
        while start < heads.count {
            let chunk = Array(heads[start..<min(start + group, heads.count)])
            let block = try reader.slices(of: "attn", indices: chunk.map { [$0.layer, $0.head] })      // [N, k, D']
            if chunk.count == 1 {
                try body(chunk[0], block.reshaped([n, d]))
            } else {
                let k = chunk.count
                for (j, id) in chunk.enumerated() {
                    var rows = [Float](repeating: 0, count: n * d)                                  // [N, D']
                    rows.withUnsafeMutableBufferPointer { dst in
                        block.data.withUnsafeBufferPointer { src in
                            for r in 0..<n {
                                (dst.baseAddress! + r * d).update(from: src.baseAddress! + (r * k + j) * d, count: d)
                            }
                        }
                    }
                    try body(id, Tensor(shape: [n, d], data: rows))
                }
            }
            start += chunk.count
        }
    }
}

/// A head ranked by how much its contributions vary along a text direction.
public struct HeadTextVariance: Codable, Sendable, Equatable {
    public var layer: Int
    public var head: Int
    /// Variance over images of contribution · t̂ (t̂ the L2-normalised text embedding).
    public var variance: Double
    /// That variance as a fraction of the head's total centred variance.
    public var fractionOfHead: Double
    /// Mean of contribution · t̂.
    public var mean: Double
}

public enum HeadRanking {
    /// Every head of the run ranked by the variance of its contributions along `text` [D'] (normalised
    /// here), highest first. One pass over the store.
    public static func byTextVariance(_ reader: StoreReader, text: [Float]) throws -> [HeadTextVariance] {
        let (layers, h, d) = try HeadContributions.dims(reader)
        guard text.count == d else {
            throw TextSpanInputError(path: reader.run.path, message: "text direction of width \(text.count), the run's is \(d)")
        }
        // A NaN direction would normalise to zero and give every head a variance of 0: refuse it.
        try StoredValues.requireFinite(Tensor(shape: [1, d], data: text), source: reader.run.path,
                                       what: "the text direction", purpose: "heads")
        guard text.contains(where: { $0 != 0 }) else {
            throw TextSpanInputError(path: reader.run.path, message: "the text direction is zero; there is nothing to rank by")
        }
        let t = Ops.l2Normalized(Tensor(shape: [1, d], data: text)).reshaped([d, 1])             // [D', 1]
        let heads = layers * h
        var sum = [Double](repeating: 0, count: heads), sumSq = sum, norm2 = sum
        var mean = [Double](repeating: 0, count: heads * d)
        try reader.forEachShard(["attn"]) { rows, tensors in
            try StoredValues.requireFinite(reader, rows: rows, tensors: tensors, purpose: "heads")
            let attn = tensors["attn"]!                                                  // [r, L, H, D']
            let flat = attn.reshaped([rows.count * heads, d])
            let p = Ops.matmul(flat, t)                                                 // [r·L·H, 1]
            for r in 0..<rows.count {
                for k in 0..<heads {
                    let v = Double(p.data[r * heads + k])
                    sum[k] += v; sumSq[k] += v * v
                    let o = (r * heads + k) * d
                    for j in 0..<d { let c = Double(attn.data[o + j]); norm2[k] += c * c; mean[k * d + j] += c }
                }
            }
        }
        let n = Double(max(reader.rowCount, 1))
        var out = [HeadTextVariance]()
        for k in 0..<heads {
            let m = sum[k] / n
            let variance = max(0, sumSq[k] / n - m * m)
            var meanNorm2 = 0.0
            for j in 0..<d { let v = mean[k * d + j] / n; meanNorm2 += v * v }
            let total = max(0, norm2[k] / n - meanNorm2)
            out.append(HeadTextVariance(layer: k / h, head: k % h, variance: variance,
                                        fractionOfHead: total > 0 ? variance / total : 0, mean: m))
        }
        return out.sorted { ($0.variance, $1.layer, $1.head) > ($1.variance, $0.layer, $0.head) }
    }
}
