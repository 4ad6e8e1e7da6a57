// TextSpan section: seconds per `TextSpan.run` on one ViT-B-sized head (C [10000, 512], a pool of
// 3498 descriptions, 20 steps, rank 80) against the same algorithm in plain NumPy float32 as the
// official code runs it (scripts/bench_reference.py, case `textspan-numpy`, run in this session),
// on identical data, so the chosen descriptions can be compared too; then one ViT-L/14-sized head
// (C [50000, 768], same pool size and settings) with the time for 64 such heads extrapolated.
// Issue target: Refract ≤ 1/3 of NumPy's time.

import Foundation
import RefractTensor
import RefractTextSpan

struct TextSpanHeadResult: Codable {
    var images: Int
    var width: Int
    var pool: Int
    var steps: Int
    var rank: Int
    var runs: Int
    var medianSeconds: Double
    var minSeconds: Double
    var maxSeconds: Double
    /// Phases of the median run: gram, eigen, projection, greedy (seconds).
    var phases: [String: Double]
    var indices: [Int]
}

struct TextSpanBenchResults: Codable {
    var targetRatio = 1.0 / 3
    var head: TextSpanHeadResult
    var largeHead: TextSpanHeadResult?
    /// 64 × the large head's median.
    var largeHeads64Seconds: Double?
    var numpySeconds: Double?
    var numpyRuns: Int?
    var numpyIndices: [Int]?
    var numpyInfo: [String: String]?
    /// Refract seconds ÷ NumPy seconds (target ≤ 1/3).
    var ratio: Double?
    /// Leading steps where both chose the same description.
    var sameLeadingIndices: Int?
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum TextSpanBench {
    static let numpyCase = "textspan-numpy"
    static let pool = 3498, steps = 20, rank = 80

    /// The data of bench_reference.py's `textspan_data`, bit for bit: SplitMix64 uniforms in
    /// [−0.5, 0.5) of (stream, index); C[k, j] = u·exp(−j/64) + 0.1·u'_j, R rows L2-normalised.
    static func uniform(_ n: Int, stream: UInt64) -> [Float] {
        let seed = stream &* 0xD1B5_4A32_D192_ED03
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            for i in 0..<n {
                var z = seed &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                buf[i] = Float(z >> 40) * (1 / 16_777_216) - 0.5
            }
            count = n
        }
    }

    static func data(images k: Int, width d: Int, pool m: Int) -> (Tensor, Tensor) {
        let scale = (0..<d).map { Float(exp(-Double($0) / 64)) }
        let offset = uniform(d, stream: 3).map { Float(0.1) * $0 }
        var c = uniform(k * d, stream: 1)
        c.withUnsafeMutableBufferPointer { p in
            for i in 0..<k { for j in 0..<d { p[i * d + j] = p[i * d + j] * scale[j] + offset[j] } }
        }
        let r = Ops.l2Normalized(Tensor(shape: [m, d], data: uniform(m * d, stream: 2)))
        return (Tensor(shape: [k, d], data: c), r)
    }

    static func time(images: Int, width: Int, minRuns: Int, minSeconds: Double) throws -> TextSpanHeadResult {
        let (c, r) = data(images: images, width: width, pool: pool)
        var runs = [(Double, TextSpanResult)]()
        _ = try TextSpan.run(contributions: c, texts: r, steps: steps, rank: rank)   // warm-up
        let start = now()
        while runs.count < minRuns || now() - start < minSeconds {
            let t0 = now()
            let result = try TextSpan.run(contributions: c, texts: r, steps: steps, rank: rank)
            runs.append((now() - t0, result))
        }
        runs.sort { $0.0 < $1.0 }
        let (median, result) = runs[runs.count / 2]
        let t = result.timing
        return TextSpanHeadResult(images: images, width: width, pool: pool, steps: steps, rank: rank, runs: runs.count,
                                  medianSeconds: median, minSeconds: runs.first!.0, maxSeconds: runs.last!.0,
                                  phases: ["gram": t.gram, "eigen": t.eigen, "projection": t.projection, "greedy": t.greedy],
                                  indices: result.indices)
    }

    static func describe(_ h: TextSpanHeadResult) -> String {
        let p = h.phases
        return "\(fmt(h.medianSeconds, 3)) s per run (median of \(h.runs), range \(fmt(h.minSeconds, 3))–\(fmt(h.maxSeconds, 3)));"
            + " phases: Gram \(fmt(p["gram"] ?? 0, 3)), eigen \(fmt(p["eigen"] ?? 0, 3)),"
            + " projection \(fmt(p["projection"] ?? 0, 3)), greedy \(fmt(p["greedy"] ?? 0, 3))"
    }

    /// A Python with numpy: --python, REFRACT_BENCH_PYTHON, the repository's .venv, python3.
    static func findNumpyPython(_ explicit: String?) -> String? {
        findPython(explicit, importing: "numpy", includeRepositoryVenv: true)
    }

    static func run(quick: Bool, python: String?, reference: Bool, threads: Int) throws -> TextSpanBenchResults {
        let loadStart = loadavg()
        print("\nTextSpan, one head: \(pool) descriptions, \(steps) steps, rank \(rank), \(threads) threads"
              + " (target: Refract ≤ 1/3 of NumPy's time)")
        print("  load average at start: \(loadString(loadStart))")
        let head = try time(images: 10_000, width: 512, minRuns: quick ? 3 : 10, minSeconds: quick ? 2 : 10)
        print("  Refract, C [10000, 512]: \(describe(head))")
        var out = TextSpanBenchResults(head: head)
        out.loadavgStart = loadStart

        if !reference {
            print("  NumPy: skipped (--no-reference)")
        } else if let py = findNumpyPython(python) {
            print("  NumPy (official algorithm, float32) via \(py), same data ...")
            let ref = runReference(python: py, threads: threads, quick: quick, cases: [numpyCase])
            if let ref, let res = (ref["results"] as? [String: Any])?[numpyCase] as? [String: Any],
               let seconds = res["median_s"] as? Double {
                out.numpySeconds = seconds
                out.numpyRuns = res["iters"] as? Int
                let indices = (res["indices"] as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue }
                out.numpyIndices = indices
                var info = [String: String]()
                for k in ["numpy", "numpy_blas", "threads"] { if let v = ref[k], !(v is NSNull) { info[k] = "\(v)" } }
                for k in ["loadavg_start", "loadavg_end"] { if let l = ref[k] as? [Double] { info[k] = loadString(l) } }
                out.numpyInfo = info
                out.ratio = head.medianSeconds / seconds
                if let indices {
                    out.sameLeadingIndices = zip(indices, head.indices).prefix { $0 == $1 }.count
                }
                print("    " + ["numpy", "numpy_blas", "threads", "loadavg_start", "loadavg_end"]
                    .compactMap { k in info[k].map { "\(k)=\($0)" } }.joined(separator: ", "))
                print("    NumPy: \(fmt(seconds, 3)) s per run (median of \(out.numpyRuns ?? 0))")
                let ratio = out.ratio!
                print("    Refract / NumPy time: \(fmt(ratio, 4)) (\(fmt(1 / ratio, 1))x faster)"
                      + (ratio <= out.targetRatio ? "  [meets target]" : "  [misses target]"))
                if let same = out.sameLeadingIndices, let indices {
                    print("    same descriptions chosen: first \(same) of \(steps) steps"
                          + (same < min(steps, indices.count) ? " (then NumPy \(indices[same]), Refract \(head.indices[same]))" : ""))
                }
            } else {
                let why = ((ref?["errors"] as? [String: Any])?[numpyCase]).map { ": \($0)" } ?? ""
                print("  NumPy: reference run failed; skipped\(why)")
            }
        } else {
            print("  NumPy: skipped (no Python with numpy; set REFRACT_BENCH_PYTHON or --python)")
        }

        let large = try time(images: 50_000, width: 768, minRuns: quick ? 1 : 3, minSeconds: quick ? 0 : 10)
        out.largeHead = large
        out.largeHeads64Seconds = 64 * large.medianSeconds
        print("  Refract, ViT-L/14-sized head C [50000, 768]: \(describe(large))")
        print("    64 such heads (extrapolated): \(fmt(64 * large.medianSeconds, 1)) s")
        out.loadavgEnd = loadavg()
        print("  load average at end: \(loadString(out.loadavgEnd))")
        return out
    }
}
