// MARK: - Fast kernels
//
// Every kernel here has a plain counterpart in `ReferenceKernels.swift`; the tests compare them.
// Loops are written over raw buffers without calls so that the compiler vectorises them.

import Foundation

public enum Kernels {
    // MARK: Elementwise maths

    /// exp(x) to ~2 ulp: Cody–Waite range reduction and a degree-6 polynomial. Branch-free.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        let clamped = Swift.min(Swift.max(x, -87.33654), 88.72283)
        // n = round(x / ln 2) by the 1.5·2^23 trick (vectorises without SSE4.1 rounding).
        let magic: Float = 12582912.0
        let n = (clamped * 1.44269504 + magic) - magic
        var r = clamped - n * 0.693145751953125      // ln2 high part
        r = r - n * 1.428606765330187e-06            // ln2 low part
        // e^r on |r| <= ln2/2
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let er = (p * r * r + r) + 1
        let bits = UInt32(bitPattern: Int32(n) &+ 127) &<< 23
        return er * Float(bitPattern: bits)
    }

    /// erf(x) with absolute error below ~2e-7: 1 − erfc(|x|), where erfc uses the Chebyshev-fitted
    /// form t·exp(−x² − 1.26551223 + t·Q(t)), t = 1/(1 + |x|/2) (fractional error < 1.2e-7).
    @inline(__always)
    public static func erf(_ x: Float) -> Float {
        let ax = Swift.abs(x)
        let t = 1 / (1 + 0.5 * ax)
        var q: Float = 0.17087277
        q = q * t + -0.82215223
        q = q * t + 1.48851587
        q = q * t + -1.13520398
        q = q * t + 0.27886807
        q = q * t + -0.18628806
        q = q * t + 0.09678418
        q = q * t + 0.37409196
        q = q * t + 1.00002368
        let erfc = t * exp(-ax * ax - 1.26551223 + t * q)
        let big = 1 - erfc
        return x < 0 ? -big : big
    }
}

extension Kernels {
    // MARK: Activations (in place)

    /// GELU with erf, as torch.nn.GELU() / transformers "gelu": 0.5·x·(1 + erf(x/√2)).
    public static func gelu(_ x: UnsafeMutableBufferPointer<Float>) {
        let n = x.count
        guard let p = x.baseAddress else { return }
        for i in 0..<n {
            let v = p[i]
            p[i] = 0.5 * v * (1 + erf(v * 0.70710678118654752))
        }
    }

    /// QuickGELU, as OpenAI CLIP: x·sigmoid(1.702·x).
    public static func quickGELU(_ x: UnsafeMutableBufferPointer<Float>) {
        let n = x.count
        guard let p = x.baseAddress else { return }
        for i in 0..<n {
            let v = p[i]
            p[i] = v / (1 + exp(-1.702 * v))
        }
    }

    // MARK: Normalisation

    /// Row-wise LayerNorm of x[rows, d] into y (may alias x): (x − mean)/sqrt(var + eps)·γ + β,
    /// biased variance, two-pass for accuracy.
    public static func layerNorm(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, d: Int,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        let invD = 1 / Float(d)
        for r in 0..<rows {
            let xr = x + r * d
            let yr = y + r * d
            var sum: Float = 0
            for j in 0..<d { sum += xr[j] }
            let mean = sum * invD
            var sq: Float = 0
            for j in 0..<d { let c = xr[j] - mean; sq += c * c }
            let inv = 1 / (sq * invD + eps).squareRoot()
            for j in 0..<d { yr[j] = (xr[j] - mean) * inv * gamma[j] + beta[j] }
        }
    }

    // MARK: Softmax

    /// In-place softmax of each row's first `valid(r)` entries of x[rows, ld]; entries past
    /// `valid(r)` (masked, e.g. causal) are set to 0. `scale` multiplies the logits first.
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, scale: Float,
                                   causal: Bool, rowOffset: Int = 0) {
        for r in 0..<rows {
            let row = x + r * ld
            let valid = causal ? Swift.min(cols, r + rowOffset + 1) : cols
            var m = -Float.infinity
            for j in 0..<valid { m = Swift.max(m, row[j]) }
            var s: Float = 0
            for j in 0..<valid {
                let e = exp((row[j] - m) * scale)
                row[j] = e
                s += e
            }
            let inv = 1 / s
            for j in 0..<valid { row[j] *= inv }
            for j in valid..<cols { row[j] = 0 }
        }
    }
}
