import Foundation
import RefractCLIP
import RefractStore
import RefractTensor
import XCTest
@testable import RefractDecompose

let fixtureInputs = fixtureRoot.appendingPathComponent("models/inputs")

func temporaryDirectory(_ name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// The four fixture images as a CSV list with labels "0".."3" (the generator's label of image i is i % 5).
func fixtureList(in dir: URL, extraRows: [String] = []) throws -> URL {
    let names = try FileManager.default.contentsOfDirectory(atPath: fixtureInputs.path).filter { $0.hasSuffix(".png") }.sorted()
    var text = "path,label,note\n"
    for (i, n) in names.enumerated() { text += "\(fixtureInputs.appendingPathComponent(n).path),\(i % 5),\"a, quoted \"\"note\"\"\"\n" }
    for r in extraRows { text += r + "\n" }
    let url = dir.appendingPathComponent("list.csv")
    try text.write(to: url, atomically: true, encoding: .utf8)
    return url
}

final class RunTests: XCTestCase {
    func testSumIdentityThroughTheStoreAndEqualityWithMemory() throws {
        let model = try loadModel("openclip-tiny")
        let dir = try temporaryDirectory("run")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
        XCTAssertEqual(dataset.images.map(\.label), ["0", "1", "2", "3"])
        XCTAssertEqual(dataset.images[0].columns, ["note": "a, quoted \"note\""])
        for convention in DecompositionConvention.clip {
            var options = DecomposeRunOptions()
            options.convention = convention
            options.tokenLayers = [1]
            options.batchSize = 3
            options.shardSize = 3
            let run = dir.appendingPathComponent("run-\(convention.rawValue)")
            let summary = try DecomposeRun.run(model: model, dataset: dataset, output: run, options: options)
            XCTAssertEqual(summary.shardsTotal, 2)
            let reader = try StoreReader(run: run)
            XCTAssertEqual(reader.rowCount, 4)
            let pixels = try fixturePixels("openclip-tiny")
            let memory = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: [1])(pixels)
            let names = convention == .faithful ? ["pre", "mlp", "attn", "attn_bias", "readout_bias"] : ["pre", "mlp", "attn"]
            let stored = try Dictionary(uniqueKeysWithValues: (names + ["embedding", "attn_cls", "attn_tokens"]).map { ($0, try reader.tensor($0)) })
            let d = model.architecture.embedDim
            let embedding = stored["embedding"]!
            let target = convention == .faithful ? embedding : Ops.l2Normalized(embedding)
            for i in 0..<4 {
                var sum = [Double](repeating: 0, count: d)
                for n in names {
                    let row = stored[n]!.row(i)
                    for (k, v) in row.enumerated() { sum[k % d] += Double(v) }
                }
                XCTAssertLessThanOrEqual(worstRelativeError([sum], Tensor(shape: [1, d], data: target.row(i))), 1e-5,
                                         "\(convention) image \(i): stored components sum to the embedding")
            }
            // The store holds what the in-memory decomposition computes (same images, decoded by us).
            for (name, tensor) in [("attn", ComponentTensor.attn), ("attn_tokens", .attnTokens), ("attn_cls", .attnClassToken)] {
                let a = stored[name]!, b = memory[tensor]!
                XCTAssertEqual(a.shape, b.shape)
                for k in 0..<a.count { XCTAssertEqual(a.data[k], b.data[k], accuracy: 1e-5 * max(1, abs(b.data[k])), name) }
            }
        }
    }

    func testMeanAblationMatchesTheGenerator() throws {
        for name in ["openclip-tiny", "hf-tiny"] {
            let model = try loadModel(name)
            let dir = try temporaryDirectory("ablate")
            defer { try? FileManager.default.removeItem(at: dir) }
            let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
            let classes = try TextLists.readLines(fixtureInputs.appendingPathComponent("classes.txt"))
            let templates = try TextLists.readTemplates(fixtureInputs.appendingPathComponent("templates.txt"))
            let classifier = try model.zeroShotClassifier(classes: classes, templates: templates)
            for convention in DecompositionConvention.clip {
                var options = DecomposeRunOptions()
                options.convention = convention
                options.shardSize = 2
                let run = dir.appendingPathComponent(convention.rawValue)
                _ = try DecomposeRun.run(model: model, dataset: dataset, output: run, options: options)
                let reader = try StoreReader(run: run)
                var scores = [String: [Float]]()
                let ids = MeanAblation.studyIDs(layers: model.architecture.vision.layers)
                let report = try MeanAblation.run(reader, classifier: classifier.weights, classes: classes, classFile: "classes.txt") { row, study, s in
                    scores[ids[study], default: []] += s
                    XCTAssertEqual(scores[ids[study]]!.count, (row + 1) * classes.count)
                }
                XCTAssertEqual(report.labelMapping, LabelMapping.byIndex.rawValue)
                XCTAssertEqual(report.studies.map(\.id), ids)
                let counts = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureRoot.appendingPathComponent(
                    "decompose/\(name)/\(convention.rawValue)/ablation_top1.json"))) as! [String: Any]
                let studies = counts["studies"] as! [String: [String: Int]]
                for study in report.studies {
                    let ref = try fixtureArray(name, convention, "ablation_\(study.id)")
                    let got = Tensor(shape: ref.shape, data: scores[study.id]!)
                    let scale = ref.data.reduce(0) { max($0, abs($1)) }
                    for k in 0..<ref.count {
                        XCTAssertEqual(got.data[k], ref.data[k], accuracy: 1e-5 * scale, "\(name) \(convention) \(study.id)")
                    }
                    XCTAssertEqual(study.top1Correct, studies[study.id]!["top1"], "\(name) \(convention) \(study.id) top-1")
                    XCTAssertEqual(study.top5Correct, studies[study.id]!["top5"], "\(name) \(convention) \(study.id) top-5")
                }
                // Ablation really changes the scores (the comparison above is not vacuous).
                XCTAssertNotEqual(scores["baseline"]!, scores["mlp"]!)
            }
        }
    }

    func testUnreadableImageStopsOrIsSkipped() throws {
        let model = try loadModel("openclip-tiny")
        let dir = try temporaryDirectory("bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let broken = dir.appendingPathComponent("broken.png")
        try Data("not a png".utf8).write(to: broken)
        let names = try FileManager.default.contentsOfDirectory(atPath: fixtureInputs.path).filter { $0.hasSuffix(".png") }.sorted()
        var text = "filename,label\n"
        for n in names.prefix(2) { text += "\(fixtureInputs.appendingPathComponent(n).path),a\n" }
        text += "broken.png,b\n"
        for n in names.suffix(2) { text += "\(fixtureInputs.appendingPathComponent(n).path),b\n" }
        let list = dir.appendingPathComponent("list.csv")
        try text.write(to: list, atomically: true, encoding: .utf8)
        let dataset = try ImageDataset.load([list.path])
        var options = DecomposeRunOptions()
        options.shardSize = 2
        let run = dir.appendingPathComponent("run")
        XCTAssertThrowsError(try DecomposeRun.run(model: model, dataset: dataset, output: run, options: options)) { error in
            XCTAssertTrue("\(error)".contains(broken.path), "\(error)")
        }
        XCTAssertThrowsError(try StoreReader(run: run), "a stopped run never looks finished")
        XCTAssertEqual(try StoreReader(run: run, allowIncomplete: true).manifest.shards.count, 1, "the shard before the bad image is kept")
        // Resuming with skipping finishes the run and records the image.
        options.onError = .skip
        options.resume = true
        let summary = try DecomposeRun.run(model: model, dataset: dataset, output: run, options: options)
        XCTAssertEqual(summary.shardsWritten, 2)
        XCTAssertEqual(summary.skipped.map(\.index), [2])
        let reader = try StoreReader(run: run)
        XCTAssertEqual(reader.rowCount, 4)
        XCTAssertEqual(reader.rowImageIndices, [0, 1, 3, 4])
        XCTAssertEqual(reader.manifest.skipped.first?.path, broken.path)
    }

    func testMixingRunsOfDifferentModelsIsRefused() throws {
        let dir = try temporaryDirectory("mix")
        defer { try? FileManager.default.removeItem(at: dir) }
        let dataset = try ImageDataset.load([try fixtureList(in: dir).path])
        var readers = [StoreReader]()
        for name in ["openclip-tiny", "hf-tiny"] {
            let run = dir.appendingPathComponent(name)
            _ = try DecomposeRun.run(model: try loadModel(name), dataset: dataset, output: run, options: DecomposeRunOptions())
            readers.append(try StoreReader(run: run))
        }
        let model = try loadModel("openclip-tiny")
        let classes = ["a", "b", "c", "d", "e"]
        let classifier = try model.zeroShotClassifier(classes: classes)
        XCTAssertThrowsError(try MeanAblation.run(readers[0], meansFrom: readers[1], classifier: classifier.weights,
                                                  classes: classes, classFile: "c.txt")) { error in
            XCTAssertTrue("\(error)".contains("different"), "\(error)")
        }
    }

    func testWrongClassCountIsAClearError() throws {
        let dir = try temporaryDirectory("classes")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Two class folders, three class names.
        for (folder, file) in [("n01", "img0_40x32.png"), ("n02", "img1_32x48.png")] {
            let sub = dir.appendingPathComponent("data/\(folder)")
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: fixtureInputs.appendingPathComponent(file), to: sub.appendingPathComponent(file))
        }
        let dataset = try ImageDataset.load([dir.appendingPathComponent("data").path])
        XCTAssertEqual(dataset.classNames, ["n01", "n02"])
        let model = try loadModel("openclip-tiny")
        let run = dir.appendingPathComponent("run")
        _ = try DecomposeRun.run(model: model, dataset: dataset, output: run, options: DecomposeRunOptions())
        let reader = try StoreReader(run: run)
        let three = ["tench", "goldfish", "shark"]
        XCTAssertThrowsError(try MeanAblation.run(reader, classifier: try model.zeroShotClassifier(classes: three).weights,
                                                  classes: three, classFile: "classes.txt")) { error in
            XCTAssertTrue("\(error)".contains("classes.txt: 3 classes, but the run has 2"), "\(error)")
        }
        // With the right count, sorted synset folders map to the class lines in order.
        let two = ["tench", "goldfish"]
        let report = try MeanAblation.run(reader, classifier: try model.zeroShotClassifier(classes: two).weights,
                                          classes: two, classFile: "classes.txt")
        XCTAssertEqual(report.labelMapping, LabelMapping.bySortedLabel.rawValue)
    }

    func testLayerSelections() throws {
        XCTAssertEqual(try LayerSelection.parse("last:4", layers: 12), [8, 9, 10, 11])
        XCTAssertEqual(try LayerSelection.parse("0,5,10-11", layers: 12), [0, 5, 10, 11])
        XCTAssertEqual(try LayerSelection.parse("-1", layers: 12), [11])
        XCTAssertEqual(try LayerSelection.parse("all", layers: 3), [0, 1, 2])
        XCTAssertEqual(try LayerSelection.parse("none", layers: 3), [])
        for bad in ["12", "last:13", "last:0", "5-2", "x", "1,,2"] {
            XCTAssertThrowsError(try LayerSelection.parse(bad, layers: 12), bad)
        }
    }

    func testListErrorsNameTheFileAndLine() throws {
        let dir = try temporaryDirectory("lists")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cases: [(String, String)] = [
            ("name,label\na.png,1\n", "no path column"),
            ("path,label\na.png,1,extra\n", "list.csv:2"),
            ("path,label\n\"a.png,1\n", "unterminated"),
        ]
        for (text, expected) in cases {
            let url = dir.appendingPathComponent("list.csv")
            try text.write(to: url, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try ImageDataset.load([url.path])) { XCTAssertTrue("\($0)".contains(expected), "\($0)") }
        }
        XCTAssertThrowsError(try ImageDataset.load([dir.appendingPathComponent("missing").path]))
        // TSV with CRLF line ends and a blank line.
        let tsv = dir.appendingPathComponent("list.tsv")
        try "img_filename\ty\r\nx/a.jpg\t0\r\n\r\nb.jpg\t1\r\n".write(to: tsv, atomically: true, encoding: .utf8)
        let ds = try ImageDataset.load([tsv.path])
        XCTAssertEqual(ds.images.map(\.path), [dir.appendingPathComponent("x/a.jpg").path, dir.appendingPathComponent("b.jpg").path])
        XCTAssertEqual(ds.images.map { $0.columns?["y"] }, ["0", "1"])
    }
}
