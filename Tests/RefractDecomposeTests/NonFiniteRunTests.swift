import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractStore
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractDecompose


/// A copy of fixture model `name` in `dir` whose tensor `key` is replaced by `value` everywhere
/// (finite, so the checkpoint loads).
func modelWithTensor(_ name: String, in dir: URL, key: String, value: Float) throws -> CLIP {
    let copy = dir.appendingPathComponent("model-\(name)")
    try FileManager.default.copyItem(at: fixtureRoot.appendingPathComponent("models/\(name)"), to: copy)
    let layout = try ModelLocation.detectLayout(in: copy)
    let url = copy.appendingPathComponent(layout.weightsFile)
    let source = try SafetensorsFile(url: url)
    var w = SafetensorsWriter()
    for k in source.keys {
        var t = try source.floatTensor(k)
        if k == key { t.data = [Float](repeating: value, count: t.count) }
        try w.add(k, t)
    }
    try w.write(to: url)
    return try CLIP(location: ModelLocation(directory: copy, layout: layout, modelId: "overflowing"))
}

final class NonFiniteRunTests: XCTestCase {
    /// Finite weights whose products overflow float32: the first batch is refused naming its image,
    /// before any shard is written (the run directory holds no shard and is not complete).
    func testDecompositionThatOverflowsIsRefusedBeforeAShardIsWritten() throws {
        let dir = try temporaryDirectory("nonfinite-decompose")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try modelWithTensor("openclip-tiny", in: dir, key: "visual.proj", value: 3e38)
        let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
        let run = dir.appendingPathComponent("run")
        XCTAssertThrowsError(try DecomposeRun.run(model: model, dataset: dataset, output: run, options: DecomposeRunOptions())) { e in
            let text = "\(e)"
            XCTAssertTrue(e is NonFiniteError, "\(type(of: e)): \(text)")
            for part in [dataset.images[0].path, "'embedding'", "shard 0 was not written"] {
                XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)")
            }
        }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: run.path)) ?? []
        XCTAssertFalse(files.contains { $0.hasSuffix(".safetensors") }, "\(files)")
        XCTAssertThrowsError(try StoreReader(run: run), "an incomplete run is not readable as a finished one")
    }

    /// float16 storage of a component beyond 65504 would store infinity: refused, naming the tensor.
    func testFloat16OverflowIsRefused() throws {
        let dir = try temporaryDirectory("nonfinite-f16")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try modelWithTensor("openclip-tiny", in: dir, key: "visual.proj", value: 1e6)
        let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
        var options = DecomposeRunOptions()
        options.dtype = .float16
        XCTAssertThrowsError(try DecomposeRun.run(model: model, dataset: dataset, output: dir.appendingPathComponent("run"),
                                                  options: options)) { e in
            XCTAssertTrue("\(e)".contains("beyond float16's range") && "\(e)".contains("--dtype float32"), "\(e)")
        }
        // float32 storage of the same values is fine.
        options.dtype = .float32
        XCTAssertNoThrow(try DecomposeRun.run(model: model, dataset: dataset, output: dir.appendingPathComponent("run32"),
                                              options: options))
    }

    /// Mean ablation on a run holding a NaN (or an infinity) refuses instead of reporting 100 %.
    func testAblationRefusesRunsWithNonFiniteValues() throws {
        let model = try loadModel("openclip-tiny")
        let dir = try temporaryDirectory("nonfinite-ablate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
        var options = DecomposeRunOptions()
        options.shardSize = 2
        _ = try DecomposeRun.run(model: model, dataset: dataset, output: dir.appendingPathComponent("good"), options: options)
        let good = try StoreReader(run: dir.appendingPathComponent("good"))
        let classes = try TextLists.readLines(fixtureInputs.appendingPathComponent("classes.txt"))
        let classifier = try model.zeroShotClassifier(classes: classes).weights
        XCTAssertNoThrow(try MeanAblation.run(good, classifier: classifier, classes: classes, classFile: "classes.txt"))
        for (i, (name, value)) in [("attn", Float.nan), ("mlp", .infinity), ("pre", -.infinity)].enumerated() {
            let bad = try copyRun(good, to: dir.appendingPathComponent("bad\(i)"), name: name, row: 3, index: 5, value: value)
            XCTAssertThrowsError(try MeanAblation.run(bad, classifier: classifier, classes: classes, classFile: "classes.txt")) { e in
                let text = "\(e)"
                for part in ["shard-", "'\(name)'", "row 3", dataset.images[3].path, NonFiniteValue.text(value), "ablate"] {
                    XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)")
                }
            }
            // As the source of the means, too.
            XCTAssertThrowsError(try MeanAblation.run(good, meansFrom: bad, classifier: classifier, classes: classes,
                                                      classFile: "classes.txt"))
        }
        var nanClassifier = classifier
        nanClassifier.data[7] = .nan
        XCTAssertThrowsError(try MeanAblation.run(good, classifier: nanClassifier, classes: classes, classFile: "classes.txt")) {
            XCTAssertTrue("\($0)".contains("classes.txt") && "\($0)".contains("classifier"), "\($0)")
        }
    }
}
