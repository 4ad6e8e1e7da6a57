import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractSegment

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

func loadModel(_ name: String) throws -> CLIP {
    let dir = fixtureRoot.appendingPathComponent("models/\(name)")
    return try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: name))
}

/// The fixture images, preprocessed by `model`: [3, S, S] each.
func fixturePixels(_ model: CLIP) throws -> [Tensor] {
    let dir = fixtureRoot.appendingPathComponent("models/inputs")
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") }.sorted()
    return try model.preprocessFiles(files.map { dir.appendingPathComponent($0) })
}

/// Σ over the head set of attn_tokens [B, L, H, T, D'] (every layer requested) → [B, T, D'] in double.
func summedTokens(_ batch: DecompositionBatch, heads: HeadSet) -> Tensor {
    let s = batch.shape, t = s.tokens, d = s.outputWidth
    let tokens = batch[.attnTokens]!
    var out = [Double](repeating: 0, count: batch.count * t * d)
    for b in 0..<batch.count {
        for l in 0..<s.layers {
            for h in heads.perLayer[l] {
                for i in 0..<t {
                    let from = ((((b * s.layers) + l) * s.heads + h) * t + i) * d
                    for j in 0..<d { out[(b * t + i) * d + j] += Double(tokens.data[from + j]) }
                }
            }
        }
    }
    return Tensor(shape: [batch.count, t, d], data: out.map(Float.init))
}

final class TokenSumTests: XCTestCase {
    static let models = ["openclip-tiny", "hf-tiny"]

    /// attn_token_sum equals Σ attn_tokens over the same heads, for every head, a subset and a
    /// single head, in both conventions (each (token, head) term gets its own frame and shares).
    func testTokenSumsEqualSummedPerTokenTerms() throws {
        for name in Self.models {
            let model = try loadModel(name)
            let pixels = try fixturePixels(model)
            let nl = model.architecture.vision.layers, nh = model.architecture.vision.heads
            let sets = [HeadSet.all(layers: nl, heads: nh),
                        try HeadSet(layers: nl, heads: nh, members: [(1, 3), (0, 0), (1, 0)]),
                        try HeadSet(layers: nl, heads: nh, members: [(0, 2)])]
            for convention in DecompositionConvention.clip {
                let full = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: Array(0..<nl))(pixels)
                for set in sets {
                    let batch = try CLIPDecomposer(tower: model.vision, convention: convention, tokenSumHeads: set)(pixels)
                    XCTAssertNil(batch[.attnTokens], "no per-token tensor is materialised")
                    let got = batch[.attnTokenSum]!
                    let want = summedTokens(full, heads: set)
                    XCTAssertEqual(got.shape, [pixels.count, model.architecture.visionTokens, model.architecture.embedDim])
                    let rms = (want.data.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(want.count)).squareRoot()
                    assertParity(got, want, Tolerance(abs: Float(rms) * 1e-5, rel: 1e-5),
                                 "\(name) \(convention) heads \(set.description)")
                    // The rest of the decomposition is unchanged by asking for the sums.
                    XCTAssertEqual(batch[.attn]!, full[.attn]!)
                }
            }
        }
    }

    func testHeadSetValidation() throws {
        XCTAssertThrowsError(try HeadSet(layers: 2, heads: 4, members: [(2, 0)])) {
            XCTAssertTrue("\($0)".contains("head 2.0 does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try HeadSet(layers: 2, heads: 4, members: [(0, 4)]))
        XCTAssertThrowsError(try HeadSet(layers: 2, heads: 4, members: []))
        let set = try HeadSet(layers: 2, heads: 4, members: [(1, 3), (0, 1), (1, 3)])
        XCTAssertEqual(set.count, 2)
        XCTAssertEqual(set.description, "0.1,1.3")
        XCTAssertEqual(HeadSet.all(layers: 2, heads: 4).description, "all")
        let model = try loadModel("openclip-tiny")
        XCTAssertThrowsError(try CLIPDecomposer(tower: model.vision, tokenSumHeads: .all(layers: 3, heads: 4)))
    }

    /// Σ_i≥1 map[i] + class-token term = (Σ_S attn[l, h]) · t for the heatmap's own decomposition.
    func testHeatmapSumsToHeadSetContribution() throws {
        for name in Self.models {
            let model = try loadModel(name)
            let pixels = try fixturePixels(model)
            let arch = model.architecture, nl = arch.vision.layers, nh = arch.vision.heads
            var rng = SplitMix64(seed: 7)
            let texts = Tensor(shape: [3, arch.embedDim], data: (0..<(3 * arch.embedDim)).map { _ in Float(rng.normal()) })
            let contrast = Tensor(shape: [2, arch.embedDim], data: (0..<(2 * arch.embedDim)).map { _ in Float(rng.normal()) })
            let directions = try TokenHeatmaps.directions(texts: texts, contrast: contrast)         // [3, D']
            for convention in DecompositionConvention.clip {
                for set in [HeadSet.all(layers: nl, heads: nh), try HeadSet(layers: nl, heads: nh, members: [(1, 2), (0, 1)])] {
                    let batch = try CLIPDecomposer(tower: model.vision, convention: convention, tokenSumHeads: set)(pixels)
                    for b in 0..<pixels.count {
                        let image = batch.image(b)
                        let heatmap = try TokenHeatmap(tokenSums: image.tokenSums!, tokens: arch.visionTokens, directions: directions)
                        XCTAssertEqual(heatmap.maps.shape, [3, arch.gridSize, arch.gridSize])
                        for k in 0..<3 {
                            let t = directions.row(k)
                            var whole = [Double](repeating: 0, count: arch.embedDim)
                            for l in 0..<nl { for h in set.perLayer[l] {
                                for (j, v) in image.attention(layer: l, head: h).enumerated() { whole[j] += Double(v) }
                            } }
                            let want = zip(whole, t).reduce(0.0) { $0 + $1.0 * Double($1.1) }
                            let got = heatmap.map(k).reduce(0.0) { $0 + Double($1) } + Double(heatmap.classTokenTerm(k))
                            let scale = whole.reduce(0.0) { $0 + abs($1) } * t.reduce(0.0) { max($0, Double(abs($1))) }
                            XCTAssertEqual(got, want, accuracy: 1e-5 * scale + 1e-7, "\(name) \(convention) image \(b) text \(k)")
                        }
                    }
                }
            }
        }
    }

    func testDirectionsSubtractContrastMean() throws {
        let texts = Tensor(shape: [2, 2], data: [3, 4, 0, 2])
        let contrast = Tensor(shape: [2, 2], data: [1, 0, 0, 5])
        let d = try TokenHeatmaps.directions(texts: texts, contrast: contrast)
        // normalised texts (0.6, 0.8), (0, 1); contrast mean (0.5, 0.5)
        XCTAssertEqual(d.data[0], 0.1, accuracy: 1e-6); XCTAssertEqual(d.data[1], 0.3, accuracy: 1e-6)
        XCTAssertEqual(d.data[2], -0.5, accuracy: 1e-6); XCTAssertEqual(d.data[3], 0.5, accuracy: 1e-6)
        XCTAssertEqual(try TokenHeatmaps.directions(texts: texts).data[0], 0.6, accuracy: 1e-6)
        XCTAssertThrowsError(try TokenHeatmaps.directions(texts: texts, contrast: Tensor(shape: [1, 3], data: [1, 0, 0])))
    }
}
