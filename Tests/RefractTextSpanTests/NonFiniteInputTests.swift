import Foundation
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractTextSpan

/// `heads` and TextSpan's accuracy check on a run (or with a text) holding NaN or ±infinity:
/// refused with the shard, tensor, image and position, never a ranking of variances 0.
extension PipelineTests {
    func testHeadsAndAccuracyCheckRefuseNonFiniteRunsAndTexts() throws {
        let pipeline = self
        let clip = try pipeline.model()
        let good = try pipeline.makeRun(clip, repeats: 2)
        let text = Ops.l2Normalized(clip.encodeTexts(["a photo of a dog"])).data
        XCTAssertNoThrow(try HeadRanking.byTextVariance(good, text: text))

        // A NaN direction (it would normalise to zero and rank every head at variance 0).
        var nanText = text
        nanText[3] = .nan
        XCTAssertThrowsError(try HeadRanking.byTextVariance(good, text: nanText)) { e in
            XCTAssertTrue("\(e)".contains("text direction") && "\(e)".contains("NaN") && !"\(e)".contains("zero"), "\(e)")
        }
        XCTAssertThrowsError(try HeadRanking.byTextVariance(good, text: [Float](repeating: 0, count: text.count))) {
            XCTAssertTrue("\($0)".contains("zero"), "\($0)")
        }

        // A run with a NaN in one head's contribution.
        let bad = try copyRun(good, to: pipeline.scratch.appendingPathComponent("bad"), name: "attn", row: 6, index: 30, value: .nan)
        XCTAssertThrowsError(try HeadRanking.byTextVariance(bad, text: text)) { e in
            let text = "\(e)"
            for part in ["shard-", "'attn'", "row 6", bad.rowImages[6].path, "NaN", "heads"] {
                XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)")
            }
        }

        // TextSpan's accuracy check over the same run; the contributions of the damaged head are
        // refused by TextSpan itself, the sums of every component by the accuracy check.
        let classes = try TextLists.readLines(fixtures.appendingPathComponent("inputs/classes.txt"))
        let inputs = AccuracyInputs(classifier: try clip.zeroShotClassifier(classes: classes).weights, classes: classes,
                                    classesFile: "classes.txt", templates: ZeroShotClassifier.defaultTemplates)
        let pool = try DescriptionPool.load(try pipeline.write((0..<30).map { "thing \($0)" }.joined(separator: "\n"), "pool.txt"))
        let (texts, _) = try TextEmbeddings.load(pool: pool, model: clip, weightsSHA256: "x", cache: nil)
        var options = TextSpanRunOptions()
        options.heads = [HeadID(layer: 1, head: 1)]                        // not the damaged head
        options.perHead = 2
        options.rank = 2
        XCTAssertNoThrow(try TextSpanRun.run(good, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                             options: options, accuracy: inputs))
        XCTAssertThrowsError(try TextSpanRun.run(bad, pool: pool, poolSummary: pool.summary(truncated: 0), texts: texts,
                                                 options: options, accuracy: inputs)) { e in
            XCTAssertTrue("\(e)".contains("'attn'") && "\(e)".contains("accuracy check"), "\(e)")
        }
    }
}
