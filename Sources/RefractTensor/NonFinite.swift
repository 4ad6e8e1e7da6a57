// MARK: - Non-finite values
//
// One way to find NaN and ±infinity in float data, for every place that must refuse them: weights
// when a checkpoint is loaded, embeddings before they are written, decomposition batches before a
// shard is written, stored runs before a metric is computed from them. The fast scan is a C kernel
// (`rf_first_nonfinite`, vectorised, split over the cores for large buffers); `Reference` has the
// plain loop the tests compare it with.

import CRefractKernels
import Foundation

/// The first NaN or ±infinity of some float data: its flat index and its value.
public struct NonFiniteValue: Sendable, Equatable {
    public var index: Int
    public var value: Float
    public init(index: Int, value: Float) { self.index = index; self.value = value }

    /// "NaN", "+infinity" or "-infinity" (never a number: a non-finite value is not "zero").
    public var valueText: String { NonFiniteValue.text(value) }

    public static func text(_ v: Float) -> String {
        v.isNaN ? "NaN" : (v > 0 ? "+infinity" : "-infinity")
    }
}

/// A non-finite value where only finite ones are allowed. `description` names where it is
/// (`source`: a file, a run, an argument), what holds it, and its position.
public struct NonFiniteError: Error, CustomStringConvertible, Sendable, Equatable {
    public var source: String
    /// What holds the value, e.g. "image embedding of cat.png" or "tensor 'attn' of shard-00000.safetensors".
    public var subject: String
    public var bad: NonFiniteValue
    /// Position of the value as a multi-index of `shape`.
    public var position: [Int]
    public var shape: [Int]
    /// Why it matters / what to do.
    public var note: String

    public init(source: String, subject: String, bad: NonFiniteValue, shape: [Int], note: String) {
        self.source = source; self.subject = subject; self.bad = bad; self.shape = shape; self.note = note
        self.position = Tensor.position(ofFlatIndex: bad.index, in: shape)
    }

    public var description: String {
        "\(source): \(subject) holds \(bad.valueText) at index \(position) of shape \(shape)"
            + (note.isEmpty ? "" : "; \(note)")
    }
}

extension Kernels {
    /// Index of the first NaN or ±infinity in `x`, or nil. Buffers above 4 M elements are scanned in
    /// chunks on all cores (the earliest bad chunk wins, so the answer does not depend on the split).
    public static func firstNonFinite(_ x: UnsafeBufferPointer<Float>) -> Int? {
        guard let base = x.baseAddress, x.count > 0 else { return nil }
        let n = x.count
        let chunk = 1 << 22
        if n <= chunk {
            let i = rf_first_nonfinite(base, n)
            return i < n ? i : nil
        }
        let parts = (n + chunk - 1) / chunk
        let found = FirstIndex()
        let p = SendablePointer(base)
        Parallel.forEach(parts) { part in
            let start = part * chunk, count = Swift.min(chunk, n - start)
            if let earlier = found.value, earlier < start { return }
            let i = rf_first_nonfinite(UnsafePointer(p.pointer + start), count)
            if i < count { found.offer(start + i) }
        }
        return found.value
    }
}

/// The smallest index offered from parallel tasks.
private final class FirstIndex: @unchecked Sendable {
    private var best: Int?
    private let lock = NSLock()
    var value: Int? { lock.lock(); defer { lock.unlock() }; return best }
    func offer(_ i: Int) { lock.lock(); if best.map({ i < $0 }) ?? true { best = i }; lock.unlock() }
}

extension Reference {
    /// The plain loop the fast `Kernels.firstNonFinite` is tested against.
    public static func firstNonFinite(_ x: [Float]) -> Int? {
        x.firstIndex { !$0.isFinite }
    }
}

extension Tensor {
    /// The first NaN or ±infinity in row-major order, or nil when every element is finite.
    public func firstNonFinite() -> NonFiniteValue? {
        data.withUnsafeBufferPointer { p in
            Kernels.firstNonFinite(p).map { NonFiniteValue(index: $0, value: p[$0]) }
        }
    }

    /// The multi-index of flat (row-major) index `i` in `shape`, e.g. 7 in [2, 3, 2] → [1, 0, 1].
    public static func position(ofFlatIndex i: Int, in shape: [Int]) -> [Int] {
        if shape.isEmpty { return [] }
        var rest = i
        var out = [Int](repeating: 0, count: shape.count)
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            let extent = Swift.max(shape[axis], 1)
            out[axis] = rest % extent
            rest /= extent
        }
        return out
    }

    /// Throws a `NonFiniteError` naming `source`, `subject` and the first bad element's position.
    public func requireFinite(source: String, subject: String, note: String = "") throws {
        if let bad = firstNonFinite() {
            throw NonFiniteError(source: source, subject: subject, bad: bad, shape: shape, note: note)
        }
    }

    /// For a tensor whose first axis is rows (images, texts): throws a `NonFiniteError` for the
    /// first bad element, with its position inside its row; `describe(row)` names the row's
    /// source and subject.
    public func requireFiniteRows(note: String, describe: (Int) -> (source: String, subject: String)) throws {
        guard let bad = firstNonFinite() else { return }
        let perRow = Array(shape.dropFirst())
        let width = Swift.max(perRow.reduce(1, *), 1)
        let (source, subject) = describe(bad.index / width)
        throw NonFiniteError(source: source, subject: subject, bad: NonFiniteValue(index: bad.index % width, value: bad.value),
                             shape: perRow, note: note)
    }
}
