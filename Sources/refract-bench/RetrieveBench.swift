// retrieve section: property-based retrieval over a ViT-B-sized run. "A 2-head query over a run of
// 50,000 images must take well under a second."
//
// 1. A synthetic run is written with `StoreWriter` in a temporary directory: N images (50,000;
//    5,000 with --quick), one per-image tensor `attn` [12, 12, 512] in float16 (147,456 bytes per
//    image, about 7.4 GB for 50,000), shards of about 256 MB. Image i belongs to synthetic class
//    i % 100: each head's row is its class's mean for that head plus uniform noise, so a query's
//    nearest images share its class (precision@15 is reported as a sanity check). Free space is
//    checked first; N is lowered, with a message, when the run does not fit.
// 2. The shards' pages are dropped from the page cache (posix_fadvise DONTNEED; the files are
//    synced, so this needs no privileges), then a 2-head query (`Retrieval.search`, cosine, top 15)
//    runs once from disk ("first, cold"), then repeated on other query rows with a warm cache
//    (median); the same for 4 heads. Each query's strided read (`summedSlices`) is also timed alone.
// 3. The in-run reference: the dense pass a reader without strided reads makes — every shard's whole
//    `attn` read and widened to float32 (`forEachShard`), the same heads summed per row, the same
//    ranking — cold (after dropping the cache again) and warm. Its top 15 must equal the query's.
// 4. The temporary directory is removed at the end, also on error.

import Foundation
import RefractRetrieve
import RefractStore
import RefractTensor
import RefractTextSpan

struct RetrieveQueryTiming: Codable {
    var heads: [String]
    var metric: String
    var top: Int
    /// Bytes of the chosen heads per pass (N · heads · D' · 2).
    var bytesSelected: Int
    /// The first query after the page cache was dropped (the shards read from disk), and whether the
    /// drop worked.
    var firstSeconds: Double
    var firstCold: Bool
    /// Median over `repeats` further queries (other query rows, warm cache).
    var medianSeconds: Double
    var minSeconds: Double
    var maxSeconds: Double
    var repeats: Int
    /// Median of the strided read alone (`summedSlices`, warm).
    var readMedianSeconds: Double
    /// Mean over the queries of the fraction of the 15 results in the query's synthetic class.
    var precisionAtTop: Double
}

struct RetrieveBenchResults: Codable {
    var requestedImages: Int
    var images: Int
    var reducedBecause: String?
    var layers: Int
    var heads: Int
    var width: Int
    var dtype: String
    var shardSize: Int
    var shards: Int
    var storeBytes: Int
    var writeSeconds: Double
    var openSeconds: Double
    var cores: Int
    var twoHeads: RetrieveQueryTiming
    var fourHeads: RetrieveQueryTiming
    /// Dense reference: whole `attn` read (float16 → float32), 2 heads summed, ranked.
    var densePassColdSeconds: Double
    var densePassCold: Bool
    var densePassWarmSeconds: Double
    /// Dense warm pass / median warm 2-head query.
    var speedupWarm: Double
    /// Dense cold pass / first cold 2-head query.
    var speedupCold: Double
    var denseTopMatches: Bool
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum RetrieveBench {
    static let defaultImages = 50_000, quickImages = 5_000
    static let layers = 12, heads = 12, width = 512, classes = 100
    static let top = 15, repeats = 7

    // MARK: Synthetic data

    /// Class means [classes, L·H·D'] (Gaussian · 0.05).
    static func classMeans() -> [Float] {
        let perImage = layers * heads * width
        var means = [Float](repeating: 0, count: classes * perImage)
        means.withUnsafeMutableBufferPointer { mp in
            let out = SendablePointer(mp.baseAddress!)
            Parallel.forEach(classes) { c in
                var g = TextSpanRunBench.RNG(11, UInt64(c))
                for j in 0..<perImage { out.pointer[c * perImage + j] = 0.05 * g.gaussian() }
            }
        }
        return means
    }

    /// Rows `range` of `attn` [r, L, H, D']: class mean + uniform noise in ±0.08.
    static func shardRows(_ range: Range<Int>, means: [Float]) -> [Float] {
        let perImage = layers * heads * width, r = range.count
        var data = [Float](repeating: 0, count: r * perImage)
        data.withUnsafeMutableBufferPointer { dp in
            let out = SendablePointer(dp.baseAddress!)
            means.withUnsafeBufferPointer { mp in
                let mean = SendablePointer(mp.baseAddress!)
                Parallel.forEach(r) { i in
                    let image = range.lowerBound + i
                    var g = TextSpanRunBench.RNG(12, UInt64(image))
                    let m = mean.pointer + (image % classes) * perImage, row = out.pointer + i * perImage
                    for j in 0..<perImage { row[j] = m[j] + 0.08 * g.symmetric() }
                }
            }
        }
        return data
    }

    /// Drops the run's shard pages from the page cache; false when any call fails.
    static func dropPageCache(_ reader: StoreReader) -> Bool {
        var ok = true
        for s in reader.manifest.shards {
            let fd = open(reader.run.appendingPathComponent(s.file).path, O_RDONLY)
            guard fd >= 0 else { ok = false; continue }
            if posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) != 0 { ok = false }
            close(fd)
        }
        return ok
    }

    // MARK: Section

    static func run(quick: Bool, threads: Int) throws -> RetrieveBenchResults {
        let loadStart = loadavg()
        let requested = quick ? quickImages : defaultImages
        let cores = ProcessInfo.processInfo.activeProcessorCount
        print("\nRetrieval over a run: ViT-B-sized attn [\(layers), \(heads), \(width)] float16, \(requested) images, "
              + "top \(top), \(cores) cores")
        print("  load average at start: \(loadString(loadStart))")

        let synthetic = try SyntheticHeadRun(section: "retrieve", requested: requested, layers: layers, heads: heads, width: width)
        defer { synthetic.remove() }
        let n = synthetic.images, reduced = synthetic.reducedBecause, runURL = synthetic.run, shardSize = synthetic.shardSize

        // 1. Write the run.
        let means = classMeans()
        let written = try synthetic.write(
            modelID: "synthetic/ViT-B-16-heads",
            dimensions: ["tokens": 197, "width": 768, "imageSize": 224, "patchSize": 16],
            synthetic: "\(classes) classes: class mean + noise", label: { "class \($0 % classes)" },
            rows: { _, range in shardRows(range, means: means) })
        let writeSeconds = written.seconds, storeBytes = written.bytes
        print("  wrote \(fmt(Double(storeBytes) / 1e9, 2)) GB in \(fmt(writeSeconds, 1)) s")

        let t0 = now()
        let reader = try StoreReader(run: runURL)
        let openSeconds = now() - t0
        print("  opened the run in \(fmt(openSeconds, 3)) s (manifest and every shard header checked)")

        // 2. Queries.
        func precision(_ report: RetrievalReport, query: Int) -> Double {
            Double(report.results.filter { $0.imageIndex % classes == query % classes }.count) / Double(max(1, report.results.count))
        }
        func timeQueries(_ heads: [HeadID]) throws -> RetrieveQueryTiming {
            let options = RetrievalOptions(heads: heads, top: top, metric: .cosine)
            let cold = dropPageCache(reader)
            var t = now()
            var report = try Retrieval.search(reader, query: .row(0), options: options)
            let first = now() - t
            var precisions = [precision(report, query: 0)]
            var times = [Double](), reads = [Double]()
            for k in 1...repeats {
                let q = (k * 7919) % n
                t = now()
                report = try Retrieval.search(reader, query: .row(q), options: options)
                times.append(now() - t)
                precisions.append(precision(report, query: q))
                t = now()
                _ = try reader.summedSlices(of: "attn", indices: heads.map { [$0.layer, $0.head] })   // [N, D']
                reads.append(now() - t)
            }
            let timing = RetrieveQueryTiming(heads: heads.map(\.description), metric: "cosine", top: top,
                                             bytesSelected: n * heads.count * width * 2, firstSeconds: first, firstCold: cold,
                                             medianSeconds: median(times), minSeconds: times.min() ?? .nan,
                                             maxSeconds: times.max() ?? .nan, repeats: repeats,
                                             readMedianSeconds: median(reads),
                                             precisionAtTop: precisions.reduce(0, +) / Double(precisions.count))
            print("  \(heads.count) heads (\(heads.map(\.description).joined(separator: ","))), "
                  + "\(fmt(Double(timing.bytesSelected) / 1e6, 0)) MB selected: first query "
                  + "\(fmt(first, 3)) s (\(cold ? "page cache dropped: from disk" : "cache could not be dropped")); "
                  + "warm median \(fmt(timing.medianSeconds, 3)) s (min \(fmt(timing.minSeconds, 3)), max \(fmt(timing.maxSeconds, 3)), "
                  + "\(repeats) queries), of which the strided read \(fmt(timing.readMedianSeconds, 3)) s; "
                  + "precision@\(top) \(fmt(timing.precisionAtTop, 3))")
            return timing
        }
        let two = [HeadID(layer: 11, head: 3), HeadID(layer: 10, head: 7)]
        let four = two + [HeadID(layer: 9, head: 1), HeadID(layer: 8, head: 11)]
        let twoTiming = try timeQueries(two)
        let fourTiming = try timeQueries(four)

        // 3. Dense reference: the whole attn tensor, shard by shard.
        func densePass() throws -> (Double, [Int]) {
            let t = now()
            var vectors = [Float](repeating: 0, count: n * width)                                    // [N, D']
            try reader.forEachShard(["attn"]) { rows, tensors in
                let attn = tensors["attn"]!.data                                                     // [r, L, H, D']
                for r in 0..<rows.count {
                    for id in two {
                        let o = ((r * layers + id.layer) * heads + id.head) * width
                        let dst = (rows.lowerBound + r) * width
                        for j in 0..<width { vectors[dst + j] += attn[o + j] }
                    }
                }
            }
            let v = Tensor(shape: [n, width], data: vectors)                                        // [N, D']
            let ranked = Retrieval.rank(v, query: v.row(0), metric: .cosine, top: top, excluding: 0)
            return (now() - t, ranked.map(\.row))
        }
        let coldDrop = dropPageCache(reader)
        let (denseCold, denseTop) = try densePass()
        let (denseWarm, _) = try densePass()
        let queryTop = try Retrieval.search(reader, query: .row(0), options: RetrievalOptions(heads: two, top: top)).results.map(\.row)
        let matches = denseTop == queryTop
        print("  dense reference (whole attn read, float16 → float32, 2 heads summed, ranked): "
              + "\(fmt(denseCold, 2)) s \(coldDrop ? "from disk" : "(cache not dropped)"), \(fmt(denseWarm, 2)) s warm; "
              + "top \(top) \(matches ? "identical to" : "DIFFERENT from") the strided query's")
        let speedWarm = denseWarm / twoTiming.medianSeconds, speedCold = denseCold / twoTiming.firstSeconds
        print("  2-head query vs dense pass: \(fmt(speedWarm, 0))× faster warm, \(fmt(speedCold, 0))× faster from disk")
        if !matches { throw BenchError("retrieve: the strided query's top \(top) differs from the dense pass's") }

        let loadEnd = loadavg()
        print("  load average at end: \(loadString(loadEnd))")
        return RetrieveBenchResults(requestedImages: requested, images: n, reducedBecause: reduced, layers: layers, heads: heads,
                                    width: width, dtype: "float16", shardSize: shardSize, shards: written.shards,
                                    storeBytes: storeBytes, writeSeconds: writeSeconds, openSeconds: openSeconds, cores: cores,
                                    twoHeads: twoTiming, fourHeads: fourTiming, densePassColdSeconds: denseCold,
                                    densePassCold: coldDrop, densePassWarmSeconds: denseWarm, speedupWarm: speedWarm,
                                    speedupCold: speedCold, denseTopMatches: matches, loadavgStart: loadStart, loadavgEnd: loadEnd)
    }
}
