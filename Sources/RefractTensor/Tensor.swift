// MARK: - Tensor
//
// A dense, row-major float32 tensor. Refract computes in float32 everywhere; weights stored as
// f16/bf16 are widened when a checkpoint is loaded. The type is deliberately plain: a shape and a
// contiguous array. Kernels live in `Kernels.swift` (fast) and `ReferenceKernels.swift` (plain).

public struct Tensor: Sendable, Equatable {
    /// Extent of each axis, outermost first.
    public var shape: [Int]
    /// Elements in row-major order; `data.count == shape.reduce(1, *)`.
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative extent in shape \(shape)")
        precondition(shape.reduce(1, *) == data.count,
                     "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// Same elements, new shape (element count must match).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Row `i` of a tensor viewed as `[shape[0], rest]`.
    public func row(_ i: Int) -> [Float] {
        let width = shape.dropFirst().reduce(1, *)
        return Array(data[(i * width)..<((i + 1) * width)])
    }
}
