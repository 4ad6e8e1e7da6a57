// Decompose section: images/s of `CLIPDecomposer` (ViT-B/16, 224 px, random weights) against the
// plain image tower in the same process, measured interleaved (tower, decompose, ... in rotating
// order every round) so that the noise of a shared machine falls on both alike. The official
// approach (per-head outputs for every query token, class row kept) is timed in Python by
// scripts/bench_reference.py, case `decompose-official-vit-b-16-b8`.

import Foundation
import RefractCLIP
import RefractDecompose
import RefractTensor

struct DecomposeCase: Codable {
    /// "faithful", "faithful, tokens [11]", "gandelsman2024".
    var name: String
    var batch: Int
    var imagesPerSecond: Double
    var medianSeconds: Double
    /// Median call time / the tower's median call time − 1, in percent.
    var overheadPercent: Double
    /// Median over rounds of (this call / the tower's call in the same round) − 1, in percent.
    var pairedOverheadPercent: Double
    var minSeconds: Double
    var maxSeconds: Double
}

struct DecomposeResults: Codable {
    var model = "ViT-B-16"
    var imageSize = 224
    var targetOverheadPercent = 10.0
    var targetSpeedupVsOfficial = 5.0
    /// Plain tower images/s per batch size ("batch 8"), measured in the same rounds as the cases.
    var towerImagesPerSecond: [String: Double] = [:]
    /// Interleaved rounds per batch size ("batch 8").
    var rounds: [String: Int] = [:]
    var cases: [DecomposeCase] = []
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
    /// Official approach (PyTorch, per-head outputs for every query) and open_clip's plain tower, batch 8.
    var officialImagesPerSecond: Double?
    var openCLIPTowerImagesPerSecond: Double?
    /// Refract decompose (faithful, batch 8, per-head only) images/s ÷ official images/s.
    var speedupVsOfficial: Double?
    /// The same for every batch-8 case.
    var speedupVsOfficialByCase: [String: Double]?
    /// Refract's plain tower ÷ open_clip's plain tower (batch 8), for context.
    var towerVsOpenCLIP: Double?
    /// open_clip's plain tower ÷ Refract decompose (faithful, batch 8).
    var openCLIPTowerVsDecompose: Double?
    /// Official decomposition time / open_clip plain tower time − 1, in percent.
    var officialOverheadPercent: Double?

    mutating func compare(official: Double?, openCLIPTower: Double?) {
        officialImagesPerSecond = official
        openCLIPTowerImagesPerSecond = openCLIPTower
        let b8 = cases.filter { $0.batch == 8 }
        let faithful = b8.first { $0.name == DecomposeBench.faithful }?.imagesPerSecond
        if let official {
            speedupVsOfficial = faithful.map { $0 / official }
            speedupVsOfficialByCase = Dictionary(uniqueKeysWithValues: b8.map { ($0.name, $0.imagesPerSecond / official) })
        }
        if let openCLIPTower {
            towerVsOpenCLIP = towerImagesPerSecond["batch 8"].map { $0 / openCLIPTower }
            openCLIPTowerVsDecompose = faithful.map { openCLIPTower / $0 }
            officialOverheadPercent = official.map { 100 * (openCLIPTower / $0 - 1) }
        }
    }

    func printReferenceComparison() {
        print("  decomposition, ViT-B-16 batch 8: Refract vs the official approach (target >= \(fmt(targetSpeedupVsOfficial, 0))x)")
        guard let official = officialImagesPerSecond else {
            print("    official approach: no result (case \(DecomposeBench.officialCase) failed or did not run)")
            return
        }
        let overhead = officialOverheadPercent.map { " (\(fmt($0, 1))% slower than open_clip's plain tower)" } ?? ""
        print("    official (PyTorch, per-head outputs for every query token): \(fmt(official)) images/s\(overhead)")
        for c in cases where c.batch == 8 {
            let ratio = c.imagesPerSecond / official
            print("    Refract \(c.name): \(fmt(c.imagesPerSecond)) images/s  (\(fmt(ratio))x)"
                  + (c.name == DecomposeBench.faithful ? (ratio >= targetSpeedupVsOfficial ? "  [meets target]" : "  [below target]") : ""))
        }
        if let oc = openCLIPTowerImagesPerSecond, let ours = towerImagesPerSecond["batch 8"] {
            print("    for context: open_clip plain tower \(fmt(oc)) images/s; Refract plain tower \(fmt(ours)) "
                  + "(\(fmt(ours / oc))x open_clip); open_clip plain ÷ Refract decompose "
                  + (openCLIPTowerVsDecompose.map { fmt($0) } ?? "n/a"))
        }
    }
}

enum DecomposeBench {
    static let officialCase = "decompose-official-vit-b-16-b8"
    static let faithful = "faithful"

    /// Times `items` in rounds (each item once per round, the order rotated every round) after one
    /// warm-up call each, until at least `minRounds` rounds and `minSeconds` have passed.
    /// Returns the seconds per call, [item][round].
    static func interleaved(_ items: [() -> Void], minRounds: Int, minSeconds: Double) -> [[Double]] {
        for item in items { item() }
        var times = [[Double]](repeating: [], count: items.count)
        let start = now()
        var round = 0
        while round < minRounds || now() - start < minSeconds {
            for k in 0..<items.count {
                let i = (k + round) % items.count
                let t0 = now()
                items[i]()
                times[i].append(now() - t0)
            }
            round += 1
        }
        return times
    }

    static func run(quick: Bool, minRounds: Int?) throws -> DecomposeResults {
        var out = DecomposeResults()
        out.loadavgStart = loadavg()
        let tower = try CLIPVisionTower(weights: RandomWeights(), architecture: .vitB16)
        let variants: [(String, CLIPDecomposer)] = [
            (faithful, try CLIPDecomposer(tower: tower, convention: .faithful)),
            ("faithful, tokens [11]", try CLIPDecomposer(tower: tower, convention: .faithful, tokenLayers: [11])),
            ("gandelsman2024", try CLIPDecomposer(tower: tower, convention: .gandelsman2024)),
        ]
        print("\nDecomposition, ViT-B-16 224 px, random weights, \(BLAS.threads) threads: images/s, interleaved with the plain tower")
        print("  (overhead = decompose time / tower time − 1, from the medians; paired = median of per-round ratios; target <= \(fmt(out.targetOverheadPercent, 0))%)")
        print("  load average at start: \(loadString(out.loadavgStart))")
        for b in [8, 1] {
            let images = randomImages(b, size: 224)
            var sink = 0
            var items: [() -> Void] = [{ sink &+= tower(images).count }]
            for (_, d) in variants { items.append { sink &+= d(images).count } }
            // Batch 8 calls take seconds, batch 1 a fraction: ask for more rounds of the short ones.
            let rounds = minRounds ?? (quick ? 3 : (b == 1 ? 15 : 7))
            let seconds = quick ? (b == 1 ? 4.0 : 10.0) : (b == 1 ? 20.0 : 45.0)
            let times = interleaved(items, minRounds: rounds, minSeconds: seconds)
            precondition(sink != 0)
            let towerTimes = times[0], towerMedian = median(towerTimes)
            out.towerImagesPerSecond["batch \(b)"] = Double(b) / towerMedian
            out.rounds["batch \(b)"] = towerTimes.count
            print("  batch \(b) (\(towerTimes.count) rounds): plain tower \(fmt(Double(b) / towerMedian)) images/s")
            for (k, (name, _)) in variants.enumerated() {
                let t = times[k + 1], m = median(t)
                let paired = median(zip(t, towerTimes).map { $0 / $1 })
                let c = DecomposeCase(name: name, batch: b, imagesPerSecond: Double(b) / m, medianSeconds: m,
                                      overheadPercent: 100 * (m / towerMedian - 1), pairedOverheadPercent: 100 * (paired - 1),
                                      minSeconds: t.min()!, maxSeconds: t.max()!)
                out.cases.append(c)
                let mark = name == faithful ? (c.overheadPercent <= out.targetOverheadPercent ? "  [meets target]" : "  [over target]") : ""
                print("    decompose \(name): \(fmt(c.imagesPerSecond)) images/s, overhead \(fmt(c.overheadPercent, 1))%"
                      + " (paired \(fmt(c.pairedOverheadPercent, 1))%)\(mark)")
            }
        }
        out.loadavgEnd = loadavg()
        print("  load average at end: \(loadString(out.loadavgEnd))")
        return out
    }
}
