import XCTest
@testable import RefractTensor

/// `Kernels.firstNonFinite` (C, vectorised, parallel above 4 M elements) against the plain loop.
final class NonFiniteKernelTests: XCTestCase {
    func testAgreesWithTheReferenceAtEveryPositionNearBlockEdges() {
        var rng = SeededRandom(state: 11)
        for n in [0, 1, 7, 255, 256, 257, 511, 1000, 4099] {
            let clean = (0..<n).map { _ in rng.uniform(-1, 1) * 3e38 }
            XCTAssertNil(clean.withUnsafeBufferPointer { Kernels.firstNonFinite($0) }, "n = \(n), all finite")
            XCTAssertNil(Reference.firstNonFinite(clean))
            for bad: Float in [.nan, .infinity, -.infinity, Float(bitPattern: 0x7FC0_1234), Float(bitPattern: 0xFF80_0001)] {
                for i in Set([0, n / 2, n - 1, 255, 256, 257].filter { $0 >= 0 && $0 < n }) {
                    var x = clean
                    x[i] = bad
                    if i + 3 < n { x[i + 3] = .nan }                  // a later bad value must not win
                    let fast = x.withUnsafeBufferPointer { Kernels.firstNonFinite($0) }
                    XCTAssertEqual(fast, Reference.firstNonFinite(x), "n = \(n), \(bad) at \(i)")
                    XCTAssertEqual(fast, i)
                }
            }
        }
    }

    func testLargeBuffersAreSplitButTheEarliestBadValueWins() {
        let n = (1 << 22) * 3 + 17                                    // four chunks, the last short
        var x = [Float](repeating: 1, count: n)
        XCTAssertNil(x.withUnsafeBufferPointer { Kernels.firstNonFinite($0) })
        for (first, later) in [(n - 1, -1), ((1 << 22) + 5, n - 2), (3, (1 << 22) * 2), ((1 << 22) - 1, 1 << 22)] {
            for i in x.indices where !x[i].isFinite { x[i] = 1 }
            x[first] = .infinity
            if later >= 0 { x[later] = .nan }
            XCTAssertEqual(x.withUnsafeBufferPointer { Kernels.firstNonFinite($0) }, first)
        }
    }

    func testTensorReportsValueAndPosition() throws {
        var t = Tensor(zeros: [2, 3, 4])
        XCTAssertNil(t.firstNonFinite())
        XCTAssertNoThrow(try t.requireFinite(source: "s", subject: "t"))
        t.data[17] = -.infinity
        t.data[20] = .nan
        XCTAssertEqual(t.firstNonFinite(), NonFiniteValue(index: 17, value: -.infinity))
        XCTAssertEqual(Tensor.position(ofFlatIndex: 17, in: [2, 3, 4]), [1, 1, 1])
        XCTAssertEqual(Tensor.position(ofFlatIndex: 0, in: []), [])
        XCTAssertThrowsError(try t.requireFinite(source: "run/x", subject: "tensor 'attn'", note: "refused")) { e in
            let text = "\(e)"
            for part in ["run/x", "tensor 'attn'", "-infinity", "[1, 1, 1]", "[2, 3, 4]", "refused"] {
                XCTAssertTrue(text.contains(part), "'\(part)' missing: \(text)")
            }
            XCTAssertFalse(text.contains("zero"), text)
        }
        XCTAssertEqual(NonFiniteValue.text(.nan), "NaN")
        XCTAssertEqual(NonFiniteValue.text(.infinity), "+infinity")
    }
}
