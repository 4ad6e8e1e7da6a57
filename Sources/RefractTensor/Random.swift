// MARK: - Deterministic random numbers
//
// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state, reproducible everywhere. Used for random
// weights in benchmarks, random controls (TextSpan's random directions) and test data.

import Foundation

public struct SplitMix64: Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1), 53 bits.
    public mutating func uniformOpen() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        (-2 * log(uniformOpen())).squareRoot() * cos(2 * Double.pi * uniformOpen())
    }
}
