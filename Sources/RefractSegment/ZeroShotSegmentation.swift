// MARK: - Zero-shot segmentation (Gandelsman et al. 2024, section 5; official compute_segmentations.py)
//
// Per image (the official code runs with batch size 1; every step below is per image):
//   1. predicted class = argmax_c embedding · classifier[:, c];
//   2. per patch token i: class_heatmap[i, c] = c_i · classifier[:, c], with c_i the sum of token
//      i's terms over every head of every layer (`attn_token_sum`);
//      normalized[i] = class_heatmap[i, pred] − mean_c class_heatmap[i, c];
//   3. reshape to the G×G grid; bilinear upsampling by the patch size (align_corners=False);
//   4. clip below at 0; min-max normalise over the map (a constant map, NaN in the official code,
//      becomes all 0 and predicts background everywhere);
//   5. foreground = value > mean of the map.
// Step 2 is computed as c_i · (w_pred − mean_c w_c), the same quantity with one dot product per
// token instead of C.

import Foundation
import RefractDecompose
import RefractTensor

/// One image's segmentation on the model's S×S input grid.
public struct SegmentationPrediction: Sendable {
    /// Input side S.
    public let size: Int
    /// Argmax of embedding · classifier.
    public let predictedClass: Int
    /// The normalised map [S·S] in [0, 1], row-major (all 0 when `constant`).
    public let map: [Float]
    /// The clipped, upsampled map had a single value (the official code's NaN case).
    public let constant: Bool
    /// Foreground mask [S·S]: 1 where map > mean(map).
    public let foreground: [UInt8]
    /// The raw class map on the patch grid before upsampling [G·G].
    public let gridMap: [Float]
}

public enum ZeroShotSegmentation {
    /// Segments one image from its decomposition, which must hold `attn_token_sum` over every head
    /// (`HeadSet.all`). `classifier` is [D', C] (columns L2-normalised class directions).
    public static func predict(_ image: ImageDecomposition, classifier: Tensor, patchSize: Int) throws -> SegmentationPrediction {
        let d = image.shape.outputWidth, t = image.shape.tokens
        guard let sums = image.tokenSums else {
            throw HeatmapError("the decomposition has no per-token sums (make the CLIPDecomposer with tokenSumHeads: .all)")
        }
        if let set = image.shape.tokenSumHeads, set.count != set.layers * set.heads {
            throw HeatmapError("segmentation sums every head, but the decomposition summed only \(set.count) of "
                + "\(set.layers * set.heads)")
        }
        guard classifier.rank == 2, classifier.shape[0] == d, classifier.shape[1] > 0 else {
            throw HeatmapError("classifier \(classifier.shape) does not match the representation width \(d)")
        }
        let c = classifier.shape[1]
        // 1. Predicted class: [1, D'] · [D', C].
        let logits = Ops.matmul(Tensor(shape: [1, d], data: image.embedding), classifier).data          // [C]
        var predicted = 0
        for j in 1..<c where logits[j] > logits[predicted] { predicted = j }
        // 2. Direction w_pred − mean_c w_c [D'].
        var direction = [Float](repeating: 0, count: d)
        for r in 0..<d {
            let row = classifier.data[(r * c)..<((r + 1) * c)]
            let mean = row.reduce(0.0) { $0 + Double($1) } / Double(c)
            direction[r] = Float(Double(classifier.data[r * c + predicted]) - mean)
        }
        let heatmap = try TokenHeatmap(tokenSums: sums, tokens: t, directions: Tensor(shape: [1, d], data: direction))
        let grid = heatmap.map(0)
        let (map, constant) = normalize(TokenHeatmaps.upsampleBilinear(grid, size: heatmap.grid, factor: patchSize))
        return SegmentationPrediction(size: heatmap.grid * patchSize, predictedClass: predicted, map: map,
                                      constant: constant, foreground: threshold(map), gridMap: grid)
    }

    /// Steps 4: clip below at 0, min-max normalise. A constant map gives all zeros and `constant`.
    public static func normalize(_ upsampled: [Float]) -> (map: [Float], constant: Bool) {
        let clipped = upsampled.map { max($0, 0) }
        guard let lo = clipped.min(), let hi = clipped.max(), hi > lo else {
            return ([Float](repeating: 0, count: upsampled.count), true)
        }
        let range = hi - lo
        return (clipped.map { ($0 - lo) / range }, false)
    }

    /// Step 5: 1 where value > mean of the map (mean accumulated in double; the official float32
    /// mean can differ in the last bits, which moves only pixels tied with it).
    public static func threshold(_ map: [Float]) -> [UInt8] {
        guard !map.isEmpty else { return [] }
        let mean = Float(map.reduce(0.0) { $0 + Double($1) } / Double(map.count))
        return map.map { $0 > mean ? 1 : 0 }
    }

    /// Scores a prediction against a ground-truth mask already on the S×S input grid.
    public static func score(_ prediction: SegmentationPrediction, truth: BinaryMask) throws -> ImageSegmentationScores {
        guard truth.width == prediction.size && truth.height == prediction.size else {
            throw HeatmapError("ground truth is \(truth.width)x\(truth.height), the prediction \(prediction.size)x\(prediction.size)")
        }
        return SegmentationMetrics.score(prediction: prediction.foreground, truth: truth.values,
                                         apScores: SegmentationMetrics.apScores(map: prediction.map, constant: prediction.constant))
    }
}
