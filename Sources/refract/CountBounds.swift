// MARK: - Count options: one place for their bounds
//
// Every numeric count a command takes (images per batch, heads to show, draws, threads...) is
// checked here in the commands' `validate()`, before anything is read or allocated from it. The
// bounds are generous for real use and small enough that no value can exhaust memory or
// overflow arithmetic downstream. The error names the option, the value and the allowed range.

import ArgumentParser
import RefractCLIP
import RefractSpurious

enum CountBounds {
    /// Images per forward pass (`--batch-size`): activations grow linearly with it.
    static let batchSize = 1...CLIP.maxBatchSize
    /// Images per shard (`--shard-size`).
    static let shardSize = 1...1_000_000
    /// BLAS threads (`--threads`).
    static let threads = 1...1024
    /// Results or heads to show (`--top`, `--top-k`, `--per-head`).
    static let top = 1...100_000
    /// A span rank (`--rank`).
    static let rank = 1...100_000
    /// Images to segment (`--limit`).
    static let limit = 1...100_000_000
    /// Overlays to write (`--save-images`).
    static let saveImages = 0...100_000
    /// A 0-based row of a run (`--index`).
    static let index = 0...Int(Int32.max)
    /// Random-head draws (`--random-draws`): the library's own bound.
    static let randomDraws = 0...SpuriousOptions.maxRandomDraws

    /// Throws a `ValidationError` unless `value` lies in `range`.
    static func check(_ option: String, _ value: Int, _ range: ClosedRange<Int>) throws {
        guard !range.contains(value) else { return }
        throw ValidationError("\(option) \(value) is out of range: allowed \(range.lowerBound)...\(range.upperBound)")
    }

    /// The same for an optional value (nil passes).
    static func check(_ option: String, _ value: Int?, _ range: ClosedRange<Int>) throws {
        if let value { try check(option, value, range) }
    }
}
