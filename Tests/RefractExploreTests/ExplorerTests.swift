import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan
import XCTest
@testable import RefractExplore

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// The tiny CLIP fixture model and a run of it over the fixture images (labelled, with class names).
enum ExplorerFixture {
    static func model() throws -> CLIP {
        let dir = fixtureRoot.appendingPathComponent("models/openclip-tiny")
        return try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: "openclip-tiny"))
    }

    /// A run of the fixture images in two class folders (cat: 2, dog: 2), shards of 3.
    static func run(in dir: URL, model: CLIP) throws -> StoreReader {
        let inputs = fixtureRoot.appendingPathComponent("models/inputs")
        let names = try FileManager.default.contentsOfDirectory(atPath: inputs.path).filter { $0.hasSuffix(".png") }.sorted()
        for (i, name) in names.enumerated() {
            let folder = dir.appendingPathComponent("data/\(i < 2 ? "cat" : "dog")")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: inputs.appendingPathComponent(name), to: folder.appendingPathComponent(name))
        }
        var options = DecomposeRunOptions()
        options.shardSize = 3
        let run = dir.appendingPathComponent("run")
        _ = try DecomposeRun.run(model: model, dataset: try ImageDataset.load([dir.appendingPathComponent("data").path]),
                                 output: run, options: options)
        return try StoreReader(run: run)
    }
}

final class ExplorerTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-explore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try BLAS.load()
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testAnswersOverACLIPRun() throws {
        let model = try ExplorerFixture.model()
        let reader = try ExplorerFixture.run(in: dir, model: model)
        let explorer = try Explorer(reader: reader, alignment: nil, textspan: nil, clip: model, heatmaps: true)
        let info = explorer.runInfo()
        XCTAssertEqual(info.family, "clip")
        XCTAssertEqual(info.rows, 4)
        XCTAssertTrue(info.text)
        XCTAssertTrue(info.heatmaps)
        XCTAssertEqual(info.blocks.reduce(0) { $0 + $1.share }, 1, accuracy: 1e-9)
        let list = explorer.componentList().components
        XCTAssertEqual(list.count, info.componentCount)
        XCTAssertEqual(list.map(\.name), try RunComponents.describe(reader).map(\.name))

        // Each component's variance is its stored vectors' (a direct computation over the run).
        let heads = list.filter { $0.kind == "head" }
        XCTAssertEqual(heads.count, 8)
        let attn = try reader.tensor("attn")                                                  // [N, L, H, D]
        let d = attn.shape[3], h = attn.shape[2]
        for c in heads {
            let slot = c.block! * h + c.head!
            var total = 0.0
            for j in 0..<d {
                let xs = (0..<4).map { Double(attn.data[($0 * attn.shape[1] * h + slot) * d + j]) }
                let m = xs.reduce(0, +) / 4
                total += xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / 4
            }
            XCTAssertEqual(c.variance, total, accuracy: 1e-5 * max(1, total), c.name)
        }

        // Ranking by a text: the heads' variances along it are those of `refract heads` (one pass over the run).
        let ranking = try explorer.rank(text: "a photo of a dog", top: 1000)
        XCTAssertEqual(ranking.components.count, list.filter { !$0.constant }.count)
        XCTAssertFalse(ranking.components.contains { $0.name == "readout_bias" }, "a constant has no variance to rank")
        XCTAssertEqual(ranking.components.map(\.variance), ranking.components.map(\.variance).sorted(by: >))
        let t = Ops.l2Normalized(try model.encodeTextsChecked(["a photo of a dog"], labels: ["t"])).data
        let reference = try HeadRanking.byTextVariance(reader, text: t)
        // Tolerance: the explorer's Σ_c is float32 (ssyrk, then an sgemv), so its error is float32
        // rounding of the component's whole variance (tr Σ_c), not of the part along t, which can be
        // much smaller; 1e-5 of tr Σ_c covers it on every BLAS kernel set, with margin.
        for r in reference {
            let mine = try XCTUnwrap(ranking.components.first { $0.name == "attn.\(r.layer).\(r.head)" })
            let own = try XCTUnwrap(list.first { $0.name == mine.name }).variance
            XCTAssertEqual(mine.variance, r.variance, accuracy: 1e-5 * own, mine.name)
        }

        // Contributions along a text sum to the embedding along it (faithful: the components sum to it).
        let emb = try reader.tensor("embedding")
        for row in 0..<4 {
            let c = try explorer.contributions(row: row, text: "a photo of a dog")
            var dot = 0.0
            for j in 0..<emb.shape[1] { dot += Double(emb.data[row * emb.shape[1] + j]) * Double(t[j]) }
            XCTAssertEqual(c.total, dot, accuracy: 1e-5, "row \(row)")
            XCTAssertEqual(c.components.count, list.count)
        }

        // A component's page: directions by decreasing variance, within the component's own; rows ranked.
        let k = heads[0].index
        let detail = try explorer.component(k)
        XCTAssertFalse(detail.directions.isEmpty)
        XCTAssertEqual(detail.directions.map(\.variance), detail.directions.map(\.variance).sorted(by: >))
        XCTAssertLessThanOrEqual(detail.directions.reduce(0) { $0 + $1.variance }, heads[0].variance * (1 + 1e-5))
        for dir in detail.directions {
            XCTAssertEqual(dir.top.map(\.value), dir.top.map(\.value).sorted(by: >))
            XCTAssertTrue(dir.top.allSatisfy { $0.value > 0 } && dir.bottom.allSatisfy { $0.value < 0 })
            XCTAssertEqual(dir.bottom.map(\.value), dir.bottom.map(\.value).sorted())
        }
        // Every component's page answers (every stored tensor's slices: pre, MLPs, heads, biases).
        for c in list {
            let page = try explorer.component(c.index)
            XCTAssertEqual(page.component, c)
            XCTAssertEqual(page.directions.isEmpty, c.constant, c.name)
            XCTAssertEqual(try explorer.neighbors(component: c.index, row: 0, top: 3).neighbors.count, 3, c.name)
        }
        let near = try explorer.neighbors(component: k, row: 1, top: 10)
        XCTAssertEqual(near.neighbors.count, 3)
        XCTAssertFalse(near.neighbors.contains { $0.row == 1 })
        XCTAssertEqual(near.neighbors.map(\.similarity), near.neighbors.map(\.similarity).sorted(by: >))

        // An image: name only, its label, top classes from the run's class names.
        let image = try explorer.image(2)
        XCTAssertEqual(image.label, "dog")
        XCTAssertFalse(image.name.contains("/"))
        XCTAssertEqual(Set(image.classes!.map(\.name)), ["cat", "dog"])
        let png = try explorer.imagePNG(row: 0)
        XCTAssertEqual(Array(png.prefix(4)), [0x89, 0x50, 0x4E, 0x47])
        let heat = try explorer.heatmapPNG(row: 0, text: "a dog", components: heads.prefix(3).map(\.index))
        XCTAssertEqual(Array(heat.prefix(4)), [0x89, 0x50, 0x4E, 0x47])

        // Refusals, each with its status.
        func refused(_ status: Int, _ fragment: String, _ body: () throws -> Any, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { e in
                guard let e = e as? ExplorerError else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(e.status, status, e.message, line: line)
                XCTAssertTrue(e.message.contains(fragment), e.message, line: line)
            }
        }
        refused(404, "no component 999") { try explorer.component(999) }
        refused(404, "no image row -1") { try explorer.image(-1) }
        refused(404, "no image row 4") { try explorer.imagePNG(row: 4) }
        refused(400, "empty") { try explorer.rank(text: "   ", top: 5) }
        refused(400, "top 0") { try explorer.rank(text: "dog", top: 0) }
        refused(400, "top 100000") { try explorer.neighbors(component: k, row: 0, top: 100_000) }
        refused(413, "characters") { try explorer.rank(text: String(repeating: "a", count: 5000), top: 5) }
        refused(422, "not an attention head") { try explorer.heatmapPNG(row: 0, text: "dog", components: [list.first { $0.kind == "mlp" }!.index]) }
        refused(400, "at least one") { try explorer.heatmapPNG(row: 0, text: "dog", components: []) }

        // Without a text model: everything but text, which is refused as unavailable (409).
        let plain = try Explorer(reader: reader, alignment: nil, textspan: nil, clip: nil, heatmaps: false)
        XCTAssertFalse(plain.runInfo().text)
        XCTAssertEqual(plain.componentList(), explorer.componentList())
        refused(409, "--model") { try plain.rank(text: "dog", top: 3) }
        refused(409, "--model") { try plain.heatmapPNG(row: 0, text: "dog", components: [heads[0].index]) }
    }

    func testTextSpanDescriptionsAreShownAndAReportOfAnotherRunIsRefused() throws {
        let model = try ExplorerFixture.model()
        let reader = try ExplorerFixture.run(in: dir, model: model)
        let step = DescriptionStep(step: 1, text: "a furry animal", line: 0, varianceExplained: 0.4, cumulative: 0.4)
        var report = TextSpanReport(run: reader.run.path, model: "openclip-tiny", weightsSHA256: reader.manifest.model.weightsSHA256,
                                    convention: "faithful", images: 4, pool: PoolSummary(path: "pool.txt", sha256: String(repeating: "0", count: 64), lines: 1, blank: 0, duplicates: 0, truncated: 0, used: 1),
                                    perHead: 1, rank: 1, heads: [HeadReport(layer: 1, head: 2, totalVariance: 1, descriptions: [step])])
        let explorer = try Explorer(reader: reader, alignment: nil, textspan: report, clip: nil, heatmaps: false)
        let c = try XCTUnwrap(explorer.componentList().components.first { $0.name == "attn.1.2" })
        XCTAssertEqual(c.descriptions, [ExplorerDescription(text: "a furry animal", varianceExplained: 0.4)])
        XCTAssertTrue(explorer.runInfo().textspan)
        report.images = 5
        XCTAssertThrowsError(try Explorer(reader: reader, alignment: nil, textspan: report, clip: nil, heatmaps: false)) {
            XCTAssertTrue("\($0)".contains("another run"), "\($0)")
        }
    }
}
