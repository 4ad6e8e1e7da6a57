// refract-bench --only score: `ComponentScoring.score` (refract score's pass) over a synthetic
// ViT-B-sized run of --score-images N images (default 50,000; 66 components × 768, float32,
// ~10 GB, written to a temporary directory and removed): a CLIP-layout run (pre, attn, attn_bias,
// mlp, readout_bias: the identity aligner) and a timm run through an alignment of one training
// step. A first pass verifies the shards and fills the page cache; then 1 and 4 properties (4 texts
// each), with and without variance_explained. There is no reference implementation to compare with
// here: the issue's target is an absolute one ("well under a second per property once the run is in
// the page cache").

import Foundation
import RefractAlign
import RefractDecompose
import RefractStore
import RefractTensor

struct ScoreBenchCase: Codable {
    var layout: String
    var properties: Int
    var varianceExplained: Bool
    var seconds: Double
    var secondsPerProperty: Double
}

struct ScoreBenchResults: Codable {
    var images: Int
    var components: Int
    var width: Int
    var runGigabytes: Double
    var cases: [ScoreBenchCase]
}

enum ScoreBench {
    static let defaultImages = 50_000

    static func run(images requested: Int) throws -> ScoreBenchResults {
        try BLAS.load()
        let (layers, heads, d) = (4, 14, 768)
        let c = 1 + layers * (heads + 2) + 1                                                // 66 components
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("refract-bench-score-\(getpid())")
        // One run at a time (the CLIP layout's is removed before the timm one is written), and its targets.
        let (n, _) = try SyntheticHeadRun.imagesThatFit(section: "score", requested: requested, perImage: c * d * 4 + d * 4, margin: 1 << 30,
                                                        what: "each run")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root); print("  removed \(root.path)") }
        print("\nComponent scores (ComponentScoring.score, refract score's pass): \(n) images × \(c) components × \(d), float32, \(BLAS.threads) threads")
        var state: UInt32 = 12345
        func fill(_ count: Int) -> [Float] {
            var out = [Float](repeating: 0, count: count)
            for i in 0..<count { state = state &* 1_664_525 &+ 1_013_904_223; out[i] = Float(Int32(bitPattern: state)) * (1 / 2_147_483_648.0) }
            return out
        }
        func property(_ i: Int) -> ScoreProperty {
            ScoreProperty(name: "p\(i)", texts: (0..<4).map { "t\($0)" }, embeddings: Tensor(shape: [4, d], data: fill(4 * d)))
        }
        var cases: [ScoreBenchCase] = []
        var gigabytes = 0.0
        for layout in ["clip", "timm"] {
            let run = root.appendingPathComponent(layout)
            let t0 = now()
            let images = (0..<n).map { StoreImage(path: "/synthetic/\($0).png") }
            let model = StoreModelInfo(id: "synthetic", layout: layout == "clip" ? "openCLIP" : "timm", weightsSHA256: String(repeating: "5", count: 64),
                                       weightFiles: [])
            let header: StoreHeader
            if layout == "clip" {
                header = StoreHeader(model: model, convention: "faithful", dimensions: ["layers": layers, "heads": heads, "embedDim": d],
                                     tensors: [StoreTensorSpec(name: "pre", shape: [d]), StoreTensorSpec(name: "attn", shape: [layers, heads, d]),
                                               StoreTensorSpec(name: "attn_bias", shape: [layers, d]), StoreTensorSpec(name: "mlp", shape: [layers, d]),
                                               StoreTensorSpec(name: "readout_bias", shape: [d])], images: images, shardSize: 1250)
            } else {
                header = try SyntheticAlignment.header(shape: .init(images: n, components: c, width: d, clipWidth: d, shardSize: 1250), planted: false)
            }
            let w = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "refract-bench", resume: false)
            for (s, r) in w.shardRanges.enumerated() {
                let rows: [String: Tensor] = layout == "clip"
                    ? ["pre": Tensor(shape: [r.count, d], data: fill(r.count * d)),
                       "attn": Tensor(shape: [r.count, layers, heads, d], data: fill(r.count * layers * heads * d)),
                       "attn_bias": Tensor(shape: [r.count, layers, d], data: fill(r.count * layers * d)),
                       "mlp": Tensor(shape: [r.count, layers, d], data: fill(r.count * layers * d)),
                       "readout_bias": Tensor(shape: [r.count, d], data: fill(r.count * d))]
                    : ["components": Tensor(shape: [r.count, c, d], data: fill(r.count * c * d))]
                try w.writeShard(s, imageIndices: Array(r), rows: rows, skipped: [])
            }
            try w.finish()
            let reader = try StoreReader(run: run)
            gigabytes = Double(MemoryBench.directorySize(run)) / 1e9
            print("  \(layout) layout: wrote \(fmt(gigabytes, 2)) GB in \(fmt(now() - t0, 1)) s")
            var alignment: Alignment?
            if layout == "timm" {
                var options = AlignRunOptions()
                options.maxSteps = 1
                options.maxHeldOut = 32
                let t = Ops.l2Normalized(Tensor(shape: [n, d], data: fill(n * d)))
                alignment = try AlignRun.run(reader: reader, targets: AlignTargets(embeddings: t, info: SyntheticAlignment.targetInfo(clipWidth: d)),
                                             zeroShot: nil, output: root.appendingPathComponent("align"), options: options, createdBy: "refract-bench")
            }
            var source = try ScoreSource.resolve(reader, alignment: alignment)
            func time(_ props: [ScoreProperty], explained: Bool, record: String? = "") throws {
                let t0 = now()
                _ = try ComponentScoring.score(reader, source: source, properties: props, varianceExplained: explained)
                let s = now() - t0
                print("    \(record == nil ? "(warm-up: shard hashes, page cache) " : record!)\(props.count) propert\(props.count == 1 ? "y" : "ies"), "
                      + "variance_explained \(explained ? "on " : "off"): \(fmt(s, 3)) s (\(fmt(s / Double(props.count), 3)) s per property)")
                if let record {
                    cases.append(ScoreBenchCase(layout: record.isEmpty ? layout : layout + " " + record.trimmingCharacters(in: .whitespaces),
                                                properties: props.count, varianceExplained: explained, seconds: s,
                                                secondsPerProperty: s / Double(props.count)))
                }
            }
            try time([property(0)], explained: false, record: nil)
            for explained in [false, true] {
                try time([property(1)], explained: explained)
                try time((2..<6).map(property), explained: explained)
            }
            if let alignment {
                // What the alignment keeps so that variance_explained needs no aligned components: its
                // one-off cost (paid by refract align), and a pass without it (another run of the model).
                let t0 = now()
                _ = try AlignRun.componentVariance(reader: reader, maps: alignment.maps)
                print("    the alignment's per-component variance (once, in refract align): \(fmt(now() - t0, 2)) s")
                source.traces = nil
                try time([property(1)], explained: true, record: "(without the kept variances) ")
            }
            try? FileManager.default.removeItem(at: run)
        }
        return ScoreBenchResults(images: n, components: c, width: d, runGigabytes: gigabytes, cases: cases)
    }
}
