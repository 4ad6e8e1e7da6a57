// MARK: - Zero-shot scores of the evaluation set under mean ablations
//
// Scores are linear in the components, so every component is projected on the classifier once:
// for each evaluated image, `c · W` ([C]) for `pre`, each MLP, each head and (faithful runs) the
// constant `attn_bias` / `readout_bias` terms. Mean-ablating a set A of components then gives
//     scores = Σ_all c·W + Σ_{a∈A} (mean_a − c_a)·W,
// with means over the evaluated images (as the official code does). Any number of ablations
// (random draws) costs O(images · |A| · C) each after one pass over the store.
// Predictions are the first class with the highest score (numpy's argmax).

import Foundation
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan

public final class GroupScorer: Sendable {
    public let layers: Int
    public let heads: Int
    public let classes: Int
    /// Evaluated images.
    public let count: Int
    /// Σ of every component · W, [count, C].
    let base: [Double]
    /// Each head · W, [count, L·H, C], and its mean over the images, [L·H, C].
    let head: [Double]
    let headMean: [Double]
    /// (pre + Σ mlp) · W, [count, C], and its mean, [C].
    let mlp: [Double]
    let mlpMean: [Double]

    static let required = ["pre", "mlp", "attn"]
    static let constants = ["attn_bias", "readout_bias"]

    /// One pass over `reader`, keeping the rows of `evaluation`. `classifier` [D', C].
    public init(_ reader: StoreReader, evaluation: EvaluationSet, classifier: Tensor) throws {
        let manifest = reader.manifest
        let file = reader.run.appendingPathComponent("manifest.json").path
        guard let l = manifest.dimensions["layers"], let h = manifest.dimensions["heads"], let d = manifest.dimensions["embedDim"] else {
            throw SpuriousError(path: file, message: "no layers/heads/embedDim dimensions; not a decomposition run")
        }
        let expected: [String: [Int]] = ["pre": [d], "mlp": [l, d], "attn": [l, h, d], "attn_bias": [l, d], "readout_bias": [d]]
        for name in Self.required where !manifest.tensors.contains(where: { $0.name == name }) {
            throw SpuriousError(path: file, message: "no '\(name)' tensor; not a decomposition run")
        }
        for spec in manifest.tensors where expected[spec.name] != nil && spec.shape != expected[spec.name]! {
            throw SpuriousError(path: file, message: "tensor '\(spec.name)' has shape \(spec.shape), expected \(expected[spec.name]!)")
        }
        guard classifier.rank == 2, classifier.shape[0] == d, classifier.shape[1] >= 1 else {
            throw SpuriousError(path: reader.run.path, message: "classifier \(classifier.shape) does not fit embeddings of width \(d)")
        }
        if let bad = evaluation.rows.first(where: { $0 < 0 || $0 >= reader.rowCount }) {
            throw SpuriousError(path: reader.run.path, message: "evaluation row \(bad) is outside the run's \(reader.rowCount) rows")
        }
        let c = classifier.shape[1], n = evaluation.count, lh = l * h
        let present = Self.constants.filter { n in manifest.tensors.contains { $0.name == n } }
        // Components per image: pre, L MLPs, L·H heads, then the constants (L attn_bias rows, readout_bias).
        let k = 1 + l + lh + (present.contains("attn_bias") ? l : 0) + (present.contains("readout_bias") ? 1 : 0)
        var slot = [Int](repeating: -1, count: reader.rowCount)
        for (i, r) in evaluation.rows.enumerated() { slot[r] = i }
        var base = [Double](repeating: 0, count: n * c), mlp = base
        var head = [Double](repeating: 0, count: n * lh * c)
        try reader.forEachShard(Self.required + present) { rows, t in
            try StoredValues.requireFinite(reader, rows: rows, tensors: t, purpose: "the spurious-cue study")
            let mine = rows.filter { slot[$0] >= 0 }
            guard !mine.isEmpty else { return }
            var stacked = [Float](repeating: 0, count: mine.count * k * d)
            stacked.withUnsafeMutableBufferPointer { dst in
                func copy(_ name: String, _ local: Int, _ perRow: Int, to at: Int) {
                    t[name]!.data.withUnsafeBufferPointer { src in
                        (dst.baseAddress! + at * d).update(from: src.baseAddress! + local * perRow * d, count: perRow * d)
                    }
                }
                for (i, r) in mine.enumerated() {
                    let local = r - rows.lowerBound, at = i * k
                    copy("pre", local, 1, to: at)
                    copy("mlp", local, l, to: at + 1)
                    copy("attn", local, lh, to: at + 1 + l)
                    var next = at + 1 + l + lh
                    if present.contains("attn_bias") { copy("attn_bias", local, l, to: next); next += l }
                    if present.contains("readout_bias") { copy("readout_bias", local, 1, to: next) }
                }
            }
            let projected = Ops.matmul(Tensor(shape: [mine.count * k, d], data: stacked), classifier).data   // [r·K, C]
            for (i, r) in mine.enumerated() {
                let e = slot[r], o = i * k * c
                for q in 0..<k {
                    for j in 0..<c {
                        let v = Double(projected[o + q * c + j])
                        base[e * c + j] += v
                        if q < 1 + l { mlp[e * c + j] += v }
                        else if q < 1 + l + lh { head[(e * lh + q - 1 - l) * c + j] = v }
                    }
                }
            }
        }
        var headMean = [Double](repeating: 0, count: lh * c), mlpMean = [Double](repeating: 0, count: c)
        for e in 0..<n {
            for q in 0..<(lh * c) { headMean[q] += head[e * lh * c + q] }
            for j in 0..<c { mlpMean[j] += mlp[e * c + j] }
        }
        let scale = 1 / Double(max(n, 1))
        self.layers = l; self.heads = h; self.classes = c; self.count = n
        self.base = base; self.head = head; self.mlp = mlp
        self.headMean = headMean.map { $0 * scale }; self.mlpMean = mlpMean.map { $0 * scale }
    }

    /// Scores [count · C] (row-major) with `ablated` heads, and `pre` and every MLP when `mlps`,
    /// replaced by their means over the evaluated images.
    public func scores(ablating ablated: [HeadID], mlps: Bool = false) -> [Double] {
        var s = base
        let lh = layers * heads
        let ids = Array(Set(ablated.map { $0.layer * heads + $0.head })).sorted()
        for e in 0..<count {
            for j in 0..<classes {
                var v = s[e * classes + j]
                if mlps { v += mlpMean[j] - mlp[e * classes + j] }
                for q in ids { v += headMean[q * classes + j] - head[(e * lh + q) * classes + j] }
                s[e * classes + j] = v
            }
        }
        return s
    }

    /// Predicted class of each image: the first class with the highest score.
    public func predictions(_ scores: [Double]) -> [Int] {
        (0..<count).map { e in
            var best = 0
            for j in 1..<classes where scores[e * classes + j] > scores[e * classes + best] { best = j }
            return best
        }
    }
}

// MARK: Group accuracy

public struct GroupAccuracy: Codable, Sendable, Equatable {
    /// e.g. "landbird on water".
    public var name: String
    public var y: Int
    public var place: Int
    public var images: Int
    public var correct: Int
    /// Percent; nil when the group has no image.
    public var accuracy: Double?
}

public struct AccuracySummary: Codable, Sendable, Equatable {
    public var groups: [GroupAccuracy]
    /// The group with the lowest accuracy (first in group order on ties) among non-empty groups.
    public var worstGroup: String
    public var worstGroupAccuracy: Double
    /// Accuracy over all evaluated images (percent).
    public var average: Double
    /// Unweighted mean of the non-empty groups' accuracies (percent).
    public var meanOverGroups: Double
    public var correct: Int
    public var images: Int

    /// Group names: "<class y> on <land|water>", in the order (y, place) = (0,0), (0,1), (1,0), (1,1).
    public static func groupNames(classes: [String]) -> [String] {
        (0..<4).map { "\(classes[$0 / 2]) on \(WaterbirdsMetadata.placeNames[$0 % 2])" }
    }

    /// Per-group accuracy of `predictions` against `evaluation`'s y (class index) and place.
    public init(predictions: [Int], evaluation: EvaluationSet, classes: [String]) {
        precondition(predictions.count == evaluation.count && evaluation.count > 0 && classes.count == 2,
                     "one prediction per evaluated image, at least one image, two classes")
        let names = Self.groupNames(classes: classes)
        var images = [Int](repeating: 0, count: 4), correct = images
        for (e, g) in evaluation.groups.enumerated() {
            images[g] += 1
            if predictions[e] == evaluation.y[e] { correct[g] += 1 }
        }
        groups = (0..<4).map { g in
            GroupAccuracy(name: names[g], y: g / 2, place: g % 2, images: images[g], correct: correct[g],
                          accuracy: images[g] > 0 ? 100 * Double(correct[g]) / Double(images[g]) : nil)
        }
        let present = groups.filter { $0.accuracy != nil }
        let worst = present.min { $0.accuracy! < $1.accuracy! }!
        worstGroup = worst.name
        worstGroupAccuracy = worst.accuracy!
        self.correct = correct.reduce(0, +)
        self.images = evaluation.count
        average = 100 * Double(self.correct) / Double(max(self.images, 1))
        meanOverGroups = present.reduce(0) { $0 + $1.accuracy! } / Double(present.count)
    }
}
