import Foundation
import RefractAlign
import RefractCheckpoint
import RefractDecompose
import RefractSegment
import RefractTensor
import RefractTimm
import XCTest

/// Token heatmaps of timm models through alignment maps W_c (no bias): the map summed over every
/// token equals the chosen heads' aligned pooled contribution along t, and one token by hand.
final class TimmHeatmapTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/timm", isDirectory: true)

    static func model(_ name: String) throws -> TimmModel {
        try TimmModel(location: ModelLocation(directory: directory.appendingPathComponent(name), layout: .timm, modelId: name))
    }

    static func pixels(_ name: String) throws -> [Tensor] {
        let p = try NPY.read(directory.appendingPathComponent("expected/\(name)/pixels.npy")).tensor
        let s = p.shape[2], per = 3 * s * s
        return (0..<p.shape[0]).map { Tensor(shape: [3, s, s], data: Array(p.data[($0 * per)..<(($0 + 1) * per)])) }
    }

    /// Relative tolerance of the token sum against the pooled components (float32 sums of float32 terms).
    static let sumTolerance = 1e-6
    /// Relative tolerance of one token's value against its float64 recomputation.
    static let tokenTolerance = 1e-6

    func testParsesHeadNamesAndTheStartBlock() throws {
        XCTAssertEqual(TimmTokenComponent.parse("attn.11.3", index: 5), .init(name: "attn.11.3", index: 5, key: "11", block: 11, head: 3))
        XCTAssertEqual(TimmTokenComponent.parse("attn.2.window.1", index: 0)?.key, "2.window")
        XCTAssertEqual(TimmTokenComponent.parse("attn.2.grid.0", index: 0)?.key, "2.grid")
        for other in ["attn_bias.3", "mlp.3", "init", "conv.1", "attn.3", "attn.3.x.1", "attn.a.1", "merge_bias.1", "readout_bias"] {
            XCTAssertNil(TimmTokenComponent.parse(other, index: 0), other)
        }
        XCTAssertEqual(try TimmHeatmaps.fromBlock(components: ["init", "merge_bias.2", "attn.4.0", "mlp.4", "readout_bias"]), 4)
        XCTAssertEqual(try TimmHeatmaps.fromBlock(components: ["init", "shortcut_bias.2", "conv.2", "attn.2.window.0"]), 2)
        XCTAssertThrowsError(try TimmHeatmaps.fromBlock(components: ["c0", "c1"]))
    }

    /// Every model family: per grid, the heads' map over all tokens against Σ_c x_c·W_c·t from the
    /// pooled components of the same decomposition, and one patch token by hand.
    func testTokenSumEqualsThePooledAlignedContribution() throws {
        var worstSum = 0.0, worstToken = 0.0
        defer { print(String(format: "timm heatmaps: worst token-sum error %.2e, worst one-token error %.2e (relative to the sum of |terms|)", worstSum, worstToken)) }
        for (name, from) in [("deit-tiny", 1), ("dinov2-reg-tiny", 0), ("swin-tiny", 1), ("maxvit-pico", 0)] {
            let model = try Self.model(name)
            let blocks = TimmDecomposer.blockCount(model)
            let decomposer = try TimmDecomposer(model: model, convention: .faithful, fromBlock: from, tokenBlocks: Array(from..<blocks))
            let names = decomposer.components.map(\.name)
            let c = names.count, d = model.representationWidth, e = 24
            let maps = AlignerWeights.initial(components: c, width: d, clipWidth: e, std: 0.2, seed: 7)
            var rng = SplitMix64(seed: 11)
            let directions = Ops.l2Normalized(Tensor(shape: [2, e], data: (0..<(2 * e)).map { _ in Float(rng.normal()) }))
            let pixels = try Array(Self.pixels(name).prefix(2))
            let batch = decomposer(pixels)
            let heads = names.enumerated().compactMap { TimmTokenComponent.parse($1, index: $0) }
            XCTAssertEqual(heads.count, decomposer.components.filter { $0.kind == .head }.count, name)
            // Heads grouped by the grid of their token terms.
            var groups: [Int: [TimmTokenComponent]] = [:]
            for h in heads {
                let t = batch.tokens[h.key]!
                groups[t.shape.count == 4 ? -1 : t.shape[2], default: []].append(h)
            }
            var prefix = 0
            if case .vit(let vit) = model.network { prefix = vit.config.prefixTokens }
            if name == "dinov2-reg-tiny" { XCTAssertGreaterThan(prefix, 1, "registers") }
            for (key, group) in groups.sorted(by: { $0.key < $1.key }) {
                let grid: Int
                if case .vit(let vit) = model.network { grid = vit.config.gridSize } else { grid = key }
                // A group, and its first head alone.
                for chosen in [group, [group[0]]] {
                    let folded = TimmHeatmaps.folded(maps, components: chosen, directions: directions)
                    for j in 0..<pixels.count {
                        let heatmap = try TimmHeatmaps.heatmap(batch, image: j, components: chosen, folded: folded, grid: grid, prefixTokens: prefix)
                        XCTAssertEqual(heatmap.maps.shape, [2, grid, grid])
                        for k in 0..<2 {
                            // (Σ_c x_c·W_c)·t in float64 from the pooled components.
                            var expected = 0.0, scale = 0.0
                            for h in chosen {
                                var term = 0.0
                                for a in 0..<d {
                                    let x = Double(batch.values.data[(j * c + h.index) * d + a])
                                    var wt = 0.0
                                    for b in 0..<e { wt += Double(maps.weights[(h.index * d + a) * e + b]) * Double(directions.data[k * e + b]) }
                                    term += x * wt
                                    scale += abs(x * wt)
                                }
                                expected += term
                            }
                            let total = heatmap.total(k)
                            worstSum = max(worstSum, abs(total - expected) / scale)
                            XCTAssertEqual(total, expected, accuracy: Self.sumTolerance * scale,
                                           "\(name) \(chosen.count) heads on grid \(grid), image \(j), text \(k)")
                            // Map + prefix terms = total.
                            let mapSum = heatmap.map(k).reduce(0) { $0 + Double($1) } + heatmap.prefixTerms(k).reduce(0) { $0 + Double($1) }
                            XCTAssertEqual(mapSum, total, accuracy: 1e-6 * scale)
                            // One patch token by hand: grid cell (r, col) = token prefix + r·G + col.
                            let r = grid / 2, col = grid - 1, token = prefix + r * grid + col
                            var byHand = 0.0, handScale = 0.0
                            for h in chosen {
                                let terms = batch.tokens[h.key]!
                                let heads = terms.shape[1], tokens = terms.shape.dropFirst(2).dropLast().reduce(1, *)
                                let base = ((j * heads + h.head) * tokens + token) * d
                                for a in 0..<d {
                                    var wt = 0.0
                                    for b in 0..<e { wt += Double(maps.weights[(h.index * d + a) * e + b]) * Double(directions.data[k * e + b]) }
                                    byHand += Double(terms.data[base + a]) * wt
                                    handScale += abs(Double(terms.data[base + a]) * wt)
                                }
                            }
                            worstToken = max(worstToken, abs(Double(heatmap.maps.data[(k * grid + r) * grid + col]) - byHand) / handScale)
                            XCTAssertEqual(Double(heatmap.maps.data[(k * grid + r) * grid + col]), byHand,
                                           accuracy: Self.tokenTolerance * handScale + 1e-12, "\(name) token \(token)")
                        }
                    }
                }
            }
        }
    }
}
