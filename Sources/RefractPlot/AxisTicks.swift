// MARK: - AxisTicks
//
// "Nice" tick values: steps of 1, 2 or 5 times a power of ten, placed on multiples of the step.
// Values are computed as integer multiples of the step (never by repeated addition) and labels
// carry exactly the decimals the step needs, so 0.1 + 0.2 never shows up as 0.30000000000000004.

import Foundation

/// A step of `mantissa` × 10^`exponent`, `mantissa` being 1, 2 or 5.
public struct TickStep: Sendable, Equatable, CustomStringConvertible {
    public var mantissa: Int
    public var exponent: Int

    public init(mantissa: Int, exponent: Int) {
        precondition([1, 2, 5].contains(mantissa), "tick step mantissa must be 1, 2 or 5")
        self.mantissa = mantissa
        self.exponent = exponent
    }

    public var value: Double { Double(mantissa) * pow(10, Double(exponent)) }

    /// `i` × step, rounded as closely as a Double allows (0.3, not 0.30000000000000004).
    public func multiple(_ i: Int) -> Double {
        let m = Double(i) * Double(mantissa)
        return exponent >= 0 ? m * pow(10, Double(exponent)) : m / pow(10, Double(-exponent))
    }

    /// The next coarser nice step (1 → 2 → 5 → 10).
    public var coarser: TickStep {
        switch mantissa {
        case 1: return TickStep(mantissa: 2, exponent: exponent)
        case 2: return TickStep(mantissa: 5, exponent: exponent)
        default: return TickStep(mantissa: 1, exponent: exponent + 1)
        }
    }

    public var description: String { "\(mantissa)e\(exponent)" }
}

public enum AxisTicks {
    /// The smallest nice step (1, 2 or 5 × 10^k) that is at least `raw` (positive, finite).
    public static func niceStep(atLeast raw: Double) -> TickStep {
        precondition(raw > 0 && raw.isFinite, "a tick step must be positive and finite, got \(raw)")
        var e = Int(log10(raw).rounded(.down))
        // log10 can be off by one ulp near powers of ten; settle on the exact decade.
        if TickStep(mantissa: 1, exponent: e).value > raw * (1 + 1e-12) { e -= 1 }
        if TickStep(mantissa: 1, exponent: e + 1).value <= raw * (1 + 1e-12) { e += 1 }
        var step = TickStep(mantissa: 1, exponent: e)
        while step.value < raw * (1 - 1e-12) { step = step.coarser }
        return step
    }

    /// Ticks for the axis range `lower...upper`: every multiple of a nice step inside the range,
    /// using the finest step that gives at most `maxCount` ticks (at least 2 allowed). In the
    /// rare case where that step has no multiple inside the range, the next finer step is used
    /// (one or two ticks more than asked, rather than none). `integerStep` keeps the step at 1
    /// or more (for layer indices and other counts). An empty, reversed or non-finite range
    /// has no ticks.
    public static func ticks(lower: Double, upper: Double, maxCount: Int,
                             integerStep: Bool = false) -> (values: [Double], step: TickStep) {
        let maxCount = max(2, maxCount)
        guard lower.isFinite, upper.isFinite, upper > lower, (upper - lower).isFinite else {
            return ([], TickStep(mantissa: 1, exponent: 0))
        }
        // Start well below the answer and coarsen until the ticks fit.
        var step = niceStep(atLeast: (upper - lower) / Double(4 * maxCount))
        if integerStep && step.exponent < 0 { step = TickStep(mantissa: 1, exponent: 0) }
        var previous: (values: [Double], step: TickStep)?
        while true {
            let first = (lower / step.value).rounded(.down)
            let last = (upper / step.value).rounded(.up)
            // Far beyond what labels can tell apart: give up on nice values.
            if !(abs(first) < 1e15 && abs(last) < 1e15) { return ([lower, upper], step) }
            var values: [Double] = []
            // At most 4 * maxCount + 2 multiples. Tolerate rounding at the ends: a tick a hair
            // outside the range still counts.
            let tolerance = step.value * 1e-9
            for i in Int(first)...Int(last) {
                let v = step.multiple(i)
                if v >= lower - tolerance && v <= upper + tolerance { values.append(v) }
            }
            if values.isEmpty, let previous { return previous }
            if values.count <= maxCount { return (values, step) }
            previous = (values, step)
            step = step.coarser
        }
    }

    /// The label of tick `value` on an axis with `step`: as many decimals as the step needs
    /// ("0.0", "0.2", "0.4"), never "-0"; very large values and very fine steps in scientific
    /// notation ("1e+07", "2.5e-07").
    public static func label(_ value: Double, step: TickStep) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        let magnitude = abs(value)
        if magnitude >= 1e7 || step.exponent <= -6 {
            if value == 0 { return "0" }
            // Enough significant digits to tell neighbours apart.
            let digits = min(17, max(1, Int(log10(magnitude).rounded(.down)) - step.exponent + 1))
            var s = String(format: "%.\(max(0, digits - 1))e", value)
            // Trim "1.50e+06" to "1.5e+06" and "1.00e+06" to "1e+06".
            if let e = s.firstIndex(of: "e"), s[..<e].contains(".") {
                var mantissa = String(s[..<e])
                while mantissa.hasSuffix("0") { mantissa.removeLast() }
                if mantissa.hasSuffix(".") { mantissa.removeLast() }
                s = mantissa + String(s[e...])
            }
            return s
        }
        let decimals = min(17, max(0, -step.exponent))
        let s = String(format: "%.\(decimals)f", value)
        if s.hasPrefix("-"), s.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) { return String(s.dropFirst()) }
        return s
    }
}
