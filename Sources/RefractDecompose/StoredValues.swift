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
    /// Refuses the first NaN or ±infinity in `tensors` (each `[rows.count] + shape`, as
    /// `StoreReader.forEachShard` hands them out), naming the run's shard file, the tensor, the
    /// row's image and the position; `purpose` (e.g. "ablate") says who refuses.
    public static func requireFinite(_ reader: StoreReader, rows: Range<Int>, tensors: [String: Tensor],
                                     purpose: String) throws {
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            guard let bad = t.firstNonFinite() else { continue }
            let perImage = Array(t.shape.dropFirst())
            let width = max(perImage.reduce(1, *), 1)
            let row = rows.lowerBound + bad.index / width
            let shard = reader.shardRows.firstIndex(of: rows).map { reader.manifest.shards[$0].file } ?? "rows \(rows)"
            let image = row < reader.rowCount ? reader.rowImages[row].path : "?"
            throw NonFiniteError(source: reader.run.appendingPathComponent(shard).path,
                                 subject: "tensor '\(name)' of row \(row) (image \(image))",
                                 bad: NonFiniteValue(index: bad.index % width, value: bad.value), shape: perImage,
                                 note: "\(purpose) refuses runs holding non-finite values (every score computed from them "
                                    + "would be meaningless); decompose the images again")
        }
    }

    /// Refuses a non-finite value in a vector or matrix given as input (`what` names it, e.g. the
    /// zero-shot classifier built from a class list).
    public static func requireFinite(_ t: Tensor, source: String, what: String, purpose: String) throws {
        try t.requireFinite(source: source, subject: what, note: "\(purpose) cannot compute anything meaningful from it")
    }
}
