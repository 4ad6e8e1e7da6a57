import Foundation
@testable import RefractAlign
import RefractCheckpoint
import RefractDecompose
import RefractStore
import RefractTensor
import XCTest

/// `refract score`'s library: the streaming scores against the official formulas written out here in
/// float64, hand-computed cases, rankings, streaming over shards of stored runs (CLIP layout and timm
/// through a hand-written alignment), and bad input.
final class ScoreTests: XCTestCase {
    override func setUpWithError() throws { try BLAS.load() }

    // MARK: Synthetic data

    struct RNG {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func normal() -> Double {
            let u1 = max(Double(next() >> 11) / Double(1 << 53), 1e-300), u2 = Double(next() >> 11) / Double(1 << 53)
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
    }

    static func unit(_ v: [Double]) -> [Double] { let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot(); return v.map { $0 / n } }

    /// N images, C components of width D, k text embeddings. Component 0 moves along text 0's direction
    /// and dominates the total; component 1 lies in the orthogonal complement of the texts' span; the
    /// others are small noise with constant offsets.
    static func planted(n: Int, c: Int, d: Int, k: Int, seed: UInt64) -> (aligned: [Float], texts: Tensor) {
        var rng = RNG(state: seed)
        let texts = (0..<k).map { _ in unit((0..<d).map { _ in rng.normal() }) }
        // An orthonormal basis of the span (float64), to build the orthogonal component.
        var basis: [[Double]] = []
        for t in texts {
            var v = t
            for b in basis { let dot = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }; v = zip(v, b).map { $0 - dot * $1 } }
            basis.append(unit(v))
        }
        var out = [Float](repeating: 0, count: n * c * d)
        let offsets = (0..<(c * d)).map { _ in rng.normal() * 0.3 }
        for x in 0..<n {
            let z = rng.normal() * 5
            for comp in 0..<c {
                var v = (0..<d).map { offsets[comp * d + $0] + rng.normal() * 0.2 }
                if comp == 0 { for t in 0..<d { v[t] += z * texts[0][t] } }
                if comp == 1 {
                    v = (0..<d).map { _ in rng.normal() }
                    for b in basis { let dot = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }; v = zip(v, b).map { $0 - dot * $1 } }
                }
                for t in 0..<d { out[(x * c + comp) * d + t] = Float(v[t]) }
            }
        }
        let e = Tensor(shape: [k, d], data: texts.flatMap { $0.map(Float.init) })
        return (out, e)
    }

    /// The official formulas (beyond-clip.md §3.2, §3.3), written out independently in float64:
    /// Q by classical Gram–Schmidt with reorthogonalisation, in list order; Pearson × (N−1)/N; the
    /// constant guard of the implementation (std ≤ 1e-6 · max(rms(p), std(P)) → 0).
    static func official(_ a: [Float], n: Int, c: Int, d: Int, texts e: Tensor) -> (attributed: [Double], explained: [Double]) {
        let k = e.shape[0]
        var q: [[Double]] = []
        for i in 0..<k {
            var v = (0..<d).map { Double(e.data[i * d + $0]) }
            for _ in 0..<2 {
                let dots = q.map { b in zip(v, b).reduce(0) { $0 + $1.0 * $1.1 } }
                for (b, dot) in zip(q, dots) { for t in 0..<d { v[t] -= dot * b[t] } }
            }
            q.append(unit(v))
        }
        let nn = Double(n)
        func mean(_ x: [Double]) -> Double { x.reduce(0, +) / nn }
        var attributed = [Double](repeating: 0, count: c)
        for b in q {
            let p = (0..<c).map { comp in (0..<n).map { x in (0..<d).reduce(0.0) { $0 + Double(a[(x * c + comp) * d + $1]) * b[$1] } } }
            let total = (0..<n).map { x in p.reduce(0.0) { $0 + $1[x] } }
            let mT = mean(total)
            let sT = (total.reduce(0) { $0 + ($1 - mT) * ($1 - mT) } / (nn - 1)).squareRoot()
            for comp in 0..<c {
                let m = mean(p[comp])
                let s = (p[comp].reduce(0) { $0 + ($1 - m) * ($1 - m) } / (nn - 1)).squareRoot()
                let rms = (p[comp].reduce(0) { $0 + $1 * $1 } / nn).squareRoot()
                if s * ((nn - 1) / nn).squareRoot() <= 1e-6 * max(rms, sT * ((nn - 1) / nn).squareRoot()) { continue }
                let cov = (0..<n).reduce(0.0) { $0 + (total[$1] - mT) * (p[comp][$1] - m) } / nn
                attributed[comp] += cov / (sT * s) / Double(k)
            }
        }
        let explained = (0..<c).map { comp -> Double in
            let mu = (0..<d).map { t in (0..<n).reduce(0.0) { $0 + Double(a[($1 * c + comp) * d + t]) } / nn }
            var total = 0.0, span = 0.0
            for x in 0..<n {
                let v = (0..<d).map { Double(a[(x * c + comp) * d + $0]) - mu[$0] }
                total += v.reduce(0) { $0 + $1 * $1 }
                for b in q { let dot = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }; span += dot * dot }
            }
            return span / total     // (N−1) cancels
        }
        return (attributed, explained)
    }

    func fast(_ a: [Float], n: Int, c: Int, d: Int, texts: Tensor, chunks: Int = 1) throws -> PropertyScores {
        var acc = try ScoreAccumulator(components: c, width: d,
                                       properties: [ScoreProperty(name: "p", texts: (0..<texts.shape[0]).map { "t\($0)" }, embeddings: texts)])
        for i in 0..<chunks {
            let lo = i * n / chunks, hi = (i + 1) * n / chunks
            acc.add(Tensor(shape: [hi - lo, c, d], data: Array(a[(lo * c * d)..<(hi * c * d)])))
        }
        return try acc.finish().properties[0]
    }

    func assertClose(_ a: [Double], _ b: [Double], _ tol: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        for (i, (x, y)) in zip(a, b).enumerated() {
            XCTAssertEqual(x, y, accuracy: tol, "\(what)[\(i)]: \(x) vs \(y)", file: file, line: line)
        }
    }

    // MARK: Against the official formulas

    func testStreamingScoresMatchTheOfficialFormulasAndFindThePlantedComponent() throws {
        let (n, c, d, k) = (300, 6, 40, 3)
        let (a, e) = Self.planted(n: n, c: c, d: d, k: k, seed: 7)
        let want = Self.official(a, n: n, c: c, d: d, texts: e)
        for chunks in [1, 7] {
            let got = try fast(a, n: n, c: c, d: d, texts: e, chunks: chunks)
            assertClose(got.varianceAttributed, want.attributed, 2e-5, "attributed (\(chunks) chunks)")
            assertClose(got.varianceExplained!, want.explained, 2e-5, "explained (\(chunks) chunks)")
        }
        let got = try fast(a, n: n, c: c, d: d, texts: e)
        // The planted component ranks first; the one orthogonal to the span scores 0.
        XCTAssertEqual(ScoreRanking.order(got.varianceAttributed).first, 0)
        XCTAssertGreaterThan(got.varianceAttributed[0], 0.25)
        XCTAssertEqual(got.varianceAttributed[1], 0, accuracy: 1e-6)
        XCTAssertEqual(got.varianceExplained![1], 0, accuracy: 1e-6)
        XCTAssertEqual(got.constantDirections[1], k)
        // The library's own float64 reference agrees too.
        let a64 = a.map(Double.init)
        assertClose(try ReferenceScores.varianceAttributed(a64, images: n, components: c, width: d, embeddings: e), want.attributed, 1e-9, "reference attributed")
        assertClose(try ReferenceScores.varianceExplained(a64, images: n, components: c, width: d, embeddings: e), want.explained, 1e-9, "reference explained")
    }

    func testTextOrderMattersButSignsDoNot() throws {
        let (n, c, d, k) = (200, 5, 24, 3)
        var (a, e) = Self.planted(n: n, c: c, d: d, k: k, seed: 11)
        // Give every component some variance inside the span so that rotations there matter.
        var rng = RNG(state: 3)
        for x in 0..<n { for comp in 0..<c { let z = rng.normal(); for t in 0..<d { a[(x * c + comp) * d + t] += Float(z) * e.data[((comp + 1) % k) * d + t] } } }
        let base = try fast(a, n: n, c: c, d: d, texts: e)
        var reversed = e
        for i in 0..<k { for t in 0..<d { reversed.data[i * d + t] = e.data[(k - 1 - i) * d + t] } }
        let r = try fast(a, n: n, c: c, d: d, texts: reversed)
        assertClose(r.varianceAttributed, Self.official(a, n: n, c: c, d: d, texts: reversed).attributed, 2e-5, "reversed")
        let change = zip(base.varianceAttributed, r.varianceAttributed).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(change, 1e-3, "reversing the text order should change variance_attributed")
        // variance_explained depends on the span only.
        assertClose(r.varianceExplained!, base.varianceExplained!, 1e-5, "explained, reversed")
        var flipped = e
        for t in 0..<d { flipped.data[1 * d + t] = -e.data[1 * d + t] }
        let f = try fast(a, n: n, c: c, d: d, texts: flipped)
        assertClose(f.varianceAttributed, base.varianceAttributed, 1e-9, "sign flip")
        assertClose(f.varianceExplained!, base.varianceExplained!, 1e-9, "sign flip, explained")
    }

    // MARK: Hand-computed

    func testHandComputedSmallCase() throws {
        // Three images, two components in R², one text along x.
        // a_0 = (1,0), (3,0), (2,0); a_1 = (0,1), (1,0), (2,2).  P = p_0 + p_1 = 1, 4, 4.
        // Pearson(P, p_0) = 3/√12 = Pearson(P, p_1); × 2/3 → 1/√3 each.
        // variance_explained: a_0 varies along x only → 1; a_1: 2 of its 4 → 0.5.
        let a: [Float] = [1, 0, 0, 1, 3, 0, 1, 0, 2, 0, 2, 2]
        var acc = try ScoreAccumulator(components: 2, width: 2, properties: [ScoreProperty(name: "x", texts: ["x"], embeddings: Tensor(shape: [1, 2], data: [2, 0]))])
        acc.add(Tensor(shape: [3, 2, 2], data: a))
        let s = try acc.finish(names: ["a", "b"])
        assertClose(s.properties[0].varianceAttributed, [1 / 3.0.squareRoot(), 1 / 3.0.squareRoot()], 1e-7, "attributed")
        assertClose(s.properties[0].varianceExplained!, [1, 0.5], 1e-7, "explained")
        XCTAssertEqual(s.components, ["a", "b"])
        XCTAssertEqual(s.images, 3)
    }

    func testConstantComponentScoresZeroAndIsNamed() throws {
        let (n, c, d) = (50, 3, 8)
        var (a, e) = Self.planted(n: n, c: c, d: d, k: 2, seed: 5)
        for x in 0..<n { for t in 0..<d { a[(x * c + 2) * d + t] = Float(t) * 0.25 - 0.5 } }      // component 2: the same in every image
        let s = try fast(a, n: n, c: c, d: d, texts: e)
        XCTAssertEqual(s.varianceAttributed[2], 0)
        XCTAssertEqual(s.varianceExplained![2], 0)
        XCTAssertEqual(s.constantDirections[2], 2)
        var acc = try ScoreAccumulator(components: c, width: d, properties: [ScoreProperty(name: "p", texts: ["a", "b"], embeddings: e)])
        acc.add(Tensor(shape: [n, c, d], data: a))
        XCTAssertEqual(try acc.finish().constantComponents, [2])
    }

    // MARK: Rankings

    func testRankingsWithSubtraction() {
        let score = [0.5, 0.2, -0.1]
        let others = [[0.1, 0.4, -0.3], [0.3, -0.2, -0.5]]
        let keys = ScoreRanking.keys(score, against: others)
        assertClose(keys, [0.2, -0.2, -0.1], 1e-12, "against")
        XCTAssertEqual(ScoreRanking.order(keys), [0, 2, 1])
        XCTAssertEqual(ScoreRanking.keys(score, against: []), score)
        let minus = ScoreRanking.keys(score, minus: others[0])
        assertClose(minus, [0.4, -0.2, 0.2], 1e-12, "minus")
        XCTAssertEqual(ScoreRanking.order(minus), [0, 2, 1])
        // Negative other scores are not added back (max with 0); ties keep the run's order; NaN last.
        assertClose(ScoreRanking.keys([0.1, 0.1], against: [[-0.5, 0.05]]), [0.1, 0.05], 1e-12, "max with 0")
        XCTAssertEqual(ScoreRanking.order([0.3, .nan, 0.3, 0.9]), [3, 0, 2, 1])
    }

    func testReportRanksAndRendersEscaped() throws {
        let result = ScoreResult(components: ["init", "attn.0.0", "mlp.0"], images: 10,
                                 properties: [PropertyScores(name: "place <b>", texts: ["beach", "a & b"], varianceAttributed: [0.5, 0.2, -0.1],
                                                             varianceExplained: [0.3, 0.6, 0.1], constantDirections: [0, 0, 0]),
                                              PropertyScores(name: "color", texts: ["red"], varianceAttributed: [0.1, 0.4, -0.3],
                                                             varianceExplained: [0.2, 0.1, 0.0], constantDirections: [0, 0, 0])],
                                 constantComponents: [])
        let model = StoreModelInfo(id: "m", layout: "openCLIP", weightsSHA256: "abc", weightFiles: ["w"])
        let r = try ScoreReport.make(result: result, property: "place <b>", rule: .against(["color"]), rankedBy: false, top: 2,
                                     createdBy: "test", run: .init(id: "id", path: "/r", convention: "faithful", images: 10), model: model,
                                     textModel: .init(id: "m", weightsSHA256: "abc"), alignment: nil, templates: 80, templatesSource: "bundled")
        XCTAssertEqual(r.rankings.key, ["init", "mlp.0", "attn.0.0"])
        XCTAssertEqual(r.rankings.varianceAttributed, ["init", "attn.0.0", "mlp.0"])
        XCTAssertEqual(r.rankings.varianceExplained!, ["attn.0.0", "init", "mlp.0"])
        XCTAssertEqual(r.components.map(\.rank), [1, 3, 2])
        XCTAssertEqual(r.components[1].key, -0.2, accuracy: 1e-12)
        XCTAssertEqual(r.components[1].others["color"]!, 0.4, accuracy: 1e-12)
        let byExplained = try ScoreReport.make(result: result, property: "place <b>", rule: .minus("color"), rankedBy: true, top: 2,
                                               createdBy: "test", run: r.run, model: model, textModel: r.textModel, alignment: nil,
                                               templates: 80, templatesSource: "bundled")
        XCTAssertEqual(byExplained.rankings.key, ["attn.0.0", "mlp.0", "init"])       // 0.5, 0.1, 0.1 (tie: run order)
        let html = ScoreRendering.html(r)
        XCTAssertTrue(html.contains("place &lt;b&gt;") && html.contains("a &amp; b"), html)
        XCTAssertFalse(html.contains("<b>"))
        XCTAssertFalse(html.contains("http://") || html.contains("https://") || html.contains("<script") || html.contains("<link"))
        let md = ScoreRendering.markdown(r)
        XCTAssertTrue(md.contains("place &lt;b&gt;"), md)
        XCTAssertTrue(md.contains("| 1 | init | 0.4000 | 0.5000 | 0.3000 | 0.1000 |"), md)
        let decoded = try JSONDecoder().decode(ScoreReport.self, from: ScoreRendering.json(r))
        XCTAssertEqual(decoded, r)
        XCTAssertTrue(ScoreRendering.table(r, top: 2).contains("init"))
        // Written together, nothing else left behind.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("score-report-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try ScoreRendering.write(r, to: dir)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)), ["score.json", "score.md", "score.html"])
    }

    // MARK: Stored runs

    var scratch: URL!
    override func tearDown() { if let scratch { try? FileManager.default.removeItem(at: scratch) } }
    func makeScratch() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("score-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        scratch = u
        return u
    }

    static func json<T: Encodable>(_ v: T) throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(v)) }

    /// A timm-layout run of `x` [N, C, d] in shards of `shard` images.
    static func writeTimmRun(_ url: URL, x: [Float], n: Int, c: Int, d: Int, shard: Int, weights: String = "feed") throws {
        let comps = (0..<c).map { ComponentInfo(name: $0 == 0 ? "init" : "mlp.\($0 - 1)", official: nil, kind: $0 == 0 ? .`init` : .mlp, block: max(0, $0 - 1)) }
        let header = StoreHeader(model: StoreModelInfo(id: "tiny-timm", layout: "timm", weightsSHA256: weights, weightFiles: ["model.safetensors"]),
                                 convention: "faithful", dimensions: ["components": c], options: .object(["components": try json(comps)]),
                                 tensors: [StoreTensorSpec(name: "components", shape: [c, d])],
                                 images: (0..<n).map { StoreImage(path: "img\($0).png") }, shardSize: shard)
        let w = try StoreWriter.open(at: url, header: header, constants: [:], createdBy: "test", resume: false)
        for (s, r) in w.shardRanges.enumerated() {
            try w.writeShard(s, imageIndices: Array(r), rows: ["components": Tensor(shape: [r.count, c, d], data: Array(x[(r.lowerBound * c * d)..<(r.upperBound * c * d)]))],
                             skipped: [])
        }
        try w.finish()
        w.close()
    }

    /// An alignment directory for `run`, written by hand: manifest.json + maps.safetensors.
    static func writeAlignment(_ dir: URL, for reader: StoreReader, maps: AlignerWeights, clipHash: String = "c11b") throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let sha = try writeFloatSafetensors(to: dir.appendingPathComponent(AlignmentManifest.mapsFileName), metadata: [:],
                                            tensors: [("weights", Tensor(shape: [maps.components, maps.width, maps.clipWidth], data: maps.weights)),
                                                      ("bias", Tensor(shape: [maps.clipWidth], data: maps.bias))])
        let m = reader.manifest
        let manifest = AlignmentManifest(
            createdBy: "test", runId: m.runId, runPath: reader.run.path, convention: m.convention, model: m.model,
            target: AlignmentTarget(model: StoreModelInfo(id: "tiny-clip", layout: "openCLIP", weightsSHA256: clipHash, weightFiles: ["x"]),
                                    width: maps.clipWidth, source: "test"),
            components: try RunComponents.describe(reader).map(\.name), width: maps.width, hyperparameters: AlignerHyperparameters(), seed: 0,
            heldOut: 0, trainImages: reader.rowCount, steps: 0, epochs: 0, stopped: "test", loss: [],
            figures: AlignmentFigures(images: 0, meanCosine: 0, meanCosineInitial: 0, zeroShotTop1: nil, clipZeroShotTop1: nil, zeroShotClasses: nil, isometry: []),
            mapsSHA256: sha)
        try JSONEncoder().encode(manifest).write(to: dir.appendingPathComponent(AlignmentManifest.fileName))
    }

    func testTimmRunThroughAnAlignmentStreamsLikeOneBatch() throws {
        let root = try makeScratch()
        let (n, c, d, e, k) = (45, 5, 12, 16, 3)
        var rng = RNG(state: 21)
        let x = (0..<(n * c * d)).map { _ in Float(rng.normal()) }
        let runURL = root.appendingPathComponent("run")
        try Self.writeTimmRun(runURL, x: x, n: n, c: c, d: d, shard: 7)
        let reader = try StoreReader(run: runURL)
        XCTAssertEqual(reader.shardRows.count, 7)
        let maps = AlignerWeights.initial(components: c, width: d, clipWidth: e, std: 0.3, seed: 4)
        try Self.writeAlignment(root.appendingPathComponent("align"), for: reader, maps: maps)
        let al = try Alignment.load(root.appendingPathComponent("align"))
        let texts = Tensor(shape: [k, e], data: (0..<(k * e)).map { _ in Float(rng.normal()) })
        let props = [ScoreProperty(name: "p", texts: ["a", "b", "c"], embeddings: texts),
                     ScoreProperty(name: "q", texts: ["d"], embeddings: Tensor(shape: [1, e], data: (0..<e).map { _ in Float(rng.normal()) }))]
        // One batch in memory: the aligned components, all at once.
        let aligned = al.alignedComponents(Tensor(shape: [n, c, d], data: x))
        var one = try ScoreAccumulator(components: c, width: e, properties: props)
        one.add(aligned)
        let want = try one.finish(names: try RunComponents.describe(reader).map(\.name))
        let official = Self.official(aligned.data, n: n, c: c, d: e, texts: texts)
        assertClose(want.properties[0].varianceAttributed, official.attributed, 2e-5, "one batch vs official")

        let source = try ScoreSource.resolve(reader, alignment: al)
        XCTAssertEqual(source.names, ["init", "mlp.0", "mlp.1", "mlp.2", "mlp.3"])
        for chunk in [nil, 2] as [Int?] {
            var done: [Int] = []
            let got = try ComponentScoring.score(reader, source: source, properties: props, chunkRows: chunk) { done.append($0) }
            XCTAssertEqual(done.last, n)
            XCTAssertEqual(got.images, n)
            XCTAssertEqual(got.components, want.components)
            for (g, w) in zip(got.properties, want.properties) {
                assertClose(g.varianceAttributed, w.varianceAttributed, 1e-5, "streamed attributed \(g.name)")
                assertClose(g.varianceExplained!, w.varianceExplained!, 1e-5, "streamed explained \(g.name)")
            }
            // Without variance_explained: W_c·Q folded, the same variance_attributed.
            let fast = try ComponentScoring.score(reader, source: source, properties: props, varianceExplained: false, chunkRows: chunk)
            XCTAssertNil(fast.properties[0].varianceExplained)
            for (g, w) in zip(fast.properties, want.properties) { assertClose(g.varianceAttributed, w.varianceAttributed, 1e-5, "folded \(g.name)") }
        }
    }

    /// A CLIP-layout run (faithful: pre, attn, attn_bias, mlp, readout_bias) and the components in
    /// RunComponents' order [N, C, D].
    func writeCLIPRun(_ url: URL, n: Int, layers: Int, heads: Int, d: Int, shard: Int, nanAt: (row: Int, head: Int)? = nil) throws -> [Float] {
        var rng = RNG(state: 99)
        func t(_ shape: [Int]) -> [Float] { (0..<shape.reduce(1, *)).map { _ in Float(rng.normal()) } }
        let pre = t([n, d]), attn = t([n, layers, heads, d]), bias = t([n, layers, d]), mlp = t([n, layers, d]), ro = t([n, d])
        var attnStored = attn
        if let nanAt { attnStored[(nanAt.row * layers * heads + nanAt.head) * d] = .nan }
        let header = StoreHeader(model: StoreModelInfo(id: "tiny-clip", layout: "openCLIP", weightsSHA256: "c11b", weightFiles: ["w"]),
                                 convention: "faithful", dimensions: ["layers": layers, "heads": heads],
                                 tensors: [StoreTensorSpec(name: "pre", shape: [d]), StoreTensorSpec(name: "attn", shape: [layers, heads, d]),
                                           StoreTensorSpec(name: "attn_bias", shape: [layers, d]), StoreTensorSpec(name: "mlp", shape: [layers, d]),
                                           StoreTensorSpec(name: "readout_bias", shape: [d])],
                                 images: (0..<n).map { StoreImage(path: "img\($0).png") }, shardSize: shard)
        let w = try StoreWriter.open(at: url, header: header, constants: [:], createdBy: "test", resume: false)
        for (s, r) in w.shardRanges.enumerated() {
            func rows(_ a: [Float], _ shape: [Int]) -> Tensor {
                let width = shape.reduce(1, *)
                return Tensor(shape: [r.count] + shape, data: Array(a[(r.lowerBound * width)..<(r.upperBound * width)]))
            }
            try w.writeShard(s, imageIndices: Array(r), rows: ["pre": rows(pre, [d]), "attn": rows(attnStored, [layers, heads, d]),
                                                                "attn_bias": rows(bias, [layers, d]), "mlp": rows(mlp, [layers, d]),
                                                                "readout_bias": rows(ro, [d])], skipped: [])
        }
        try w.finish()
        w.close()
        let c = 1 + layers * (heads + 2) + 1
        var out: [Float] = []
        out.reserveCapacity(n * c * d)
        for x in 0..<n {
            out += pre[(x * d)..<((x + 1) * d)]
            for l in 0..<layers {
                for h in 0..<heads { let o = ((x * layers + l) * heads + h) * d; out += attn[o..<(o + d)] }
                out += bias[((x * layers + l) * d)..<((x * layers + l + 1) * d)]
                out += mlp[((x * layers + l) * d)..<((x * layers + l + 1) * d)]
            }
            out += ro[(x * d)..<((x + 1) * d)]
        }
        return out
    }

    func testCLIPRunStreamsItsStoredPartsLikeTheComponentsTensor() throws {
        let root = try makeScratch()
        let (n, layers, heads, d) = (23, 2, 3, 10)
        let comps = try writeCLIPRun(root.appendingPathComponent("run"), n: n, layers: layers, heads: heads, d: d, shard: 5)
        let reader = try StoreReader(run: root.appendingPathComponent("run"))
        let source = try ScoreSource.resolve(reader, alignment: nil)
        let names = try RunComponents.describe(reader).map(\.name)
        XCTAssertEqual(source.names, names)
        XCTAssertEqual(Set(source.tensors), ["pre", "attn", "attn_bias", "mlp", "readout_bias"])
        var rng = RNG(state: 8)
        let texts = Tensor(shape: [2, d], data: (0..<(2 * d)).map { _ in Float(rng.normal()) })
        let props = [ScoreProperty(name: "p", texts: ["a", "b"], embeddings: texts)]
        var one = try ScoreAccumulator(components: names.count, width: d, properties: props)
        one.add(Tensor(shape: [n, names.count, d], data: comps))
        let want = try one.finish(names: names)
        let official = Self.official(comps, n: n, c: names.count, d: d, texts: texts)
        assertClose(want.properties[0].varianceAttributed, official.attributed, 2e-5, "official")
        assertClose(want.properties[0].varianceExplained!, official.explained, 2e-5, "official explained")
        for chunk in [nil, 1, 3] as [Int?] {
            let got = try ComponentScoring.score(reader, source: source, properties: props, chunkRows: chunk)
            assertClose(got.properties[0].varianceAttributed, want.properties[0].varianceAttributed, 1e-6, "streamed (\(String(describing: chunk)))")
            assertClose(got.properties[0].varianceExplained!, want.properties[0].varianceExplained!, 1e-6, "streamed explained")
        }
        // The same export derives: RunComponents' components tensor is what we scored.
        let (derived, _) = try RunComponents.exportExtras(reader)
        XCTAssertEqual(derived.first?.shape, [names.count, d])
    }

    // MARK: Bad input

    func testBadTextListsAreRefusedSayingWhy() {
        func refused(_ name: String, _ texts: [String], _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try ScoreProperty.checkTexts(name: name, texts: texts, source: "--texts"), line: line) { e in
                XCTAssertTrue("\(e)".contains(fragment) && "\(e)".contains("--texts"), "\(e)", line: line)
            }
        }
        refused(" ", ["a"], "empty name")
        refused("loc", [], "no texts")
        refused("loc", ["beach", "", "sea"], "text 2 of the property 'loc' is empty")
        refused("loc", ["beach", "sea", "beach"], "'beach' is listed twice for the property 'loc' (texts 1 and 3)")
        XCTAssertNoThrow(try ScoreProperty.checkTexts(name: "loc", texts: ["beach", "sea"], source: "--texts"))
        // Embeddings of the wrong width, NaN, a text in the span of the earlier ones.
        let p = ScoreProperty(name: "loc", texts: ["a", "b"], embeddings: Tensor(shape: [2, 3], data: [1, 0, 0, .nan, 1, 0]))
        XCTAssertThrowsError(try p.validate(width: 3, source: "x")) { XCTAssertTrue("\($0)".contains("NaN"), "\($0)") }
        XCTAssertThrowsError(try p.validate(width: 4, source: "x")) { XCTAssertTrue("\($0)".contains("[2, 4]"), "\($0)") }
        XCTAssertThrowsError(try ScoreBasis.orthonormal(Tensor(shape: [2, 3], data: [1, 0, 0, 2, 0, 0]), property: "loc", texts: ["a", "b"])) {
            XCTAssertTrue("\($0)".contains("'b' lies in the span"), "\($0)")
        }
        // Fewer than two images.
        var acc = try! ScoreAccumulator(components: 1, width: 2, properties: [ScoreProperty(name: "x", texts: ["x"], embeddings: Tensor(shape: [1, 2], data: [1, 0]))])
        acc.add(Tensor(shape: [1, 1, 2], data: [1, 2]))
        XCTAssertThrowsError(try acc.finish()) { XCTAssertTrue("\($0)".contains("at least 2"), "\($0)") }
    }

    func testNaNInAStoredComponentIsNamed() throws {
        let root = try makeScratch()
        _ = try writeCLIPRun(root.appendingPathComponent("run"), n: 12, layers: 2, heads: 2, d: 8, shard: 5, nanAt: (row: 7, head: 3))
        let reader = try StoreReader(run: root.appendingPathComponent("run"))
        let source = try ScoreSource.resolve(reader, alignment: nil)
        let props = [ScoreProperty(name: "p", texts: ["a"], embeddings: Tensor(shape: [1, 8], data: [1, 0, 0, 0, 0, 0, 0, 0]))]
        for explained in [true, false] {
            XCTAssertThrowsError(try ComponentScoring.score(reader, source: source, properties: props, varianceExplained: explained)) { e in
                XCTAssertTrue("\(e)".contains("attn.1.1") && "\(e)".contains("NaN") && "\(e)".contains(reader.run.path), "\(e)")
            }
        }
    }

    func testRunsAndAlignmentsThatDoNotFitAreRefused() throws {
        let root = try makeScratch()
        let (n, c, d) = (10, 3, 4)
        let x = (0..<(n * c * d)).map { Float($0 % 7) }
        try Self.writeTimmRun(root.appendingPathComponent("timm"), x: x, n: n, c: c, d: d, shard: 4)
        try Self.writeTimmRun(root.appendingPathComponent("other"), x: x, n: n, c: c, d: d, shard: 4, weights: "beef")
        let timm = try StoreReader(run: root.appendingPathComponent("timm"))
        let other = try StoreReader(run: root.appendingPathComponent("other"))
        // A timm run needs an alignment, and the message says how to make one.
        XCTAssertThrowsError(try ScoreSource.resolve(timm, alignment: nil)) { e in
            XCTAssertTrue("\(e)".contains("refract align") && "\(e)".contains("--align") && "\(e)".contains(timm.run.path), "\(e)")
        }
        // An alignment of another model's run.
        let maps = AlignerWeights.initial(components: c, width: d, clipWidth: 6, std: 0.1, seed: 1)
        try Self.writeAlignment(root.appendingPathComponent("align-other"), for: other, maps: maps)
        let al = try Alignment.load(root.appendingPathComponent("align-other"))
        XCTAssertThrowsError(try ScoreSource.resolve(timm, alignment: al)) { e in
            XCTAssertTrue("\(e)".contains("align-other/manifest.json") && "\(e)".contains("not of the run's model"), "\(e)")
        }
        // A CLIP run with an alignment.
        _ = try writeCLIPRun(root.appendingPathComponent("clip"), n: 4, layers: 1, heads: 1, d: 6, shard: 4)
        let clip = try StoreReader(run: root.appendingPathComponent("clip"))
        XCTAssertThrowsError(try ScoreSource.resolve(clip, alignment: al)) { e in
            XCTAssertTrue("\(e)".contains("leave out --align") && "\(e)".contains("align-other"), "\(e)")
        }
    }
}

