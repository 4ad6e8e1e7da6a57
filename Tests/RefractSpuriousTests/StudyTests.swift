import Foundation
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan
import XCTest
@testable import RefractSpurious

/// The study on a real (tiny) decomposition of a synthetic Waterbirds layout, checked against
/// computations that do not go through RefractSpurious: the plain image tower for the base model,
/// the stored embeddings and head tensors for mean ablations by hand.
final class StudyTests: XCTestCase {
    var scratch: URL!
    var data: SyntheticWaterbirds!
    var clip: CLIP!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-spurious-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        data = try SyntheticWaterbirds(root: scratch.appendingPathComponent("waterbirds"))
        clip = try data.model()
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    static let classes = ["landbird", "waterbird"]

    func classifier() throws -> ZeroShotClassifier {
        try clip.zeroShotClassifier(classes: Self.classes, templates: ["a photo of a {}.", "a {} in the wild."])
    }

    /// A classifier that splits the images (the tiny model's zero-shot directions put every image
    /// in one class with a wide margin, which would make ablation checks vacuous): the classes are
    /// the mean embedding ± its deviation along head 1.0's variation for the first image,
    /// orthogonalised to the mean, so scores differ by e · v with v centred over the images.
    func splitClassifier(_ reader: StoreReader, rows: [Int]) throws -> ZeroShotClassifier {
        let emb = try reader.tensor("embedding"), attn = try reader.tensor("attn")
        let (l, h, d) = (2, 4, 24), n = Double(rows.count)
        var m = [Double](repeating: 0, count: d), headMean = m
        for r in rows {
            for j in 0..<d {
                m[j] += Double(emb.data[r * d + j]) / n
                headMean[j] += Double(attn.data[((r * l + 1) * h + 0) * d + j]) / n
            }
        }
        var v = (0..<d).map { Double(attn.data[((rows[0] * l + 1) * h + 0) * d + $0]) - headMean[$0] }
        let mm = m.reduce(0) { $0 + $1 * $1 }, vm = zip(v, m).reduce(0) { $0 + $1.0 * $1.1 }
        v = zip(v, m).map { $0 - vm / mm * $1 }
        let scale = mm.squareRoot() / v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let t = (0..<d).map { Float(m[$0] + scale * v[$0]) } + (0..<d).map { Float(m[$0] - scale * v[$0]) }
        return ZeroShotClassifier(classes: Self.classes, templates: ["{}"], textEmbeddings: Tensor(shape: [2, d], data: t))
    }

    func evaluation(_ reader: StoreReader, split: WaterbirdsSplit? = .test) throws -> EvaluationSet {
        try WaterbirdsMetadata.load(data.metadata).join(runPaths: reader.rowImages.map(\.path), runName: reader.run.path, split: split)
    }

    /// Group accuracies (percent) of `scores` [n, 2] against the synthetic layout's own y/place
    /// for the images `indices` (positions in `data.images`).
    func groupAccuracy(_ scores: [[Double]], indices: [Int]) -> [Double?] {
        var images = [Int](repeating: 0, count: 4), correct = images
        for (e, k) in indices.enumerated() {
            let g = 2 * data.images[k].y + data.images[k].place
            images[g] += 1
            let predicted = scores[e][1] > scores[e][0] ? 1 : 0
            if predicted == data.images[k].y { correct[g] += 1 }
        }
        return (0..<4).map { images[$0] > 0 ? 100 * Double(correct[$0]) / Double(images[$0]) : nil }
    }

    /// Scores [n, 2] of embeddings [n, D'] · W, in float64.
    func scores(_ embeddings: [[Double]], _ w: Tensor) -> [[Double]] {
        embeddings.map { e in (0..<2).map { j in (0..<e.count).reduce(0) { $0 + e[$1] * Double(w.data[$1 * 2 + j]) } } }
    }

    func rows(_ t: Tensor, _ indices: [Int]) -> [[Double]] {
        let w = t.count / t.shape[0]
        return indices.map { r in (0..<w).map { Double(t.data[r * w + $0]) } }
    }

    /// Every image's two scores differ by more than `margin`: rounding cannot flip a prediction.
    func assertNoNearTies(_ s: [[Double]], margin: Double = 1e-4, _ what: String) {
        let closest = s.map { abs($0[1] - $0[0]) }.min()!
        XCTAssertGreaterThan(closest, margin, "\(what): a near tie makes the prediction check fragile; change the fixture")
    }

    // MARK: Base model and one head, by hand

    func testBaseMatchesThePlainImageTowerAndOneHeadMatchesAblationByHand() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run"))
        let eval = try evaluation(reader)
        XCTAssertEqual(eval.count, 20)
        XCTAssertEqual(eval.metadataRowsNotInRun, 3)
        XCTAssertEqual(eval.splitRowsNotInRun, 2)
        XCTAssertEqual(eval.runRowsOutsideSplit, 4)
        let zs = try splitClassifier(reader, rows: eval.rows), w = zs.weights
        let scorer = try GroupScorer(reader, evaluation: eval, classifier: w)
        // Row r of the run is image r of the layout (the list is in layout order).
        XCTAssertEqual(reader.rowImages.map { URL(fileURLWithPath: $0.path).lastPathComponent },
                       data.images.map { URL(fileURLWithPath: $0.name).lastPathComponent })
        let indices = eval.rows

        // Base: the plain image tower (no decomposition involved).
        let files = indices.map { data.root.appendingPathComponent(data.images[$0].name) }
        let plain = scores(rows(try clip.encodeImageFiles(files), Array(0..<files.count)), w)
        assertNoNearTies(plain, "base")
        XCTAssertEqual(Set(plain.map { $0[1] > $0[0] }).count, 2, "both classes are predicted")
        let base = scorer.scores(ablating: [])
        for e in 0..<eval.count {
            for j in 0..<2 { XCTAssertEqual(base[e * 2 + j], plain[e][j], accuracy: 1e-5 * max(1, abs(plain[e][j])), "image \(e)") }
        }
        let expectedBase = groupAccuracy(plain, indices: indices)
        let summary = AccuracySummary(predictions: scorer.predictions(base), evaluation: eval, classes: Self.classes)
        XCTAssertEqual(summary.groups.map(\.accuracy), expectedBase)
        XCTAssertEqual(summary.groups.map(\.images), [5, 5, 5, 5])
        XCTAssertEqual(summary.groups.map(\.name), ["landbird on land", "landbird on water", "waterbird on land", "waterbird on water"])
        let present = expectedBase.compactMap { $0 }
        XCTAssertEqual(summary.worstGroupAccuracy, present.min()!, accuracy: 1e-12)
        XCTAssertEqual(summary.meanOverGroups, present.reduce(0, +) / 4, accuracy: 1e-9)

        // One head mean-ablated by hand: embedding − attn[l,h] + mean over the evaluated rows.
        let embedding = try reader.tensor("embedding"), attn = try reader.tensor("attn")
        let (l, h, d) = (2, 4, 24)
        var changedAny = false
        for layer in 0..<l {
            for head in 0..<h {
                var mean = [Double](repeating: 0, count: d)
                for r in indices { for j in 0..<d { mean[j] += Double(attn.data[((r * l + layer) * h + head) * d + j]) / Double(indices.count) } }
                let ablated = indices.map { r in
                    (0..<d).map { j in Double(embedding.data[r * d + j]) - Double(attn.data[((r * l + layer) * h + head) * d + j]) + mean[j] }
                }
                let expected = scores(ablated, w)
                assertNoNearTies(expected, "head \(layer).\(head)")
                let got = scorer.scores(ablating: [HeadID(layer: layer, head: head)])
                for e in 0..<eval.count { XCTAssertEqual(got[e * 2], expected[e][0], accuracy: 1e-5 * max(1, abs(expected[e][0]))) }
                let acc = AccuracySummary(predictions: scorer.predictions(got), evaluation: eval, classes: Self.classes)
                XCTAssertEqual(acc.groups.map(\.accuracy), groupAccuracy(expected, indices: indices), "head \(layer).\(head)")
                if scorer.predictions(got) != scorer.predictions(base) { changedAny = true }
            }
        }
        XCTAssertTrue(changedAny, "no single-head ablation changes a prediction: the check above would be vacuous")
    }

    func testGandelsmanConventionScoresTheNormalisedEmbedding() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run-g"), convention: .gandelsman2024)
        XCTAssertFalse(reader.manifest.tensors.contains { $0.name == "attn_bias" })
        let eval = try evaluation(reader, split: nil)
        let w = try classifier().weights
        let scorer = try GroupScorer(reader, evaluation: eval, classifier: w)
        let plain = rows(Ops.l2Normalized(try clip.encodeImageFiles(data.images.map { data.root.appendingPathComponent($0.name) })),
                         Array(0..<data.count))
        let expected = scores(plain, w)
        let got = scorer.scores(ablating: [])
        for e in 0..<eval.count { for j in 0..<2 { XCTAssertEqual(got[e * 2 + j], expected[e][j], accuracy: 1e-5) } }
    }

    // MARK: Paper ablations by hand

    func testPaperAblationsMatchByHand() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run"))
        let eval = try evaluation(reader)
        let zs = try splitClassifier(reader, rows: eval.rows), w = zs.weights
        let (l, h, d) = (2, 4, 24)
        let indices = eval.rows
        let embedding = try reader.tensor("embedding"), attn = try reader.tensor("attn")
        let pre = try reader.tensor("pre"), mlp = try reader.tensor("mlp")
        // Kept layers 1: layer 0's heads, pre and both MLPs are ablated; chosen head 1.2 too.
        func component(_ r: Int, _ j: Int) -> (pre: Double, mlp: Double, layer0: Double, head12: Double) {
            var m = 0.0, a0 = 0.0
            for layer in 0..<l { m += Double(mlp.data[(r * l + layer) * d + j]) }
            for head in 0..<h { a0 += Double(attn.data[((r * l + 0) * h + head) * d + j]) }
            return (Double(pre.data[r * d + j]), m, a0, Double(attn.data[((r * l + 1) * h + 2) * d + j]))
        }
        var means = [(Double, Double, Double, Double)](repeating: (0, 0, 0, 0), count: d)
        for r in indices {
            for j in 0..<d {
                let c = component(r, j), n = Double(indices.count)
                means[j].0 += c.pre / n; means[j].1 += c.mlp / n; means[j].2 += c.layer0 / n; means[j].3 += c.head12 / n
            }
        }
        let byHand = indices.map { r in
            (0..<d).map { j -> Double in
                let c = component(r, j)
                return Double(embedding.data[r * d + j]) - c.pre - c.mlp - c.layer0 - c.head12
                    + means[j].0 + means[j].1 + means[j].2 + means[j].3
            }
        }
        let expected = scores(byHand, w)
        assertNoNearTies(expected, "paper ablations")
        var options = SpuriousOptions()
        options.paperAblations = true
        options.paperKeptLayers = 1
        options.randomDraws = 3
        let report = try SpuriousStudy.run(reader, evaluation: eval, metadata: data.metadata.path, classifier: zs,
                                           choice: try HeadSelection.explicit([HeadID(layer: 1, head: 2)]), options: options)
        XCTAssertEqual(report.settings.map(\.id), ["base", "paper_ablations", "ablated"])
        XCTAssertEqual(report.paperAblations?.ablatedLayers, [0])
        let ablated = report.settings[2]
        XCTAssertEqual(ablated.heads, ["1.2"])
        XCTAssertTrue(ablated.paperAblations)
        XCTAssertEqual(ablated.accuracy.groups.map(\.accuracy), groupAccuracy(expected, indices: indices))
        // The random control draws from layer 1 only, 1 head per draw, with the paper ablations.
        let random = try XCTUnwrap(report.random)
        XCTAssertEqual(random.poolSize, 4)
        XCTAssertEqual(random.draws.count, 3)
        XCTAssertTrue(random.draws.allSatisfy { $0.heads.count == 1 && $0.heads[0].hasPrefix("1.") && $0.paperAblations })
        XCTAssertEqual(random.maxWorstGroup, random.draws.map(\.accuracy.worstGroupAccuracy).max()!)
        XCTAssertEqual(random.meanAverage, random.draws.map(\.accuracy.average).reduce(0, +) / 3, accuracy: 1e-9)
        XCTAssertEqual(report.evaluation.imagesPerGroup["waterbird on water"], 5)
        XCTAssertEqual(report.evaluation.split, "test")
    }

    // MARK: Random draws

    /// The draws are made one at a time: the first few of a billion cost nothing, and they are the
    /// first draws of the eager list.
    func testRandomDrawsAreMadeLazily() throws {
        let pool = (0..<12).flatMap { l in (0..<12).map { HeadID(layer: l, head: $0) } }
        let started = Date()
        let first = Array(SpuriousStudy.lazyRandomDraws(pool: pool, k: 5, draws: 1_000_000_000, seed: 7).prefix(3))
        XCTAssertLessThan(Date().timeIntervalSince(started), 1)
        XCTAssertEqual(first, SpuriousStudy.randomDraws(pool: pool, k: 5, draws: 3, seed: 7))
        let seq = SpuriousStudy.lazyRandomDraws(pool: pool, k: 5, draws: 4, seed: 7)
        XCTAssertEqual(Array(seq), Array(seq), "each iteration starts from the seed")
    }

    func testRandomDrawsAreSeededDistinctAndFromThePool() throws {
        let pool = (8..<12).flatMap { l in (0..<12).map { HeadID(layer: l, head: $0) } }
        let a = SpuriousStudy.randomDraws(pool: pool, k: 8, draws: 10, seed: 42)
        XCTAssertEqual(a, SpuriousStudy.randomDraws(pool: pool, k: 8, draws: 10, seed: 42))
        XCTAssertNotEqual(a, SpuriousStudy.randomDraws(pool: pool, k: 8, draws: 10, seed: 43))
        XCTAssertEqual(Set(a).count, 10, "draws differ from one another")
        for draw in a {
            XCTAssertEqual(draw.count, 8)
            XCTAssertEqual(Set(draw).count, 8)
            XCTAssertEqual(draw, draw.sorted())
            XCTAssertTrue(draw.allSatisfy(pool.contains))
        }
        // Every head of the pool can be drawn (1000 draws of 1 from 48: each expected ~21 times).
        let counts = Dictionary(grouping: SpuriousStudy.randomDraws(pool: pool, k: 1, draws: 1000, seed: 1).map { $0[0] }, by: { $0 }).mapValues(\.count)
        XCTAssertEqual(counts.count, 48)
        XCTAssertLessThan(counts.values.max()!, 45)
        // A draw of the whole pool is the whole pool.
        XCTAssertEqual(SpuriousStudy.randomDraws(pool: pool, k: 48, draws: 1, seed: 9)[0], pool)
        let (p, words) = SpuriousStudy.randomPool(layers: 12, heads: 12, options: { var o = SpuriousOptions(); o.paperAblations = true; return o }())
        XCTAssertEqual(p, pool)
        XCTAssertTrue(words.contains("layers 8...11"))
    }

    func testStudyIsReproducibleAndReportsEverySetting() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run"))
        let eval = try evaluation(reader)
        var options = SpuriousOptions()
        options.randomDraws = 4
        options.seed = 11
        let choice = try HeadSelection.explicit([HeadID(layer: 1, head: 3), HeadID(layer: 0, head: 1)])
        let zs = try splitClassifier(reader, rows: eval.rows)
        let a = try SpuriousStudy.run(reader, evaluation: eval, metadata: data.metadata.path, classifier: zs, choice: choice, options: options)
        let b = try SpuriousStudy.run(reader, evaluation: eval, metadata: data.metadata.path, classifier: zs, choice: choice, options: options)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.settings.map(\.id), ["base", "ablated"])
        XCTAssertEqual(a.heads.map(\.name), ["0.1", "1.3"])
        let random = try XCTUnwrap(a.random)
        XCTAssertEqual(random.poolSize, 8)
        XCTAssertEqual(random.draws.map(\.heads), SpuriousStudy.randomDraws(pool: (0..<2).flatMap { l in (0..<4).map { HeadID(layer: l, head: $0) } },
                                                                           k: 2, draws: 4, seed: 11).map { $0.map(\.description) })
        // Each draw's accuracy is that of ablating its heads.
        let scorer = try GroupScorer(reader, evaluation: eval, classifier: zs.weights)
        for draw in random.draws {
            let heads = try HeadID.parseList(draw.heads.joined(separator: ","), layers: 2, heads: 4)
            XCTAssertEqual(draw.accuracy, AccuracySummary(predictions: scorer.predictions(scorer.scores(ablating: heads)),
                                                          evaluation: eval, classes: Self.classes))
        }
        // Outputs: both files, JSON decodes back, Markdown has the table and the published numbers.
        let out = scratch.appendingPathComponent("out")
        try SpuriousRendering.write(a, to: out)
        let decoded = try JSONDecoder().decode(SpuriousReport.self, from: Data(contentsOf: out.appendingPathComponent("spurious.json")))
        XCTAssertEqual(decoded, a)
        let md = try String(contentsOf: out.appendingPathComponent("spurious.md"), encoding: .utf8)
        XCTAssertTrue(md.contains("| setting | landbird on land | landbird on water | waterbird on land | waterbird on water |"), md)
        XCTAssertTrue(md.contains("| ViT-L-14 | 47.70 | 57.70 | 72.90 |"), md)
        XCTAssertTrue(md.contains("random heads, mean of 4"), md)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(), ["spurious.json", "spurious.md"])
    }

    // MARK: Head selection

    func testHeadSelectionByTextVarianceAndByTextSpan() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run"))
        let property = Ops.l2Normalized(clip.encodeTexts(["a photo taken near water"])).data
        let ranking = try HeadRanking.byTextVariance(reader, text: property)
        let all = try HeadSelection.byTextVariance(reader, property: "water", direction: property, top: 3)
        XCTAssertEqual(all.heads.map(\.id), ranking.prefix(3).map { HeadID(layer: $0.layer, head: $0.head) })
        XCTAssertEqual(all.heads.map(\.rank), [1, 2, 3])
        XCTAssertEqual(all.heads[0].variance, ranking[0].variance)
        XCTAssertEqual(all.summary.candidateCount, 8)
        let last = try HeadSelection.byTextVariance(reader, property: "water", direction: property, top: 2, layers: [1])
        XCTAssertEqual(last.heads.map(\.id), ranking.filter { $0.layer == 1 }.prefix(2).map { HeadID(layer: $0.layer, head: $0.head) })
        XCTAssertEqual(last.summary.candidateCount, 4)
        XCTAssertThrowsError(try HeadSelection.byTextVariance(reader, property: "water", direction: property, top: 5, layers: [1])) {
            XCTAssertTrue("\($0)".contains("only 4 candidates"), "\($0)")
        }

        // TextSpan: score = Σ variance × cosine of centred embeddings, computed here independently.
        let texts = ["a lake", "a forest", "the ocean shore", "a red bird"]
        let heads = [
            HeadReport(layer: 1, head: 0, totalVariance: 1, descriptions: [step(1, texts[0], 0.30), step(2, texts[1], 0.10)]),
            HeadReport(layer: 1, head: 2, totalVariance: 1, descriptions: [step(1, texts[3], 0.50), step(2, texts[1], 0.05)]),
            HeadReport(layer: 0, head: 1, totalVariance: 1, descriptions: [step(1, texts[2], 0.40), step(2, texts[0], 0.20)]),
        ]
        let report = TextSpanReport(run: reader.run.path, model: reader.manifest.model.id, weightsSHA256: reader.manifest.model.weightsSHA256,
                                     convention: "faithful", images: 24,
                                     pool: PoolSummary(path: "p", sha256: "", lines: 4, blank: 0, duplicates: 0, truncated: 0, used: 4),
                                     perHead: 2, rank: 4, heads: heads)
        XCTAssertEqual(HeadSelection.descriptions(of: report), ["a lake", "a forest", "a red bird", "the ocean shore"])
        let order = HeadSelection.descriptions(of: report)
        let e = Ops.l2Normalized(clip.encodeTexts(order)), p = Ops.l2Normalized(clip.encodeTexts(["water"])).data
        let choice = try HeadSelection.byTextSpan(report, file: "ts.json", property: "water", propertyEmbedding: p, descriptionEmbeddings: e,
                                                  top: 3, runLayers: 2, runHeads: 4)
        let mean = (0..<24).map { j in (0..<4).reduce(0.0) { $0 + Double(e.data[$1 * 24 + j]) } / 4 }
        func cosine(_ text: String) -> Double {
            let i = order.firstIndex(of: text)!
            let a = (0..<24).map { Double(e.data[i * 24 + $0]) - mean[$0] }, b = (0..<24).map { Double(p[$0]) - mean[$0] }
            let dot = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
            return dot / (a.reduce(0) { $0 + $1 * $1 }.squareRoot() * b.reduce(0) { $0 + $1 * $1 }.squareRoot())
        }
        let expected = heads.map { h in (HeadID(layer: h.layer, head: h.head), h.descriptions.reduce(0) { $0 + $1.varianceExplained * cosine($1.text) }) }
            .sorted { $0.1 > $1.1 }
        XCTAssertEqual(choice.heads.map(\.id), expected.map(\.0))
        for (got, want) in zip(choice.heads, expected) { XCTAssertEqual(got.score!, want.1, accuracy: 1e-6) }
        XCTAssertEqual(choice.heads[0].descriptions?.count, 2)
        XCTAssertTrue(choice.heads[0].reason.contains("TextSpan match"), choice.heads[0].reason)
        // Restricted to layer 1; heads that the run does not have.
        let restricted = try HeadSelection.byTextSpan(report, file: "ts.json", property: "water", propertyEmbedding: p, descriptionEmbeddings: e,
                                                      top: 1, layers: [1], runLayers: 2, runHeads: 4)
        XCTAssertEqual(restricted.heads.map(\.layer), [1])
        XCTAssertThrowsError(try HeadSelection.byTextSpan(report, file: "ts.json", property: "water", propertyEmbedding: p,
                                                          descriptionEmbeddings: e, top: 1, runLayers: 1, runHeads: 4)) {
            XCTAssertTrue("\($0)".contains("ts.json") && "\($0)".contains("does not exist"), "\($0)")
        }
        // A report of another model is refused.
        var other = report
        other.weightsSHA256 = "0123456789abcdef"
        XCTAssertThrowsError(try HeadSelection.requireSameModel(other, file: "ts.json", as: reader)) {
            XCTAssertTrue("\($0)".contains("ts.json") && "\($0)".contains("0123456789ab"), "\($0)")
        }
        XCTAssertNoThrow(try HeadSelection.requireSameModel(report, file: "ts.json", as: reader))
    }

    func step(_ i: Int, _ text: String, _ v: Double) -> DescriptionStep {
        DescriptionStep(step: i, text: text, line: 0, varianceExplained: v, cumulative: v)
    }

    // MARK: Bad inputs

    func testBadHeadsClassesAndRuns() throws {
        let reader = try data.decompose(clip, into: scratch.appendingPathComponent("run"))
        let eval = try evaluation(reader)
        let good = try HeadSelection.explicit([HeadID(layer: 1, head: 0)])
        // A head the run does not have.
        XCTAssertThrowsError(try SpuriousStudy.run(reader, evaluation: eval, metadata: "m", classifier: classifier(),
                                                   choice: try HeadSelection.explicit([HeadID(layer: 5, head: 0)]))) {
            XCTAssertTrue("\($0)".contains("head 5.0 does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try HeadID.parseList("1.9", layers: 2, heads: 4)) { XCTAssertTrue("\($0)".contains("does not exist"), "\($0)") }
        XCTAssertThrowsError(try HeadSelection.explicit([])) { XCTAssertTrue("\($0)".contains("no heads"), "\($0)") }
        // Three classes.
        let three = try clip.zeroShotClassifier(classes: ["landbird", "waterbird", "seabird"])
        XCTAssertThrowsError(try SpuriousStudy.run(reader, evaluation: eval, metadata: "m", classifier: three, choice: good)) {
            XCTAssertTrue("\($0)".contains("exactly 2"), "\($0)")
        }
        // More chosen heads than the random pool holds.
        var options = SpuriousOptions()
        options.paperAblations = true
        options.paperKeptLayers = 1
        let five = try HeadSelection.explicit((0..<4).map { HeadID(layer: 1, head: $0) } + [HeadID(layer: 0, head: 0)])
        XCTAssertThrowsError(try SpuriousStudy.run(reader, evaluation: eval, metadata: "m", classifier: classifier(), choice: five, options: options)) {
            XCTAssertTrue("\($0)".contains("draws from only 4"), "\($0)")
        }
        options.randomDraws = 0
        XCTAssertNil(try SpuriousStudy.run(reader, evaluation: eval, metadata: "m", classifier: classifier(), choice: five, options: options).random)
        // Absurd draw counts are refused before any draw is made (1e9 once built every draw in memory).
        for draws in [1_000_000_000, SpuriousOptions.maxRandomDraws + 1, -1] {
            var absurd = SpuriousOptions()
            absurd.randomDraws = draws
            let started = Date()
            XCTAssertThrowsError(try SpuriousStudy.run(reader, evaluation: eval, metadata: "m", classifier: classifier(), choice: good,
                                                       options: absurd)) {
                XCTAssertTrue("\($0)".contains("randomDraws: \(draws) is out of range: allowed 0...\(SpuriousOptions.maxRandomDraws)"), "\($0)")
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        }
        // A run whose images the metadata does not list.
        let stray = scratch.appendingPathComponent("stray.csv")
        try "path\n\(fixtures.appendingPathComponent("inputs/img0_40x32.png").path)\n".write(to: stray, atomically: true, encoding: .utf8)
        _ = try DecomposeRun.run(model: clip, dataset: try ImageDataset.load([data.list.path, stray.path]),
                                 output: scratch.appendingPathComponent("run2"), options: DecomposeRunOptions())
        let mixed = try StoreReader(run: scratch.appendingPathComponent("run2"))
        XCTAssertThrowsError(try evaluation(mixed)) {
            XCTAssertTrue("\($0)".contains("1 image of") && "\($0)".contains("img0_40x32.png"), "\($0)")
        }
    }
}
