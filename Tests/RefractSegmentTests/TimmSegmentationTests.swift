import Foundation
import RefractCheckpoint
import RefractDecompose
@testable import RefractSegment
import RefractTensor
import RefractTimm
import XCTest

/// Zero-shot segmentation of timm models: the token maps decompose the pooled attention terms
/// along the logit's direction, MaxViT's direction is its head's gradient, and the official blocks.
final class TimmSegmentationTests: XCTestCase {
    static func model(_ name: String) throws -> TimmModel { try TimmHeatmapTests.model(name) }
    static func pixels(_ name: String) throws -> [Tensor] { try TimmHeatmapTests.pixels(name) }

    /// Σ over a block's tokens of the map = Σ over its heads of the pooled terms · direction, relative to Σ|terms|.
    static let tolerance = 1e-5

    func testOfficialTokenBlocks() {
        XCTAssertEqual(TimmSegmentation.defaultTokenBlocks(family: .vit, depths: [12]), Array(5..<12))          // DeiT-B, DINO: last 7
        XCTAssertEqual(TimmSegmentation.defaultTokenBlocks(family: .swin, depths: [2, 2, 18, 2]), Array(14..<24)) // Swin-B: (2, 10)
        XCTAssertEqual(TimmSegmentation.defaultTokenBlocks(family: .maxvit, depths: [2, 2, 5, 2]), Array(4..<11)) // MaxViT-S: (2, 0)
        XCTAssertEqual(TimmSegmentation.defaultTokenBlocks(family: .vit, depths: [3]), [0, 1, 2])
        XCTAssertEqual(TimmSegmentation.defaultTokenBlocks(family: .swin, depths: [2, 2, 2]), [3, 4, 5])
    }

    func testTokenMapsDecomposeTheLogitsAttentionTerms() throws {
        for name in ["deit-tiny", "swin-tiny", "maxvit-tiny"] {
            let model = try Self.model(name)
            let blocks = TimmSegmentation.defaultTokenBlocks(model)
            let decomposer = try TimmDecomposer(model: model, convention: .faithful, fromBlock: blocks.min()!, tokenBlocks: blocks)
            let batch = decomposer(try Self.pixels(name))
            let names = decomposer.components.map(\.name)
            let d = batch.representation.shape[1], c = names.count
            for j in 0..<batch.count {
                let rep = Array(batch.representation.data[(j * d)..<((j + 1) * d)])
                let direction = model.logitGradient(rep, class: 1)!
                let scores = try TimmSegmentation.blockScores(batch, image: j, direction: direction)
                XCTAssertEqual(Set(scores.keys), Set(batch.tokens.keys), name)
                for (key, s) in scores {
                    // The pooled terms of the block's heads (attn.KEY.H).
                    var pooled = 0.0, scale = 0.0
                    for (k, n) in names.enumerated() where n.hasPrefix("attn.\(key).") && n.split(separator: ".").count == key.split(separator: ".").count + 2 {
                        for q in 0..<d {
                            let v = Double(batch.values.data[(j * c + k) * d + q]) * Double(direction[q])
                            pooled += v; scale += abs(v)
                        }
                    }
                    XCTAssertGreaterThan(scale, 0, "\(name) block \(key)")
                    let sum = s.reduce(0.0) { $0 + Double($1) }
                    XCTAssertEqual(sum, pooled, accuracy: Self.tolerance * scale, "\(name) image \(j) block \(key)")
                }
                let p = try TimmSegmentation.predict(batch, image: j, direction: direction,
                                                     prefixTokens: { if case .vit(let v) = model.network { return v.config.prefixTokens }; return 0 }(),
                                                     size: model.preprocessing.imageSize, predicted: 1)
                XCTAssertEqual(p.map.count, model.preprocessing.imageSize * model.preprocessing.imageSize)
                XCTAssertTrue(p.map.allSatisfy { $0 >= 0 && $0 <= 1 }, name)
                let mean = p.map.reduce(0.0) { $0 + Double($1) } / Double(p.map.count)
                XCTAssertEqual(p.foreground, p.map.map { Double($0) > mean ? 1 : 0 }.map(UInt8.init), name)
            }
        }
    }

    /// A linear head's direction is its row; MaxViT's is the gradient of its LayerNorm-MLP head.
    func testLogitDirections() throws {
        let deit = try Self.model("deit-tiny")
        guard case .vit(let vit) = deit.network, let head = vit.head else { return XCTFail("deit-tiny has a head") }
        let d = head.weight.shape[1]
        XCTAssertEqual(deit.logitGradient([Float](repeating: 0.1, count: d), class: 3), Array(head.weight.data[(3 * d)..<(4 * d)]))
        let maxvit = try Self.model("maxvit-tiny")
        let f = maxvit.representationWidth
        var rng = SplitMix64(seed: 2)
        let x = (0..<f).map { _ in Float(rng.normal()) }
        let g = maxvit.logitGradient(x, class: 2)!
        let h: Float = 1e-2
        var worst = 0.0, scale = 0.0
        for i in 0..<f {
            var up = x, down = x
            up[i] += h; down[i] -= h
            let lu = maxvit.logits(Tensor(shape: [1, f], data: up))!.data[2], ld = maxvit.logits(Tensor(shape: [1, f], data: down))!.data[2]
            let numeric = Double(lu - ld) / Double(2 * h)
            worst = max(worst, abs(numeric - Double(g[i]))); scale = max(scale, abs(Double(g[i])))
        }
        XCTAssertLessThan(worst, 2e-2 * scale + 1e-4, "MaxViT head gradient vs central differences")
        XCTAssertNil(try Self.model("dino-tiny").logitGradient(x, class: 0))
    }
}
