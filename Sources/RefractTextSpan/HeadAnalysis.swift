// MARK: - Heads of a run: reading their contributions, TextSpan over them, ranking by a text
//
// Head contributions are read from a run's `attn` tensor [N, L, H, D'] in groups of heads that fit
// a memory budget, each group by one strided read that touches only its heads' bytes, so a run never
// has to fit in memory and all heads are never held at once.

import Foundation
import RefractAlign
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

/// A head (or an aligned run's component) ranked by how much its contributions vary along a text direction.
public struct HeadTextVariance: Codable, Sendable, Equatable {
    /// A CLIP run's head; for an aligned run's component, `layer` is its index in the run and `head` 0.
    public var layer: Int
    public var head: Int
    /// An aligned run's component name.
    public var component: String?
    /// Variance over images of contribution · t̂ (t̂ the L2-normalised text embedding).
    public var variance: Double
    /// That variance as a fraction of the head's total centred variance.
    public var fractionOfHead: Double
    /// Mean of contribution · t̂.
    public var mean: Double

    /// `L11.H3`, or the component's name.
    public var name: String { component ?? "L\(layer).H\(head)" }
}

public enum HeadRanking {
    /// Every head of the run ranked by the variance of its contributions along `text` [D'] (normalised
    /// here), highest first. One pass over the store.
    public static func byTextVariance(_ reader: StoreReader, text: [Float]) throws -> [HeadTextVariance] {
        let (layers, h, d) = try HeadContributions.dims(reader)
        let t = try direction(text, width: d, source: reader.run.path)
        var acc = Moments(units: layers * h, width: d)
        try reader.forEachShard(["attn"]) { rows, tensors in
            try StoredValues.requireFinite(reader, rows: rows, tensors: tensors, purpose: "heads")
            acc.add(tensors["attn"]!, rows: rows.count, direction: t)                    // [r, L, H, D']
        }
        return acc.ranking(images: reader.rowCount) { k in (k / h, k % h, nil) }
    }

    /// Every component of an aligned run ranked by the variance of its aligned contributions
    /// a_c = x_c·W_c + b/C along `text` [D] (in the alignment's CLIP space), highest first. One pass.
    public static func byTextVariance(_ aligned: AlignedRun, text: [Float]) throws -> [HeadTextVariance] {
        let c = aligned.components.count, d = aligned.width
        let t = try direction(text, width: d, source: aligned.reader.run.path)
        var acc = Moments(units: c, width: d)
        try aligned.forEachShard { rows, a in acc.add(a, rows: rows.count, direction: t) }   // [r, C, D]
        return acc.ranking(images: aligned.reader.rowCount) { k in (k, 0, aligned.components[k].name) }
    }

    /// The normalised text direction [D, 1], refusing a wrong width, NaN or zero.
    static func direction(_ text: [Float], width d: Int, source: String) throws -> Tensor {
        guard text.count == d else {
            throw TextSpanInputError(path: source, message: "text direction of width \(text.count), the run's is \(d)")
        }
        // A NaN direction would normalise to zero and give every head a variance of 0: refuse it.
        try StoredValues.requireFinite(Tensor(shape: [1, d], data: text), source: source, what: "the text direction", purpose: "heads")
        guard text.contains(where: { $0 != 0 }) else {
            throw TextSpanInputError(path: source, message: "the text direction is zero; there is nothing to rank by")
        }
        return Ops.l2Normalized(Tensor(shape: [1, d], data: text)).reshaped([d, 1])               // [D, 1]
    }

    /// Per unit: sums of the projection, of its square, of the squared norm, and the mean vector.
    struct Moments {
        let units: Int, width: Int
        var sum: [Double], sumSq: [Double], norm2: [Double], mean: [Double]
        init(units: Int, width: Int) {
            self.units = units; self.width = width
            sum = [Double](repeating: 0, count: units); sumSq = sum; norm2 = sum
            mean = [Double](repeating: 0, count: units * width)
        }

        /// Adds contributions [r, units, D] projected on t [D, 1].
        mutating func add(_ x: Tensor, rows: Int, direction t: Tensor) {
            let d = width
            let p = Ops.matmul(x.reshaped([rows * units, d]), t)                          // [r·units, 1]
            for r in 0..<rows {
                for k in 0..<units {
                    let v = Double(p.data[r * units + k])
                    sum[k] += v; sumSq[k] += v * v
                    let o = (r * units + k) * d
                    for j in 0..<d { let c = Double(x.data[o + j]); norm2[k] += c * c; mean[k * d + j] += c }
                }
            }
        }

        func ranking(images: Int, _ id: (Int) -> (Int, Int, String?)) -> [HeadTextVariance] {
            let n = Double(max(images, 1)), d = width
            var out = [HeadTextVariance]()
            for k in 0..<units {
                let m = sum[k] / n
                let variance = max(0, sumSq[k] / n - m * m)
                var meanNorm2 = 0.0
                for j in 0..<d { let v = mean[k * d + j] / n; meanNorm2 += v * v }
                let total = max(0, norm2[k] / n - meanNorm2)
                let (layer, head, component) = id(k)
                out.append(HeadTextVariance(layer: layer, head: head, component: component, variance: variance,
                                            fractionOfHead: total > 0 ? variance / total : 0, mean: m))
            }
            return out.sorted { ($0.variance, $1.layer, $1.head) > ($1.variance, $0.layer, $0.head) }
        }
    }
}
