// MARK: - Synthetic runs with planted maps, for tests and the benchmark
//
// A run store in the timm layout (model id "synthetic", components listed in the manifest) whose
// components x_{i,c} ~ N(0, 1/d) are drawn from a seeded generator, and CLIP targets for it. With
// `planted`, every component has a map Q_c [d, D] with orthonormal columns (a random isometry into
// R^D; needs d ≥ D) and the target of image i is t_i = normalize(Σ_c x_{i,c}·Q_c): CompAlign should
// find maps whose aligned sum has cosine ≈ 1 with t and W_cᵀW_c ≈ I. Without it the targets are
// random unit vectors (the benchmark, where only the speed counts and the GEMM of planting 50,000
// images would cost more than the training measured).

import Foundation
import RefractDecompose
import RefractStore
import RefractTensor

public enum SyntheticAlignment {
    public struct Shape: Sendable {
        public var images: Int
        public var components: Int
        public var width: Int
        public var clipWidth: Int
        public var shardSize: Int
        public var dtype: StoreDType
        public init(images: Int, components: Int, width: Int, clipWidth: Int, shardSize: Int = 512, dtype: StoreDType = .float32) {
            self.images = images; self.components = components; self.width = width; self.clipWidth = clipWidth
            self.shardSize = shardSize; self.dtype = dtype
        }
    }

    /// Seeded random isometries Q_c [d, D] (orthonormal columns, modified Gram–Schmidt in float64), [C, d, D].
    public static func isometries(components c: Int, width d: Int, clipWidth e: Int, seed: UInt64) -> [Float] {
        precondition(d >= e, "an isometry R^d → R^D needs d ≥ D")
        var rng = SplitMix64(seed: seed)
        var out = [Float](repeating: 0, count: c * d * e)
        for k in 0..<c {
            var cols = [[Double]]()
            while cols.count < e {
                var v = (0..<d).map { _ in rng.normal() }
                for _ in 0..<2 { for u in cols { let p = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }; for i in 0..<d { v[i] -= p * u[i] } } }
                let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
                guard n > 1e-6 else { continue }
                cols.append(v.map { $0 / n })
            }
            for i in 0..<d { for j in 0..<e { out[(k * d + i) * e + j] = Float(cols[j][i]) } }
        }
        return out
    }

    /// Writes the run at `run` and returns its targets [images, D] (row r ↔ run row r) and, when
    /// planted, the maps [C, d, D]. Image i is "synthetic/i.png", labelled "class(i mod classes)".
    @discardableResult
    public static func write(run: URL, shape: Shape, planted: Bool, seed: UInt64, classes: Int = 0,
                             progress: ((Int) -> Void)? = nil) throws -> (targets: Tensor, maps: [Float]?) {
        let (n, c, d, e) = (shape.images, shape.components, shape.width, shape.clipWidth)
        let header = try self.header(shape: shape, planted: planted, classes: classes)
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "SyntheticAlignment", resume: false)
        let maps = planted ? isometries(components: c, width: d, clipWidth: e, seed: seed &+ 1) : nil
        var targets = [Float](repeating: 0, count: n * e)
        let scale = 1 / Double(d).squareRoot()
        for (s, range) in writer.shardRanges.enumerated() {
            var rng = SplitMix64(seed: seed &+ 0x1000 &+ UInt64(s))
            let x = (0..<(range.count * c * d)).map { _ in Float(rng.normal() * scale) }   // [r, C, d]
            let rows = Tensor(shape: [range.count, c, d], data: x)
            if let maps {
                let stored = x.map { shape.dtype.rounded($0) }
                let z = Ops.matmul(Tensor(shape: [range.count, c * d], data: stored), Tensor(shape: [c * d, e], data: maps))  // [r, D]
                let t = Ops.l2Normalized(z)
                for (k, i) in range.enumerated() { for j in 0..<e { targets[i * e + j] = t.data[k * e + j] } }
            } else {
                let t = Ops.l2Normalized(Tensor(shape: [range.count, e], data: (0..<(range.count * e)).map { _ in Float(rng.normal()) }))
                for (k, i) in range.enumerated() { for j in 0..<e { targets[i * e + j] = t.data[k * e + j] } }
            }
            try writer.writeShard(s, imageIndices: Array(range), rows: [AlignRun.componentsTensor: rows], skipped: [])
            progress?(range.upperBound)
        }
        try writer.finish()
        return (Tensor(shape: [n, e], data: targets), maps)
    }

    /// The store header of a synthetic run (timm layout, components c0, c1, ...).
    public static func header(shape: Shape, planted: Bool, classes: Int = 0) throws -> StoreHeader {
        let (n, c, d) = (shape.images, shape.components, shape.width)
        let components = (0..<c).map { ComponentInfo(name: "c\($0)", official: "component:\($0)", kind: .head, block: $0, head: 0) }
        let listed = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(components))
        return StoreHeader(
            model: StoreModelInfo(id: "synthetic", layout: "timm", weightsSHA256: String(repeating: "5", count: 64), weightFiles: []),
            convention: "faithful", dimensions: ["components": c, "width": d],
            options: .object(["architecture": .string("synthetic"), "components": listed, "planted": .bool(planted)]),
            tensors: [StoreTensorSpec(name: AlignRun.componentsTensor, shape: [c, d], dtype: shape.dtype, description: "synthetic components")],
            images: (0..<n).map { StoreImage(path: "/synthetic/\($0).png", label: classes > 0 ? "class\($0 % classes)" : nil) },
            classNames: classes > 0 ? (0..<classes).map { "class\($0)" } : nil,
            shardSize: shape.shardSize)
    }

    /// A planted run written at `directory/run` and an alignment of it at `directory/align`, trained
    /// for `epochs` at `learningRate` (larger than the official rate, so a few epochs suffice): what
    /// tests of the aligned applications start from.
    public static func alignedRun(in directory: URL, shape: Shape, seed: UInt64, classes: Int = 0, epochs: Int = 2,
                                  learningRate: Double = 1e-2) throws -> (reader: StoreReader, alignment: Alignment, targets: AlignTargets) {
        let run = directory.appendingPathComponent("run")
        let (t, _) = try write(run: run, shape: shape, planted: true, seed: seed, classes: classes)
        let reader = try StoreReader(run: run)
        var options = AlignRunOptions()
        options.hyper.learningRate = learningRate
        options.hyper.epochs = epochs
        let targets = AlignTargets(embeddings: t, info: targetInfo(clipWidth: shape.clipWidth))
        let alignment = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: directory.appendingPathComponent("align"),
                                         options: options, createdBy: "SyntheticAlignment")
        return (reader, alignment, targets)
    }

    /// The target description of synthetic targets.
    public static func targetInfo(clipWidth: Int) -> AlignmentTarget {
        AlignmentTarget(model: StoreModelInfo(id: "synthetic-clip", layout: "openCLIP", weightsSHA256: String(repeating: "c", count: 64),
                                              weightFiles: []), width: clipWidth, source: "synthetic")
    }
}
