import Foundation
import RefractAlign
@testable import RefractRetrieve
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest

/// Retrieval over a non-CLIP run by chosen components: a text against the aligned components, an
/// image of the run against the unaligned ones (the paper's image-based retrieval).
final class ComponentRetrievalTests: ScratchTestCase {
    func alignedRun() throws -> AlignedRun {
        let (reader, alignment, _) = try SyntheticAlignment.alignedRun(in: scratch, shape: .init(images: 50, components: 3, width: 8, clipWidth: 6,
                                                                                                 shardSize: 20), seed: 9)
        return try AlignedRun(reader: reader, alignment: alignment)
    }

    /// The top rows by cosine with `q` of `vectors` [N, D] computed by hand (excluding `skip`).
    func handRanking(_ vectors: [[Double]], _ q: [Double], skip: Int? = nil) -> [Int] {
        func cos(_ a: [Double], _ b: [Double]) -> Double {
            let ab = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
            return ab / (a.reduce(0) { $0 + $1 * $1 }.squareRoot() * b.reduce(0) { $0 + $1 * $1 }.squareRoot())
        }
        return vectors.indices.filter { $0 != skip }.sorted { cos(vectors[$0], q) > cos(vectors[$1], q) }
    }

    func testTextQueryRanksByTheAlignedComponentsAndRowQueryByTheUnalignedOnes() throws {
        let a = try alignedRun()
        let reader = a.reader
        let x = try reader.tensor("components")                                           // [N, 3, 8]
        let m = a.alignment.maps
        let chosen = [0, 2]
        // Aligned sum of the chosen components, by hand.
        let aligned: [[Double]] = (0..<50).map { i in
            (0..<6).map { q in
                chosen.reduce(0.0) { s, c in
                    s + Double(m.bias[q]) / 3 + (0..<8).reduce(0.0) { $0 + Double(x.data[(i * 3 + c) * 8 + $1]) * Double(m.weights[(c * 8 + $1) * 6 + q]) }
                }
            }
        }
        let text: [Float] = [0.3, -1, 0.2, 0.5, 0, 0.1]
        let r1 = try Retrieval.search(reader, components: chosen, query: .text("a query"), options: RetrievalOptions(top: 10),
                                      aligned: a, textEmbedding: text)
        XCTAssertEqual(r1.heads, ["c0", "c2"])
        XCTAssertEqual(r1.results.map(\.row), Array(handRanking(aligned, text.map(Double.init)).prefix(10)))
        // A row of the run: the unaligned sum, the row itself left out.
        let unaligned: [[Double]] = (0..<50).map { i in (0..<8).map { j in chosen.reduce(0.0) { $0 + Double(x.data[(i * 3 + $1) * 8 + j]) } } }
        let r2 = try Retrieval.search(reader, components: chosen, query: .row(7), options: RetrievalOptions(top: 5))
        XCTAssertEqual(r2.candidates, 49)
        XCTAssertEqual(r2.results.map(\.row), Array(handRanking(unaligned, unaligned[7], skip: 7).prefix(5)))
        // A text without an alignment, and an image outside the run, are refused.
        XCTAssertThrowsError(try Retrieval.search(reader, components: chosen, query: .text("x"), options: RetrievalOptions()))
        XCTAssertThrowsError(try Retrieval.search(reader, components: chosen, query: .image("/elsewhere.png"), options: RetrievalOptions()))
        XCTAssertThrowsError(try Retrieval.search(reader, components: [5], query: .row(0), options: RetrievalOptions()))
    }
}
