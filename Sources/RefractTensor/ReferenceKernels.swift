// MARK: - Reference kernels
//
// Plain, obviously-correct versions of every fast kernel, computed in Double. Tests compare the
// fast kernels against these; nothing in the model path calls them.

import Foundation

public enum Reference {
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let m = x.shape[0], k = x.shape[1], n = weight.shape[0]
        var y = [Float](repeating: 0, count: m * n)                             // [M, N]
        for i in 0..<m {
            for j in 0..<n {
                var s = Double(bias?.data[j] ?? 0)
                for t in 0..<k { s += Double(x.data[i * k + t]) * Double(weight.data[j * k + t]) }
                y[i * n + j] = Float(s)
            }
        }
        return Tensor(shape: [m, n], data: y)
    }

    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let d = x.shape.last!
        var y = x.data
        for r in 0..<(x.count / d) {
            let row = x.data[(r * d)..<((r + 1) * d)].map(Double.init)
            let mean = row.reduce(0, +) / Double(d)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            let inv = 1 / (variance + Double(eps)).squareRoot()
            for j in 0..<d {
                y[r * d + j] = Float((row[j] - mean) * inv * Double(weight.data[j]) + Double(bias.data[j]))
            }
        }
        return Tensor(shape: x.shape, data: y)
    }

    public static func gelu(_ x: Double) -> Double { 0.5 * x * (1 + Foundation.erf(x / 2.0.squareRoot())) }
    public static func quickGELU(_ x: Double) -> Double { x / (1 + Foundation.exp(-1.702 * x)) }

    public static func activate(_ x: Tensor, _ act: Ops.Activation) -> Tensor {
        Tensor(shape: x.shape, data: x.data.map {
            Float(act == .gelu ? gelu(Double($0)) : quickGELU(Double($0)))
        })
    }

    /// Softmax over each row of scale·x, with an optional causal mask (row r sees cols 0...r+offset).
    public static func softmax(_ x: [[Double]], scale: Double, causal: Bool, rowOffset: Int = 0) -> [[Double]] {
        x.enumerated().map { r, row in
            let valid = causal ? min(row.count, r + rowOffset + 1) : row.count
            let m = row[..<valid].max() ?? 0
            let e = row[..<valid].map { Foundation.exp(($0 - m) * scale) }
            let s = e.reduce(0, +)
            return e.map { $0 / s } + Array(repeating: 0, count: row.count - valid)
        }
    }

    /// Attention for one unpacked sequence: qkv [T, 3D] → [T, D], all query rows.
    public static func multiHeadAttention(qkv: Tensor, heads: Int, causal: Bool) -> Tensor {
        let t = qkv.shape[0], d = qkv.shape[1] / 3, dh = d / heads
        var out = [Float](repeating: 0, count: t * d)
        func at(_ i: Int, _ j: Int) -> Double { Double(qkv.data[i * 3 * d + j]) }
        for h in 0..<heads {
            var logits = [[Double]](repeating: [Double](repeating: 0, count: t), count: t)
            for i in 0..<t {
                for j in 0..<t {
                    var s = 0.0
                    for c in 0..<dh { s += at(i, h * dh + c) * at(j, d + h * dh + c) }
                    logits[i][j] = s
                }
            }
            let p = softmax(logits, scale: 1 / Double(dh).squareRoot(), causal: causal)
            for i in 0..<t {
                for c in 0..<dh {
                    var s = 0.0
                    for j in 0..<t { s += p[i][j] * at(j, 2 * d + h * dh + c) }
                    out[i * d + h * dh + c] = Float(s)
                }
            }
        }
        return Tensor(shape: [t, d], data: out)
    }
}
