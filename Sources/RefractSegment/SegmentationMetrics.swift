// MARK: - Segmentation metrics (background 0, foreground 1), as the official evaluation computes them
//
// Per image, from the predicted foreground mask, the normalised map and the ground truth (all on
// the same S×S grid):
//   correct / labelled pixels (every pixel is labelled),
//   per class c ∈ {0, 1}: intersection |pred = c ∧ truth = c| and union |pred = c ∨ truth = c|,
//   average precision (scikit-learn `average_precision_score`: step-wise, no interpolation, tied
//   scores one threshold) of the flattened pair of maps — `1 − map` scored against the background
//   one-hot, `map` against the foreground one-hot — taken as one binary problem of 2·S² items.
// Over a dataset: pixel accuracy = Σ correct / Σ labelled; IoU_c = Σ intersection_c / Σ union_c
// (0 when the union is empty, as the official `inter / (eps + union)`); mIoU = mean of the two;
// mAP = mean of the per-image APs.

import Foundation

/// One image's counts and average precision.
public struct ImageSegmentationScores: Sendable, Codable, Equatable {
    public var correct: Int
    public var labelled: Int
    /// Per class (0 background, 1 foreground).
    public var intersection: [Int]
    public var union: [Int]
    public var averagePrecision: Double

    public init(correct: Int, labelled: Int, intersection: [Int], union: [Int], averagePrecision: Double) {
        self.correct = correct; self.labelled = labelled; self.intersection = intersection; self.union = union
        self.averagePrecision = averagePrecision
    }

    public var pixelAccuracy: Double { labelled == 0 ? 0 : Double(correct) / Double(labelled) }
    public var foregroundIoU: Double { union[1] == 0 ? 0 : Double(intersection[1]) / Double(union[1]) }
}

public enum SegmentationMetrics {
    /// Scores one image. `prediction` and `truth` are 0/1 masks, `apScores` the 2·n scores of the
    /// background half (`1 − map`) then the foreground half (`map`), n = prediction.count.
    public static func score(prediction: [UInt8], truth: [UInt8], apScores: [Float]) -> ImageSegmentationScores {
        let n = truth.count
        precondition(prediction.count == n && apScores.count == 2 * n,
                     "prediction \(prediction.count), truth \(n), AP scores \(apScores.count) do not match")
        var correct = 0, inter = [0, 0], predCount = [0, 0], truthCount = [0, 0]
        for i in 0..<n {
            let p = Int(prediction[i] != 0 ? 1 : 0), t = Int(truth[i] != 0 ? 1 : 0)
            predCount[p] += 1
            truthCount[t] += 1
            if p == t { correct += 1; inter[p] += 1 }
        }
        var labels = [UInt8](repeating: 0, count: 2 * n)
        for i in 0..<n {
            if truth[i] != 0 { labels[n + i] = 1 } else { labels[i] = 1 }
        }
        return ImageSegmentationScores(correct: correct, labelled: n, intersection: inter,
                                       union: [predCount[0] + truthCount[0] - inter[0], predCount[1] + truthCount[1] - inter[1]],
                                       averagePrecision: averagePrecision(labels: labels, scores: apScores))
    }

    /// The AP scores of a normalised map: `1 − map` then `map`; all zero when the map was constant
    /// (the official code's NaN maps, set to 0 in both halves).
    public static func apScores(map: [Float], constant: Bool) -> [Float] {
        if constant { return [Float](repeating: 0, count: 2 * map.count) }
        return map.map { 1 - $0 } + map
    }

    /// scikit-learn's `average_precision_score(labels, scores)`: Σ_k (R_k − R_{k−1}) · P_k over the
    /// distinct score thresholds in decreasing order. NaN when there is no positive label.
    public static func averagePrecision(labels: [UInt8], scores: [Float]) -> Double {
        precondition(labels.count == scores.count, "\(labels.count) labels, \(scores.count) scores")
        let positives = labels.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
        guard positives > 0 else { return .nan }
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        var tp = 0, fp = 0, previousRecall = 0.0, ap = 0.0
        var k = 0
        while k < order.count {
            let threshold = scores[order[k]]
            // Every item tied at this score counts at once.
            while k < order.count && scores[order[k]] == threshold {
                if labels[order[k]] != 0 { tp += 1 } else { fp += 1 }
                k += 1
            }
            let recall = Double(tp) / Double(positives)
            let precision = Double(tp) / Double(tp + fp)
            ap += (recall - previousRecall) * precision
            previousRecall = recall
        }
        return ap
    }
}

/// Dataset totals: integer counts summed exactly (Int64) and the per-image APs.
public struct SegmentationTotals: Sendable, Codable, Equatable {
    public var images = 0
    public var correct: Int64 = 0
    public var labelled: Int64 = 0
    public var intersection: [Int64] = [0, 0]
    public var union: [Int64] = [0, 0]
    public var averagePrecisionSum = 0.0

    public init() {}

    public mutating func add(_ s: ImageSegmentationScores) {
        images += 1
        correct += Int64(s.correct)
        labelled += Int64(s.labelled)
        for c in 0..<2 {
            intersection[c] += Int64(s.intersection[c])
            union[c] += Int64(s.union[c])
        }
        averagePrecisionSum += s.averagePrecision.isNaN ? 0 : s.averagePrecision
    }

    public var pixelAccuracy: Double { labelled == 0 ? 0 : Double(correct) / Double(labelled) }
    /// IoU of class c (0 background, 1 foreground); 0 when its union is empty.
    public func iou(_ c: Int) -> Double { union[c] == 0 ? 0 : Double(intersection[c]) / Double(union[c]) }
    public var meanIoU: Double { (iou(0) + iou(1)) / 2 }
    public var foregroundIoU: Double { iou(1) }
    public var meanAveragePrecision: Double { images == 0 ? 0 : averagePrecisionSum / Double(images) }
}
