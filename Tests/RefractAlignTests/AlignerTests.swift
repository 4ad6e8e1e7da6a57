import Foundation
@testable import RefractAlign
import RefractTensor
import XCTest

/// The CompAlign trainer against PyTorch autograd (Tests/Fixtures/compalign,
/// scripts/fixtures/compalign_steps.py) and against finite differences.
final class AlignerTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/compalign", isDirectory: true)

    static func load(_ name: String) throws -> Tensor { try NPY.read(directory.appendingPathComponent("\(name).npy")).tensor }

    func testFiveAdamStepsMatchAutograd() throws {
        let x = try Self.load("x"), t = try Self.load("t"), w0 = try Self.load("w0"), b0 = try Self.load("b0")
        let (c, d, e) = (w0.shape[0], w0.shape[1], w0.shape[2])
        var trainer = AlignerTrainer(maps: AlignerWeights(components: c, width: d, clipWidth: e, weights: w0.data, bias: b0.data))
        let losses = try NPY.read(Self.directory.appendingPathComponent("losses.npy")).tensor
        let n = x.shape[0], batch = 8
        for k in 0..<5 {
            let start = (k * batch) % n
            let xb = Tensor(shape: [batch, c, d], data: Array(x.data[(start * c * d)..<((start + batch) * c * d)]))
            let tb = Tensor(shape: [batch, e], data: Array(t.data[(start * e)..<((start + batch) * e)]))
            let loss = trainer.train(xb, tb)
            XCTAssertEqual(loss.total, Double(losses.data[k * 3]), accuracy: 1e-5, "step \(k + 1) total")
            XCTAssertEqual(loss.cosine, Double(losses.data[k * 3 + 1]), accuracy: 1e-5, "step \(k + 1) cosine")
            XCTAssertEqual(loss.orthonormality, Double(losses.data[k * 3 + 2]), accuracy: 1e-5, "step \(k + 1) orthonormality")
            let w = try Self.load("w\(k + 1)"), b = try Self.load("b\(k + 1)")
            // Adam moves every weight by about lr per step; float32 rounding must stay far below that.
            let worstW = zip(trainer.maps.weights, w.data).map { abs($0 - $1) }.max()!
            let worstB = zip(trainer.maps.bias, b.data).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worstW, 3e-6, "step \(k + 1) weights")
            XCTAssertLessThan(worstB, 3e-6, "step \(k + 1) bias")
        }
        XCTAssertEqual(trainer.step, 5)
    }

    /// Analytic gradients against central differences of the loss (float32, so a few per cent).
    func testGradientsMatchFiniteDifferences() {
        var rng = SplitMix64(seed: 3)
        func uniform() -> Float { Float(rng.next() >> 40) / Float(1 << 24) - 0.5 }
        let (b, c, d, e) = (5, 2, 4, 3)
        let x = Tensor(shape: [b, c, d], data: (0..<(b * c * d)).map { _ in uniform() })
        let t = Tensor(shape: [b, e], data: (0..<(b * e)).map { _ in uniform() })
        var maps = AlignerWeights.initial(components: c, width: d, clipWidth: e, std: 0.5, seed: 9)
        let trainer = AlignerTrainer(maps: maps)
        let (_, gradW, gradB) = trainer.lossAndGradients(x, t)
        let h: Float = 1e-2
        for i in stride(from: 0, to: maps.weights.count, by: 3) {
            let keep = maps.weights[i]
            maps.weights[i] = keep + h
            let up = AlignerTrainer(maps: maps).lossAndGradients(x, t).0.total
            maps.weights[i] = keep - h
            let down = AlignerTrainer(maps: maps).lossAndGradients(x, t).0.total
            maps.weights[i] = keep
            XCTAssertEqual(Double(gradW[i]), (up - down) / Double(2 * h), accuracy: 2e-3 + 0.02 * abs(Double(gradW[i])), "weight \(i)")
        }
        for j in 0..<e {
            let keep = maps.bias[j]
            maps.bias[j] = keep + h
            let up = AlignerTrainer(maps: maps).lossAndGradients(x, t).0.total
            maps.bias[j] = keep - h
            let down = AlignerTrainer(maps: maps).lossAndGradients(x, t).0.total
            maps.bias[j] = keep
            XCTAssertEqual(Double(gradB[j]), (up - down) / Double(2 * h), accuracy: 2e-3 + 0.02 * abs(Double(gradB[j])), "bias \(j)")
        }
    }

    /// The fast gradients (syrk/symm, fused bias) against the plain float64-per-row reference, on a
    /// shape where D > d (rank-deficient Gram) and B is not a multiple of anything.
    func testFastGradientsMatchTheReference() {
        var rng = SplitMix64(seed: 11)
        func uniform() -> Float { Float(rng.next() >> 40) / Float(1 << 24) - 0.5 }
        for (b, c, d, e) in [(7, 3, 5, 9), (4, 2, 12, 6)] {
            let x = Tensor(shape: [b, c, d], data: (0..<(b * c * d)).map { _ in uniform() })
            let t = Tensor(shape: [b, e], data: (0..<(b * e)).map { _ in uniform() })
            let trainer = AlignerTrainer(maps: .initial(components: c, width: d, clipWidth: e, std: 0.3, seed: 4))
            let (fast, fw, fb) = trainer.lossAndGradients(x, t)
            let (ref, rw, rb) = trainer.referenceLossAndGradients(x, t)
            XCTAssertEqual(fast.cosine, ref.cosine, accuracy: 1e-6)
            XCTAssertEqual(fast.orthonormality, ref.orthonormality, accuracy: 1e-6 * max(1, ref.orthonormality))
            let scale = rw.map { abs($0) }.max()!
            for i in rw.indices { XCTAssertEqual(fw[i], rw[i], accuracy: 1e-5 * scale, "weight \(i) at \((b, c, d, e))") }
            for j in rb.indices { XCTAssertEqual(fb[j], rb[j], accuracy: 1e-6, "bias \(j)") }
        }
    }

    /// The aligned components (bias split equally) sum to the aligned sum; without the bias, to it minus b.
    func testAlignedComponentsSumToTheAlignedSum() {
        let maps = AlignerWeights.initial(components: 4, width: 3, clipWidth: 5, std: 0.3, seed: 2)
        let x = Tensor(shape: [2, 4, 3], data: (0..<24).map { Float(sin(Double($0))) })
        let z = maps.alignedSums(x), a = maps.alignedComponents(x)
        for i in 0..<2 {
            for j in 0..<5 {
                var sum: Float = 0
                for k in 0..<4 { sum += a.data[(i * 4 + k) * 5 + j] }
                XCTAssertEqual(sum, z.data[i * 5 + j], accuracy: 1e-5)
            }
        }
    }

    /// The initial maps are seeded N(0, std²).
    func testInitialisationIsSeededAndScaled() {
        let a = AlignerWeights.initial(components: 8, width: 16, clipWidth: 32, std: 0.02, seed: 1)
        XCTAssertEqual(a, AlignerWeights.initial(components: 8, width: 16, clipWidth: 32, std: 0.02, seed: 1))
        XCTAssertNotEqual(a.weights, AlignerWeights.initial(components: 8, width: 16, clipWidth: 32, std: 0.02, seed: 2).weights)
        let n = Double(a.weights.count)
        let mean = a.weights.reduce(0.0) { $0 + Double($1) } / n
        let std = (a.weights.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / n).squareRoot()
        XCTAssertEqual(std, 0.02, accuracy: 0.001)
        XCTAssertEqual(mean, 0, accuracy: 0.001)
    }
}
