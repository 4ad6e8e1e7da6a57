import Foundation
import RefractAlign
import RefractStore
import RefractTensor
@testable import RefractTextSpan
import RefractTestSupport
import XCTest

/// TextSpan and the text-variance ranking on a non-CLIP run read through an alignment: the same
/// numbers as on the aligned contributions a_c = x_c·W_c + b/C computed by hand.
final class AlignedTextSpanTests: ScratchTestCase {
    /// A synthetic run (4 components, d = 10, D = 8, 60 images) and a short alignment of it.
    func alignedRun() throws -> AlignedRun {
        let (reader, alignment, _) = try SyntheticAlignment.alignedRun(in: scratch, shape: .init(images: 60, components: 4, width: 10, clipWidth: 8,
                                                                                                 shardSize: 25), seed: 5, epochs: 3)
        return try AlignedRun(reader: reader, alignment: try Alignment.load(alignment.directory))
    }

    /// a_c [N, D] by hand, float64 then rounded.
    func handAligned(_ a: AlignedRun, _ c: Int) throws -> Tensor {
        let x = try a.reader.tensor("components")                                      // [N, C, d]
        let m = a.alignment.maps
        let n = a.reader.rowCount, d = m.width, e = m.clipWidth, cc = m.components
        var out = [Float](repeating: 0, count: n * e)
        for i in 0..<n {
            for q in 0..<e {
                var s = Double(m.bias[q]) / Double(cc)
                for k in 0..<d { s += Double(x.data[(i * cc + c) * d + k]) * Double(m.weights[(c * d + k) * e + q]) }
                out[i * e + q] = Float(s)
            }
        }
        return Tensor(shape: [n, e], data: out)
    }

    func testAlignedContributionsAreXWPlusBiasShare() throws {
        let a = try alignedRun()
        var seen = [Int]()
        try a.forEachComponent([3, 0, 2], budgetBytes: 1) { c, got in
            seen.append(c)
            let want = try handAligned(a, c)
            XCTAssertEqual(got.shape, want.shape)
            for (g, w) in zip(got.data, want.data) { XCTAssertEqual(g, w, accuracy: 1e-5) }
        }
        XCTAssertEqual(seen, [3, 0, 2])
        // All shards at once: the same per component; summed, the aligned sum.
        try a.forEachShard { rows, all in
            let z = a.alignment.maps.alignedSums(try a.reader.tensor("components", rows: rows))
            for r in 0..<rows.count {
                for q in 0..<8 {
                    var s: Float = 0
                    for c in 0..<4 { s += all.data[(r * 4 + c) * 8 + q] }
                    XCTAssertEqual(s, z.data[r * 8 + q], accuracy: 1e-5)
                }
            }
        }
    }

    func testTextSpanOnAlignedComponentsMatchesTextSpanOnTheirContributions() throws {
        let a = try alignedRun()
        let texts = TextSpanRun.randomDirections(count: 12, width: 8, seed: 3)
        let pool = DescriptionPool(texts: (0..<12).map { "text \($0)" }, name: "pool")
        var options = TextSpanRunOptions()
        options.perHead = 3
        let report = try TextSpanRun.run(a, components: [1, 3], pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts, options: options)
        XCTAssertEqual(report.heads.map(\.name), ["c1", "c3"])
        XCTAssertEqual(report.alignment?.mapsSHA256, a.alignment.manifest.mapsSHA256)
        for (head, c) in zip(report.heads, [1, 3]) {
            let direct = try TextSpan.run(contributions: try handAligned(a, c), texts: texts, steps: 3, rank: 8, clampRank: true)
            XCTAssertEqual(head.descriptions.map(\.line), direct.steps.map(\.index))
            for (s, t) in zip(head.descriptions, direct.steps) { XCTAssertEqual(s.varianceExplained, t.varianceExplained, accuracy: 1e-4) }
        }
        // Rendered with component names.
        XCTAssertTrue(TextSpanRendering.markdown(report).contains("### c3"))
        XCTAssertTrue(TextSpanRendering.html(report).contains("href=\"#C3\""))
    }

    func testTextVarianceRankingOfAlignedComponents() throws {
        let a = try alignedRun()
        var text = [Float](repeating: 0, count: 8)
        text[2] = 3; text[5] = -1
        let ranking = try HeadRanking.byTextVariance(a, text: text)
        XCTAssertEqual(ranking.count, 4)
        let t = Ops.l2Normalized(Tensor(shape: [1, 8], data: text)).data
        for r in ranking {
            let c = try handAligned(a, r.layer)
            XCTAssertEqual(r.component, "c\(r.layer)")
            let p = (0..<60).map { i in (0..<8).reduce(0.0) { $0 + Double(c.data[i * 8 + $1]) * Double(t[$1]) } }
            let mean = p.reduce(0, +) / 60
            let variance = p.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 60
            XCTAssertEqual(r.variance, variance, accuracy: 1e-6 * max(1, variance))
            XCTAssertEqual(r.mean, mean, accuracy: 1e-5)
        }
        XCTAssertEqual(ranking.map(\.variance), ranking.map(\.variance).sorted(by: >))
    }

    /// The accuracy check on an aligned run: the classifier reads Σ_c a_c; heads of blocks below the
    /// first chosen component's are mean-ablated. Baseline and heads_raw recomputed by hand.
    func testAccuracyCheckOnAnAlignedRun() throws {
        let (reader, al, _) = try SyntheticAlignment.alignedRun(in: scratch.appendingPathComponent("labelled"),
                                                                shape: .init(images: 40, components: 4, width: 10, clipWidth: 8, shardSize: 15),
                                                                seed: 2, classes: 3, epochs: 3)
        let a = try AlignedRun(reader: reader, alignment: al)
        let classifier = Ops.transposed(Ops.l2Normalized(TextSpanRun.randomDirections(count: 3, width: 8, seed: 11)))   // [D, 3]
        let inputs = AccuracyInputs(classifier: classifier, classes: ["class0", "class1", "class2"], classesFile: "classes", templates: ["{}"])
        let texts = TextSpanRun.randomDirections(count: 10, width: 8, seed: 5)
        let pool = DescriptionPool(texts: (0..<10).map { "t\($0)" }, name: "pool")
        var options = TextSpanRunOptions()
        options.perHead = 2
        let report = try TextSpanRun.run(a, components: [2, 3], pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                         options: options, accuracy: inputs)
        let acc = try XCTUnwrap(report.accuracy)
        XCTAssertEqual(acc.rows.map(\.id), ["baseline", "heads_raw", "textspan", "random_directions"])
        XCTAssertEqual(acc.meanAblatedLayersBelow, 2)
        // By hand: per image the aligned components, their sum, and c0 + c1 replaced by their mean.
        var all = [[Float]](repeating: [], count: 4)
        try a.forEachComponent([0, 1, 2, 3]) { c, x in all[c] = x.data }
        let n = 40, d = 8
        var early = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { early[j] += Double(all[0][r * d + j] + all[1][r * d + j]) / Double(n) } }
        func top1(_ total: (Int, Int) -> Double) -> Double {
            var correct = 0
            for r in 0..<n {
                let scores = (0..<3).map { k in (0..<d).reduce(0.0) { $0 + total(r, $1) * Double(classifier.data[$1 * 3 + k]) } }
                if scores.indices.max(by: { scores[$0] < scores[$1] }) == r % 3 { correct += 1 }
            }
            return 100 * Double(correct) / Double(n)
        }
        let base = top1 { r, j in (0..<4).reduce(0.0) { $0 + Double(all[$1][r * d + j]) } }
        let raw = top1 { r, j in Double(all[2][r * d + j] + all[3][r * d + j]) + early[j] }
        XCTAssertEqual(acc.rows[0].top1, base, accuracy: 1e-9)
        XCTAssertEqual(acc.rows[1].top1, raw, accuracy: 1e-9)
    }
}
