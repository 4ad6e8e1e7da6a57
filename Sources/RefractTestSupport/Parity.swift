// MARK: - Test support shared by the test targets
//
// Named tolerances and the parity check every comparison with a reference library uses.

import Foundation
import RefractTensor
import XCTest

/// Named tolerance, scaled to the magnitude of what is compared: for every element of a row,
/// |a − r| <= abs + rel·max|row of r|. A float32 result's rounding error is a fraction of the
/// row's scale (every element of a GEMM row sums products of the same operands), not of the
/// element itself: an element that happens to be small carries its row's absolute error. So the
/// bound follows the row's largest magnitude, and a correct result passes under every BLAS kernel
/// set (Prescott, Sandybridge, Haswell, SkylakeX each add in their own order) while a wrong one,
/// off by more than ~1e-5 of its row's scale, does not.
public struct Tolerance: CustomStringConvertible, Sendable {
    public var abs: Float
    public var rel: Float
    public init(abs: Float, rel: Float) { self.abs = abs; self.rel = rel }
    public var description: String { "abs \(abs) + rel \(rel)·max|row|" }
    /// Embedding rows (norms of about 4 here): 1e-5 of the row's largest element.
    public static let embeddings = Tolerance(abs: 1e-6, rel: 1e-5)
    /// Intermediate activations (residual stream rows).
    public static let activations = Tolerance(abs: 1e-6, rel: 1e-5)
}

/// Compares elementwise with a named tolerance scaled by each row's largest reference magnitude,
/// the row-wise relative L2 error (the main criterion), and an order-sensitive checksum
/// Σ (i+1)·x_i, so that permuted or shifted outputs — an order that is ours, not BLAS's — cannot
/// pass. Rows are the first axis (a 1-D tensor is one row).
public func assertParity(_ got: Tensor, _ ref: Tensor, _ tol: Tolerance, maxRelativeError: Double = 1e-5, _ what: String,
                  file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.shape, ref.shape, "\(what): shape", file: file, line: line)
    guard got.shape == ref.shape else { return }
    let rows = ref.shape.count > 1 ? ref.shape[0] : 1
    let width = ref.count / max(rows, 1)
    var worst: (index: Int, excess: Float, bound: Float) = (-1, 0, 0)
    var worstRow = 0.0
    defer { print("parity \(what): max row relative L2 error \(worstRow)") }
    for r in 0..<rows {
        let range = (r * width)..<((r + 1) * width)
        let rowMax = ref.data[range].reduce(Float(0)) { Swift.max($0, Swift.abs($1)) }
        let bound = tol.abs + tol.rel * rowMax
        var num = 0.0, den = 0.0
        for i in range {
            let excess = Swift.abs(got.data[i] - ref.data[i]) - bound
            if !(excess <= 0), worst.index < 0 || excess > worst.excess { worst = (i, excess, bound) }
            let a = Double(got.data[i]), b = Double(ref.data[i])
            num += (a - b) * (a - b); den += b * b
        }
        let relErr = den > 0 ? (num / den).squareRoot() : num.squareRoot()
        worstRow = Swift.max(worstRow, relErr)
        XCTAssertLessThanOrEqual(relErr, maxRelativeError, "\(what): row \(r) relative L2 error", file: file, line: line)
    }
    if worst.index >= 0 {
        XCTFail("\(what): element \(worst.index) = \(got.data[worst.index]), reference \(ref.data[worst.index]), "
                + "bound \(worst.bound) (\(tol))", file: file, line: line)
    }
    func checksum(_ x: [Float]) -> Double { x.enumerated().reduce(0) { $0 + Double($1.offset + 1) * Double($1.element) } }
    let scale = ref.data.enumerated().reduce(0.0) { $0 + Double($1.offset + 1) * Double(abs($1.element)) }
    XCTAssertEqual(checksum(got.data), checksum(ref.data), accuracy: max(scale * 1e-5, 1e-9),
                   "\(what): order-sensitive checksum", file: file, line: line)
}


/// The largest difference between preprocessed pixels `got` [3, S, S] and the reference image at
/// `offset` of `ref`, in 0..1 pixel units (both un-normalised by the channel's `std`).
public func maxPixelDifference(_ got: Tensor, _ ref: Tensor, offset: Int, std: [Double]) -> Float {
    let plane = got.count / 3
    var worst: Float = 0
    for c in 0..<3 {
        let s = Float(std[c])
        for j in 0..<plane {
            let k = c * plane + j
            worst = max(worst, abs(got.data[k] - ref.data[offset + k]) * s)
        }
    }
    return worst
}
