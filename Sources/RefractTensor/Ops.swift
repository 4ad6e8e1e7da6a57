// MARK: - Tensor operations
//
// Shape-checked wrappers over the kernels, used by model definitions. Each returns a new tensor.

import Foundation

public enum Ops {
    /// y[M,N] = x[M,K] · Wᵀ + b, with W stored [N,K] (torch.nn.Linear layout).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(x.rank == 2 && weight.rank == 2 && x.shape[1] == weight.shape[1],
                     "linear: x \(x.shape) vs weight \(weight.shape)")
        let m = x.shape[0], k = x.shape[1], n = weight.shape[0]
        // The output is fully written by the bias copy or by sgemm with beta 0: no zero-fill.
        var y = Tensor(shape: [m, n], data: [Float](unsafeUninitializedCapacity: m * n) { buf, count in
            if let bias {
                precondition(bias.shape == [n], "linear: bias \(bias.shape), expected [\(n)]")
                bias.data.withUnsafeBufferPointer { bp in
                    for r in 0..<m { (buf.baseAddress! + r * n).initialize(from: bp.baseAddress!, count: n) }
                }
            } else {
                buf.baseAddress!.initialize(repeating: 0, count: m * n)
            }
            count = m * n
        })                                                                   // [M, N]
        let beta: Float = bias == nil ? 0 : 1
        x.data.withUnsafeBufferPointer { xp in
            weight.data.withUnsafeBufferPointer { wp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    gemmSplitOverColumns(m: m, n: n, k: k, a: xp.baseAddress!, weight: wp.baseAddress!, beta: beta,
                                         c: yp.baseAddress!)
                }
            }
        }
        return y
    }

    /// Products at least this large (m·n·k) are split over the cores by output columns when BLAS
    /// is multi-threaded (a batch of one image: `BLAS.forEachSlice` has no batch to split).
    static let splitThreshold = 1 << 22

    /// C[M, N] (ldc N) = A[M, K] · Wᵀ + beta·C, W stored [N, K]. When BLAS runs several threads and
    /// the product is large, the N output columns (W's rows) are split into one contiguous block per
    /// core, each computed with single-threaded BLAS: every core packs only its own block of W, and
    /// no core waits on OpenBLAS's per-panel synchronisation (measured faster at batch 1 than
    /// OpenBLAS's own threading; docs/Speed.md). Each output element is computed by one call over
    /// the full K either way.
    static func gemmSplitOverColumns(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                     beta: Float, c: UnsafeMutablePointer<Float>) {
        let workers = BLAS.threads
        if workers <= 1 || m * n * k < splitThreshold || n < 64 * workers {
            BLAS.sgemm(.none, .transpose, m: m, n: n, k: k, a: a, lda: k, b: weight, ldb: k, beta: beta, c: c, ldc: n)
            return
        }
        let ap = SendablePointer(a), wp = SendablePointer(weight), cp = SendablePointer(c)
        BLAS.withSingleThreadedBLAS {
            Parallel.forEach(workers) { w in
                // Block boundaries on multiples of 16 columns (one AVX-512 register of floats).
                let n0 = (w * n / workers) & ~15, n1 = w == workers - 1 ? n : ((w + 1) * n / workers) & ~15
                BLAS.sgemm(.none, .transpose, m: m, n: n1 - n0, k: k, a: ap.pointer, lda: k,
                           b: wp.pointer + n0 * k, ldb: k, beta: beta, c: cp.pointer + n0, ldc: n)
            }
        }
    }

    /// Row-wise LayerNorm of x[M,D].
    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
        let d = x.shape.last!
        precondition(weight.shape == [d] && bias.shape == [d], "layerNorm: \(x.shape) vs \(weight.shape)")
        var y = Tensor(zeros: x.shape)                                       // [M, D]
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                weight.data.withUnsafeBufferPointer { g in
                    bias.data.withUnsafeBufferPointer { b in
                        Kernels.layerNorm(xp.baseAddress!, yp.baseAddress!, rows: x.count / d, d: d,
                                          gamma: g.baseAddress!, beta: b.baseAddress!, eps: eps)
                    }
                }
            }
        }
        return y
    }

    /// MLP activations. `swiGLU` is timm's packed SwiGLU (DINOv2 giant): the fc1 output's first
    /// half through SiLU times its second half, halving the width (`Ops.swiGLU`), so it is not an
    /// elementwise activation.
    public enum Activation: String, Sendable, Codable { case gelu, quickGELU, swiGLU, geluTanh }

    public static func activate(_ x: inout Tensor, _ act: Activation) {
        x.data.withUnsafeMutableBufferPointer { p in
            switch act {
            case .gelu: Kernels.gelu(p)
            case .quickGELU: Kernels.quickGELU(p)
            case .geluTanh: Kernels.geluTanh(p)
            case .swiGLU: preconditionFailure("swiGLU changes the width: use Ops.swiGLU")
            }
        }
    }

    /// Packed SwiGLU: x[R, 2H] → silu(x[:, :H]) ⊙ x[:, H:] as [R, H] (timm GluMlp, gate_last false).
    public static func swiGLU(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] % 2 == 0, "swiGLU: \(x.shape)")
        let rows = x.shape[0], h = x.shape[1] / 2
        var out = [Float](repeating: 0, count: rows * h)                                 // [R, H]
        x.data.withUnsafeBufferPointer { src in
            for r in 0..<rows {
                for j in 0..<h {
                    let a = src[r * 2 * h + j], b = src[r * 2 * h + h + j]
                    out[r * h + j] = a / (1 + Kernels.exp(-a)) * b
                }
            }
        }
        return Tensor(shape: [rows, h], data: out)
    }

    /// Patch rows of one image [C, S, S] for a p×p stride-p patch embedding: [G·G, C·p·p] with
    /// G = S / p, each row in conv-weight order (c, ky, kx), patches row-major over the grid, so
    /// that the convolution is one GEMM with its weight flattened to [D, C·p·p].
    public static func patchRows(_ image: Tensor, patch p: Int) -> Tensor {
        precondition(image.rank == 3 && image.shape[1] == image.shape[2] && image.shape[1] % p == 0,
                     "patchRows: image \(image.shape), patch \(p)")
        let c = image.shape[0], s = image.shape[1], g = s / p
        let width = c * p * p
        var out = [Float](repeating: 0, count: g * g * width)                   // [G·G, C·p·p]
        image.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for gy in 0..<g {
                    for gx in 0..<g {
                        let row = dst.baseAddress! + (gy * g + gx) * width
                        for ch in 0..<c {
                            for ky in 0..<p {
                                let from = src.baseAddress! + (ch * s + gy * p + ky) * s + gx * p
                                (row + (ch * p + ky) * p).update(from: from, count: p)
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [g * g, width], data: out)
    }

    /// The mean of each group of consecutive rows: x [G·N, D] → [G, D] (pooling tokens per image).
    public static func meanRows(_ x: Tensor, groups: Int) -> Tensor {
        let d = x.shape[1], per = x.shape[0] / max(groups, 1)
        var out = [Float](repeating: 0, count: groups * d)                              // [G, D]
        x.data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for g in 0..<groups {
                    let o = dst.baseAddress! + g * d
                    for r in 0..<per {
                        let row = src.baseAddress! + (g * per + r) * d
                        for j in 0..<d { o[j] += row[j] }
                    }
                    for j in 0..<d { o[j] /= Float(per) }
                }
            }
        }
        return Tensor(shape: [groups, d], data: out)
    }

    /// x[R, D] ⊙ g[D] per row, in place (LayerScale).
    public static func scaleColumns(_ x: inout Tensor, _ g: Tensor) {
        precondition(x.rank == 2 && g.count == x.shape[1], "scaleColumns: \(x.shape) vs \(g.shape)")
        let d = x.shape[1]
        x.data.withUnsafeMutableBufferPointer { p in
            g.data.withUnsafeBufferPointer { gp in
                for r in 0..<(p.count / max(d, 1)) {
                    for j in 0..<d { p[r * d + j] *= gp[j] }
                }
            }
        }
    }

    /// x += y, elementwise.
    public static func addInPlace(_ x: inout Tensor, _ y: Tensor) {
        precondition(x.shape == y.shape, "add: \(x.shape) vs \(y.shape)")
        x.data.withUnsafeMutableBufferPointer { xp in
            y.data.withUnsafeBufferPointer { yp in
                for i in 0..<xp.count { xp[i] += yp[i] }
            }
        }
    }

    /// Rows `rows` of x[M, D] → [rows.count, D].
    public static func gatherRows(_ x: Tensor, _ rows: [Int]) -> Tensor {
        let d = x.shape[1]
        var out = [Float](repeating: 0, count: rows.count * d)                // [R, D]
        x.data.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                for (i, r) in rows.enumerated() {
                    precondition(r >= 0 && r < x.shape[0], "gatherRows: row \(r) of \(x.shape[0])")
                    (op.baseAddress! + i * d).update(from: xp.baseAddress! + r * d, count: d)
                }
            }
        }
        return Tensor(shape: [rows.count, d], data: out)
    }

    /// L2-normalise each row of x[M, D].
    public static func l2Normalized(_ x: Tensor) -> Tensor {
        let d = x.shape.last!
        var y = x
        y.data.withUnsafeMutableBufferPointer { p in
            for r in 0..<(x.count / max(d, 1)) {
                var s: Double = 0
                for j in 0..<d { let v = Double(p[r * d + j]); s += v * v }
                // A zero row stays zero; a row holding NaN or ±infinity becomes NaN, never zero, so
                // the callers' finiteness checks see it.
                let inv: Float = s.isFinite ? (s > 0 ? Float(1 / s.squareRoot()) : 0) : .nan
                for j in 0..<d { p[r * d + j] *= inv }
            }
        }
        return y
    }

    /// C[M,N] = A[M,K] · B[K,N].
    public static func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2 && a.shape[1] == b.shape[0], "matmul: \(a.shape) · \(b.shape)")
        let m = a.shape[0], k = a.shape[1], n = b.shape[1]
        var c = Tensor(zeros: [m, n])                                        // [M, N]
        a.data.withUnsafeBufferPointer { ap in
            b.data.withUnsafeBufferPointer { bp in
                c.data.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(.none, .none, m: m, n: n, k: k, a: ap.baseAddress!, lda: k,
                               b: bp.baseAddress!, ldb: n, c: cp.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }

    /// Transpose of a 2-D tensor.
    public static func transposed(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2)
        let r = x.shape[0], c = x.shape[1]
        var out = [Float](repeating: 0, count: x.count)                       // [C, R]
        x.data.withUnsafeBufferPointer { xp in
            for i in 0..<r { for j in 0..<c { out[j * r + i] = xp[i * c + j] } }
        }
        return Tensor(shape: [c, r], data: out)
    }
}

// MARK: - Multi-head attention

/// One sequence inside a packed [S, ·] activation matrix: rows `start ..< start + length`.
public struct Segment: Sendable, Equatable {
    public var start: Int
    public var length: Int
    public init(start: Int, length: Int) { self.start = start; self.length = length }
}

/// Which query rows of each segment to compute (keys/values always cover the whole segment).
public enum QueryRows: Sendable, Equatable {
    case all
    /// Only the first row (the class token of a ViT).
    case first
    /// Only the last row (the end-of-text token of a causal text tower cut at its EOT).
    case last
}

/// Additive attention scores (Swin's relative position bias and shifted-window mask):
/// `values` is [groups, heads, n, n]; segment `s` (every segment `n` tokens long) adds group
/// `s % groups` to its scaled scores before the softmax.
public struct AttentionBias: Sendable {
    public let values: [Float]
    public let groups: Int
    public let heads: Int
    public let n: Int
    public init(values: [Float], groups: Int, heads: Int, n: Int) {
        precondition(values.count == groups * heads * n * n, "attention bias: \(values.count) values for [\(groups), \(heads), \(n), \(n)]")
        self.values = values
        self.groups = groups
        self.heads = heads
        self.n = n
    }
}

extension Ops {
    /// Scaled dot-product attention for packed sequences, parallel over (segment, head).
    /// qkv: [S, 3D] with q | k | v blocks of width D, heads of width D/H inside each block.
    /// Returns [R, D] where R = S for `.all`, or one row per segment otherwise.
    /// With `parallel` false the tasks run one after another on the calling thread, with BLAS as it
    /// is set (for callers that already run one batch slice per core).
    /// With `bias`, softmax(scale·q·kᵀ + bias) (every segment `bias.n` tokens long).
    public static func multiHeadAttention(qkv: Tensor, segments: [Segment], heads: Int, causal: Bool,
                                          queries: QueryRows = .all, parallel: Bool = true,
                                          bias: AttentionBias? = nil) -> Tensor {
        precondition(qkv.rank == 2 && qkv.shape[1] % 3 == 0)
        if let bias { precondition(bias.heads == heads && segments.allSatisfy { $0.length == bias.n }, "attention bias shape") }
        let d = qkv.shape[1] / 3
        precondition(d % heads == 0, "attention: width \(d) not divisible by \(heads) heads")
        let dh = d / heads
        let ld = 3 * d
        let scale = 1 / Float(dh).squareRoot()
        // Output row of each segment's first computed query.
        var starts = [Int]()
        var rows = 0
        for s in segments {
            starts.append(rows)
            rows += queries == .all ? s.length : 1
        }
        let outStart = starts
        var out = Tensor(zeros: [rows, d])                                   // [R, D]
        let tasks = segments.count * heads
        qkv.data.withUnsafeBufferPointer { qp in
            out.data.withUnsafeMutableBufferPointer { op in
                let qs = SendablePointer(qp.baseAddress!)
                let os = SendablePointer(op.baseAddress!)
                let runTask = { @Sendable (task: Int) in
                    let q0 = UnsafePointer(qs.pointer), o0 = os.pointer
                    let seg = segments[task / heads]
                    let h = task % heads
                    let t = seg.length
                    let firstQuery: Int
                    let nq: Int
                    switch queries {
                    case .all: firstQuery = 0; nq = t
                    case .first: firstQuery = 0; nq = 1
                    case .last: firstQuery = t - 1; nq = 1
                    }
                    let base = q0 + seg.start * ld
                    let q = base + firstQuery * ld + h * dh                  // [nq, dh] (ld 3D)
                    let k = base + d + h * dh                                // [t, dh]  (ld 3D)
                    let v = base + 2 * d + h * dh                            // [t, dh]  (ld 3D)
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: nq * t)  // [nq, t]
                    defer { scores.deallocate() }
                    BLAS.sgemm(.none, .transpose, m: nq, n: t, k: dh, a: q, lda: ld, b: k, ldb: ld,
                               c: scores, ldc: t)
                    if let bias {
                        // scale·q·kᵀ + bias, then a plain softmax.
                        let group = (task / heads) % bias.groups
                        bias.values.withUnsafeBufferPointer { bp in
                            let b = bp.baseAddress! + ((group * heads + h) * t + firstQuery) * t   // [nq, t]
                            for i in 0..<(nq * t) { scores[i] = scores[i] * scale + b[i] }
                        }
                    }
                    Kernels.softmaxRows(scores, rows: nq, cols: t, ld: t, scale: bias == nil ? scale : 1, causal: causal,
                                        rowOffset: firstQuery)
                    let o = o0 + outStart[task / heads] * d + h * dh         // [nq, dh] (ld D)
                    BLAS.sgemm(.none, .none, m: nq, n: dh, k: t, a: scores, lda: t, b: v, ldb: ld,
                               c: o, ldc: d)
                }
                if parallel {
                    BLAS.withSingleThreadedBLAS { Parallel.forEach(tasks, runTask) }
                } else {
                    for task in 0..<tasks { runTask(task) }
                }
            }
        }
        return out
    }
}
