import XCTest
@testable import RefractPlot

final class AxisTicksTests: XCTestCase {
    func testNiceStepIsTheSmallestOneTwoFiveAtLeastTheRawStep() {
        let cases: [(Double, Double)] = [
            (0.3, 0.5), (1, 1), (1.0000001, 2), (2, 2), (2.1, 5), (3, 5), (5, 5), (7, 10), (10, 10),
            (0.1, 0.1), (0.2, 0.2), (0.5, 0.5), (0.15, 0.2), (3e-7, 5e-7), (4.9e5, 5e5), (1000, 1000), (1001, 2000),
            (12.5, 20), (0.001, 0.001),
        ]
        for (raw, expected) in cases {
            let step = AxisTicks.niceStep(atLeast: raw)
            XCTAssertEqual(step.value, expected, accuracy: expected * 1e-12, "raw \(raw) gave \(step)")
            XCTAssertTrue([1, 2, 5].contains(step.mantissa))
        }
    }

    func testTicksForTypicalRanges() {
        func check(_ lo: Double, _ hi: Double, _ maxCount: Int, integer: Bool = false, _ expected: [Double],
                   labels: [String]? = nil, line: UInt = #line) {
            let t = AxisTicks.ticks(lower: lo, upper: hi, maxCount: maxCount, integerStep: integer)
            XCTAssertEqual(t.values, expected, "\(lo)...\(hi) max \(maxCount)", line: line)
            if let labels {
                XCTAssertEqual(t.values.map { AxisTicks.label($0, step: t.step) }, labels, line: line)
            }
        }
        check(0, 1, 6, [0, 0.2, 0.4, 0.6, 0.8, 1.0], labels: ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"])
        check(0, 100, 6, [0, 20, 40, 60, 80, 100], labels: ["0", "20", "40", "60", "80", "100"])
        check(-3.7, 12.2, 8, [-2, 0, 2, 4, 6, 8, 10, 12], labels: ["-2", "0", "2", "4", "6", "8", "10", "12"])
        check(45, 55, 6, [46, 48, 50, 52, 54])
        check(0, 0.3, 4, [0, 0.1, 0.2, 0.3], labels: ["0.0", "0.1", "0.2", "0.3"])
        check(0.001, 0.0012, 5, [0.001, 0.00105, 0.0011, 0.00115, 0.0012],
              labels: ["0.00100", "0.00105", "0.00110", "0.00115", "0.00120"])
        check(1e7, 5e7, 5, [1e7, 2e7, 3e7, 4e7, 5e7], labels: ["1e+07", "2e+07", "3e+07", "4e+07", "5e+07"])
        check(-0.55, 11.55, 10, integer: true, [0, 2, 4, 6, 8, 10])
        check(-0.55, 2.55, 10, integer: true, [0, 1, 2], labels: ["0", "1", "2"])
        check(-1, -0.5, 6, [-1, -0.9, -0.8, -0.7, -0.6, -0.5])
        // Labels never show "-0".
        XCTAssertEqual(AxisTicks.label(-0.0, step: TickStep(mantissa: 2, exponent: -1)), "0.0")
        XCTAssertEqual(AxisTicks.label(-1e-17, step: TickStep(mantissa: 1, exponent: 0)), "0")
        XCTAssertEqual(AxisTicks.label(2.5e-7, step: TickStep(mantissa: 5, exponent: -8)), "2.5e-07")
        XCTAssertEqual(AxisTicks.label(.nan, step: TickStep(mantissa: 1, exponent: 0)), "nan")
    }

    /// For many random ranges: ticks lie in the range, are evenly spaced by a nice step, at least
    /// one appears, and there are more than asked for only when the coarser step has none.
    func testTickPropertiesOnRandomRanges() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let e = Double.random(in: -8...8, using: &rng)
            let span = pow(10, e) * Double.random(in: 0.01...1, using: &rng)
            let lo = Double.random(in: -1...1, using: &rng) * pow(10, e + Double.random(in: -1...1, using: &rng))
            let hi = lo + span
            guard hi > lo else { continue }
            let maxCount = Int.random(in: 2...12, using: &rng)
            let t = AxisTicks.ticks(lower: lo, upper: hi, maxCount: maxCount)
            XCTAssertFalse(t.values.isEmpty, "\(lo)...\(hi)")
            if t.values.count > maxCount {
                // Only when the coarser step has no tick in the range.
                let c = t.step.coarser.value
                XCTAssertEqual((lo / c).rounded(.up), (hi / c).rounded(.up), "\(lo)...\(hi): \(t.values.count) > \(maxCount)")
                XCTAssertNotEqual((lo / c).rounded(.up) * c, lo)
            }
            let tol = t.step.value * 1e-6
            for v in t.values {
                XCTAssertGreaterThanOrEqual(v, lo - tol)
                XCTAssertLessThanOrEqual(v, hi + tol)
                let k = v / t.step.value
                XCTAssertEqual(k, k.rounded(), accuracy: 1e-6, "\(v) is not a multiple of \(t.step)")
            }
            for (a, b) in zip(t.values, t.values.dropFirst()) {
                XCTAssertEqual(b - a, t.step.value, accuracy: tol)
            }
            // Labels of distinct ticks are distinct.
            let labels = t.values.map { AxisTicks.label($0, step: t.step) }
            XCTAssertEqual(Set(labels).count, labels.count, "\(labels)")
        }
    }

    func testDegenerateRangesGiveNoTicksInsteadOfTrapping() {
        XCTAssertTrue(AxisTicks.ticks(lower: 1, upper: 1, maxCount: 5).values.isEmpty)
        XCTAssertTrue(AxisTicks.ticks(lower: 2, upper: 1, maxCount: 5).values.isEmpty)
        XCTAssertTrue(AxisTicks.ticks(lower: .nan, upper: 1, maxCount: 5).values.isEmpty)
        XCTAssertTrue(AxisTicks.ticks(lower: -.infinity, upper: 1, maxCount: 5).values.isEmpty)
        XCTAssertTrue(AxisTicks.ticks(lower: -1e308, upper: 1e308, maxCount: 5).values.isEmpty)
        XCTAssertFalse(AxisTicks.ticks(lower: 0, upper: 1, maxCount: -3).values.isEmpty)
        // A range far from zero relative to its span still terminates.
        _ = AxisTicks.ticks(lower: 1e200, upper: 1e200 * (1 + 1e-15), maxCount: 5)
    }
}
