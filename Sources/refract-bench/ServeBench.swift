// refract-bench --only serve: the explorer (`refract serve`) over a synthetic ViT-B/16-shaped CLIP run
// of --serve-images N images (default 10,000: pre, 12 MLPs, 12×12 heads, 2 bias terms, D' = 512,
// float16, about 1.6 GB, in a temporary directory, removed after): the start-up pass (each
// component's covariance), then one ranking of every component along a text direction, against
// the reference measured in the same run: what `refract heads` does for one text, a pass over the
// run (HeadRanking.byTextVariance). The text tower's forward (a few ms for ViT-B/16's) is not in
// either figure.

import Foundation
import RefractExplore
import RefractStore
import RefractTensor
import RefractTextSpan

struct ServeBenchResults: Codable {
    var images: Int
    var components: Int
    var runGigabytes: Double
    var startupSeconds: Double
    var rankMilliseconds: Double
    var headsPassMilliseconds: Double
}

enum ServeBench {
    static func run(images requested: Int) throws -> ServeBenchResults {
        try BLAS.load()
        let (layers, heads, d) = (12, 12, 512)
        let perImage = (1 + layers * (heads + 2) + 1) * d * 2
        let (n, _) = try SyntheticHeadRun.imagesThatFit(section: "serve", requested: requested, perImage: perImage, margin: 1 << 30, what: "the run")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("refract-bench-serve-\(getpid())")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root); print("  removed \(root.path)") }
        print("\nExplorer (refract serve): \(n) images, ViT-B/16 CLIP layout (\(layers)×\(heads) heads, D' = \(d)), float16, \(BLAS.threads) threads")
        var state: UInt32 = 2024
        func fill(_ count: Int) -> [Float] {
            var out = [Float](repeating: 0, count: count)
            for i in 0..<count { state = state &* 1_664_525 &+ 1_013_904_223; out[i] = Float(Int32(bitPattern: state)) * (1 / 2_147_483_648.0) }
            return out
        }
        let run = root.appendingPathComponent("run")
        let specs = [StoreTensorSpec(name: "pre", shape: [d], dtype: .float16), StoreTensorSpec(name: "attn", shape: [layers, heads, d], dtype: .float16),
                     StoreTensorSpec(name: "attn_bias", shape: [layers, d], dtype: .float16), StoreTensorSpec(name: "mlp", shape: [layers, d], dtype: .float16),
                     StoreTensorSpec(name: "readout_bias", shape: [d], dtype: .float16)]
        let header = StoreHeader(model: StoreModelInfo(id: "synthetic/vit-b-16", layout: "openCLIP", weightsSHA256: String(repeating: "6", count: 64), weightFiles: []),
                                 convention: "faithful", dimensions: ["layers": layers, "heads": heads, "embedDim": d], tensors: specs,
                                 images: (0..<n).map { StoreImage(path: "/synthetic/\($0).png") }, shardSize: 1000)
        let t0 = now()
        let w = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "refract-bench", resume: false)
        for (s, r) in w.shardRanges.enumerated() {
            var rows: [String: Tensor] = [:]
            for spec in specs { rows[spec.name] = Tensor(shape: [r.count] + spec.shape, data: fill(r.count * spec.elementCount)) }
            try w.writeShard(s, imageIndices: Array(r), rows: rows, skipped: [])
        }
        try w.finish()
        let reader = try StoreReader(run: run)
        try reader.verifyChecksums()
        let gb = Double(MemoryBench.directorySize(run)) / 1e9
        print("  wrote \(fmt(gb, 2)) GB in \(fmt(now() - t0, 1)) s (shards verified, in the page cache)")

        let t1 = now()
        let explorer = try Explorer(reader: reader, alignment: nil, textspan: nil, clip: nil, heatmaps: false)
        let startup = now() - t1
        print("  start-up pass (covariances of \(explorer.components.count) components): \(fmt(startup, 2)) s")
        let t = Ops.l2Normalized(Tensor(shape: [1, d], data: fill(d))).data
        var ranked: [ExplorerRanked] = []
        let rank = measure(minSeconds: 2) { ranked = (try? explorer.rank(direction: t, top: 1000)) ?? [] }
        var reference: [HeadTextVariance] = []
        let pass = measure(minSeconds: 2, minRuns: 2) { reference = (try? HeadRanking.byTextVariance(reader, text: t)) ?? [] }
        // The same heads, the same variances.
        var worst = 0.0
        for r in reference {
            if let mine = ranked.first(where: { $0.name == "attn.\(r.layer).\(r.head)" }) {
                worst = max(worst, abs(mine.variance - r.variance) / max(r.variance, 1e-12))
            } else { worst = .infinity }
        }
        print("  ranking every component along a text: \(fmt(rank * 1000, 2)) ms;  refract heads' pass (reference): \(fmt(pass * 1000, 0)) ms"
              + "  (\(fmt(pass / rank, 0))x; largest relative difference of the heads' variances \(String(format: "%.1e", worst)))")
        return ServeBenchResults(images: n, components: explorer.components.count, runGigabytes: gb, startupSeconds: startup,
                                 rankMilliseconds: rank * 1000, headsPassMilliseconds: pass * 1000)
    }
}
