// MARK: - A timm run seen in CLIP space through its alignment
//
// What the CLIP-space commands (`textspan`, `heads`, ...) read from a non-CLIP run given --align:
// every component's aligned contributions a_c = x_c·W_c + b/C (the official `Aligner` with
// `reduce=False`; `bias: false` for token maps, as the official heat maps), read a component (or a
// group of components that fits a memory budget) at a time by strided reads of the stored
// components tensor, so the run never has to fit in memory.

import Foundation
import RefractDecompose
import RefractStore
import RefractTensor

public struct AlignedRun: Sendable {
    public let reader: StoreReader
    public let alignment: Alignment
    /// The run's components, in the order of the maps.
    public let components: [ComponentInfo]

    /// Checks that `alignment` was trained on `reader`'s run (model, components, width).
    public init(reader: StoreReader, alignment: Alignment) throws {
        try alignment.check(run: reader)
        self.reader = reader
        self.alignment = alignment
        components = try RunComponents.describe(reader)
    }

    /// D, the CLIP width.
    public var width: Int { alignment.maps.clipWidth }

    /// Calls `body(index, a_c [N, D])` for every component in `indices`, in order, reading the stored
    /// components in groups whose float32 copies fit in `budgetBytes`. Non-finite stored values stop
    /// it with an error naming the run.
    public func forEachComponent(_ indices: [Int], bias: Bool = true, budgetBytes: Int = 1 << 30,
                                 _ body: (Int, Tensor) throws -> Void) throws {
        let maps = alignment.maps
        let n = reader.rowCount, d = maps.width, e = maps.clipWidth, c = maps.components
        for i in indices where i < 0 || i >= c {
            throw AlignmentError(path: reader.run.path, message: "component index \(i) outside 0..<\(c)")
        }
        let perComponent = max(1, n * (d + e) * 4)
        let group = max(1, budgetBytes / perComponent)
        let share: Float = bias ? 1 / Float(c) : 0
        var start = 0
        while start < indices.count {
            let chunk = Array(indices[start..<min(start + group, indices.count)])
            let block = try reader.slices(of: AlignRun.componentsTensor, indices: chunk.map { [$0] })   // [N, k, d]
            if let bad = block.data.firstIndex(where: { !$0.isFinite }) {
                let row = bad / (chunk.count * d)
                throw AlignmentError(path: reader.run.path, message: "components of row \(row) (\(reader.rowImages[row].path)) hold NaN or infinite values")
            }
            let k = chunk.count
            for (j, index) in chunk.enumerated() {
                var x = [Float](repeating: 0, count: n * d)                                          // [N, d]
                x.withUnsafeMutableBufferPointer { dst in
                    block.data.withUnsafeBufferPointer { src in
                        for r in 0..<n { (dst.baseAddress! + r * d).update(from: src.baseAddress! + (r * k + j) * d, count: d) }
                    }
                }
                var a = [Float](repeating: 0, count: n * e)                                          // [N, D]
                for r in 0..<n { for q in 0..<e { a[r * e + q] = share * maps.bias[q] } }
                maps.weights.withUnsafeBufferPointer { w in
                    x.withUnsafeBufferPointer { xp in
                        a.withUnsafeMutableBufferPointer { ap in
                            BLAS.sgemm(.none, .none, m: n, n: e, k: d, a: xp.baseAddress!, lda: d, b: w.baseAddress! + index * d * e, ldb: e,
                                       beta: 1, c: ap.baseAddress!, ldc: e)                           // x_c [N, d] · W_c [d, D]
                        }
                    }
                }
                try body(index, Tensor(shape: [n, e], data: a))
            }
            start += chunk.count
        }
    }

    /// Calls `body(rows, a [r, C, D])` for every shard of the run, in order: all components aligned.
    public func forEachShard(bias: Bool = true, _ body: (Range<Int>, Tensor) throws -> Void) throws {
        try reader.forEachShard([AlignRun.componentsTensor]) { rows, t in
            let x = t[AlignRun.componentsTensor]!                                                   // [r, C, d]
            if let bad = x.data.firstIndex(where: { !$0.isFinite }) {
                let row = rows.lowerBound + bad / (alignment.maps.components * alignment.maps.width)
                throw AlignmentError(path: reader.run.path, message: "components of row \(row) (\(reader.rowImages[row].path)) hold NaN or infinite values")
            }
            try body(rows, alignment.maps.alignedComponents(x, bias: bias))
        }
    }
}
