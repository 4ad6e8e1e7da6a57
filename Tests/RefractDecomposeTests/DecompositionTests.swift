import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractDecompose

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

func loadModel(_ name: String) throws -> CLIP {
    let dir = fixtureRoot.appendingPathComponent("models/\(name)")
    return try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: name))
}

/// The fixture generator's preprocessed pixels [N, 3, S, S] as a list of [3, S, S].
func fixturePixels(_ model: String) throws -> [Tensor] {
    let all = try NPY.read(fixtureRoot.appendingPathComponent("decompose/\(model)/pixels.npy")).tensor
    let n = all.shape[0], per = all.count / n
    return (0..<n).map { Tensor(shape: Array(all.shape.dropFirst()), data: Array(all.data[($0 * per)..<(($0 + 1) * per)])) }
}

func fixtureArray(_ model: String, _ convention: DecompositionConvention, _ name: String) throws -> Tensor {
    try NPY.read(fixtureRoot.appendingPathComponent("decompose/\(model)/\(convention.rawValue)/\(name).npy")).tensor
}

/// Largest relative L2 error, per image, between a sum of components and the target [N, D'].
func worstRelativeError(_ sums: [[Double]], _ target: Tensor) -> Double {
    var worst = 0.0
    for (i, s) in sums.enumerated() {
        let t = target.row(i)
        var num = 0.0, den = 0.0
        for j in 0..<s.count { num += (s[j] - Double(t[j])) * (s[j] - Double(t[j])); den += Double(t[j]) * Double(t[j]) }
        worst = max(worst, (num / den).squareRoot())
    }
    return worst
}

final class DecompositionTests: XCTestCase {
    static let models = ["openclip-tiny", "hf-tiny"]

    /// Components are compared with an absolute tolerance scaled to the embedding (a head's term can
    /// be tiny, so a purely relative bound would be meaningless) plus a relative one.
    func componentTolerance(_ reference: Tensor) -> Tolerance {
        let rms = (reference.data.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(reference.count, 1))).squareRoot()
        return Tolerance(abs: Float(rms) * 2e-5, rel: 1e-4)
    }

    func testSumIdentityInBothConventions() throws {
        for name in Self.models {
            let model = try loadModel(name)
            let pixels = try fixturePixels(name)
            let own = model.encodeImages(pixels: pixels)                                 // [N, D']
            for convention in DecompositionConvention.clip {
                let decomposer = try CLIPDecomposer(tower: model.vision, convention: convention)
                let batch = decomposer(pixels)
                XCTAssertEqual(batch[.embedding]!, own, "\(name): the decomposition reports the model's own embedding")
                let sums = (0..<pixels.count).map { batch.image($0).sum() }
                let target = convention == .faithful ? own : Ops.l2Normalized(own)
                let err = worstRelativeError(sums, target)
                print("sum identity \(name) \(convention): max relative error \(err)")
                XCTAssertLessThanOrEqual(err, 1e-5, "\(name) \(convention)")
                // The identity is not vacuous: dropping one head breaks it.
                var partial = sums[0]
                for (j, v) in batch.image(0).attention(layer: 0, head: 1).enumerated() { partial[j] -= Double(v) }
                XCTAssertGreaterThan(worstRelativeError([partial], Tensor(shape: [1, target.shape[1]], data: target.row(0))), 1e-4)
            }
        }
    }

    func testMatchesIndependentReference() throws {
        for name in Self.models {
            let model = try loadModel(name)
            let pixels = try fixturePixels(name)
            for convention in DecompositionConvention.clip {
                let layers = Array(0..<model.architecture.vision.layers)
                let batch = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: layers)(pixels)
                var names: [(ComponentTensor, String)] = [(.embedding, "embedding"), (.norm, "norm"), (.pre, "pre"),
                                                          (.mlp, "mlp"), (.attn, "attn"), (.attnClassToken, "attn_cls"),
                                                          (.attnTokens, "attn_tokens")]
                if convention == .faithful { names += [(.attnBias, "attn_bias")] }
                for (tensor, file) in names {
                    let ref = try fixtureArray(name, convention, file)
                    let got = batch[tensor]!
                    let flatGot = got.reshaped(ref.shape)
                    assertParity(flatGot, ref, componentTolerance(ref), maxRelativeError: 1e-5, "\(name) \(convention) \(file)")
                }
                if convention == .faithful {
                    // The generator stores β·P once; we store it per image.
                    let beta = try fixtureArray(name, convention, "beta")
                    for i in 0..<pixels.count {
                        assertParity(Tensor(shape: beta.shape, data: batch[.readoutBias]!.row(i)), beta,
                                     componentTolerance(beta), "\(name) readout_bias image \(i)")
                    }
                }
            }
        }
    }

    func testHeadsEqualTheirTokenSums() throws {
        let model = try loadModel("openclip-tiny")
        let pixels = try fixturePixels("openclip-tiny")
        for convention in DecompositionConvention.clip {
            let decomposer = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: [1, 0])
            XCTAssertEqual(decomposer.shape.tokenLayers, [0, 1])
            for i in 0..<pixels.count {
                let image = decomposer(pixels).image(i)
                for l in 0..<2 {
                    for h in 0..<image.shape.heads {
                        var sum = [Double](repeating: 0, count: image.shape.outputWidth)
                        for t in 0..<image.shape.tokens {
                            for (j, v) in image.attention(layer: l, head: h, token: t)!.enumerated() { sum[j] += Double(v) }
                        }
                        let head = image.attention(layer: l, head: h)
                        let scale = head.reduce(0.0) { max($0, Double(abs($1))) }
                        for j in 0..<sum.count {
                            XCTAssertEqual(sum[j], Double(head[j]), accuracy: 1e-5 * max(scale, 1e-3), "\(convention) head \(l).\(h)")
                        }
                        let cls = image.attentionFromClassToken(layer: l, head: h)
                        for (j, v) in image.attention(layer: l, head: h, token: 0)!.enumerated() {
                            XCTAssertEqual(v, cls[j], accuracy: 1e-6 * max(1, abs(cls[j])), "\(convention) class term \(l).\(h)")
                        }
                    }
                }
            }
        }
    }

    func testBatchSlicingDoesNotChangeResults() throws {
        let model = try loadModel("openclip-tiny")
        let pixels = try fixturePixels("openclip-tiny")
        let decomposer = try CLIPDecomposer(tower: model.vision, tokenLayers: [1])
        let batch = decomposer(pixels)
        for i in 0..<pixels.count {
            let single = decomposer.decompose(pixels[i])
            let fromBatch = batch.image(i)
            for id in single.components {
                let a = single[id]!, b = fromBatch[id]!
                for j in 0..<a.count { XCTAssertEqual(a[j], b[j], accuracy: 1e-6 * max(1, abs(b[j])), "\(id)") }
            }
        }
    }

    func testNamedAccessAndComponentList() throws {
        let model = try loadModel("openclip-tiny")
        let decomposer = try CLIPDecomposer(tower: model.vision, tokenLayers: [1])
        let image = decomposer.decompose(try fixturePixels("openclip-tiny")[0])
        let arch = model.architecture
        XCTAssertEqual(image.components.count, 1 + arch.vision.layers * (2 + arch.vision.heads) + 1)
        XCTAssertEqual(image.components.map(\.description).prefix(3), ["pre", "mlp.0", "attn.0.0"])
        XCTAssertNil(image.attention(layer: 0, head: 0, token: 0), "layer 0 tokens were not requested")
        XCTAssertNotNil(image.attention(layer: 1, head: 3, token: arch.visionTokens - 1))
        XCTAssertEqual(image[.head(layer: 1, head: 2)]!, image.attention(layer: 1, head: 2))
        XCTAssertEqual(ComponentID.headToken(layer: 11, head: 3, token: 0).description, "attn.11.3.t0")
    }

    func testTokenLayerOutOfRangeIsAnError() throws {
        let model = try loadModel("openclip-tiny")
        XCTAssertThrowsError(try CLIPDecomposer(tower: model.vision, tokenLayers: [2])) { error in
            XCTAssertTrue("\(error)".contains("token layer 2 does not exist"), "\(error)")
        }
    }
}
