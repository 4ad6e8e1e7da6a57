// timm section: images/s of Refract's timm forward passes (random weights, the real loader on a
// written checkpoint) for DeiT-B/16 at 224, DINOv2-B/14 at 518, Swin-B at 224 and MaxViT-S at 224, the
// decomposition's overhead over the plain forward (heads; tokens of the last block), measured
// interleaved as in the decompose section; timm itself on the same shapes and threads in
// scripts/bench_reference.py (cases timm-*).

import Foundation
import RefractCheckpoint
import RefractDecompose
import RefractTensor
import RefractTimm

struct TimmBenchCase: Codable {
    var architecture: String
    var imageSize: Int
    var batch: Int
    var forwardImagesPerSecond: Double
    /// Decomposition (faithful, every block, heads): images/s and overhead over the forward, percent.
    var decomposeImagesPerSecond: Double
    var decomposeOverheadPercent: Double
    /// The same with per-token terms of the last block.
    var tokensImagesPerSecond: Double
    var tokensOverheadPercent: Double
    var referenceCase: String
    var timmImagesPerSecond: Double?
    var ratioVsTimm: Double?
}

struct TimmBenchResults: Codable {
    var cases: [TimmBenchCase] = []
    var targetRatioVsTimm = 1.1
    var targetOverheadPercent = 10.0
}

enum TimmBench {
    nonisolated(unsafe) static let cases: [(arch: String, args: [String: Any], batch: Int, reference: String)] = [
        ("deit_base_patch16_224", [:], 8, "timm-deit-b-16-b8"),
        ("vit_base_patch14_dinov2", ["num_classes": 0], 2, "timm-dinov2-b-14-518-b2"),
        ("swin_base_patch4_window7_224", [:], 8, "timm-swin-b-224-b8"),
        ("maxvit_small_tf_224", [:], 8, "timm-maxvit-s-224-b8"),
    ]

    static func run(quick: Bool) throws -> TimmBenchResults {
        var results = TimmBenchResults()
        let seconds = quick ? 2.0 : 6.0
        print("\ntimm models, random weights (images/s; decomposition overhead over the forward, interleaved rounds)")
        for c in cases {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-bench-\(c.arch)-\(getpid())")
            defer { try? FileManager.default.removeItem(at: dir) }
            try TimmModel.writeRandomCheckpoint(architecture: c.arch, modelArgs: c.args, to: dir, seed: 3)
            let model = try TimmModel(location: ModelLocation(directory: dir, layout: .timm, modelId: c.arch))
            let size = model.preprocessing.imageSize
            let images = randomImages(c.batch, size: size)
            let heads = try TimmDecomposer(model: model, convention: .faithful)
            let last = TimmDecomposer.blockCount(model) - 1
            let tokens = try TimmDecomposer(model: model, convention: .faithful, tokenBlocks: [last])
            // Interleaved rounds, rotating the order, until each has `seconds` of measurements.
            var times: [[Double]] = [[], [], []]
            let bodies: [() -> Void] = [{ _ = model.represent(pixels: images) }, { _ = heads(images) }, { _ = tokens(images) }]
            for body in bodies { body() }  // warm-up
            var round = 0
            while times[0].reduce(0, +) < seconds || times[0].count < 3 {
                for k in 0..<3 {
                    let i = (k + round) % 3
                    let t0 = now()
                    bodies[i]()
                    times[i].append(now() - t0)
                }
                round += 1
            }
            let t = times.map(median)
            let item = TimmBenchCase(architecture: c.arch, imageSize: size, batch: c.batch,
                                     forwardImagesPerSecond: Double(c.batch) / t[0],
                                     decomposeImagesPerSecond: Double(c.batch) / t[1], decomposeOverheadPercent: 100 * (t[1] / t[0] - 1),
                                     tokensImagesPerSecond: Double(c.batch) / t[2], tokensOverheadPercent: 100 * (t[2] / t[0] - 1),
                                     referenceCase: c.reference)
            results.cases.append(item)
            print("  \(c.arch) \(size) px, batch \(c.batch): forward \(fmt(item.forwardImagesPerSecond)), decompose (heads) "
                  + "\(fmt(item.decomposeImagesPerSecond)) (+\(fmt(item.decomposeOverheadPercent, 1))%), tokens of block \(last) "
                  + "\(fmt(item.tokensImagesPerSecond)) (+\(fmt(item.tokensOverheadPercent, 1))%), \(round) rounds")
        }
        return results
    }

    /// Adds timm's figures from the reference run.
    static func compare(_ results: inout TimmBenchResults, reference: [String: Double]) {
        for i in results.cases.indices {
            guard let theirs = reference[results.cases[i].referenceCase] else { continue }
            results.cases[i].timmImagesPerSecond = theirs
            results.cases[i].ratioVsTimm = results.cases[i].forwardImagesPerSecond / theirs
        }
    }
}
