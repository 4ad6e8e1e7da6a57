// textspan-run section: the issue's TextSpan benchmark over a whole run. "All 64 heads of the last 4
// layers of a ViT-L/14-sized run ([50000, 768] per head) must finish in minutes on this 2-core
// machine, with memory that does not hold all heads at once."
//
// 1. A synthetic run is written with `StoreWriter` in a temporary directory: N images (default
//    50000, `--textspan-images N`), convention "faithful", one per-image tensor `attn` [4, 16, 768]
//    in float16 (98,304 bytes per image, about 4.9 GB for 50000), shards of about 256 MB, written
//    shard by shard. Each head's rows are a random rank-64 combination (its own basis, decaying
//    spectrum, a mean in its span) plus small noise (σ = 1e-4), so each head's numerical rank is 64 as a real
//    ViT-L head's (its value space) is. Free space is checked first (statvfs); N is lowered, with a
//    message, when the run does not fit.
// 2. `TextSpanRun.run` on all 64 heads with a synthetic pool of 3,498 descriptions (random
//    L2-normalised text embeddings [3498, 768]), 20 per head, rank nil (80 lowered to each head's
//    rank), the default memory budget (1 GiB of head contributions at once); wall time, per-head
//    time, RSS before and peak RSS (ru_maxrss; and VmHWM, reset just before the phase through
//    /proc/self/clear_refs where the kernel allows it). Then, unless --quick, the same with a budget
//    of one head at a time (one pass over the store per head) for the memory/time trade-off.
// 3. The temporary directory is removed at the end, also on error.

import Foundation
import RefractStore
import RefractTensor
import RefractTextSpan

struct TextSpanRunPhase: Codable {
    var budgetBytes: Int
    /// Heads read per pass over the store (what the budget allows).
    var headsPerPass: Int
    var passes: Int
    var wallSeconds: Double
    var perHeadSeconds: Double
    /// Seconds between consecutive heads finishing (the first head of each pass includes its read).
    var headIntervalMedianSeconds: Double
    var headIntervalMaxSeconds: Double
    /// VmRSS just before the phase.
    var rssBeforeKiB: Int?
    /// getrusage(RUSAGE_SELF).ru_maxrss before and after the phase (on Linux the larger of VmHWM and
    /// the peaks of exited threads, so the reset below lowers it too when no thread has exited).
    var maxRSSBeforeKiB: Int
    var maxRSSAfterKiB: Int
    /// VmHWM after the phase, and whether it was reset just before it (then it is the phase's peak).
    var vmHWMAfterKiB: Int?
    var vmHWMReset: Bool
    /// Span ranks used by the heads (rank → heads).
    var ranks: [String: Int]
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

struct TextSpanRunBenchResults: Codable {
    var requestedImages: Int
    var images: Int
    var reducedBecause: String?
    var layers: Int
    var heads: Int
    var width: Int
    var pool: Int
    var perHead: Int
    var shardSize: Int
    var shards: Int
    var storeBytes: Int
    var writeSeconds: Double
    /// VmHWM after writing (the write phase's peak, before the TextSpan phases reset it).
    var writePeakKiB: Int?
    /// Of writeSeconds: generating the synthetic rows, and StoreWriter (float16, SHA-256, fsync).
    var generateSeconds: Double
    var storeWriterSeconds: Double
    var openSeconds: Double
    /// One pass over the store reading `attn` (float16 → float32), no TextSpan.
    var readPassSeconds: Double
    var defaultBudget: TextSpanRunPhase
    var oneHeadBudget: TextSpanRunPhase?
    var oneHeadBudgetSkipped: String?
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum TextSpanRunBench {
    static let defaultImages = 50_000
    static let layers = 4, heads = 16, width = 768, headRank = 64
    static let pool = 3498, perHead = 20
    static let noise: Float = 1e-4

    // MARK: Memory figures

    static func procStatusKiB(_ key: String) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return nil }
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
    }

    static func maxRSSKiB() -> Int {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Int(u.ru_maxrss)
    }

    /// Resets VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`); false where not allowed.
    static func resetHWM() -> Bool {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let ok = "5".withCString { write(fd, $0, 1) } == 1
        guard ok, let hwm = procStatusKiB("VmHWM"), let rss = procStatusKiB("VmRSS") else { return false }
        return hwm <= rss + 65_536   // within 64 MiB of the current RSS: the reset took
    }

    static func mib(_ kib: Int) -> String { fmt(Double(kib) / 1024, 0) + " MiB" }

    // MARK: Synthetic data

    /// SplitMix64 stream.
    struct RNG {
        var state: UInt64
        init(_ a: UInt64, _ b: UInt64) { state = (a &* 0x9E37_79B9_7F4A_7C15) ^ (b &* 0xD1B5_4A32_D192_ED03) ^ 0x5851_F42D_4C95_7F2D }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        /// Uniform in [−1, 1).
        mutating func symmetric() -> Float { Float(Int64(bitPattern: next()) >> 40) * (1 / 8_388_608) }
        mutating func gaussian() -> Float {
            let u1 = (Double(next() >> 11) + 0.5) / Double(1 << 53), u2 = Double(next() >> 11) / Double(1 << 53)
            return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
        }
    }

    /// Per head: a basis [64, D'] (Gaussian / √D', rows about unit norm), a spectrum and a mean in
    /// the basis's span.
    struct HeadModel {
        var basis: [Float]
        var scales: [Float]
        var mean: [Float]
    }

    static func headModels() -> [HeadModel] {
        (0..<(layers * heads)).map { k in
            var g = RNG(1, UInt64(k))
            let basis = (0..<(headRank * width)).map { _ in g.gaussian() / Float(width).squareRoot() }
            let amplitude = 0.5 + 0.5 * Float(k) / Float(layers * heads - 1)
            let scales = (0..<headRank).map { amplitude * Float(exp(-Double($0) / 24)) }
            // The mean lies in the head's span, as a real head's does (its value space), so CᵀC
            // (uncentred, what the rank is read from) has rank 64 too.
            let m = (0..<headRank).map { _ in 0.1 * g.gaussian() }
            var mean = [Float](repeating: 0, count: width)
            for q in 0..<headRank { for j in 0..<width { mean[j] += m[q] * basis[q * width + j] } }
            return HeadModel(basis: basis, scales: scales, mean: mean)
        }
    }

    /// Rows `range` of `attn` [r, L, H, D']: mean + noise, then + coefficients · basis per head.
    static func shardRows(_ range: Range<Int>, shard: Int, models: [HeadModel]) -> [Float] {
        let r = range.count, perImage = layers * heads * width, headCount = layers * heads
        var data = [Float](repeating: 0, count: r * perImage)
        var coefficients = [Float](repeating: 0, count: headCount * r * headRank)
        let meanAll = models.flatMap(\.mean)
        data.withUnsafeMutableBufferPointer { dp in
            let out = SendablePointer(dp.baseAddress!)
            meanAll.withUnsafeBufferPointer { mp in
                let mean = SendablePointer(mp.baseAddress!)
                let chunks = 64, per = (r + chunks - 1) / chunks
                Parallel.forEach(chunks) { c in
                    let lo = c * per, hi = min(r, lo + per)
                    guard lo < hi else { return }
                    var g = RNG(2, UInt64(range.lowerBound + lo))
                    let scale = noise * Float(3).squareRoot()
                    for i in lo..<hi {
                        let row = out.pointer + i * perImage
                        for j in 0..<perImage { row[j] = mean.pointer[j] + scale * g.symmetric() }
                    }
                }
            }
            coefficients.withUnsafeMutableBufferPointer { cp in
                let coef = SendablePointer(cp.baseAddress!)
                Parallel.forEach(headCount) { k in
                    var g = RNG(3 &+ UInt64(shard) << 8, UInt64(k))
                    let base = coef.pointer + k * r * headRank
                    let s = models[k].scales
                    for i in 0..<r { for q in 0..<headRank { base[i * headRank + q] = s[q] * g.gaussian() } }
                }
                for k in 0..<headCount {
                    models[k].basis.withUnsafeBufferPointer { bp in
                        BLAS.sgemm(.none, .none, m: r, n: width, k: headRank, a: cp.baseAddress! + k * r * headRank,
                                   lda: headRank, b: bp.baseAddress!, ldb: width, beta: 1,
                                   c: dp.baseAddress! + k * width, ldc: perImage)
                    }
                }
            }
        }
        return data
    }

    // MARK: Section

    static func run(images requested: Int, quick: Bool, threads: Int) throws -> TextSpanRunBenchResults {
        let loadStart = loadavg()
        print("\nTextSpan over a run: all \(layers * heads) heads of \(layers) layers × \(heads) heads, width \(width), "
              + "\(pool) descriptions, \(perHead) per head, rank 80 lowered to each head's rank, \(threads) threads")
        print("  load average at start: \(loadString(loadStart))")

        let synthetic = try SyntheticHeadRun(section: "textspan-run", requested: requested, layers: layers, heads: heads, width: width)
        defer { synthetic.remove() }
        let n = synthetic.images, reduced = synthetic.reducedBecause, runURL = synthetic.run, shardSize = synthetic.shardSize

        // 1. Write the run.
        let models = headModels()
        let written = try synthetic.write(
            modelID: "synthetic/ViT-L-14-heads",
            dimensions: ["tokens": 257, "width": 1024, "imageSize": 224, "patchSize": 14],
            synthetic: "rank-\(headRank) heads + noise \(noise)",
            rows: { i, range in shardRows(range, shard: i, models: models) })
        let writeSeconds = written.seconds, storeBytes = written.bytes
        let generate = written.generateSeconds, store = written.storeSeconds
        let writePeak = procStatusKiB("VmHWM")
        print("  wrote \(fmt(Double(storeBytes) / 1e9, 2)) GB in \(fmt(writeSeconds, 1)) s "
              + "(generating rows \(fmt(generate, 1)) s, StoreWriter \(fmt(store, 1)) s: float16, SHA-256, fsync); "
              + "peak RSS so far \(writePeak.map(mib) ?? "n/a")")

        let t0 = now()
        let reader = try StoreReader(run: runURL)
        let openSeconds = now() - t0
        let t1 = now()
        try reader.forEachShard(["attn"]) { _, _ in }
        let readPass = now() - t1
        print("  opened the run in \(fmt(openSeconds, 2)) s; one pass over the store (float16 → float32): "
              + "\(fmt(readPass, 1)) s")

        // 2. TextSpan over all heads.
        let poolTexts = (0..<pool).map { "synthetic description \($0)" }
        let descriptions = DescriptionPool(texts: poolTexts, name: "synthetic-pool")
        let summary = descriptions.summary(truncated: 0)
        let texts = TextSpanRun.randomDirections(count: pool, width: width, seed: 42)
        let allHeads = (0..<layers).flatMap { l in (0..<heads).map { HeadID(layer: l, head: $0) } }
        let headBytes = n * width * 4

        func phase(budget: Int, label: String) throws -> TextSpanRunPhase {
            var options = TextSpanRunOptions()
            options.heads = allHeads
            options.perHead = perHead
            options.rank = nil
            options.budgetBytes = budget
            let group = max(1, budget / headBytes), passes = (allHeads.count + group - 1) / group
            print("  \(label): budget \(fmt(Double(budget) / Double(1 << 20), 0)) MiB → \(group) head(s) "
                  + "(\(fmt(Double(headBytes) / 1e6, 0)) MB each) per pass, \(passes) strided reads of those heads from the store")
            let reset = resetHWM()
            let rssBefore = procStatusKiB("VmRSS"), maxBefore = maxRSSKiB()
            let loadStart = loadavg()
            var marks = [Double]()
            let start = now()
            let report = try TextSpanRun.run(reader, pool: descriptions, poolSummary: summary, texts: texts,
                                             options: options) { done, total in
                marks.append(now())
                if done > 0 && (done % 8 == 0 || done == total) {
                    print("    \(done)/\(total) heads (\(fmt(now() - start, 1)) s)")
                }
            }
            let wall = now() - start
            let maxAfter = maxRSSKiB(), hwm = procStatusKiB("VmHWM")
            let intervals = zip(marks.dropFirst(), marks).map { $0 - $1 }
            var ranks = [String: Int]()
            for h in report.heads { ranks[h.rank.map(String.init) ?? "?", default: 0] += 1 }
            let p = TextSpanRunPhase(budgetBytes: budget, headsPerPass: group, passes: passes, wallSeconds: wall,
                                     perHeadSeconds: wall / Double(allHeads.count),
                                     headIntervalMedianSeconds: median(intervals),
                                     headIntervalMaxSeconds: intervals.max() ?? .nan,
                                     rssBeforeKiB: rssBefore, maxRSSBeforeKiB: maxBefore, maxRSSAfterKiB: maxAfter,
                                     vmHWMAfterKiB: hwm, vmHWMReset: reset, ranks: ranks,
                                     loadavgStart: loadStart, loadavgEnd: loadavg())
            print("    wall \(fmt(wall, 1)) s (\(fmt(wall / 60, 2)) min), \(fmt(p.perHeadSeconds, 2)) s per head; "
                  + "between heads: median \(fmt(p.headIntervalMedianSeconds, 2)) s, max \(fmt(p.headIntervalMaxSeconds, 2)) s")
            print("    RSS before \(rssBefore.map(mib) ?? "n/a"); ru_maxrss before \(mib(maxBefore)), after \(mib(maxAfter))"
                  + "; VmHWM after \(hwm.map(mib) ?? "n/a")"
                  + (reset ? " (reset just before the phase: the phase's peak)" : " (could not be reset: peak since start)"))
            print("    ranks used: " + ranks.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) heads)" }.joined(separator: ", ")
                  + "; load average \(loadString(loadStart)) → \(loadString(p.loadavgEnd))")
            return p
        }

        let standard = try phase(budget: TextSpanRunOptions().budgetBytes, label: "default budget")
        var out = TextSpanRunBenchResults(requestedImages: requested, images: n, reducedBecause: reduced, layers: layers,
                                          heads: heads, width: width, pool: pool, perHead: perHead, shardSize: shardSize,
                                          shards: written.shards, storeBytes: storeBytes, writeSeconds: writeSeconds, writePeakKiB: writePeak,
                                          generateSeconds: generate, storeWriterSeconds: store, openSeconds: openSeconds,
                                          readPassSeconds: readPass, defaultBudget: standard, loadavgStart: loadStart)
        if quick {
            out.oneHeadBudgetSkipped = "--quick"
            print("  one head per pass: skipped (--quick)")
        } else {
            out.oneHeadBudget = try phase(budget: headBytes, label: "one head at a time")
        }
        out.loadavgEnd = loadavg()
        print("  load average at end: \(loadString(out.loadavgEnd))")
        return out
    }
}
