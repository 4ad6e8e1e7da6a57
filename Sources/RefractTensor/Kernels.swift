// MARK: - Fast kernels
//
// Elementwise and row-wise kernels, implemented in C (CRefractKernels) so that each is compiled
// for AVX-512, AVX2+FMA and baseline x86-64 and chosen at run time. Every kernel has a plain
// counterpart in `ReferenceKernels.swift`; the tests compare them.

import CRefractKernels

public enum Kernels {
    /// exp(x) to ~2 ulp (Cody–Waite reduction, degree-6 polynomial).
    public static func exp(_ x: Float) -> Float { rf_exp(x) }

    /// erf(x) to ~2e-7 absolute.
    public static func erf(_ x: Float) -> Float { rf_erf(x) }

    /// GELU with erf, as torch.nn.GELU() / transformers "gelu": 0.5·x·(1 + erf(x/√2)).
    public static func gelu(_ x: UnsafeMutableBufferPointer<Float>) {
        chunked(x) { rf_gelu($0, $1) }
    }

    /// GELU with the tanh approximation (timm `gelu_tanh`, TF MaxViT).
    public static func geluTanh(_ x: UnsafeMutableBufferPointer<Float>) {
        chunked(x) { rf_gelu_tanh($0, $1) }
    }

    /// SiLU, x·sigmoid(x).
    public static func silu(_ x: UnsafeMutableBufferPointer<Float>) {
        chunked(x) { rf_silu($0, $1) }
    }

    /// The logistic sigmoid.
    public static func sigmoid(_ x: UnsafeMutableBufferPointer<Float>) {
        chunked(x) { rf_sigmoid($0, $1) }
    }

    /// QuickGELU, as OpenAI CLIP: x·sigmoid(1.702·x).
    public static func quickGELU(_ x: UnsafeMutableBufferPointer<Float>) {
        chunked(x) { rf_quick_gelu($0, $1) }
    }

    /// Applies an in-place elementwise kernel over all cores in contiguous chunks (elementwise, so
    /// the result does not depend on the split).
    static func chunked(_ x: UnsafeMutableBufferPointer<Float>,
                        _ kernel: @escaping @Sendable (UnsafeMutablePointer<Float>, Int) -> Void) {
        guard let base = x.baseAddress else { return }
        let n = x.count
        let chunk = 1 << 16
        if n <= chunk { kernel(base, n); return }
        let parts = (n + chunk - 1) / chunk
        let p = SendablePointer(base)
        Parallel.forEach(parts) { i in
            let start = i * chunk
            kernel(p.pointer + start, Swift.min(chunk, n - start))
        }
    }

    /// Row-wise LayerNorm of x[rows, d] into y (may alias x), biased variance, two passes.
    public static func layerNorm(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, d: Int,
                                 gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        rf_layer_norm(x, y, rows, d, gamma, beta, eps)
    }

    /// In-place softmax of scale·x over each row's first `valid(r)` entries of x[rows, ld]; with
    /// `causal`, row r sees columns 0...r+rowOffset and the rest are set to 0.
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, scale: Float,
                                   causal: Bool, rowOffset: Int = 0) {
        rf_softmax_rows(x, rows, cols, ld, scale, causal ? 1 : 0, rowOffset)
    }
}
