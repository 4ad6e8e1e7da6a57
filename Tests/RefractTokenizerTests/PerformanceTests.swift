import Foundation
import XCTest
@testable import RefractTokenizer

final class PerformanceTests: XCTestCase {
    /// 3,500 description-like prompts. The bound is loose so that debug builds pass; release timings are in
    /// docs/Tokenizer.md.
    func testTokenizeThousandsOfDescriptions() throws {
        let adjectives = ["red", "small", "shiny", "Old", "wooden", "bright", "café-style", "blurry", "striped", "“vintage”"]
        let nouns = ["bicycle", "cat", "mountain lake", "kitchen", "street at night", "bowl of ramen", "violin", "garden", "robot", "crowd"]
        let texts = (0..<3500).map { i in
            "A photo of a \(adjectives[i % 10]) \(nouns[(i / 10) % 10]) number \(i), taken in \(1950 + i % 70) & shared online."
        }
        for flavour in CLIPTokenizerFlavour.allCases {
            let tokenizer = try CLIPTokenizer(flavour: flavour)
            _ = tokenizer.tokenize(["warm up"])
            let clock = ContinuousClock()
            let start = clock.now
            let rows = tokenizer.tokenize(texts)
            let elapsed = clock.now - start
            XCTAssertEqual(rows.count, 3500)
            print("tokenize 3500 descriptions (\(flavour)): \(elapsed)")
            XCTAssertLessThan(elapsed, .seconds(20))
        }
    }
}
