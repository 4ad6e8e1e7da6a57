import Foundation
import RefractTensor
import XCTest
@testable import RefractSegment

private let metricsDir = fixtureRoot.appendingPathComponent("segment/metrics")

private func array(_ name: String) throws -> NPYArray { try NPY.read(metricsDir.appendingPathComponent(name)) }

private func bytes(_ name: String) throws -> [UInt8] { try array(name).floats.map { UInt8($0) } }

private struct Expected: Decodable {
    struct Upsample: Decodable { var grid: Int; var patch: Int }
    struct Pipeline: Decodable {
        var `case`: Int; var patch: Int; var correct: Int; var labelled: Int
        var intersection: [Int]; var union: [Int]; var ap: Double; var constant: Bool
    }
    struct Totals: Decodable { var pixelAccuracy: Double; var iou: [Double]; var mIoU: Double; var mAP: Double }
    struct AP: Decodable { var `case`: Int; var ap: Double }
    var upsample: [Upsample]
    var pipeline: [Pipeline]
    var totals: Totals
    var ap: [AP]
}

private func expected() throws -> Expected {
    try JSONDecoder().decode(Expected.self, from: Data(contentsOf: metricsDir.appendingPathComponent("expected.json")))
}

final class SegmentationMetricsTests: XCTestCase {
    // MARK: Hand-computed

    func testAveragePrecisionByHand() {
        // Scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): P = 1 at R = .5, 2/3 at R = 1 → .5 + .5·2/3.
        XCTAssertEqual(SegmentationMetrics.averagePrecision(labels: [1, 0, 1, 0], scores: [0.9, 0.8, 0.7, 0.1]),
                       0.5 + 0.5 * 2 / 3, accuracy: 1e-12)
        // A tie is one threshold: (0.5 pos, 0.5 neg) first → P = 1/2 at R = 1/2, then 1 pos at 0.2 → P 2/3.
        XCTAssertEqual(SegmentationMetrics.averagePrecision(labels: [1, 0, 1], scores: [0.5, 0.5, 0.2]),
                       0.5 * 0.5 + 0.5 * 2 / 3, accuracy: 1e-12)
        // Order inside a tie does not matter.
        XCTAssertEqual(SegmentationMetrics.averagePrecision(labels: [0, 1, 1], scores: [0.5, 0.5, 0.2]),
                       0.5 * 0.5 + 0.5 * 2 / 3, accuracy: 1e-12)
        // All tied: the positive rate.
        XCTAssertEqual(SegmentationMetrics.averagePrecision(labels: [1, 0, 0, 0], scores: [3, 3, 3, 3]), 0.25, accuracy: 1e-12)
        XCTAssertTrue(SegmentationMetrics.averagePrecision(labels: [0, 0], scores: [1, 2]).isNaN)
    }

    func testImageScoresByHand() {
        // 2×2: truth [1 0; 1 1], prediction [1 1; 0 1].
        let s = SegmentationMetrics.score(prediction: [1, 1, 0, 1], truth: [1, 0, 1, 1], apScores: [0.2, 0.9, 0.6, 0.1, 0.8, 0.1, 0.4, 0.9])
        XCTAssertEqual(s.correct, 2)
        XCTAssertEqual(s.labelled, 4)
        XCTAssertEqual(s.intersection, [0, 2])       // bg: pred {2}, truth {1} → 0; fg: {0, 3}
        XCTAssertEqual(s.union, [2, 4])
        XCTAssertEqual(s.foregroundIoU, 0.5)
        // Labels: background one-hot [0 1 0 0], foreground one-hot [1 0 1 1]; scores as given:
        // 0.9 (pos: idx1 bg, idx7 fg) ×2 → P 1 R .5; 0.8 pos → P 1 R .75; 0.6 neg; 0.4 pos → P 4/5 R 1.
        XCTAssertEqual(s.averagePrecision, 0.5 + 0.25 + 0.25 * 0.8, accuracy: 1e-12)
        var totals = SegmentationTotals()
        totals.add(s)
        totals.add(SegmentationMetrics.score(prediction: [0, 0, 0, 0], truth: [0, 0, 0, 0], apScores: [Float](repeating: 0, count: 8)))
        XCTAssertEqual(totals.pixelAccuracy, 6.0 / 8.0)
        XCTAssertEqual(totals.iou(0), 4.0 / 6.0)
        XCTAssertEqual(totals.iou(1), 2.0 / 4.0)
        XCTAssertEqual(totals.meanIoU, (4.0 / 6.0 + 0.5) / 2)
        XCTAssertEqual(totals.meanAveragePrecision, (0.95 + 0.5) / 2, accuracy: 1e-12)
    }

    func testNormalizeAndThreshold() {
        let (map, constant) = ZeroShotSegmentation.normalize([-1, 0, 1, 3])
        XCTAssertFalse(constant)
        XCTAssertEqual(map, [0, 0, 1.0 / 3.0, 1])
        XCTAssertEqual(ZeroShotSegmentation.threshold(map), [0, 0, 0, 1])     // mean 1/3: strictly above
        let (flat, isConstant) = ZeroShotSegmentation.normalize([-2, -1, 0, -3])
        XCTAssertTrue(isConstant)
        XCTAssertEqual(flat, [0, 0, 0, 0])
        XCTAssertEqual(SegmentationMetrics.apScores(map: flat, constant: true), [Float](repeating: 0, count: 8))
        XCTAssertEqual(SegmentationMetrics.apScores(map: [0.25, 1], constant: false), [0.75, 0, 0.25, 1])
    }

    func testUpsampleByHand() {
        // 2×2 → 4×4 by 2: source coordinates max(0, (o + .5)/2 − .5) = 0, .25, .75, 1 (clamped at 1).
        let up = TokenHeatmaps.upsampleBilinear([0, 4, 8, 12], size: 2, factor: 2)
        XCTAssertEqual(Array(up[0..<4]), [0, 1, 3, 4])
        XCTAssertEqual(Array(up[4..<8]), [2, 3, 5, 6])
        XCTAssertEqual(Array(up[12..<16]), [8, 9, 11, 12])
        XCTAssertEqual(TokenHeatmaps.upsampleBilinear([5], size: 1, factor: 3), [Float](repeating: 5, count: 9))
    }

    // MARK: Against torch and scikit-learn

    func testUpsampleMatchesTorch() throws {
        for c in try expected().upsample {
            let input = try array("upsample_g\(c.grid)_p\(c.patch)_in.npy").floats
            let want = try array("upsample_g\(c.grid)_p\(c.patch)_out.npy").floats
            let got = TokenHeatmaps.upsampleBilinear(input, size: c.grid, factor: c.patch)
            XCTAssertEqual(got.count, want.count)
            let worst = zip(got, want).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(worst, 2e-6, "grid \(c.grid) patch \(c.patch)")
        }
    }

    func testAveragePrecisionMatchesScikitLearn() throws {
        for c in try expected().ap {
            let scores = try array("ap_\(c.case)_scores.npy").floats
            let labels = try bytes("ap_\(c.case)_labels.npy")
            XCTAssertEqual(SegmentationMetrics.averagePrecision(labels: labels, scores: scores), c.ap, accuracy: 1e-12, "case \(c.case)")
        }
    }

    /// The whole post-processing and metrics against the official code (torch + scikit-learn).
    func testPipelineMatchesOfficialCode() throws {
        let e = try expected()
        var totals = SegmentationTotals()
        for c in e.pipeline {
            let grid = try array("pipeline_\(c.case)_grid.npy").floats
            let truth = try bytes("pipeline_\(c.case)_mask.npy")
            let wantMap = try array("pipeline_\(c.case)_map.npy").floats
            let wantFG = try bytes("pipeline_\(c.case)_fg.npy")
            let g = Int(Double(grid.count).squareRoot())
            let (map, constant) = ZeroShotSegmentation.normalize(TokenHeatmaps.upsampleBilinear(grid, size: g, factor: c.patch))
            XCTAssertEqual(constant, c.constant, "case \(c.case)")
            XCTAssertLessThanOrEqual(zip(map, wantMap).map { abs($0 - $1) }.max()!, 2e-6, "case \(c.case) map")
            let fg = ZeroShotSegmentation.threshold(map)
            XCTAssertEqual(fg, wantFG, "case \(c.case) foreground")
            let s = SegmentationMetrics.score(prediction: fg, truth: truth, apScores: SegmentationMetrics.apScores(map: map, constant: constant))
            XCTAssertEqual(s.correct, c.correct, "case \(c.case)")
            XCTAssertEqual(s.labelled, c.labelled)
            XCTAssertEqual(s.intersection, c.intersection, "case \(c.case)")
            XCTAssertEqual(s.union, c.union, "case \(c.case)")
            // AP from the official map itself: our bilinear arithmetic differs from torch's in the last
            // bit (torch contracts to FMAs), which can split or merge ties of this dyadic toy grid.
            let official = SegmentationMetrics.score(prediction: wantFG, truth: truth,
                                                     apScores: SegmentationMetrics.apScores(map: wantMap, constant: c.constant))
            XCTAssertEqual(official.averagePrecision, c.ap, accuracy: 1e-12, "case \(c.case)")
            XCTAssertEqual(s.averagePrecision, c.ap, accuracy: 0.02, "case \(c.case)")
            totals.add(ImageSegmentationScores(correct: s.correct, labelled: s.labelled, intersection: s.intersection,
                                               union: s.union, averagePrecision: official.averagePrecision))
        }
        XCTAssertEqual(totals.pixelAccuracy, e.totals.pixelAccuracy, accuracy: 1e-12)
        XCTAssertEqual(totals.iou(0), e.totals.iou[0], accuracy: 1e-12)
        XCTAssertEqual(totals.iou(1), e.totals.iou[1], accuracy: 1e-12)
        XCTAssertEqual(totals.meanIoU, e.totals.mIoU, accuracy: 1e-12)
        XCTAssertEqual(totals.meanAveragePrecision, e.totals.mAP, accuracy: 1e-12)
    }
}
