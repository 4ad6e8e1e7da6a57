import Foundation
@testable import RefractAlign
import RefractCheckpoint
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest

/// `AlignRun` on synthetic runs with planted isometries: recovery, resume after an interruption,
/// the artefact, and bad inputs.
final class AlignRunTests: ScratchTestCase {
    /// A planted run of 3 components (d = 8) into D = 6: `(reader, targets)`.
    func plantedRun(_ name: String = "run", images: Int = 640, seed: UInt64 = 7) throws -> (StoreReader, AlignTargets) {
        let url = scratch.appendingPathComponent(name)
        let (t, _) = try SyntheticAlignment.write(run: url, shape: .init(images: images, components: 3, width: 8, clipWidth: 6, shardSize: 100),
                                                  planted: true, seed: seed, classes: 4)
        return (try StoreReader(run: url), AlignTargets(embeddings: t, info: SyntheticAlignment.targetInfo(clipWidth: 6)))
    }

    func fastOptions() -> AlignRunOptions {
        var o = AlignRunOptions()
        o.hyper.learningRate = 1e-2
        o.hyper.epochs = 40
        o.hyper.patience = 400
        o.heldOutFraction = 0.1
        o.checkpointEvery = 50
        return o
    }

    func testRecoversPlantedIsometries() throws {
        let (reader, targets) = try plantedRun()
        let out = scratch.appendingPathComponent("align")
        let a = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: fastOptions(), createdBy: "test")
        let f = a.manifest.figures
        XCTAssertEqual(f.images, 64)
        XCTAssertGreaterThanOrEqual(f.meanCosine, 0.99, "held-out cosine")
        XCTAssertLessThan(f.meanCosineInitial, 0.5)
        for m in f.isometry {
            XCTAssertEqual(m.scale, 1, accuracy: 0.05, "\(m.component): W_cᵀW_c ≈ k·I with k ≈ 1")
            XCTAssertLessThan(m.deviation, 0.1, "\(m.component)")
        }
        // The loss went down, the files are there, and the alignment loads and fits its run.
        XCTAssertLessThan(a.manifest.loss.last!.total, a.manifest.loss.first!.total / 4)
        let loaded = try Alignment.load(out)
        XCTAssertEqual(loaded.maps, a.maps)
        XCTAssertEqual(loaded.manifest, a.manifest)
        try loaded.check(run: reader)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("loss.png").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: AlignmentCheckpoint.directory(out).path), "checkpoint removed when done")
        // A finished alignment is not overwritten.
        XCTAssertThrowsError(try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: fastOptions(), createdBy: "test"))
    }

    /// The official stopping rule: 50 batches without a new lowest batch loss, counted across epochs.
    func testStopsAfterPatienceBatchesWithoutProgress() throws {
        let (reader, targets) = try plantedRun(images: 200)
        var o = AlignRunOptions()
        o.hyper.learningRate = 1e-9          // the loss barely moves: batch losses go up and down with the data
        o.hyper.patience = 5
        o.hyper.epochs = 100
        let a = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: scratch.appendingPathComponent("a"), options: o, createdBy: "test")
        XCTAssertEqual(a.manifest.stopped, "patience")
        // Replay the rule on the recorded curve.
        var best = Double.infinity, since = 0, stopAt = -1
        for (i, p) in a.manifest.loss.enumerated() {
            if p.total < best { best = p.total; since = 0 } else { since += 1 }
            if since >= 5 { stopAt = i; break }
        }
        XCTAssertEqual(stopAt, a.manifest.loss.count - 1)
        XCTAssertEqual(a.manifest.steps, a.manifest.loss.count)
    }

    /// Interrupted after two checkpoints (the callback throws, as a kill would stop it), resumed: the
    /// same maps, loss curve and figures as one uninterrupted run.
    func testInterruptedRunResumesToTheSameMaps() throws {
        let (reader, targets) = try plantedRun(images: 300)
        var o = fastOptions()
        o.hyper.epochs = 3
        o.checkpointEvery = 7
        let whole = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: scratch.appendingPathComponent("whole"),
                                     options: o, createdBy: "test")
        struct Kill: Error {}
        let out = scratch.appendingPathComponent("killed")
        var seen = 0
        XCTAssertThrowsError(try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: o, createdBy: "test",
                                              checkpointed: { _ in seen += 1; if seen == 2 { throw Kill() } })) { XCTAssertTrue($0 is Kill) }
        XCTAssertTrue(AlignmentCheckpoint.exists(out))
        XCTAssertThrowsError(try Alignment.load(out)) { XCTAssertTrue("\($0)".contains("unfinished"), "\($0)") }
        // Without --resume the unfinished alignment is not overwritten.
        XCTAssertThrowsError(try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: o, createdBy: "test")) {
            XCTAssertTrue("\($0)".contains("--resume"), "\($0)")
        }
        // Other options are refused on resume.
        var other = o
        other.resume = true
        other.seed = 99
        XCTAssertThrowsError(try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: other, createdBy: "test")) {
            XCTAssertTrue("\($0)".contains("hyper-parameters or seed"), "\($0)")
        }
        o.resume = true
        let resumed = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: o, createdBy: "test")
        XCTAssertEqual(resumed.maps, whole.maps)
        XCTAssertEqual(resumed.manifest.loss, whole.manifest.loss)
        XCTAssertEqual(resumed.manifest.figures, whole.manifest.figures)
        XCTAssertEqual(resumed.manifest.mapsSHA256, whole.manifest.mapsSHA256)
    }

    func testHeldOutSplitAndEpochOrderAreSeededPartitions() {
        var o = AlignRunOptions()
        o.heldOutFraction = 0.1
        o.maxHeldOut = 7
        let (held, train) = AlignRun.split(rows: 100, options: o)
        XCTAssertEqual(held.count, 7)
        XCTAssertEqual(Set(held + train), Set(0..<100))
        XCTAssertTrue(Set(held).isDisjoint(with: train))
        XCTAssertEqual(AlignRun.split(rows: 100, options: o).heldOut, held)
        o.seed = 1
        XCTAssertNotEqual(AlignRun.split(rows: 100, options: o).heldOut, held)
        XCTAssertEqual(AlignRun.split(rows: 2, options: o).heldOut.count, 1, "at least one held out, one trained")
        let e0 = AlignRun.epochOrder(train, epoch: 0, seed: 0), e1 = AlignRun.epochOrder(train, epoch: 1, seed: 0)
        XCTAssertEqual(e0.sorted(), train.sorted())
        XCTAssertEqual(e1.sorted(), train.sorted())
        XCTAssertNotEqual(e0, e1)
    }

    /// Zero-shot top-1 through the aligned sum with class embeddings = the planted class directions.
    func testZeroShotFigureCountsLabelledHeldOutRows() throws {
        let (reader, targets) = try plantedRun(images: 400)
        // Class q's embedding: the normalised mean target of its images; CLIP's own top-1 is then high.
        var sums = [[Double]](repeating: [Double](repeating: 0, count: 6), count: 4)
        for r in 0..<reader.rowCount { for j in 0..<6 { sums[r % 4][j] += Double(targets.embeddings.data[r * 6 + j]) } }
        let classes = Ops.l2Normalized(Tensor(shape: [4, 6], data: sums.flatMap { $0.map(Float.init) }))
        let rowClass: [Int?] = (0..<reader.rowCount).map { $0 % 5 == 0 ? nil : $0 % 4 }
        let a = try AlignRun.run(reader: reader, targets: targets, zeroShot: AlignZeroShot(classEmbeddings: classes, rowClass: rowClass),
                                 output: scratch.appendingPathComponent("zs"), options: fastOptions(), createdBy: "test")
        let f = a.manifest.figures
        XCTAssertEqual(f.zeroShotClasses, 4)
        let (held, _) = AlignRun.split(rows: reader.rowCount, options: fastOptions())
        // Recompute both figures by hand from the targets and the final maps.
        var correct = 0, clipCorrect = 0, labelled = 0
        let x = try reader.tensor("components", rowList: held)
        let z = a.maps.alignedSums(x)
        for (i, r) in held.enumerated() {
            guard let label = rowClass[r] else { continue }
            labelled += 1
            func best(_ v: ArraySlice<Float>) -> Int {
                (0..<4).max { q1, q2 in
                    zip(v, classes.data[(q1 * 6)..<(q1 * 6 + 6)]).reduce(0) { $0 + Double($1.0) * Double($1.1) }
                        < zip(v, classes.data[(q2 * 6)..<(q2 * 6 + 6)]).reduce(0) { $0 + Double($1.0) * Double($1.1) }
                }!
            }
            if best(z.data[(i * 6)..<(i * 6 + 6)]) == label { correct += 1 }
            if best(targets.embeddings.data[(r * 6)..<(r * 6 + 6)]) == label { clipCorrect += 1 }
        }
        XCTAssertEqual(f.zeroShotTop1!, Double(correct) / Double(labelled), accuracy: 1e-12)
        XCTAssertEqual(f.clipZeroShotTop1!, Double(clipCorrect) / Double(labelled), accuracy: 1e-12)
    }

    func testIsometryFigureOfKnownMaps() {
        // Map 0: 2·(an isometry) → k = 4, deviation 0; map 1: diag(1, 3) → k = 5, deviation ‖diag(-4, 4)‖/(5·√2) = 0.8.
        let maps = AlignerWeights(components: 2, width: 2, clipWidth: 2, weights: [0, 2, 2, 0, 1, 0, 0, 3], bias: [0, 0])
        let f = AlignRun.isometry(maps, names: ["a", "b"])
        XCTAssertEqual(f[0].scale, 4, accuracy: 1e-6)
        XCTAssertEqual(f[0].deviation, 0, accuracy: 1e-6)
        XCTAssertEqual(f[1].scale, 5, accuracy: 1e-6)
        XCTAssertEqual(f[1].deviation, 0.8, accuracy: 1e-6)
    }

    // MARK: Bad inputs

    func testJoiningTargetsChecksTheImageList() throws {
        let (reader, targets) = try plantedRun(images: 20)
        let paths = reader.rowImages.map(\.path)
        let info = SyntheticAlignment.targetInfo(clipWidth: 6)
        // The same list in another order joins by path.
        let perm = Array((0..<20).reversed())
        let shuffled = Tensor(shape: [20, 6], data: perm.flatMap { Array(targets.embeddings.data[($0 * 6)..<($0 * 6 + 6)]) })
        let joined = try AlignTargets.join(run: reader, embeddings: shuffled, paths: perm.map { paths[$0] }, file: "E.npy", info: info)
        XCTAssertEqual(joined.embeddings, targets.embeddings)
        func refused(_ e: Tensor, _ p: [String], _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try AlignTargets.join(run: reader, embeddings: e, paths: p, file: "E.npy", info: info), line: line) {
                XCTAssertTrue("\($0)".contains("E.npy") && "\($0)".contains(fragment), "\($0)", line: line)
            }
        }
        let first19 = Tensor(shape: [19, 6], data: Array(targets.embeddings.data[0..<(19 * 6)]))
        refused(first19, paths, "do not belong together")
        refused(first19, Array(paths.prefix(19)), "no embedding of the run's image")
        refused(targets.embeddings, Array(paths.prefix(19)) + ["/elsewhere/x.png"], "not in the run")
        refused(targets.embeddings, Array(paths.prefix(19)) + [paths[0]], "listed twice")
        var nan = targets.embeddings
        nan.data[13] = .nan
        refused(nan, paths, "NaN")
        refused(Tensor(shape: [20, 5], data: [Float](repeating: 0, count: 100)), paths, "width 5")
    }

    func testAlignmentOfAnotherRunIsRefused() throws {
        let (reader, targets) = try plantedRun(images: 40)
        var o = fastOptions()
        o.hyper.epochs = 1
        let out = scratch.appendingPathComponent("a")
        _ = try AlignRun.run(reader: reader, targets: targets, zeroShot: nil, output: out, options: o, createdBy: "test")
        // Another run: 4 components instead of 3 (the same synthetic model id and weights).
        let otherURL = scratch.appendingPathComponent("other")
        try SyntheticAlignment.write(run: otherURL, shape: .init(images: 10, components: 4, width: 8, clipWidth: 6), planted: true, seed: 1)
        XCTAssertThrowsError(try Alignment.load(out).check(run: try StoreReader(run: otherURL))) {
            XCTAssertTrue("\($0)".contains("another decomposition"), "\($0)")
        }
        // Damaged maps are refused by hash.
        let maps = out.appendingPathComponent("maps.safetensors")
        var bytes = try Data(contentsOf: maps)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: maps)
        XCTAssertThrowsError(try Alignment.load(out)) { XCTAssertTrue("\($0)".contains("SHA-256"), "\($0)") }
        // A directory that is not an alignment.
        XCTAssertThrowsError(try Alignment.load(scratch)) { XCTAssertTrue("\($0)".contains("not an alignment"), "\($0)") }
    }

    func testNaNComponentsAreRefusedNamingTheRow() throws {
        let url = scratch.appendingPathComponent("nan")
        let shape = SyntheticAlignment.Shape(images: 12, components: 2, width: 8, clipWidth: 6, shardSize: 12)
        let writer = try StoreWriter.open(at: url, header: try SyntheticAlignment.header(shape: shape, planted: false), constants: [:],
                                          createdBy: "test", resume: false)
        var x = (0..<(12 * 16)).map { Float(sin(Double($0))) }
        x[5 * 16 + 3] = .nan                                                            // row 5, component 0, element 3
        try writer.writeShard(0, imageIndices: Array(0..<12), rows: ["components": Tensor(shape: [12, 2, 8], data: x)], skipped: [])
        try writer.finish()
        let t = Ops.l2Normalized(Tensor(shape: [12, 6], data: (0..<72).map { Float(cos(Double($0))) }))
        var o = AlignRunOptions()
        o.heldOutFraction = 0
        o.hyper.batchSize = 12
        XCTAssertThrowsError(try AlignRun.run(reader: try StoreReader(run: url), targets: AlignTargets(embeddings: t, info: SyntheticAlignment.targetInfo(clipWidth: 6)),
                                              zeroShot: nil, output: scratch.appendingPathComponent("o"), options: o, createdBy: "test")) {
            XCTAssertTrue("\($0)".contains("row 5") && "\($0)".contains("NaN"), "\($0)")
        }
    }
}
