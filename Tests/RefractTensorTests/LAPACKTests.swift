import XCTest
@testable import RefractTensor

/// SplitMix64 uniforms in [−1, 1).
private struct LAPACKTestRandom {
    var core: SplitMix64
    init(state: UInt64) { core = SplitMix64(seed: state) }
    mutating func next() -> Double { Double(core.next() >> 11) / Double(1 << 52) - 1 }
}

/// A symmetric n×n matrix Q·diag(values)·Qᵀ with a random orthogonal Q (Gram–Schmidt in double).
private func symmetric(values: [Double], seed: UInt64) -> [[Double]] {
    let n = values.count
    var rng = LAPACKTestRandom(state: seed)
    var q = [[Double]]()
    while q.count < n {
        var v = (0..<n).map { _ in rng.next() }
        for _ in 0..<2 {
            for e in q {
                let p = zip(v, e).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<n { v[i] -= p * e[i] }
            }
        }
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        q.append(v.map { $0 / norm })
    }
    var a = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
    for (l, e) in zip(values, q) { for i in 0..<n { for j in 0..<n { a[i][j] += l * e[i] * e[j] } } }
    return a
}

private func tensor(_ a: [[Double]]) -> Tensor {
    Tensor(shape: [a.count, a.count], data: a.flatMap { $0.map { Float($0) } })
}

final class LAPACKTests: XCTestCase {
    override func setUpWithError() throws {
        try BLAS.load()
        try LAPACK.load()
    }

    /// The Jacobi reference itself: A·v = λ·v, orthonormal vectors, values descending.
    func testJacobiReferenceDiagonalises() {
        var rng = LAPACKTestRandom(state: 7)
        let n = 9
        var a = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n { for j in i..<n { a[i][j] = rng.next(); a[j][i] = a[i][j] } }
        let (values, vectors) = ReferenceEigen.jacobi(a)
        XCTAssertEqual(values, values.sorted(by: >))
        for (l, v) in zip(values, vectors) {
            for i in 0..<n {
                let av = (0..<n).reduce(0.0) { $0 + a[i][$1] * v[$1] }
                XCTAssertEqual(av, l * v[i], accuracy: 1e-12)
            }
        }
        for p in 0..<n {
            for q in 0..<n {
                XCTAssertEqual(zip(vectors[p], vectors[q]).reduce(0) { $0 + $1.0 * $1.1 }, p == q ? 1 : 0, accuracy: 1e-12)
            }
        }
        // Known spectrum.
        let known = [5.0, 3, 2.5, 1, 0.5, -0.25, -2]
        let (v2, _) = ReferenceEigen.jacobi(symmetric(values: known, seed: 3))
        for (x, y) in zip(v2, known) { XCTAssertEqual(x, y, accuracy: 1e-12) }
    }

    /// ssyevd against the Jacobi reference on random symmetric matrices (indefinite, and PSD with a
    /// spread-out spectrum): values, and vectors up to sign.
    func testSymmetricEigenMatchesJacobi() throws {
        for (n, seed) in [(1, UInt64(1)), (2, 2), (5, 3), (16, 4), (33, 5)] {
            var rng = LAPACKTestRandom(state: seed)
            let values = (0..<n).map { i in 3 * Double(n - i) / Double(n) + 0.01 * rng.next() - 1 }
            let a = symmetric(values: values, seed: seed &+ 100)
            let ref = ReferenceEigen.jacobi(a)
            let (got, vectors) = try LAPACK.symmetricEigen(tensor(a))
            XCTAssertEqual(vectors.shape, [n, n])
            for i in 0..<n {
                XCTAssertEqual(Double(got[i]), ref.values[i], accuracy: 2e-6, "n \(n) value \(i)")
                let v = vectors.row(i).map(Double.init)
                let sign = zip(v, ref.vectors[i]).reduce(0) { $0 + $1.0 * $1.1 } >= 0 ? 1.0 : -1.0
                for j in 0..<n { XCTAssertEqual(sign * v[j], ref.vectors[i][j], accuracy: 1e-4, "n \(n) vector \(i)[\(j)]") }
            }
            let valuesOnly = try LAPACK.symmetricEigenvalues(tensor(a))
            for i in 0..<n { XCTAssertEqual(valuesOnly[i], got[i], accuracy: 1e-5) }
        }
    }

    /// Only the upper triangle (row-major) is read: garbage below the diagonal changes nothing.
    func testReadsUpperTriangleOnly() throws {
        let a = symmetric(values: [4, 2, 1, 0.5, 0.25], seed: 11)
        var t = tensor(a)
        for i in 0..<5 { for j in 0..<i { t.data[i * 5 + j] = 1000 } }
        let (values, _) = try LAPACK.symmetricEigen(t)
        let (top, _) = try LAPACK.symmetricEigen(t, largest: 2)
        for (x, y) in zip(values, [4.0, 2, 1, 0.5, 0.25]) { XCTAssertEqual(Double(x), y, accuracy: 1e-5) }
        XCTAssertEqual(top.count, 2)
        XCTAssertEqual(Double(top[0]), 4, accuracy: 1e-5)
        XCTAssertEqual(Double(top[1]), 2, accuracy: 1e-5)
    }

    /// The top-k variant (ssyevr) agrees with the full decomposition and the reference.
    func testLargestEigenpairs() throws {
        let n = 40
        let values = (0..<n).map { 10 * pow(0.8, Double($0)) }
        let a = symmetric(values: values, seed: 21)
        let ref = ReferenceEigen.jacobi(a)
        for count in [1, 7, n] {
            let (got, vectors) = try LAPACK.symmetricEigen(tensor(a), largest: count)
            XCTAssertEqual(got.count, count)
            XCTAssertEqual(vectors.shape, [count, n])
            for i in 0..<count {
                XCTAssertEqual(Double(got[i]), ref.values[i], accuracy: 1e-5 * values[0])
                // Vectors of the well-separated leading eigenvalues, up to sign.
                if i < 10 {
                    let v = vectors.row(i).map(Double.init)
                    let dot = zip(v, ref.vectors[i]).reduce(0) { $0 + $1.0 * $1.1 }
                    XCTAssertEqual(abs(dot), 1, accuracy: 1e-4, "vector \(i)")
                }
            }
        }
        XCTAssertEqual(try LAPACK.symmetricEigen(tensor(a), largest: 0).values, [])
    }

    func testErrors() {
        XCTAssertThrowsError(try LAPACK.symmetricEigen(Tensor(zeros: [3, 4]))) { e in
            XCTAssertEqual(e as? LAPACKError, .notSquare(shape: [3, 4]))
        }
        var t = Tensor(zeros: [3, 3])
        t.data[4] = .nan
        XCTAssertThrowsError(try LAPACK.symmetricEigen(t)) { e in
            XCTAssertEqual(e as? LAPACKError, .notFinite(routine: "ssyevd"))
        }
        XCTAssertTrue(LAPACKError.symbolMissing(library: "libx.so", symbol: "ssyevd_").description.contains("ssyevd_"))
    }

    /// ssyrk builds the Gram matrix's upper triangle, accumulating with beta 1.
    func testGramUpdate() throws {
        var rng = LAPACKTestRandom(state: 5)
        let k = 13, n = 6
        let a = (0..<(k * n)).map { _ in Float(rng.next()) }
        var c = [Float](repeating: -7, count: n * n)
        try a.withUnsafeBufferPointer { ap in
            try c.withUnsafeMutableBufferPointer { cp in
                try LAPACK.ssyrkUpperTransposed(n: n, k: 8, a: ap.baseAddress!, lda: n, beta: 0, c: cp.baseAddress!, ldc: n)
                try LAPACK.ssyrkUpperTransposed(n: n, k: 5, a: ap.baseAddress! + 8 * n, lda: n, beta: 1,
                                                c: cp.baseAddress!, ldc: n)
            }
        }
        for i in 0..<n {
            for j in 0..<n {
                if j < i { XCTAssertEqual(c[i * n + j], -7); continue }
                let ref = (0..<k).reduce(0.0) { $0 + Double(a[$1 * n + i]) * Double(a[$1 * n + j]) }
                XCTAssertEqual(Double(c[i * n + j]), ref, accuracy: 1e-5)
            }
        }
    }
}
