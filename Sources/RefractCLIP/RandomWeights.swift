// MARK: - Random weights
//
// A `TensorSource` that invents weights of whatever shape is asked for: for benchmarks of real
// architecture shapes without downloading checkpoints, and for tests. Deterministic per seed
// and key. LayerNorm weights are drawn near 1, everything else uniform in ±scale/sqrt(fan-in).

import Foundation
import RefractCheckpoint
import RefractTensor

public final class RandomWeights: TensorSource, @unchecked Sendable {
    private let seed: UInt64
    public private(set) var taken: [String] = []

    public init(seed: UInt64 = 0) { self.seed = seed }

    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        taken.append(key)
        var rng = SplitMix64(seed: seed ^ UInt64(truncatingIfNeeded: key.utf8.reduce(UInt64(1469598103934665603)) {
            ($0 ^ UInt64($1)) &* 1099511628211
        }))
        func next() -> Float { Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1 }
        let n = shape.reduce(1, *)
        let isNormWeight = shape.count == 1 && (key.contains("ln") || key.contains("norm")) && key.hasSuffix("weight")
        let fanIn = shape.count >= 2 ? shape.dropFirst().reduce(1, *) : 1
        let scale: Float = shape.count >= 2 ? 1 / Float(fanIn).squareRoot() : 0.1
        var data = [Float](repeating: 0, count: n)
        // BatchNorm running variances must be positive.
        let isVariance = key.hasSuffix("running_var")
        for i in 0..<n { data[i] = isNormWeight || isVariance ? 1 + 0.1 * next() : scale * next() }
        return Tensor(shape: shape, data: data)
    }

    public func ignore(_ key: String) {}
}

/// Records every key and shape a model takes (handing out zeros of that shape): the tensor list of
/// a random-weight checkpoint.
public final class KeyRecorder: TensorSource {
    public private(set) var keys: [(String, [Int])] = []
    public init() {}
    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        keys.append((key, shape))
        return Tensor(zeros: shape)
    }
    public func ignore(_ key: String) {}
}

extension CLIPVisionTower {
    /// A tower with weights from any source (e.g. `RandomWeights` for benchmarks).
    public init(weights: TensorSource, layout: CLIPLayout = .openCLIP, architecture: CLIPArchitecture) throws {
        try self.init(source: weights, layout: layout, arch: architecture)
    }
}

extension CLIPTextTower {
    public init(weights: TensorSource, layout: CLIPLayout = .openCLIP, architecture: CLIPArchitecture) throws {
        try self.init(source: weights, layout: layout, arch: architecture)
    }
}

extension CLIPArchitecture {
    /// OpenCLIP ViT-B-16 shapes (OpenAI/LAION): 224 px, patch 16, width 768 × 12 layers, text 512 × 12.
    public static let vitB16 = CLIPArchitecture(
        vision: TowerArchitecture(width: 768, layers: 12, heads: 12, mlpWidth: 3072, layerNormEps: 1e-5, activation: .gelu),
        imageSize: 224, patchSize: 16,
        text: TowerArchitecture(width: 512, layers: 12, heads: 8, mlpWidth: 2048, layerNormEps: 1e-5, activation: .gelu),
        contextLength: 77, vocabSize: 49408, embedDim: 512)

    /// OpenCLIP ViT-L-14 shapes: 224 px, patch 14, width 1024 × 24 layers, text 768 × 12.
    public static let vitL14 = CLIPArchitecture(
        vision: TowerArchitecture(width: 1024, layers: 24, heads: 16, mlpWidth: 4096, layerNormEps: 1e-5, activation: .gelu),
        imageSize: 224, patchSize: 14,
        text: TowerArchitecture(width: 768, layers: 12, heads: 12, mlpWidth: 3072, layerNormEps: 1e-5, activation: .gelu),
        contextLength: 77, vocabSize: 49408, embedDim: 768)
}
