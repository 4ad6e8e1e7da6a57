import Foundation
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractPlot
import RefractTensor
import XCTest
@testable import RefractSegment

/// The fixture images with generated masks (an ellipse per image), in memory.
struct MemoryDataset: SegmentationDataset {
    var source: String
    var samples: [SegmentationSample]
    /// Reading a sample at or after this index fails (to stop a run part-way).
    var failFrom: Int? = nil
    var count: Int { samples.count }
    func sample(at index: Int) throws -> SegmentationSample {
        if let failFrom, index >= failFrom { throw SegmentationDataError(path: source, message: "sample \(index) is unreadable") }
        return samples[index]
    }

    static func fixtures() throws -> MemoryDataset {
        let dir = fixtureRoot.appendingPathComponent("models/inputs")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".png") }.sorted()
        let samples = try files.enumerated().map { k, f -> SegmentationSample in
            let image = try ImageDecoder.decode(contentsOf: dir.appendingPathComponent(f))
            var values = [UInt8](repeating: 0, count: image.width * image.height)
            for y in 0..<image.height {
                for x in 0..<image.width {
                    let dx = (Double(x) - Double(image.width) * (0.3 + 0.1 * Double(k))) / (0.3 * Double(image.width))
                    let dy = (Double(y) - Double(image.height) * 0.5) / (0.35 * Double(image.height))
                    values[y * image.width + x] = dx * dx + dy * dy <= 1 ? 1 : 0
                }
            }
            return SegmentationSample(name: String(f.dropLast(4)), image: image,
                                      mask: BinaryMask(width: image.width, height: image.height, values: values))
        }
        return MemoryDataset(source: "memory:fixtures", samples: samples)
    }
}

func fixtureClassifier(_ model: CLIP) throws -> ZeroShotClassifier {
    let dir = fixtureRoot.appendingPathComponent("models/inputs")
    return try model.zeroShotClassifier(classes: try TextLists.readLines(dir.appendingPathComponent("classes.txt")),
                                    templates: try TextLists.readTemplates(dir.appendingPathComponent("templates.txt")))
}

func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("refract-segment-\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

final class ZeroShotSegmentationTests: XCTestCase {
    /// The procedure against the official formula written out on the full per-token tensor:
    /// class_heatmap = Σ_{l,h} attn_tokens[l, h, 1:] · classifier; normalized = [:, pred] − mean over classes.
    func testPredictionMatchesOfficialFormulaOnPerTokenTerms() throws {
        for name in ["openclip-tiny", "hf-tiny"] {
            let model = try loadModel(name)
            let arch = model.architecture, nl = arch.vision.layers
            let pixels = try fixturePixels(model)
            let classifier = try fixtureClassifier(model)
            let c = classifier.classes.count, d = arch.embedDim, t = arch.visionTokens, g = arch.gridSize
            let expectedClasses = Ops.matmul(model.encodeImages(pixels: pixels), classifier.weights)          // [N, C]
            for convention in DecompositionConvention.clip {
                let full = try CLIPDecomposer(tower: model.vision, convention: convention, tokenLayers: Array(0..<nl))(pixels)
                let summed = summedTokens(full, heads: .all(layers: nl, heads: arch.vision.heads))              // [N, T, D']
                let batch = try CLIPDecomposer(tower: model.vision, convention: convention,
                                               tokenSumHeads: .all(layers: nl, heads: arch.vision.heads))(pixels)
                for b in 0..<pixels.count {
                    let p = try ZeroShotSegmentation.predict(batch.image(b), classifier: classifier.weights, patchSize: arch.patchSize)
                    let row = expectedClasses.row(b)
                    XCTAssertEqual(p.predictedClass, row.indices.max { row[$0] < row[$1] }!, "\(name) image \(b)")
                    XCTAssertEqual(p.size, arch.imageSize)
                    // Official: [T-1, D'] · [D', C], then column pred minus the row mean.
                    let tokens = Tensor(shape: [t - 1, d], data: Array(summed.data[((b * t + 1) * d)..<((b + 1) * t * d)]))
                    let heat = Ops.matmul(tokens, classifier.weights)                                            // [T-1, C]
                    for i in 0..<(g * g) {
                        let r = heat.row(i)
                        let want = Double(r[p.predictedClass]) - r.reduce(0.0) { $0 + Double($1) } / Double(c)
                        XCTAssertEqual(Double(p.gridMap[i]), want, accuracy: 1e-5 * r.reduce(0.0) { max($0, Double(abs($1))) } + 1e-7,
                                       "\(name) \(convention) image \(b) token \(i + 1)")
                    }
                    // The rest of the chain as specified.
                    let (map, constant) = ZeroShotSegmentation.normalize(
                        TokenHeatmaps.upsampleBilinear(p.gridMap, size: g, factor: arch.patchSize))
                    XCTAssertEqual(p.map, map)
                    XCTAssertEqual(p.constant, constant)
                    XCTAssertEqual(p.foreground, ZeroShotSegmentation.threshold(map))
                    XCTAssertEqual(p.map.max(), constant ? 0 : 1)
                }
            }
        }
    }

    func testPredictRefusesPartialHeadSets() throws {
        let model = try loadModel("openclip-tiny")
        let pixels = try fixturePixels(model)
        let classifier = try fixtureClassifier(model)
        let partial = try CLIPDecomposer(tower: model.vision, tokenSumHeads: HeadSet(layers: 2, heads: 4, members: [(1, 1)]))(pixels)
        XCTAssertThrowsError(try ZeroShotSegmentation.predict(partial.image(0), classifier: classifier.weights, patchSize: 8)) {
            XCTAssertTrue("\($0)".contains("only 1 of 8"), "\($0)")
        }
        let none = try CLIPDecomposer(tower: model.vision)(pixels)
        XCTAssertThrowsError(try ZeroShotSegmentation.predict(none.image(0), classifier: classifier.weights, patchSize: 8))
    }

    // MARK: Runs

    func testRunWritesMetricsThatAddUp() throws {
        let model = try loadModel("openclip-tiny")
        let classifier = try fixtureClassifier(model)
        let dataset = try MemoryDataset.fixtures()
        let out = try temporaryDirectory("run")
        defer { try? FileManager.default.removeItem(at: out) }
        var options = SegmentRunOptions()
        options.saveImages = 2
        options.batchSize = 3
        let report = try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                        classesSource: "classes.txt", output: out, options: options)
        XCTAssertEqual(report.images, 4)
        XCTAssertEqual(report.convention, "gandelsman2024")
        XCTAssertEqual(report.alignment, "exact")
        // Recompute from the per-image records in progress.jsonl.
        let lines = try String(contentsOf: out.appendingPathComponent("progress.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        var totals = SegmentationTotals()
        for l in lines.dropFirst() { totals.add(try JSONDecoder().decode(SegmentImageRecord.self, from: Data(l.utf8)).scores) }
        XCTAssertEqual(totals, report.totals)
        XCTAssertEqual(report.pixelAccuracy, 100 * totals.pixelAccuracy, accuracy: 1e-9)
        XCTAssertEqual(report.mIoU, 100 * totals.meanIoU, accuracy: 1e-9)
        XCTAssertEqual(report.totals.labelled, Int64(4 * 32 * 32))
        let metrics = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("metrics.json"))) as! [String: Any]
        XCTAssertEqual(metrics["images"] as? Int, 4)
        XCTAssertNotNil(metrics["published"])
        let csv = try String(contentsOf: out.appendingPathComponent("per_image.csv"), encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 5)
        XCTAssertTrue(csv[1].hasPrefix("0,img0_40x32,"), String(csv[1]))
        let overlays = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("overlays").path).sorted()
        XCTAssertEqual(overlays, ["00000_img0_40x32.png", "00001_img1_32x48.png"])
        // A second run into the same directory without resume is refused.
        XCTAssertThrowsError(try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                                classesSource: "classes.txt", output: out, options: options)) {
            XCTAssertTrue("\($0)".contains("--resume"), "\($0)")
        }
    }

    func testStoppedRunResumesToTheSameResult() throws {
        let model = try loadModel("openclip-tiny")
        let classifier = try fixtureClassifier(model)
        var dataset = try MemoryDataset.fixtures()
        var options = SegmentRunOptions()
        options.batchSize = 2
        let reference = try temporaryDirectory("reference"), resumed = try temporaryDirectory("resumed")
        defer { try? FileManager.default.removeItem(at: reference); try? FileManager.default.removeItem(at: resumed) }
        let whole = try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                       classesSource: "classes.txt", output: reference, options: options)
        dataset.failFrom = 2
        XCTAssertThrowsError(try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                                classesSource: "classes.txt", output: resumed, options: options)) {
            XCTAssertTrue("\($0)".contains("sample 2 is unreadable"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed.appendingPathComponent("metrics.json").path))
        // A half-written last line (a kill during the append) is dropped.
        let log = resumed.appendingPathComponent("progress.jsonl")
        let handle = try FileHandle(forWritingTo: log)
        try handle.seekToEnd(); try handle.write(contentsOf: Data("{\"index\":3,\"na".utf8)); try handle.close()
        dataset.failFrom = nil
        options.resume = true
        var other = options
        other.convention = .faithful
        XCTAssertThrowsError(try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                                classesSource: "classes.txt", output: resumed, options: other)) {
            XCTAssertTrue("\($0)".contains("other settings"), "\($0)")
        }
        var seen = [Int]()
        let report = try SegmentRun.run(model: model, weightsSHA256: "abc", dataset: dataset, classifier: classifier,
                                        classesSource: "classes.txt", output: resumed, options: options) { done, _ in seen.append(done) }
        XCTAssertEqual(seen, [2, 4], "two images were already done")
        XCTAssertEqual(report.totals, whole.totals)
        XCTAssertEqual(try String(contentsOf: resumed.appendingPathComponent("per_image.csv"), encoding: .utf8),
                       try String(contentsOf: reference.appendingPathComponent("per_image.csv"), encoding: .utf8))
    }

    func testBundledImageNetLists() throws {
        let classes = try SegmentText.imagenetClasses(), templates = try SegmentText.imagenetTemplates()
        XCTAssertEqual(classes.count, 1000)
        XCTAssertEqual(classes.first, "tench")
        XCTAssertEqual(classes.last, "toilet paper")
        XCTAssertEqual(templates.count, 80)
        XCTAssertEqual(templates.first, "a bad photo of a {}.")
        XCTAssertTrue(templates.allSatisfy { $0.components(separatedBy: "{}").count == 2 })
    }

    func testHeatmapFigureAndPicture() throws {
        let model = try loadModel("openclip-tiny")
        let image = try ImageDecoder.decode(contentsOf: fixtureRoot.appendingPathComponent("models/inputs/img2_64x64.png"))
        let pixels = model.preprocessing(image)
        let picture = SegmentFigures.picture(pixels, preprocessing: model.preprocessing)
        XCTAssertEqual(picture.width, 32)
        // Every recovered byte maps back to exactly the tensor's value.
        let lut = model.preprocessing.lookupTable
        for c in 0..<3 {
            for i in 0..<(32 * 32) { XCTAssertEqual(lut[c][Int(picture.pixels[3 * i + c])], pixels.data[c * 1024 + i]) }
        }
        let map = (0..<(32 * 32)).map { Float($0 % 32) - 16 }
        let figure = SegmentFigures.heatmapFigure(picture: picture, maps: [map, map.map { -$0 }], titles: ["left", "right"])
        XCTAssertGreaterThan(figure.width, 2 * 160)
        // Panel 1 (zoom 5): its leftmost column is strongly negative (blue), its rightmost positive (red).
        let zoom = SegmentFigures.zoom(32), top = SegmentFigures.margin + PlotText.height(scale: 1) + 4
        let left = figure[SegmentFigures.margin, top + 10], right = figure[SegmentFigures.margin + 32 * zoom - 1, top + 10]
        XCTAssertGreaterThan(Int(left.b), Int(left.r))
        XCTAssertGreaterThan(Int(right.r), Int(right.b))
    }
}
