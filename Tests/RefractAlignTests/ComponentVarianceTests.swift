import Foundation
@testable import RefractAlign
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest

/// The per-component variance an alignment keeps (tr Cov(a_c) over its run), and variance_explained
/// from it against the full pass.
final class ComponentVarianceTests: ScratchTestCase {
    func testKeptVarianceMatchesAFloat64PassAndGivesTheSameScores() throws {
        let (reader, al, _) = try SyntheticAlignment.alignedRun(in: scratch, shape: .init(images: 70, components: 5, width: 9, clipWidth: 7,
                                                                                          shardSize: 20), seed: 3)
        let kept = try XCTUnwrap(al.manifest.componentVariance)
        XCTAssertEqual(kept.images, 70)
        // Float64 by hand: a_c = x_c·W_c (the bias share is constant), tr Cov with 1/N.
        let x = try reader.tensor("components")                                         // [70, 5, 9]
        let m = al.maps
        for c in 0..<5 {
            var a = [[Double]](repeating: [Double](repeating: 0, count: 7), count: 70)
            for i in 0..<70 { for q in 0..<7 { for k in 0..<9 { a[i][q] += Double(x.data[(i * 5 + c) * 9 + k]) * Double(m.weights[(c * 9 + k) * 7 + q]) } } }
            var tr = 0.0
            for q in 0..<7 {
                let mean = a.reduce(0) { $0 + $1[q] } / 70
                tr += a.reduce(0) { $0 + ($1[q] - mean) * ($1[q] - mean) } / 70
            }
            XCTAssertEqual(kept.traces[c], tr, accuracy: 1e-5 * tr, "component \(c)")
        }
        // Scores with the kept traces (the folded pass) equal the full pass's.
        let loaded = try Alignment.load(al.directory)
        var source = try ScoreSource.resolve(reader, alignment: loaded)
        XCTAssertEqual(source.traces, kept.traces)
        var rng = SplitMix64(seed: 1)
        let property = ScoreProperty(name: "p", texts: ["a", "b", "c"], embeddings: Tensor(shape: [3, 7], data: (0..<21).map { _ in Float(rng.normal()) }))
        let fast = try ComponentScoring.score(reader, source: source, properties: [property])
        source.traces = nil
        let full = try ComponentScoring.score(reader, source: source, properties: [property])
        let (fe, ve) = (try XCTUnwrap(fast.properties[0].varianceExplained), try XCTUnwrap(full.properties[0].varianceExplained))
        for c in 0..<5 {
            XCTAssertEqual(fe[c], ve[c], accuracy: 1e-5, "variance_explained of component \(c)")
            XCTAssertEqual(fast.properties[0].varianceAttributed[c], full.properties[0].varianceAttributed[c], accuracy: 1e-5)
        }
        // Another run of the same model is scored the full way: the kept traces are its run's.
        let other = scratch.appendingPathComponent("other")
        try SyntheticAlignment.write(run: other, shape: .init(images: 30, components: 5, width: 9, clipWidth: 7, shardSize: 20), planted: true, seed: 4)
        XCTAssertNil(try ScoreSource.resolve(try StoreReader(run: other), alignment: loaded).traces)
    }
}
