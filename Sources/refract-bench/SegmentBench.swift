// Segment section: images/s of the whole zero-shot segmentation procedure (ViT-B/16, 224 px, random
// weights, a random 1,000-class classifier) against the plain image tower, interleaved in the same
// process. One segmentation call = decomposition with per-token sums over every head
// (gandelsman2024, as `refract segment` by default), prediction, upsampling, normalisation,
// threshold and the metrics (pixel accuracy, IoU, AP) against a random mask per image.

import Foundation
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractTensor

struct SegmentBenchCase: Codable {
    var batch: Int
    var rounds: Int
    var towerImagesPerSecond: Double
    var segmentImagesPerSecond: Double
    /// Segmentation images/s ÷ plain tower images/s (from the medians).
    var ratio: Double
    /// Median over rounds of (tower call / segmentation call in the same round).
    var pairedRatio: Double
}

struct SegmentBenchResults: Codable {
    var model = "ViT-B-16"
    var imageSize = 224
    var classes = 1000
    var convention = "gandelsman2024"
    var cases: [SegmentBenchCase] = []
    /// Prediction + post-processing + metrics alone, per image (no forward pass).
    var postprocessMillisecondsPerImage: Double = 0
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum SegmentBench {
    static func run(quick: Bool, threads: Int) throws -> SegmentBenchResults {
        var out = SegmentBenchResults()
        out.loadavgStart = loadavg()
        let arch = CLIPArchitecture.vitB16
        let tower = try CLIPVisionTower(weights: RandomWeights(), architecture: arch)
        let decomposer = try CLIPDecomposer(tower: tower, convention: .gandelsman2024,
                                            tokenSumHeads: .all(layers: arch.vision.layers, heads: arch.vision.heads))
        var rng = SplitMix64(seed: 5)
        let classifier = Ops.transposed(Ops.l2Normalized(Tensor(shape: [out.classes, arch.embedDim],
                                                                 data: (0..<(out.classes * arch.embedDim)).map { _ in Float(rng.normal()) })))  // [D', C]
        let s = arch.imageSize
        func randomMask() -> BinaryMask {
            BinaryMask(width: s, height: s, values: (0..<(s * s)).map { _ in UInt8(rng.next() & 1) })
        }
        print("\nSegmentation, ViT-B-16 224 px, random weights, \(out.classes) classes, \(BLAS.threads) threads: images/s, "
              + "interleaved with the plain tower")
        print("  (one call: decomposition with per-token sums over every head, prediction, map, threshold and metrics per image)")
        print("  load average at start: \(loadString(out.loadavgStart))")
        var postprocess: [Double] = []
        for b in quick ? [8] : [8, 1] {
            let images = randomImages(b, size: s)
            let masks = (0..<b).map { _ in randomMask() }
            var sink = 0.0
            let segment = {
                let batch = decomposer(images)
                let t0 = now()
                for i in 0..<b {
                    let p = try! ZeroShotSegmentation.predict(batch.image(i), classifier: classifier, patchSize: arch.patchSize)
                    sink += try! ZeroShotSegmentation.score(p, truth: masks[i]).averagePrecision
                }
                postprocess.append((now() - t0) / Double(b))
            }
            let items: [() -> Void] = [{ sink += Double(tower(images).count) }, segment]
            let rounds = quick ? 2 : (b == 1 ? 15 : 7)
            let seconds = quick ? 8.0 : (b == 1 ? 20.0 : 45.0)
            let times = DecomposeBench.interleaved(items, minRounds: rounds, minSeconds: seconds)
            precondition(sink != 0)
            let tm: Double = median(times[0]), sm: Double = median(times[1])
            let c = SegmentBenchCase(batch: b, rounds: times[0].count, towerImagesPerSecond: Double(b) / tm,
                                     segmentImagesPerSecond: Double(b) / sm, ratio: tm / sm,
                                     pairedRatio: median(zip(times[0], times[1]).map { (a: Double, b: Double) -> Double in a / b }))
            out.cases.append(c)
            print("  batch \(b) (\(c.rounds) rounds): plain tower \(fmt(c.towerImagesPerSecond)) images/s, segmentation "
                  + "\(fmt(c.segmentImagesPerSecond)) images/s, ratio \(fmt(c.ratio, 3)) (paired \(fmt(c.pairedRatio, 3)))")
        }
        out.postprocessMillisecondsPerImage = 1000 * median(postprocess)
        print("  prediction, post-processing and metrics: \(fmt(out.postprocessMillisecondsPerImage, 1)) ms per image (median)")
        out.loadavgEnd = loadavg()
        print("  load average at end: \(loadString(out.loadavgEnd))")
        return out
    }
}
