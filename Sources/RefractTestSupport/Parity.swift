// MARK: - Test support shared by the test targets
//
// Named tolerances and the parity check every comparison with a reference library uses.

import Foundation
import RefractTensor
import XCTest

/// Named tolerance: |a − r| <= abs + rel·|r| for every element.
public struct Tolerance: CustomStringConvertible, Sendable {
    public var abs: Float
    public var rel: Float
    public init(abs: Float, rel: Float) { self.abs = abs; self.rel = rel }
    public var description: String { "abs \(abs) + rel \(rel)·|ref|" }
    /// Embedding rows have norms of about 4 here, so abs 1e-5 is ~2e-6 of the row scale; the main
    /// criterion is the row-wise relative L2 error (<= 1e-5) checked beside it.
    public static let embeddings = Tolerance(abs: 1e-5, rel: 1e-5)
    public static let activations = Tolerance(abs: 2e-6, rel: 1e-5)
}

/// Compares elementwise with a named tolerance, the row-wise relative L2 error, and an
/// order-sensitive checksum Σ (i+1)·x_i (so permuted or shifted outputs cannot pass).
public func assertParity(_ got: Tensor, _ ref: Tensor, _ tol: Tolerance, maxRelativeError: Double = 1e-5, _ what: String,
                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.shape, ref.shape, "\(what): shape", file: file, line: line)
    guard got.shape == ref.shape else { return }
    var worst: (Int, Float) = (-1, 0)
    for i in 0..<ref.count {
        let excess = abs(got.data[i] - ref.data[i]) - (tol.abs + tol.rel * abs(ref.data[i]))
        if !(excess <= 0), worst.0 < 0 || excess > worst.1 { worst = (i, excess) }
    }
    if worst.0 >= 0 {
        XCTFail("\(what): element \(worst.0) = \(got.data[worst.0]), reference \(ref.data[worst.0]) (\(tol))", file: file, line: line)
    }
    let rows = ref.shape.count > 1 ? ref.shape[0] : 1
    let width = ref.count / max(rows, 1)
    var worstRow = 0.0
    defer { print("parity \(what): max row relative L2 error \(worstRow)") }
    for r in 0..<rows {
        var num = 0.0, den = 0.0
        for j in 0..<width {
            let a = Double(got.data[r * width + j]), b = Double(ref.data[r * width + j])
            num += (a - b) * (a - b); den += b * b
        }
        let relErr = den > 0 ? (num / den).squareRoot() : num.squareRoot()
        worstRow = max(worstRow, relErr)
        XCTAssertLessThanOrEqual(relErr, maxRelativeError, "\(what): row \(r) relative L2 error", file: file, line: line)
    }
    func checksum(_ x: [Float]) -> Double { x.enumerated().reduce(0) { $0 + Double($1.offset + 1) * Double($1.element) } }
    let scale = ref.data.enumerated().reduce(0.0) { $0 + Double($1.offset + 1) * Double(abs($1.element)) }
    XCTAssertEqual(checksum(got.data), checksum(ref.data), accuracy: max(scale * 1e-5, 1e-9),
                   "\(what): order-sensitive checksum", file: file, line: line)
}

