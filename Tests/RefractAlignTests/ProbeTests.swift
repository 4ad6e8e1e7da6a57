import Foundation
@testable import RefractAlign
import RefractStore
import RefractTensor
import XCTest

/// The linear probe: its Adam steps against a float64 reference, a hand-computed gradient, learning
/// a separable problem, and the rows and labels it trains on.
final class ProbeTests: XCTestCase {
    override func setUpWithError() throws { try BLAS.load() }

    func testStepsMatchTheFloat64Reference() {
        var rng = SplitMix64(seed: 4)
        let (b, d, k) = (9, 5, 3)
        let x = (0..<b).map { _ in (0..<d).map { _ in rng.normal() } }
        let labels = (0..<b).map { $0 % k }
        var hyper = ProbeHyperparameters()
        hyper.learningRate = 0.05
        var trainer = ProbeTrainer(probe: .initial(classes: k, width: d, seed: 1), hyper: hyper)
        var reference = trainer.probe
        var m = [Double](repeating: 0, count: k * d + k), v = m
        let xt = Tensor(shape: [b, d], data: x.flatMap { $0.map(Float.init) })
        for t in 1...6 {
            let loss = trainer.train(xt, labels)
            let (next, refLoss) = ProbeTrainer.referenceStep(probe: reference, hyper: hyper, step: t, m: &m, v: &v,
                                                             x: x.map { $0.map { Double(Float($0)) } }, labels: labels)
            reference = next
            XCTAssertEqual(loss, refLoss, accuracy: 1e-5, "step \(t)")
            for (a, r) in zip(trainer.probe.weight + trainer.probe.bias, reference.weight + reference.bias) {
                XCTAssertEqual(a, r, accuracy: 2e-5, "step \(t)")
            }
        }
    }

    /// One row, two classes, zero weights: logits 0, p = (½, ½); label 1: ∂L/∂W = (p − y)ᵀx = [[½x], [−½x]].
    func testGradientOfAHandComputedCase() {
        let trainer = ProbeTrainer(probe: LinearProbe(classes: 2, width: 2, weight: [0, 0, 0, 0], bias: [0, 0]))
        let (loss, g) = trainer.lossAndGradient(Tensor(shape: [1, 2], data: [2, -4]), [1])
        XCTAssertEqual(loss, Foundation.log(2), accuracy: 1e-9)
        XCTAssertEqual(g, [1, -2, -1, 2, 0.5, -0.5])
    }

    func testInitialisationIsPyTorchsLinearRange() {
        let p = LinearProbe.initial(classes: 4, width: 100, seed: 3)
        let bound: Float = 0.1
        XCTAssertTrue((p.weight + p.bias).allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan((p.weight.map(abs).max() ?? 0), 0.09)
        XCTAssertEqual(p, LinearProbe.initial(classes: 4, width: 100, seed: 3))
    }

    func testLearnsASeparableProblemFromARun() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("probe-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A run whose representation's first coordinate says the class; a "split" column.
        let n = 120, d = 6
        var rng = SplitMix64(seed: 8)
        let images = (0..<n).map { i in StoreImage(path: "/x/\(i).png", label: i % 2 == 0 ? "cat" : "dog",
                                                   columns: ["split": i < 100 ? "0" : "2", "y": "\(i % 2)"]) }
        let header = StoreHeader(model: StoreModelInfo(id: "m", layout: "timm", weightsSHA256: String(repeating: "a", count: 64), weightFiles: []),
                                 convention: "faithful", dimensions: [:], options: .object([:]),
                                 tensors: [StoreTensorSpec(name: "representation", shape: [d])], images: images, shardSize: 50)
        let run = dir.appendingPathComponent("run")
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "test", resume: false)
        for (s, range) in writer.shardRanges.enumerated() {
            let x = range.flatMap { i in (0..<d).map { j in Float(j == 0 ? (i % 2 == 0 ? -2 : 2) : 0) + Float(rng.normal() * 0.5) } }
            try writer.writeShard(s, imageIndices: Array(range), rows: ["representation": Tensor(shape: [range.count, d], data: x)], skipped: [])
        }
        try writer.finish()
        let reader = try StoreReader(run: run)
        var data = ProbeData()
        data.filters = [("split", "0")]
        let (rows, labels, classes, mapping) = try ProbeArtefact.rows(reader, data: data)
        XCTAssertEqual(rows, Array(0..<100))
        XCTAssertEqual(classes, ["cat", "dog"])
        XCTAssertEqual(labels[3], 1)
        XCTAssertEqual(mapping, LabelMappingWords.byName)
        var hyper = ProbeHyperparameters()
        hyper.epochs = 20
        hyper.learningRate = 0.05
        let p = try ProbeArtefact.train(reader, data: data, hyper: hyper, seed: 0, output: dir.appendingPathComponent("probe"), createdBy: "test")
        XCTAssertEqual(p.manifest.trainRows, 100)
        XCTAssertGreaterThan(p.manifest.trainAccuracy, 0.95)
        XCTAssertLessThan(p.manifest.lossPerEpoch.last!, p.manifest.lossPerEpoch.first!)
        let loaded = try ProbeArtefact.load(p.directory)
        XCTAssertEqual(loaded.probe, p.probe)
        try loaded.check(run: reader)
        // Held-out rows (split 2) are classified too.
        let x = try reader.tensor("representation", rows: 100..<120)
        XCTAssertGreaterThanOrEqual(zip(loaded.probe.predict(x), 100..<120).filter { $0 == $1 % 2 }.count, 18)
        // Labels from a column, as indices into given classes.
        data.labelColumn = "y"
        data.classes = ["landbird", "waterbird"]
        XCTAssertEqual(try ProbeArtefact.rows(reader, data: data).labels[5], 1)
        // Bad filters and a non-empty output are refused.
        data.filters = [("nosuch", "1")]
        XCTAssertThrowsError(try ProbeArtefact.rows(reader, data: data)) { XCTAssertTrue("\($0)".contains("nosuch"), "\($0)") }
        XCTAssertThrowsError(try ProbeArtefact.train(reader, data: ProbeData(), hyper: hyper, seed: 0, output: p.directory, createdBy: "t")) {
            XCTAssertTrue("\($0)".contains("not empty"), "\($0)")
        }
    }
}

enum LabelMappingWords { static let byName = "labels are class names" }
