// MARK: - Zero-shot segmentation for timm models (Balasubramanian et al. §4.5)
//
// The official `zs_segmentation_decompose.py` does not run as released (beyond-clip.md §1.5 item 8);
// what it intends, and what this implements: decompose the predicted class's logit over the tokens
// of the last blocks (ViT: the last 7; Swin: from stage 2 block 10; MaxViT: from stage 2 block 0 —
// for other depths, the same places counted from the end), sum every head's per-token terms of those
// blocks, dot with the logit's direction, upsample each block's map to the input (grids differ
// between Swin and MaxViT stages), add them, clip at 0, normalise by the range, threshold at the
// mean. The class is the one the model's head (or, for DINO/DINOv2, a linear probe) predicts —
// ImageNet-Segmentation has masks, not labels. The logit's direction is the classifier row (a linear
// head, a probe: exact), or, for MaxViT's LayerNorm-MLP head, its gradient at the image's
// representation (the head linearised there). Per-token terms are faithful-convention terms.

import Foundation
import RefractAlign
import RefractDecompose
import RefractImage
import RefractTensor
import RefractTimm

public enum TimmSegmentation {
    /// The official token blocks (flat indices), scaled to the model's depths.
    public static func defaultTokenBlocks(_ model: TimmModel) -> [Int] {
        switch model.network {
        case .vit(let m): return defaultTokenBlocks(family: .vit, depths: [m.config.tower.layers])
        case .swin(let m): return defaultTokenBlocks(family: .swin, depths: m.config.depths)
        case .maxvit(let m): return defaultTokenBlocks(family: .maxvit, depths: m.config.depths)
        }
    }

    /// ViT: the last 7 blocks; Swin: from block 10 of the second-to-last stage (half of it when it is
    /// shorter); MaxViT: from block 0 of the second-to-last stage; through the last block.
    public static func defaultTokenBlocks(family: TimmFamily, depths: [Int]) -> [Int] {
        let total = depths.reduce(0, +)
        guard total > 0 else { return [] }
        let stage = max(0, depths.count - 2)
        let start: Int
        switch family {
        case .vit: start = max(0, total - 7)
        case .swin: start = depths.prefix(stage).reduce(0, +) + (depths[stage] > 10 ? 10 : depths[stage] / 2)
        case .maxvit: start = depths.prefix(stage).reduce(0, +)
        }
        return Array(start..<total)
    }

    /// The paper's figures for the model's family (PixelImageNet, not ImageNet-Segmentation), if any.
    public static func published(_ model: TimmModel) -> PublishedSegmentation? {
        let id = (model.config.architecture + " " + model.id).lowercased()
        let source = "Balasubramanian et al., NeurIPS 2024, segmentation table (percent; 5,000 PixelImageNet images, a private set)"
        let rows: [(String, String, Double, Double, Double)] = [
            ("deit", "DeiT-B/16", 77.19, 52.91, 83.05), ("maxvit", "MaxViT-S", 71.63, 42.37, 72.37),
            ("swin", "Swin-B", 71.36, 43.38, 76.20), ("dino", "DINO ViT-B/16", 75.77, 48.63, 81.11),
        ]
        guard !id.contains("dinov2"), let r = rows.first(where: { id.contains($0.0) }) else { return nil }
        return PublishedSegmentation(source: source, model: r.1, dataset: "PixelImageNet (5,000 ImageNet-train images with masks)",
                                     pixelAccuracy: r.2, mIoU: r.3, mAP: r.4)
    }

    /// A segmenter for `model`: classes from its head (`classes` names them) or from `probe`.
    public static func segmenter(model: TimmModel, probe: ProbeArtefact?, classes: [String], tokenBlocks: [Int]) throws -> BatchSegmenter {
        if case .vit(let vit) = model.network, vit.config.globalPool != "token" {
            throw HeatmapError("\(model.id) pools by average: per-token terms are defined for the class-token read-out")
        }
        guard let first = tokenBlocks.min() else { throw HeatmapError("no token blocks chosen") }
        if probe == nil, !model.hasHead {
            throw HeatmapError("\(model.id) has no classifier head: segment with a linear probe of its representations (refract probe; --probe)")
        }
        let decomposer = try TimmDecomposer(model: model, convention: .faithful, fromBlock: first, tokenBlocks: tokenBlocks)
        let size = model.preprocessing.imageSize
        let prefix: Int
        if case .vit(let vit) = model.network { prefix = vit.config.prefixTokens } else { prefix = 0 }
        return BatchSegmenter(preprocessing: model.preprocessing, classes: classes) { pixels in
            let batch = decomposer(pixels)
            let d = batch.representation.shape[1]
            let logits = probe.map { $0.probe.logits(batch.representation) } ?? model.logits(batch.representation)!
            let k = logits.shape[1]
            return try (0..<batch.count).map { j in
                var predicted = 0
                for c in 1..<k where logits.data[j * k + c] > logits.data[j * k + predicted] { predicted = c }
                let rep = Array(batch.representation.data[(j * d)..<((j + 1) * d)])
                let direction = probe.map { Array($0.probe.weight[(predicted * d)..<((predicted + 1) * d)]) }
                    ?? model.logitGradient(rep, class: predicted)!
                return try predict(batch, image: j, direction: direction, prefixTokens: prefix, size: size, predicted: predicted)
            }
        }
    }

    /// Image `j`'s per-token scores of every token block (key → [tokens], prefix tokens first for
    /// ViT): Σ over the block's heads of each token's term · `direction`.
    public static func blockScores(_ batch: TimmDecompositionBatch, image j: Int, direction: [Float]) throws -> [String: [Float]] {
        var out: [String: [Float]] = [:]
        for (key, terms) in batch.tokens {                                    // ViT [B, H, T, d]; Swin, MaxViT [B, H, R, R, d]
            let h = terms.shape[1], d = terms.shape.last!
            let t = terms.shape.dropFirst(2).dropLast().reduce(1, *)
            guard d == direction.count else { throw HeatmapError("per-token terms of width \(d), a direction of \(direction.count)") }
            var scores = [Float](repeating: 0, count: t)
            terms.data.withUnsafeBufferPointer { tp in
                for head in 0..<h {
                    let base = ((j * h + head) * t) * d
                    for i in 0..<t {
                        var s: Float = 0
                        for q in 0..<d { s += tp[base + i * d + q] * direction[q] }
                        scores[i] += s
                    }
                }
            }
            out[key] = scores
        }
        return out
    }

    /// Image `j`: every token block's map, upsampled to size×size and added, then normalised and thresholded.
    static func predict(_ batch: TimmDecompositionBatch, image j: Int, direction: [Float], prefixTokens: Int, size: Int,
                        predicted: Int) throws -> SegmentationPrediction {
        var total = [Float](repeating: 0, count: size * size)
        var firstGrid: [Float] = []
        let blocks = try blockScores(batch, image: j, direction: direction)
        for key in blocks.keys.sorted() {
            let scores = blocks[key]!, t = scores.count
            let cells = batch.tokens[key]!.rank == 4 ? t - prefixTokens : t
            let grid = Int(Double(cells).squareRoot().rounded())
            guard grid * grid == cells, grid > 0, size % grid == 0 else {
                throw HeatmapError("block \(key): \(cells) tokens are not a square grid that divides the \(size)-pixel input")
            }
            let map = Array(scores[(t - cells)...])
            if firstGrid.isEmpty { firstGrid = map }
            let up = TokenHeatmaps.upsampleBilinear(map, size: grid, factor: size / grid)
            for i in 0..<total.count { total[i] += up[i] }
        }
        let (map, constant) = ZeroShotSegmentation.normalize(total)
        return SegmentationPrediction(size: size, predictedClass: predicted, map: map, constant: constant,
                                      foreground: ZeroShotSegmentation.threshold(map), gridMap: firstGrid)
    }
}
