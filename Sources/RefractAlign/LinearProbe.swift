// MARK: - Linear probes on a run's representations
//
// The classifier the paper gives models without a head of their own (beyond-clip.md §4.6, §4.8):
// `get_head` — Linear(d, K) with bias on the representation, cross-entropy, Adam with coupled
// weight decay 1e-6; Waterbirds: lr 1e-3, batch 64, 10 epochs, the training rows in order
// (`shuffle=False`); ImageNet (DINO, DINOv2): lr 3e-4, 3 epochs, at most 1,000·(64/batch) batches
// an epoch. Initialised as PyTorch's Linear (weights and bias U(−1/√d, 1/√d)) from a seeded
// generator. Features are streamed a batch at a time from any source.
//
// `train` is the fast path (GEMMs, float32 Adam as PyTorch keeps it); `referenceStep` is the plain
// float64 version of one step the tests hold it to.

import Foundation
import RefractTensor

public struct ProbeHyperparameters: Codable, Sendable, Equatable {
    public var learningRate = 1e-3
    public var weightDecay = 1e-6
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    public var batchSize = 64
    public var epochs = 10
    /// Shuffle the rows every epoch (seeded); the official Waterbirds probe does not.
    public var shuffle = false
    /// At most this many batches an epoch (nil: all).
    public var maxBatchesPerEpoch: Int?
    public init() {}
}

/// Linear(d, K): logits = x·Wᵀ + b, W [K, d].
public struct LinearProbe: Sendable, Equatable {
    public var classes: Int
    public var width: Int
    public var weight: [Float]
    public var bias: [Float]

    public init(classes: Int, width: Int, weight: [Float], bias: [Float]) {
        precondition(weight.count == classes * width && bias.count == classes, "probe of \(classes) × \(width)")
        self.classes = classes; self.width = width; self.weight = weight; self.bias = bias
    }

    /// PyTorch's Linear initialisation, U(−1/√d, 1/√d) for every weight and bias, seeded.
    public static func initial(classes k: Int, width d: Int, seed: UInt64) -> LinearProbe {
        var rng = SplitMix64(seed: seed ^ 0x9B0B_E5EE_D000_0001)
        let bound = 1 / Double(d).squareRoot()
        func u() -> Float { Float((2 * rng.uniformOpen() - 1) * bound) }
        return LinearProbe(classes: k, width: d, weight: (0..<(k * d)).map { _ in u() }, bias: (0..<k).map { _ in u() })
    }

    /// Logits [B, K] of features x [B, d].
    public func logits(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] == width, "probe input \(x.shape) for width \(width)")
        let b = x.shape[0]
        var out = [Float](repeating: 0, count: b * classes)
        for i in 0..<b { for k in 0..<classes { out[i * classes + k] = bias[k] } }
        x.data.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { op in
                    BLAS.sgemm(.none, .transpose, m: b, n: classes, k: width, a: xp.baseAddress!, lda: width, b: wp.baseAddress!,
                               ldb: width, beta: 1, c: op.baseAddress!, ldc: classes)          // x [B, d] · Wᵀ [d, K]
                }
            }
        }
        return Tensor(shape: [b, classes], data: out)
    }

    /// The predicted class of each row (ties: the lowest index).
    public func predict(_ x: Tensor) -> [Int] {
        let l = logits(x), k = classes
        return (0..<x.shape[0]).map { i in (0..<k).reduce(0) { l.data[i * k + $1] > l.data[i * k + $0] ? $1 : $0 } }
    }
}

/// Adam on a probe, a batch at a time.
public struct ProbeTrainer: Sendable {
    public var probe: LinearProbe
    public let hyper: ProbeHyperparameters
    public private(set) var step = 0
    var m: [Float], v: [Float]

    public init(probe: LinearProbe, hyper: ProbeHyperparameters = .init()) {
        self.probe = probe
        self.hyper = hyper
        m = [Float](repeating: 0, count: probe.weight.count + probe.bias.count)
        v = m
    }

    /// Mean cross-entropy of the batch and its gradient (weights [K·d] then bias [K]).
    public func lossAndGradient(_ x: Tensor, _ labels: [Int]) -> (loss: Double, gradient: [Float]) {
        let b = x.shape[0], k = probe.classes, d = probe.width
        precondition(labels.count == b && labels.allSatisfy { (0..<k).contains($0) }, "labels for \(b) rows of \(k) classes")
        let l = probe.logits(x)
        var g = [Float](repeating: 0, count: b * k)                                        // ∂L/∂logits [B, K]
        var loss = 0.0
        for i in 0..<b {
            let row = (0..<k).map { Double(l.data[i * k + $0]) }
            let top = row.max()!
            let z = row.reduce(0) { $0 + Foundation.exp($1 - top) }
            loss += top + Foundation.log(z) - row[labels[i]]
            for c in 0..<k { g[i * k + c] = Float((Foundation.exp(row[c] - top) / z - (c == labels[i] ? 1 : 0)) / Double(b)) }
        }
        var grad = [Float](repeating: 0, count: k * d + k)
        g.withUnsafeBufferPointer { gp in
            x.data.withUnsafeBufferPointer { xp in
                grad.withUnsafeMutableBufferPointer { op in
                    BLAS.sgemm(.transpose, .none, m: k, n: d, k: b, a: gp.baseAddress!, lda: k, b: xp.baseAddress!, ldb: d,
                               c: op.baseAddress!, ldc: d)                                // Gᵀ [K, B] · x [B, d]
                }
            }
        }
        for c in 0..<k { var s: Float = 0; for i in 0..<b { s += g[i * k + c] }; grad[k * d + c] = s }
        return (loss / Double(b), grad)
    }

    /// One Adam step (coupled weight decay); returns the batch's loss before it.
    @discardableResult
    public mutating func train(_ x: Tensor, _ labels: [Int]) -> Double {
        let (loss, grad) = lossAndGradient(x, labels)
        step += 1
        let h = hyper
        let b1 = Float(h.beta1), b2 = Float(h.beta2), wd = Float(h.weightDecay), eps = Float(h.epsilon)
        let stepSize = Float(h.learningRate / (1 - Foundation.pow(h.beta1, Double(step))))
        let c2Root = Float((1 - Foundation.pow(h.beta2, Double(step))).squareRoot())
        let nw = probe.weight.count
        for i in 0..<grad.count {
            let theta = i < nw ? probe.weight[i] : probe.bias[i - nw]
            let gi = grad[i] + wd * theta
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            let updated = theta - stepSize * m[i] / (v[i].squareRoot() / c2Root + eps)
            if i < nw { probe.weight[i] = updated } else { probe.bias[i - nw] = updated }
        }
        return loss
    }

    /// One Adam step the plain way, in float64 throughout (loss, gradient, moments): the reference.
    public static func referenceStep(probe: LinearProbe, hyper: ProbeHyperparameters, step t: Int, m: inout [Double], v: inout [Double],
                                     x: [[Double]], labels: [Int]) -> (LinearProbe, loss: Double) {
        let k = probe.classes, d = probe.width, b = x.count
        var w = probe.weight.map(Double.init), bias = probe.bias.map(Double.init)
        var gw = [Double](repeating: 0, count: k * d), gb = [Double](repeating: 0, count: k)
        var loss = 0.0
        for i in 0..<b {
            let logits = (0..<k).map { c in bias[c] + (0..<d).reduce(0.0) { $0 + w[c * d + $1] * x[i][$1] } }
            let top = logits.max()!
            let z = logits.reduce(0) { $0 + Foundation.exp($1 - top) }
            loss += top + Foundation.log(z) - logits[labels[i]]
            for c in 0..<k {
                let gc = (Foundation.exp(logits[c] - top) / z - (c == labels[i] ? 1 : 0)) / Double(b)
                gb[c] += gc
                for j in 0..<d { gw[c * d + j] += gc * x[i][j] }
            }
        }
        var theta = w + bias
        let grad = gw + gb
        for i in 0..<theta.count {
            let gi = grad[i] + hyper.weightDecay * theta[i]
            m[i] = hyper.beta1 * m[i] + (1 - hyper.beta1) * gi
            v[i] = hyper.beta2 * v[i] + (1 - hyper.beta2) * gi * gi
            let mh = m[i] / (1 - Foundation.pow(hyper.beta1, Double(t))), vh = v[i] / (1 - Foundation.pow(hyper.beta2, Double(t)))
            theta[i] -= hyper.learningRate * mh / (vh.squareRoot() + hyper.epsilon)
        }
        w = Array(theta[0..<(k * d)]); bias = Array(theta[(k * d)...])
        return (LinearProbe(classes: k, width: d, weight: w.map(Float.init), bias: bias.map(Float.init)), loss / Double(b))
    }

    /// Trains on `rows` (in order, or shuffled per epoch with `hyper.shuffle`), fetching each batch's
    /// features [B, d] with `features(rowsOfTheBatch)`; `labels[r]` is row r's class. Returns the mean
    /// batch loss of every epoch.
    public mutating func fit(rows: [Int], labels: [Int], seed: UInt64, features: ([Int]) throws -> Tensor) throws -> [Double] {
        var curve = [Double]()
        for epoch in 0..<hyper.epochs {
            var order = rows
            if hyper.shuffle {
                var rng = SplitMix64(seed: seed &+ UInt64(epoch + 1) &* 0x9E37_79B9_7F4A_7C15)
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            }
            var total = 0.0, batches = 0
            for start in stride(from: 0, to: order.count, by: hyper.batchSize) {
                if let cap = hyper.maxBatchesPerEpoch, batches >= cap { break }
                let batch = Array(order[start..<min(order.count, start + hyper.batchSize)])
                total += train(try features(batch), batch.map { labels[$0] })
                batches += 1
            }
            curve.append(total / Double(max(batches, 1)))
        }
        return curve
    }
}
