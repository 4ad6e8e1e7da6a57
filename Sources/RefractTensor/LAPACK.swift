// MARK: - LAPACK
//
// Symmetric eigendecomposition (and the symmetric rank-k update that builds Gram matrices) from the
// BLAS library Refract already loaded (`BLAS.swift`): Debian's libopenblas0-pthread carries LAPACK,
// macOS's Accelerate has the classic Fortran entry points. Symbols are looked up by name at first
// use, so a CBLAS-only library (REFRACT_BLAS_LIBRARY) still runs everything else and fails here with
// a clear error. Fortran LAPACK takes every argument by reference, 32-bit integers (LP64), column-
// major storage, and hidden character lengths at the end (passed, harmlessly where unused). A
// symmetric matrix reads the same in either order; LAPACK is told to read its lower triangle, which
// is the upper triangle of the row-major buffer. Eigenvectors come back as columns, i.e. as the rows
// of the row-major buffer.
//
// `ReferenceEigen` is a plain cyclic Jacobi eigensolver in double precision, the reference the tests
// (and `TextSpanReference`) compare against.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum LAPACKError: Error, CustomStringConvertible, Equatable {
    case symbolMissing(library: String, symbol: String)
    case notSquare(shape: [Int])
    case notFinite(routine: String)
    case failed(routine: String, info: Int)
    case incomplete(routine: String, found: Int, expected: Int)

    public var description: String {
        switch self {
        case let .symbolMissing(library, symbol):
            return "\(library) has no LAPACK symbol \(symbol); Refract needs a BLAS library that includes LAPACK "
                + "(Debian's libopenblas0-pthread does; point REFRACT_BLAS_LIBRARY at such a library)."
        case let .notSquare(shape):
            return "symmetric eigendecomposition needs a square 2-D matrix, got shape \(shape)"
        case let .notFinite(routine):
            return "\(routine): the matrix has NaN or infinite entries"
        case let .failed(routine, info):
            return info < 0 ? "\(routine): argument \(-info) had an illegal value (LAPACK info \(info))"
                : "\(routine): the algorithm failed to converge (LAPACK info \(info))"
        case let .incomplete(routine, found, expected):
            return "\(routine): found \(found) eigenvalues, expected \(expected)"
        }
    }
}

public enum LAPACK {
    // ssyevd_(jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info, len(jobz), len(uplo))
    typealias SsyevdFn = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<Int32>,
                                         UnsafeMutablePointer<Float>, UnsafePointer<Int32>, UnsafeMutablePointer<Float>,
                                         UnsafeMutablePointer<Float>, UnsafePointer<Int32>, UnsafeMutablePointer<Int32>,
                                         UnsafePointer<Int32>, UnsafeMutablePointer<Int32>, Int, Int) -> Void
    // ssyevr_(jobz, range, uplo, n, a, lda, vl, vu, il, iu, abstol, m, w, z, ldz, isuppz, work, lwork,
    //         iwork, liwork, info, len(jobz), len(range), len(uplo))
    typealias SsyevrFn = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<CChar>,
                                         UnsafePointer<Int32>, UnsafeMutablePointer<Float>, UnsafePointer<Int32>,
                                         UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Int32>,
                                         UnsafePointer<Int32>, UnsafePointer<Float>, UnsafeMutablePointer<Int32>,
                                         UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafePointer<Int32>,
                                         UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Float>, UnsafePointer<Int32>,
                                         UnsafeMutablePointer<Int32>, UnsafePointer<Int32>, UnsafeMutablePointer<Int32>,
                                         Int, Int, Int) -> Void
    // cblas_ssyrk(order, uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
    typealias SsyrkFn = @convention(c) (Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
                                        Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    // cblas_ssymm(order, side, uplo, m, n, alpha, a, lda, b, ldb, beta, c, ldc)
    typealias SsymmFn = @convention(c) (Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
                                        UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void

    /// Looks up `name` in the loaded BLAS library.
    static func function<T>(_ name: String, _: T.Type) throws -> T {
        try BLAS.load()
        let backend = BLAS.backend
        guard let p = backend.symbol(name) else {
            throw LAPACKError.symbolMissing(library: backend.library, symbol: name)
        }
        return unsafeBitCast(p, to: T.self)
    }

    private static let ssyevd: Result<SsyevdFn, Error> = Result { try function("ssyevd_", SsyevdFn.self) }
    private static let ssyevr: Result<SsyevrFn, Error> = Result { try function("ssyevr_", SsyevrFn.self) }
    private static let ssyrkFn: Result<SsyrkFn, Error> = Result { try function("cblas_ssyrk", SsyrkFn.self) }
    private static let ssymmFn: Result<SsymmFn, Error> = Result { try function("cblas_ssymm", SsymmFn.self) }

    /// Throws when the library lacks the routines Refract uses (call once before relying on them).
    public static func load() throws {
        _ = try ssyevd.get(); _ = try ssyevr.get(); _ = try ssyrkFn.get(); _ = try ssymmFn.get()
    }

    /// All eigenvalues of the symmetric matrix `a` [n, n] (only its upper triangle in row-major terms
    /// is read), in descending order, with the unit eigenvectors as the rows of `vectors` [n, n]
    /// (row i belongs to values[i]). LAPACK `ssyevd` (divide and conquer).
    public static func symmetricEigen(_ a: Tensor) throws -> (values: [Float], vectors: Tensor) {
        let n = try squareSide(a)
        let (values, vectors) = try syevd(a, n: n, vectors: true)
        return (values, Tensor(shape: [n, n], data: vectors))
    }

    /// The eigenvalues only, descending (`ssyevd` without vectors).
    public static func symmetricEigenvalues(_ a: Tensor) throws -> [Float] {
        try syevd(a, n: try squareSide(a), vectors: false).values
    }

    /// The `count` largest eigenvalues of the symmetric matrix `a` [n, n], descending, with their unit
    /// eigenvectors as the rows of `vectors` [count, n]. LAPACK `ssyevr` (relatively robust
    /// representations) for the index range n−count+1 ... n: cheaper than all of them when count ≪ n.
    public static func symmetricEigen(_ a: Tensor, largest count: Int) throws -> (values: [Float], vectors: Tensor) {
        let n = try squareSide(a)
        precondition(count >= 0 && count <= n, "symmetricEigen: largest \(count) of \(n)")
        if count == 0 { return ([], Tensor(zeros: [0, n])) }
        if n == 0 { return ([], Tensor(zeros: [0, 0])) }
        let fn = try ssyevr.get()
        var work = a.data                                                     // [n, n], destroyed
        try checkFinite(work, "ssyevr")
        var nn = Int32(n), lda = Int32(max(n, 1)), il = Int32(n - count + 1), iu = Int32(n)
        var vl: Float = 0, vu: Float = 0, abstol: Float = 0
        var found: Int32 = 0, info: Int32 = 0
        var w = [Float](repeating: 0, count: n)
        var z = [Float](repeating: 0, count: n * count)                       // column-major [n, count]
        var ldz = Int32(max(n, 1))
        var isuppz = [Int32](repeating: 0, count: 2 * count)
        func call(_ lwork: Int32, _ liwork: Int32, _ wk: inout [Float], _ iwk: inout [Int32]) {
            var lw = lwork, liw = liwork
            fn("V", "I", "L", &nn, &work, &lda, &vl, &vu, &il, &iu, &abstol, &found, &w, &z, &ldz, &isuppz,
               &wk, &lw, &iwk, &liw, &info, 1, 1, 1)
        }
        var qw = [Float](repeating: 0, count: 1), qi = [Int32](repeating: 0, count: 1)
        call(-1, -1, &qw, &qi)
        guard info == 0 else { throw LAPACKError.failed(routine: "ssyevr", info: Int(info)) }
        var wk = [Float](repeating: 0, count: max(1, Int(qw[0]))), iwk = [Int32](repeating: 0, count: max(1, Int(qi[0])))
        call(Int32(wk.count), Int32(iwk.count), &wk, &iwk)
        guard info == 0 else { throw LAPACKError.failed(routine: "ssyevr", info: Int(info)) }
        guard Int(found) == count else { throw LAPACKError.incomplete(routine: "ssyevr", found: Int(found), expected: count) }
        // Ascending → descending; column i of z (contiguous) is eigenvector i.
        var vectors = [Float](repeating: 0, count: count * n)
        for i in 0..<count {
            let src = count - 1 - i
            for j in 0..<n { vectors[i * n + j] = z[src * n + j] }
        }
        return (Array(w[0..<count].reversed()), Tensor(shape: [count, n], data: vectors))
    }

    static func squareSide(_ a: Tensor) throws -> Int {
        guard a.rank == 2, a.shape[0] == a.shape[1] else { throw LAPACKError.notSquare(shape: a.shape) }
        return a.shape[0]
    }

    static func checkFinite(_ x: [Float], _ routine: String) throws {
        var bad = false
        x.withUnsafeBufferPointer { p in for v in p where !v.isFinite { bad = true; break } }
        if bad { throw LAPACKError.notFinite(routine: routine) }
    }

    /// ssyevd: values descending, vectors (row i ↔ value i) when asked.
    static func syevd(_ a: Tensor, n: Int, vectors wanted: Bool) throws -> (values: [Float], vectors: [Float]) {
        if n == 0 { return ([], []) }
        let fn = try ssyevd.get()
        var work = a.data                                                     // [n, n], overwritten by vectors
        try checkFinite(work, "ssyevd")
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var w = [Float](repeating: 0, count: n)
        let jobz = wanted ? "V" : "N"
        var qw = [Float](repeating: 0, count: 1), qi = [Int32](repeating: 0, count: 1)
        var lw: Int32 = -1, liw: Int32 = -1
        fn(jobz, "L", &nn, &work, &lda, &w, &qw, &lw, &qi, &liw, &info, 1, 1)
        guard info == 0 else { throw LAPACKError.failed(routine: "ssyevd", info: Int(info)) }
        var wk = [Float](repeating: 0, count: max(1, Int(qw[0])))
        var iwk = [Int32](repeating: 0, count: max(1, Int(qi[0])))
        lw = Int32(wk.count); liw = Int32(iwk.count)
        fn(jobz, "L", &nn, &work, &lda, &w, &wk, &lw, &iwk, &liw, &info, 1, 1)
        guard info == 0 else { throw LAPACKError.failed(routine: "ssyevd", info: Int(info)) }
        let values = Array(w.reversed())
        guard wanted else { return (values, []) }
        var vectors = [Float](repeating: 0, count: n * n)
        for i in 0..<n {
            let src = n - 1 - i
            for j in 0..<n { vectors[i * n + j] = work[src * n + j] }
        }
        return (values, vectors)
    }

    /// Gram matrix update c[n, n] = alpha · aᵀa + beta · c for row-major a [k, n] (leading dimension
    /// lda), written to the upper triangle of c only (row-major: c[i, j] for j >= i). `cblas_ssyrk`:
    /// half the flops of the equivalent sgemm.
    public static func ssyrkUpperTransposed(n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) throws {
        let fn = try ssyrkFn.get()
        if n == 0 { return }
        fn(101, 121, 112, Int32(n), Int32(k), alpha, a, Int32(lda), beta, c, Int32(ldc))  // RowMajor, Upper, Trans
    }

    /// c[m, n] = alpha · b[m, n] · s[n, n] + beta · c for a symmetric s of which only the upper triangle
    /// (row-major: s[i, j] for j >= i) is read, all row-major. `cblas_ssymm` (side right): what
    /// `ssyrkUpperTransposed` leaves can be used as it is, without filling the lower triangle.
    public static func ssymmRightUpper(m: Int, n: Int, alpha: Float = 1, s: UnsafePointer<Float>, lds: Int,
                                       b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>,
                                       ldc: Int) throws {
        let fn = try ssymmFn.get()
        if m == 0 || n == 0 { return }
        fn(101, 142, 121, Int32(m), Int32(n), alpha, s, Int32(lds), b, Int32(ldb), beta, c, Int32(ldc))  // RowMajor, Right, Upper
    }
}

// MARK: - Reference

/// Plain cyclic Jacobi eigendecomposition of a symmetric matrix in double precision: the obviously
/// correct (and slow, O(n³) per sweep) reference for the tests.
public enum ReferenceEigen {
    /// Eigenvalues descending and unit eigenvectors as rows (row i ↔ values[i]) of the symmetric
    /// `a` [n][n]. Sweeps until the off-diagonal mass is below 1e-30 of the total (or 100 sweeps).
    public static func jacobi(_ a: [[Double]]) -> (values: [Double], vectors: [[Double]]) {
        let n = a.count
        var m = a
        var v = (0..<n).map { i in (0..<n).map { $0 == i ? 1.0 : 0.0 } }    // columns are eigenvectors
        let total = m.reduce(0) { $0 + $1.reduce(0) { $0 + $1 * $1 } }
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in 0..<n where q != p { off += m[p][q] * m[p][q] } }
            if off <= 1e-30 * total || off == 0 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where m[p][q] != 0 {
                    // Rotation that zeroes m[p][q] (Golub & Van Loan, Algorithm 8.4.1).
                    let tau = (m[q][q] - m[p][p]) / (2 * m[p][q])
                    let t = (tau >= 0 ? 1.0 : -1.0) / (abs(tau) + (1 + tau * tau).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot(), s = t * c
                    for k in 0..<n {                                          // m ← m · J
                        let mkp = m[k][p], mkq = m[k][q]
                        m[k][p] = c * mkp - s * mkq
                        m[k][q] = s * mkp + c * mkq
                    }
                    for k in 0..<n {                                          // m ← Jᵀ · m
                        let mpk = m[p][k], mqk = m[q][k]
                        m[p][k] = c * mpk - s * mqk
                        m[q][k] = s * mpk + c * mqk
                    }
                    for k in 0..<n {
                        let vkp = v[k][p], vkq = v[k][q]
                        v[k][p] = c * vkp - s * vkq
                        v[k][q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { m[$0][$0] > m[$1][$1] }
        return (order.map { m[$0][$0] }, order.map { i in (0..<n).map { v[$0][i] } })
    }
}
