import Foundation
import RefractCheckpoint
import RefractTensor

// MARK: - Statistics that merge
//
// Every shard of a format-2 run carries, for each per-image tensor NAME, two float64 tensors of the
// tensor's per-image shape: `sum:NAME`, the sum over the shard's rows of the stored values (after
// rounding to the storage type, so they are the values readers get), and `sumsq:NAME`, the sum of
// their squares. A run's mean and per-element variance are then sums over its shards (in shard
// order) divided by its row count: no pass over the data, and a run merged from parts has exactly
// the statistics of the same run written by one process, because its shards are the same files.
// The names hold ':', which tensor names cannot, so they never collide with a tensor.

/// Sums over a run's rows, from its shards' statistics.
public struct RunStatistics: Sendable {
    /// Rows summed (the run's row count).
    public var rows: Int
    /// Per tensor, Σ_rows x (flattened per-image shape), float64.
    public var sums: [String: [Double]]
    /// Per tensor, Σ_rows x² elementwise, float64.
    public var sumsOfSquares: [String: [Double]]

    /// The column mean of a tensor (zeros when the run has no rows).
    public func mean(_ name: String) -> [Double] {
        let n = Double(max(rows, 1))
        return (sums[name] ?? []).map { $0 / n }
    }

    /// Σ_j Var(x_j) over the elements `range` of a tensor's flattened per-image shape (population
    /// variance, divided by the row count): the trace of the covariance of that slice.
    public func totalVariance(_ name: String, elements range: Range<Int>) -> Double {
        guard rows > 0, let s = sums[name], let q = sumsOfSquares[name] else { return 0 }
        let n = Double(rows)
        var total = 0.0
        for j in range { total += q[j] / n - (s[j] / n) * (s[j] / n) }
        return max(0, total)
    }
}

enum ShardStatistics {
    static func sumName(_ tensor: String) -> String { "sum:" + tensor }
    static func sumOfSquaresName(_ tensor: String) -> String { "sumsq:" + tensor }

    /// Σ_rows and Σ_rows x² of `t` [rows, ...] per element, of the values as `dtype` stores them.
    static func sums(_ t: Tensor, rows: Int, dtype: StoreDType) -> (sum: [Double], sumsq: [Double]) {
        let width = rows > 0 ? t.data.count / rows : t.shape.dropFirst().reduce(1, *)
        var sum = [Double](repeating: 0, count: width), sumsq = sum
        guard rows > 0 else { return (sum, sumsq) }
        t.data.withUnsafeBufferPointer { x in
            var row = [Float](repeating: 0, count: width)
            for r in 0..<rows {
                let src = UnsafeBufferPointer(rebasing: x[(r * width)..<((r + 1) * width)])
                if dtype == .float16 {
                    for j in 0..<width { row[j] = HalfPrecision.float(fromFloat16: HalfPrecision.float16Bits(from: src[j])) }
                } else {
                    for j in 0..<width { row[j] = src[j] }
                }
                for j in 0..<width {
                    let v = Double(row[j])
                    sum[j] += v
                    sumsq[j] += v * v
                }
            }
        }
        return (sum, sumsq)
    }
}

extension StoreReader {
    /// Whether the run's shards carry statistics (format version 2 and later).
    public var hasStatistics: Bool { manifest.hasShardStatistics }

    /// The sums and sums of squares of `names` over every row, from the shards' statistics (each
    /// shard's SHA-256 checked first, as for any read); nil for runs written before shards carried
    /// them (format version 1), whose callers make a pass over the data instead.
    public func statistics(_ names: [String]) throws -> RunStatistics? {
        guard hasStatistics else { return nil }
        let widths = try names.map { try spec($0).elementCount }
        var stats = RunStatistics(rows: rowCount, sums: [:], sumsOfSquares: [:])
        for (name, w) in zip(names, widths) {
            stats.sums[name] = [Double](repeating: 0, count: w)
            stats.sumsOfSquares[name] = [Double](repeating: 0, count: w)
        }
        try verifyShards(Array(manifest.shards.indices))
        for i in manifest.shards.indices {
            let file = try openShard(i)
            for (name, w) in zip(names, widths) {
                for (key, isSquare) in [(ShardStatistics.sumName(name), false), (ShardStatistics.sumOfSquaresName(name), true)] {
                    try file.withRawBytes(key) { raw in
                        guard raw.count == 8 * w, let base = raw.baseAddress else {
                            throw StoreError(.invalidShard, path: file.path, "statistics '\(key)' changed on disk while reading")
                        }
                        if isSquare {
                            stats.sumsOfSquares[name]!.withUnsafeMutableBufferPointer { acc in
                                for j in 0..<w { acc[j] += base.loadUnaligned(fromByteOffset: 8 * j, as: Double.self) }
                            }
                        } else {
                            stats.sums[name]!.withUnsafeMutableBufferPointer { acc in
                                for j in 0..<w { acc[j] += base.loadUnaligned(fromByteOffset: 8 * j, as: Double.self) }
                            }
                        }
                    }
                }
            }
        }
        return stats
    }
}
