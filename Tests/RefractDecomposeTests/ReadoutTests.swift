import Foundation
import RefractTensor
import XCTest
@testable import RefractDecompose

/// The generic frozen read-out on chains other than CLIP's (two LayerNorms, biases, pooling).
final class ReadoutTests: XCTestCase {
    struct Rng {
        var state: UInt64
        mutating func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 2 - 1
        }
        mutating func tensor(_ shape: [Int], scale: Float = 1, offset: Float = 0) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in offset + scale * next() })
        }
    }

    func testComponentsThroughAGeneralChainSumToItsOutput() throws {
        var rng = Rng(state: 7)
        let d = 16, mid = 12, out = 8, k = 9
        let steps: [ReadoutStep] = [
            .token(0),
            .layerNorm(weight: rng.tensor([d], scale: 0.2, offset: 1), bias: rng.tensor([d], scale: 0.3), eps: 1e-5),
            .linear(weight: rng.tensor([mid, d], scale: 0.5), bias: rng.tensor([mid], scale: 0.4)),
            .layerNorm(weight: rng.tensor([mid], scale: 0.2, offset: 1), bias: rng.tensor([mid], scale: 0.3), eps: 1e-6),
            .linear(weight: rng.tensor([out, mid], scale: 0.5), bias: rng.tensor([out], scale: 0.1)),
        ]
        let readout = try CompiledReadout(steps: steps, width: d, convention: .faithful)
        XCTAssertEqual(readout.outputWidth, out)
        XCTAssertThrowsError(try CompiledReadout(steps: steps, width: d, convention: .gandelsman2024),
                             "gandelsman2024 is only defined for a single LayerNorm")
        let components = rng.tensor([k, d], scale: 2, offset: 0.5)                 // [K, D]
        var x = [Float](repeating: 0, count: d)
        for i in 0..<k { for j in 0..<d { x[j] += components.data[i * d + j] } }
        let frame = readout.frame(selected: x)
        let mapped = readout.mapRows(components)                                    // [K, D']
        var sum = frame.constant
        for i in 0..<k { for j in 0..<out { sum[j] += frame.scale * Double(mapped.data[i * out + j]) } }
        for j in 0..<out {
            XCTAssertEqual(sum[j], frame.representation[j], accuracy: 1e-5 * max(1, abs(frame.representation[j])))
        }
        // Faithful centring: a component that is a constant vector contributes nothing through a LayerNorm.
        let flat = Tensor(shape: [1, d], data: [Float](repeating: 3, count: d))
        XCTAssertLessThan(readout.mapRows(flat).data.map { abs($0) }.max()!, 1e-5)
    }

    func testMeanPoolingAndIdentityReadouts() throws {
        let pooled = try CompiledReadout(steps: [.meanPool], width: 4, convention: .faithful)
        XCTAssertEqual(pooled.tokenWeights(tokens: 4), [0.25, 0.25, 0.25, 0.25])
        XCTAssertEqual(pooled.map.shape, [4, 4])
        XCTAssertEqual(pooled.frame(selected: [1, 2, 3, 4]).representation, [1, 2, 3, 4])
        let selected = try CompiledReadout(steps: [.token(2)], width: 3, convention: .faithful)
        XCTAssertEqual(selected.tokenWeights(tokens: 4), [0, 0, 1, 0])
        XCTAssertThrowsError(try CompiledReadout(steps: [.linear(weight: Tensor(zeros: [2, 3]), bias: nil)], width: 3, convention: .faithful))
        XCTAssertThrowsError(try CompiledReadout(steps: [.token(0), .meanPool], width: 3, convention: .faithful))
        XCTAssertThrowsError(try CompiledReadout(steps: [.token(0), .linear(weight: Tensor(zeros: [2, 5]), bias: nil)], width: 3,
                                                 convention: .faithful))
    }
}
