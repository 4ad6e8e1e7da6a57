import Foundation
@testable import RefractAlign
import RefractDecompose
import RefractStore
@testable import RefractSpurious
import RefractTensor
import RefractTestSupport
import XCTest

/// Waterbirds for a non-CLIP run: a probe on Σ components, chosen components mean-ablated; a case
/// small enough to compute by hand.
final class ComponentSpuriousTests: ScratchTestCase {
    /// 8 images, two per (y, place) group: component "core" says the bird (first coordinate ±1),
    /// component "background" the place (±1.5); the probe predicts waterbird when Σ's first coordinate > 0.
    func fixture() throws -> (StoreReader, WaterbirdsMetadata, ProbeArtefact) {
        var csv = "img_filename,y,split,place\n"
        var images = [StoreImage](), x = [Float]()
        for i in 0..<8 {
            let y = (i / 2) / 2, place = (i / 2) % 2
            csv += "img\(i).jpg,\(y),\(i % 2 == 0 ? 1 : 2),\(place)\n"
            images.append(StoreImage(path: scratch.appendingPathComponent("img\(i).jpg").path))
            let core: Float = y == 1 ? 1 : -1, background: Float = place == 1 ? 1.5 : -1.5
            x += [core, 0.25, background, -0.5]                                            // [core (2), background (2)]
        }
        let metaURL = scratch.appendingPathComponent("metadata.csv")
        try csv.write(to: metaURL, atomically: true, encoding: .utf8)
        let components = [ComponentInfo(name: "core", official: nil, kind: .head, block: 0, head: 0),
                          ComponentInfo(name: "background", official: nil, kind: .mlp, block: 0)]
        let header = StoreHeader(model: StoreModelInfo(id: "m", layout: "timm", weightsSHA256: String(repeating: "b", count: 64), weightFiles: []),
                                 convention: "faithful", dimensions: [:],
                                 options: .object(["components": try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(components))]),
                                 tensors: [StoreTensorSpec(name: "components", shape: [2, 2]), StoreTensorSpec(name: "representation", shape: [2])],
                                 images: images, shardSize: 8)
        let run = scratch.appendingPathComponent("run")
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "test", resume: false)
        var rep = [Float]()
        for i in 0..<8 {
            let a: Float = x[i * 4] + x[i * 4 + 2], b: Float = x[i * 4 + 1] + x[i * 4 + 3]
            rep += [a, b]
        }
        try writer.writeShard(0, imageIndices: Array(0..<8), rows: ["components": Tensor(shape: [8, 2, 2], data: x),
                                                                     "representation": Tensor(shape: [8, 2], data: rep)], skipped: [])
        try writer.finish()
        let probe = ProbeArtefact(
            manifest: ProbeManifest(createdBy: "test", runId: "r", runPath: run.path, model: header.model, feature: "representation", width: 2,
                                    classes: ["landbird", "waterbird"], labels: "column y", labelMapping: "labels are 0-based class indices",
                                    filters: [], trainRows: 0, hyperparameters: .init(), seed: 0, lossPerEpoch: [], trainAccuracy: 0,
                                    weightsSHA256: "none"),
            probe: LinearProbe(classes: 2, width: 2, weight: [-1, 0, 1, 0], bias: [0, 0]), directory: scratch.appendingPathComponent("probe"))
        return (try StoreReader(run: run), try WaterbirdsMetadata.load(metaURL), probe)
    }

    func testAblatingTheBackgroundFixesTheMinorityGroups() throws {
        let (reader, meta, probe) = try fixture()
        let evaluation = try meta.join(runPaths: reader.rowImages.map(\.path), runName: reader.run.path)
        let r = try ComponentSpuriousStudy.run(reader, evaluation: evaluation, metadata: meta.path, probe: probe, chosen: [1],
                                              selection: .init(rule: "explicit"), randomDraws: 3, seed: 1)
        let base = r.settings[0].accuracy, ablated = r.settings[1].accuracy
        // Σ = core + background: landbird on water (−1 + 1.5) and waterbird on land (1 − 1.5) are misread.
        XCTAssertEqual(base.groups.map(\.accuracy), [100, 0, 0, 100])
        XCTAssertEqual(base.worstGroupAccuracy, 0)
        XCTAssertEqual(base.meanOverGroups, 50)
        // The background replaced by its mean (0 in the first coordinate): every image is read by its bird.
        XCTAssertEqual(ablated.groups.map(\.accuracy), [100, 100, 100, 100])
        XCTAssertEqual(r.components, ["background"])
        XCTAssertEqual(r.random?.draws.count, 3)
        // Ablating the core instead leaves the place: the same as nothing ablated.
        let core = try ComponentSpuriousStudy.run(reader, evaluation: evaluation, metadata: meta.path, probe: probe, chosen: [0],
                                                 selection: .init(rule: "explicit"), randomDraws: 0)
        XCTAssertEqual(core.settings[1].accuracy.groups.map(\.accuracy), [100, 0, 0, 100])
        XCTAssertTrue(ComponentSpuriousStudy.markdown(r).contains("| ablated |"))
    }

    func testSplitsRestrictTheEvaluatedImages() throws {
        let (reader, meta, probe) = try fixture()
        let all = try meta.join(runPaths: reader.rowImages.map(\.path), runName: reader.run.path)
        let val = ComponentSpuriousStudy.restrict(all, to: [.val], metadata: meta)
        XCTAssertEqual(val.rows, [0, 2, 4, 6])
        XCTAssertEqual(ComponentSpuriousStudy.restrict(all, to: [.val, .test], metadata: meta).rows, Array(0..<8))
        XCTAssertEqual(ComponentSpuriousStudy.restrict(all, to: [.train], metadata: meta).count, 0)
        // Means are over the evaluated images only: on val alone the background's mean is still 0.
        let r = try ComponentSpuriousStudy.run(reader, evaluation: val, metadata: meta.path, probe: probe, chosen: [1],
                                              selection: .init(rule: "explicit"), randomDraws: 0)
        XCTAssertEqual(r.evaluation.images, 4)
        XCTAssertEqual(r.settings[1].accuracy.worstGroupAccuracy, 100)
        // A probe of another model is refused.
        var other = probe
        other.manifest.model.weightsSHA256 = String(repeating: "c", count: 64)
        XCTAssertThrowsError(try ComponentSpuriousStudy.run(reader, evaluation: val, metadata: meta.path, probe: other, chosen: [1],
                                                            selection: .init(rule: "explicit")))
    }
}
