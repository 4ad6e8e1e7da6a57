import XCTest
import RefractTensor
@testable import RefractTextSpan

/// SplitMix64 with Box–Muller normals, so failures reproduce.
private typealias Gaussian = SplitMix64

/// K×D' contributions with a decaying per-dimension scale (a spread-out spectrum, as heads have)
/// and a non-zero mean, so that centred and uncentred statistics differ.
private func contributions(_ k: Int, _ d: Int, seed: UInt64) -> Tensor {
    var g = Gaussian(seed: seed)
    let scale = (0..<d).map { 1 / (1 + Double($0) / 3) }
    let offset = (0..<d).map { _ in 0.5 * g.normal() }
    // A random rotation of the scaled axes (so no pool direction is special), via a random mixing.
    let mix = (0..<(d * d)).map { _ in g.normal() / Double(d).squareRoot() }
    var out = [Float](repeating: 0, count: k * d)
    for i in 0..<k {
        let z = (0..<d).map { scale[$0] * g.normal() }
        for j in 0..<d {
            var v = offset[j]
            for l in 0..<d { v += z[l] * mix[l * d + j] }
            out[i * d + j] = Float(v)
        }
    }
    return Tensor(shape: [k, d], data: out)
}

/// M×D' L2-normalised Gaussian rows.
private func pool(_ m: Int, _ d: Int, seed: UInt64) -> Tensor {
    var g = Gaussian(seed: seed)
    return Ops.l2Normalized(Tensor(shape: [m, d], data: (0..<(m * d)).map { _ in Float(g.normal()) }))
}

private func maxAbs(_ a: [Float], _ b: [Float]) -> Double {
    zip(a, b).reduce(0) { max($0, abs(Double($1.0) - Double($1.1))) }
}

final class AlgorithmTests: XCTestCase {
    override func setUpWithError() throws {
        try BLAS.load()
    }

    private func assertMatchesReference(k: Int, d: Int, m: Int, steps: Int, rank: Int, seed: UInt64,
                                        project: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
        let c = contributions(k, d, seed: seed), r = pool(m, d, seed: seed &+ 1)
        let fast = try TextSpan.run(contributions: c, texts: r, steps: steps, rank: rank)
        let ref = TextSpanReference.run(contributions: c, texts: r, steps: steps, rank: rank, project: project)
        let what = "K \(k) D' \(d) M \(m) steps \(steps) rank \(rank)"
        XCTAssertEqual(fast.indices, ref.indices, what, file: file, line: line)
        XCTAssertEqual(fast.totalVariance, ref.totalVariance, accuracy: 1e-5 * ref.totalVariance, what, file: file, line: line)
        for s in 0..<min(fast.steps.count, ref.indices.count) {
            XCTAssertEqual(fast.steps[s].varianceExplained, ref.varianceExplained[s], accuracy: 1e-4,
                           "\(what) step \(s)", file: file, line: line)
            XCTAssertEqual(fast.steps[s].cumulative, ref.cumulative[s], accuracy: 1e-4, "\(what) step \(s)", file: file, line: line)
        }
        let mean = (0..<d).map { j in (0..<k).reduce(0.0) { $0 + Double(c.data[$1 * d + j]) } / Double(k) }
        for j in 0..<d { XCTAssertEqual(Double(fast.mean[j]), mean[j], accuracy: 1e-5, what, file: file, line: line) }
        let recon = fast.reconstruct(c)
        XCTAssertEqual(recon.shape, [k, d])
        let refRecon = ref.reconstruction.flatMap { $0.map { Float($0) } }
        XCTAssertLessThan(maxAbs(recon.data, refRecon), 1e-4, "\(what): reconstruction", file: file, line: line)
    }

    /// The covariance-based implementation picks what the literal algorithm picks, for several
    /// shapes: more descriptions than dimensions, fewer images than dimensions, rank == D', steps == M.
    func testMatchesReference() throws {
        try assertMatchesReference(k: 60, d: 16, m: 40, steps: 8, rank: 12, seed: 1)      // M > D'
        try assertMatchesReference(k: 20, d: 32, m: 24, steps: 6, rank: 10, seed: 2)      // K < D'
        try assertMatchesReference(k: 100, d: 24, m: 80, steps: 10, rank: 24, seed: 3)    // rank == D'
        try assertMatchesReference(k: 50, d: 12, m: 12, steps: 12, rank: 12, seed: 4)     // steps == M == D'
        try assertMatchesReference(k: 200, d: 48, m: 30, steps: 15, rank: 20, seed: 5)
        try assertMatchesReference(k: 3, d: 8, m: 9, steps: 2, rank: 3, seed: 6)          // tiny K, rank == K
    }

    /// More steps than the refresh interval of T = R·S, so the recomputation path runs too.
    func testMatchesReferenceOverManySteps() throws {
        try assertMatchesReference(k: 100, d: 36, m: 50, steps: 36, rank: 36, seed: 7)
    }

    /// rank == D' on full-rank contributions is the identity projection: the same as no projection.
    func testFullRankProjectionChangesNothing() throws {
        try assertMatchesReference(k: 90, d: 20, m: 50, steps: 12, rank: 20, seed: 8, project: false)
        try assertMatchesReference(k: 40, d: 10, m: 25, steps: 10, rank: 10, seed: 9, project: false)
    }

    /// Contributions built from a few pool rows with decreasing variances (plus noise and an offset):
    /// TextSpan finds those rows first, in order of their variance, with about their share of it.
    func testPlantedDirectionsAreRecoveredInOrder() throws {
        let d = 64, m = 200, k = 2000
        let r = pool(m, d, seed: 11)
        let planted = [17, 123, 5, 88]
        let sigma = [3.0, 2.0, 1.4, 1.0]
        var g = Gaussian(seed: 12)
        var data = [Float](repeating: 0, count: k * d)
        for i in 0..<k {
            let a = sigma.map { $0 * g.normal() }
            for j in 0..<d {
                var v = 0.4 * Double(r.data[3 * d + j]) + 0.05 * g.normal()       // offset along another row, noise
                for (p, ap) in zip(planted, a) { v += ap * Double(r.data[p * d + j]) }
                data[i * d + j] = Float(v)
            }
        }
        let c = Tensor(shape: [k, d], data: data)
        for rank in [8, 64] {
            let result = try TextSpan.run(contributions: c, texts: r, steps: 6, rank: rank)
            XCTAssertEqual(Array(result.indices.prefix(4)), planted, "rank \(rank)")
            let total = sigma.reduce(0) { $0 + $1 * $1 } + Double(d) * 0.05 * 0.05
            XCTAssertEqual(result.totalVariance, total, accuracy: 0.05 * total, "rank \(rank)")
            for (s, sg) in sigma.enumerated() {
                XCTAssertEqual(result.steps[s].varianceExplained, sg * sg / result.totalVariance, accuracy: 0.02,
                               "rank \(rank) step \(s)")
            }
            // After the planted directions only noise is left.
            XCTAssertLessThan(result.steps[4].varianceExplained, 0.01)
            XCTAssertEqual(result.steps.last!.cumulative, result.steps.reduce(0) { $0 + $1.varianceExplained }, accuracy: 1e-12)
        }
    }

    /// Ties go to the lowest pool row: a duplicated best row is chosen at its first position, and
    /// its copy (deflated to nothing) is not chosen again.
    func testTiesGoToTheLowestIndex() throws {
        let d = 10
        let c = contributions(60, d, seed: 51), base = pool(6, d, seed: 52)
        let first = try TextSpan.run(contributions: c, texts: base, steps: 1, rank: d).indices[0]
        var rows = (0..<6).map { base.row($0) }
        rows.insert(rows[first], at: 0)                                       // the best row at 0 and again later
        let dup = Tensor(shape: [7, d], data: rows.flatMap { $0 })
        let result = try TextSpan.run(contributions: c, texts: dup, steps: 3, rank: d)
        XCTAssertEqual(result.indices[0], 0)
        XCTAssertFalse(result.indices.dropFirst().contains(first + 1))
        XCTAssertEqual(TextSpanReference.run(contributions: c, texts: dup, steps: 3, rank: d).indices, result.indices)
    }

    /// With steps == rank == D' the chosen directions span everything: the reconstruction is the
    /// data itself, for the fitted rows and for any other rows.
    func testFullReconstructionReproducesContributions() throws {
        let k = 80, d = 16
        let c = contributions(k, d, seed: 21), r = pool(40, d, seed: 22)
        let result = try TextSpan.run(contributions: c, texts: r, steps: d, rank: d)
        XCTAssertEqual(result.steps.last!.cumulative, 1, accuracy: 1e-4)
        XCTAssertLessThan(maxAbs(result.reconstruct(c).data, c.data), 1e-4)
        let other = contributions(7, d, seed: 23)
        XCTAssertLessThan(maxAbs(result.reconstruct(other).data, other.data), 1e-4)
        // No steps: every row reconstructs to the mean.
        let none = try TextSpan.run(contributions: c, texts: r, steps: 0, rank: 4)
        XCTAssertEqual(none.steps, [])
        XCTAssertEqual(none.reconstruct(other).data, (0..<7).flatMap { _ in none.mean })
    }

    /// Reconstruction of rows it was not fitted on is μ + Σ_s ((x − μ)·z_s)·u_s, linear in x − μ.
    func testReconstructionOfOtherRows() throws {
        let d = 12
        let c = contributions(50, d, seed: 31), r = pool(30, d, seed: 32)
        let result = try TextSpan.run(contributions: c, texts: r, steps: 5, rank: 8)
        let x = contributions(4, d, seed: 33)
        let got = result.reconstruct(x)
        for i in 0..<4 {
            for j in 0..<d {
                var v = Double(result.mean[j])
                for s in 0..<5 {
                    var coef = 0.0
                    for l in 0..<d { coef += (Double(x.data[i * d + l]) - Double(result.mean[l])) * Double(result.readout.data[s * d + l]) }
                    v += coef * Double(result.directions.data[s * d + j])
                }
                XCTAssertEqual(Double(got.data[i * d + j]), v, accuracy: 1e-5)
            }
        }
    }

    // MARK: Errors

    private func assertError(_ kind: TextSpanError.Kind, mentions words: [String] = [],
                             file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let e = error as? TextSpanError else {
                return XCTFail("not a TextSpanError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(e.kind, kind, e.description, file: file, line: line)
            for w in words { XCTAssertTrue(e.description.contains(w), "'\(w)' not in: \(e.description)", file: file, line: line) }
        }
    }

    func testErrors() throws {
        let d = 8
        let c = contributions(30, d, seed: 41), r = pool(10, d, seed: 42)
        // Empty pool; more steps than descriptions, than the rank; negative steps.
        assertError(.emptyPool, mentions: ["empty"]) { _ = try TextSpan.run(contributions: c, texts: Tensor(zeros: [0, d]), steps: 1, rank: 2) }
        assertError(.steps, mentions: ["11", "10"]) { _ = try TextSpan.run(contributions: c, texts: r, steps: 11, rank: 8) }
        assertError(.steps, mentions: ["5", "rank 3"]) { _ = try TextSpan.run(contributions: c, texts: r, steps: 5, rank: 3) }
        assertError(.steps) { _ = try TextSpan.run(contributions: c, texts: r, steps: -1, rank: 3) }
        // Rank below 1, above the width, above the numerical rank of the contributions.
        assertError(.rank, mentions: ["at least 1"]) { _ = try TextSpan.run(contributions: c, texts: r, steps: 0, rank: 0) }
        assertError(.rank, mentions: ["9", "width 8"]) { _ = try TextSpan.run(contributions: c, texts: r, steps: 2, rank: 9) }
        let a = contributions(30, 3, seed: 43), b = contributions(3, d, seed: 44)
        let rank3 = Ops.matmul(a, b)                                          // [30, 8], rank 3
        XCTAssertEqual(try TextSpan.numericalRank(rank3), 3)
        XCTAssertEqual(try TextSpan.numericalRank(c), d)
        assertError(.rank, mentions: ["rank 4", "(3"]) { _ = try TextSpan.run(contributions: rank3, texts: r, steps: 2, rank: 4) }
        XCTAssertNoThrow(try TextSpan.run(contributions: rank3, texts: r, steps: 3, rank: 3))
        // K < D': the rank is at most K.
        let few = contributions(5, d, seed: 45)
        XCTAssertEqual(try TextSpan.numericalRank(few), 5)
        assertError(.rank, mentions: ["(5"]) { _ = try TextSpan.run(contributions: few, texts: r, steps: 2, rank: 6) }
        // Non-finite values, named.
        var nanC = c
        nanC.data[3 * d + 5] = .nan
        assertError(.notFinite, mentions: ["contributions", "row 3", "column 5"]) {
            _ = try TextSpan.run(contributions: nanC, texts: r, steps: 2, rank: 4)
        }
        var infC = c
        infC.data[7] = -.infinity
        assertError(.notFinite, mentions: ["contributions", "row 0", "column 7"]) {
            _ = try TextSpan.run(contributions: infC, texts: r, steps: 2, rank: 4)
        }
        var infR = r
        infR.data[2 * d + 1] = .infinity
        assertError(.notFinite, mentions: ["texts", "row 2", "column 1"]) {
            _ = try TextSpan.run(contributions: c, texts: infR, steps: 2, rank: 4)
        }
        // Too few images; shapes.
        assertError(.tooFewImages, mentions: ["1 image"]) {
            _ = try TextSpan.run(contributions: contributions(1, d, seed: 46), texts: r, steps: 1, rank: 1)
        }
        assertError(.shape, mentions: ["8 wide", "9 wide"]) { _ = try TextSpan.run(contributions: c, texts: pool(10, 9, seed: 47), steps: 1, rank: 1) }
        assertError(.shape, mentions: ["contributions", "2-D"]) {
            _ = try TextSpan.run(contributions: c.reshaped([30, 2, 4]), texts: r, steps: 1, rank: 1)
        }
        assertError(.shape, mentions: ["texts", "2-D"]) { _ = try TextSpan.run(contributions: c, texts: r.reshaped([80]), steps: 1, rank: 1) }
        // Constant contributions: nothing to explain.
        let constant = Tensor(shape: [6, d], data: (0..<(6 * d)).map { Float($0 % d) })
        assertError(.noVariance, mentions: ["6 images"]) { _ = try TextSpan.run(contributions: constant, texts: r, steps: 1, rank: 1) }
        // A pool of one repeated direction spans one dimension: the second step has nothing left.
        let repeated = Tensor(shape: [4, d], data: (0..<4).flatMap { _ in r.row(0) })
        XCTAssertNoThrow(try TextSpan.run(contributions: c, texts: repeated, steps: 1, rank: 4))
        assertError(.poolExhausted, mentions: ["step 2", "at most 1"]) {
            _ = try TextSpan.run(contributions: c, texts: repeated, steps: 2, rank: 4)
        }
    }
}
