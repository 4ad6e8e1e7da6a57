// MARK: - Finite stored values
//
// No metric is computed from a NaN: every analysis that reads a run's shards (mean ablation, head
// ranking, TextSpan's accuracy check) passes each shard's tensors through `StoredValues` first, so
// a run holding a NaN or ±infinity (written by an older version, another tool, or damaged) is
// refused with the shard, tensor, image and position instead of giving 100 % or a variance of 0.

import Foundation
import RefractStore
import RefractTensor

public enum StoredValues {
    /// The run's statistics of `names` (sums over its shards, `RunStatistics`) when its shards carry
    /// them and they are finite; nil otherwise, so that the caller's pass over the data finds and
    /// names the first non-finite value (or computes what a run without statistics lacks).
    public static func finiteStatistics(_ reader: StoreReader, _ names: [String]) throws -> RunStatistics? {
        guard let stats = try reader.statistics(names) else { return nil }
        for name in names {
            guard stats.sums[name]?.allSatisfy(\.isFinite) == true, stats.sumsOfSquares[name]?.allSatisfy(\.isFinite) == true else {
                return nil
            }
        }
        return stats
    }

    /// Refuses the first NaN or ±infinity in `tensors` (each `[rows.count] + shape`, as
    /// `StoreReader.forEachShard` hands them out), naming the run's shard file, the tensor, the
    /// row's image and the position; `purpose` (e.g. "ablate") says who refuses.
    public static func requireFinite(_ reader: StoreReader, rows: Range<Int>, tensors: [String: Tensor],
                                     purpose: String) throws {
        let shard = reader.shardRows.firstIndex(of: rows).map { reader.manifest.shards[$0].file } ?? "rows \(rows)"
        let source = reader.run.appendingPathComponent(shard).path
        for name in tensors.keys.sorted() {
            try tensors[name]!.requireFiniteRows(note: "\(purpose) refuses runs holding non-finite values (every score computed "
                                                    + "from them would be meaningless); decompose the images again") { local in
                let row = rows.lowerBound + local
                let image = row < reader.rowCount ? reader.rowImages[row].path : "?"
                return (source, "tensor '\(name)' of row \(row) (image \(image))")
            }
        }
    }

    /// Refuses a non-finite value in a vector or matrix given as input (`what` names it, e.g. the
    /// zero-shot classifier built from a class list).
    public static func requireFinite(_ t: Tensor, source: String, what: String, purpose: String) throws {
        try t.requireFinite(source: source, subject: what, note: "\(purpose) cannot compute anything meaningful from it")
    }
}
