// MARK: - Segmentation over a dataset: resumable run, metrics.json, per_image.csv, overlays
//
// Files in the output directory:
//   progress.jsonl  line 1: the run's settings; then one JSON line per image, appended as each
//                   batch finishes. A killed run continues with `resume` (the settings must be
//                   identical; an incomplete last line is dropped).
//   metrics.json    the dataset metrics, written atomically at the end.
//   per_image.csv   one row per image, written atomically at the end.
//   overlays/       `saveImages` first images: picture, ground-truth outline, predicted mask.
//   .refract.lock   the writer's lock (`RunLock`), taken before anything else is written and held
//                   until the run returns: a second `segment` on the same output is refused.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractStore
import RefractTensor

public struct SegmentRunOptions: Sendable {
    public var alignment: MaskAlignment = .exact
    public var convention: DecompositionConvention = .gandelsman2024
    /// Write overlays for the first N images.
    public var saveImages = 0
    /// Segment only the first N images.
    public var limit: Int?
    public var resume = false
    /// Images decomposed per batch (each is still segmented on its own).
    public var batchSize = 8
    public init() {}
}

/// What identifies a run: resuming requires the same settings.
public struct SegmentRunSettings: Codable, Sendable, Equatable {
    public var model: String
    public var weightsSHA256: String
    public var dataset: String
    public var images: Int
    public var alignment: String
    public var convention: String
    public var classes: String
    public var classCount: Int
    public var templateCount: Int
    /// SHA-256 of the classifier's class names and templates (timm: of its classes, their source and the token blocks).
    public var textsSHA256: String

    public init(model: String, weightsSHA256: String, dataset: String, images: Int, alignment: String, convention: String,
                classes: String, classCount: Int, templateCount: Int, textsSHA256: String) {
        self.model = model; self.weightsSHA256 = weightsSHA256; self.dataset = dataset; self.images = images
        self.alignment = alignment; self.convention = convention; self.classes = classes; self.classCount = classCount
        self.templateCount = templateCount; self.textsSHA256 = textsSHA256
    }
}

/// One image's line in progress.jsonl and row in per_image.csv.
public struct SegmentImageRecord: Codable, Sendable, Equatable {
    public var index: Int
    public var name: String
    public var predictedClass: Int
    public var predictedName: String
    public var constantMap: Bool
    public var scores: ImageSegmentationScores
}

public struct PublishedSegmentation: Codable, Sendable {
    public var source: String
    public var model: String
    public var dataset: String
    public var pixelAccuracy: Double
    public var mIoU: Double
    public var mAP: Double

    /// Gandelsman et al. 2024, table 5 (percent).
    public static let gandelsman2024 = PublishedSegmentation(
        source: "Gandelsman, Efros, Steinhardt, ICLR 2024, section 5 (percent)", model: "OpenCLIP ViT-H-14 (LAION-2B)",
        dataset: "ImageNet-Segmentation (gtsegs_ijcv.mat, 4,276 images)", pixelAccuracy: 75.21, mIoU: 54.50, mAP: 81.61)
}

public struct SegmentMetricsReport: Codable, Sendable {
    public var model: String
    public var weightsSHA256: String
    public var dataset: String
    public var images: Int
    public var alignment: String
    public var convention: String
    public var classes: String
    public var classCount: Int
    public var templateCount: Int
    /// Percent, as the paper reports them.
    public var pixelAccuracy: Double
    public var mIoU: Double
    public var iou: [String: Double]
    public var mAP: Double
    public var foregroundIoU: Double
    public var constantMaps: Int
    public var totals: SegmentationTotals
    /// The paper's figures for the model family, when there are any (another dataset for timm models).
    public var published: PublishedSegmentation?
    public var note: String
}

/// What segments a batch of preprocessed images: the model's preprocessing, its class names and
/// one prediction per image (a CLIP model zero-shot, a timm model through its head or a probe).
public struct BatchSegmenter: Sendable {
    public let preprocessing: ImagePreprocessing
    public let classes: [String]
    let predictBatch: @Sendable ([Tensor]) throws -> [SegmentationPrediction]
    public init(preprocessing: ImagePreprocessing, classes: [String], predict: @escaping @Sendable ([Tensor]) throws -> [SegmentationPrediction]) {
        self.preprocessing = preprocessing; self.classes = classes; predictBatch = predict
    }
    public func predict(_ pixels: [Tensor]) throws -> [SegmentationPrediction] { try predictBatch(pixels) }
}

public enum SegmentRun {
    static let progressFile = "progress.jsonl"

    /// Segments the dataset's first `limit` images with a CLIP model (zero-shot: the class whose text
    /// direction the embedding is closest to) and writes the run's files into `output`.
    /// `progress` gets (images done, images to do).
    public static func run(model: CLIP, weightsSHA256: String, dataset: any SegmentationDataset,
                           classifier: ZeroShotClassifier, classesSource: String, output: URL,
                           options: SegmentRunOptions, progress: ((Int, Int) -> Void)? = nil) throws -> SegmentMetricsReport {
        let arch = model.architecture
        let textsHash = SHA256Text.hex(classifier.classes.joined(separator: "\n") + "\u{0}" + classifier.templates.joined(separator: "\n"))
        let settings = SegmentRunSettings(model: model.id, weightsSHA256: weightsSHA256, dataset: dataset.source, images: 0,
                                          alignment: options.alignment.rawValue, convention: options.convention.rawValue,
                                          classes: classesSource, classCount: classifier.classes.count,
                                          templateCount: classifier.templates.count, textsSHA256: textsHash)
        let decomposer = try CLIPDecomposer(tower: model.vision, convention: options.convention,
                                            tokenSumHeads: .all(layers: arch.vision.layers, heads: arch.vision.heads))
        let weights = classifier.weights
        let segmenter = BatchSegmenter(preprocessing: model.preprocessing, classes: classifier.classes) { pixels in
            let batch = decomposer(pixels)
            let results = ResultBox<SegmentationPrediction>(count: pixels.count)
            DispatchQueue.concurrentPerform(iterations: pixels.count) { j in
                results.set(j, Result { try ZeroShotSegmentation.predict(batch.image(j), classifier: weights, patchSize: arch.patchSize) })
            }
            return try results.values()
        }
        return try run(segmenter, settings: settings, dataset: dataset, output: output, options: options,
                       published: .gandelsman2024, progress: progress)
    }

    /// Segments the dataset's first `limit` images with `segmenter` and writes the run's files into
    /// `output`; `settings` (its image count is filled in here) must match a resumed run's.
    public static func run(_ segmenter: BatchSegmenter, settings: SegmentRunSettings, dataset: any SegmentationDataset, output: URL,
                           options: SegmentRunOptions, published: PublishedSegmentation?,
                           progress: ((Int, Int) -> Void)? = nil) throws -> SegmentMetricsReport {
        guard options.batchSize > 0 else { throw HeatmapError("batch size must be positive") }
        if let limit = options.limit, limit <= 0 { throw HeatmapError("--limit must be positive, got \(limit)") }
        guard options.saveImages >= 0 else { throw HeatmapError("--save-images must be 0 or more") }
        let count = min(dataset.count, options.limit ?? dataset.count)
        guard count > 0 else { throw SegmentationDataError(path: dataset.source, message: "the dataset has no images") }
        var settings = settings
        settings.images = count
        try FileOutput.createDirectory(output, action: "creating the output folder")
        let lock = try RunLock.acquire(output, what: "the segmentation output")
        defer { lock.release() }
        let log = try ProgressLog(url: output.appendingPathComponent(progressFile), settings: settings, resume: options.resume)
        var records = log.records
        let done = Set(records.map(\.index))
        let todo = (0..<count).filter { !done.contains($0) }
        progress?(records.count, count)

        let preprocessing = segmenter.preprocessing
        let overlays = output.appendingPathComponent("overlays")
        if options.saveImages > 0 { try FileOutput.createDirectory(overlays, action: "creating the overlays folder") }
        var start = 0
        while start < todo.count {
            let indices = Array(todo[start..<min(start + options.batchSize, todo.count)])
            let samples = try indices.map { try dataset.sample(at: $0) }
            let pixels = samples.map { preprocessing($0.image) }                                    // [3, S, S] each
            let predictions = try segmenter.predict(pixels)
            let results = ResultBox<(SegmentImageRecord, SegmentationPrediction, BinaryMask)>(count: samples.count)
            DispatchQueue.concurrentPerform(iterations: samples.count) { j in
                results.set(j, Result {
                    let truth = samples[j].mask.aligned(to: preprocessing, alignment: options.alignment)   // S×S
                    let prediction = predictions[j]
                    let scores = try ZeroShotSegmentation.score(prediction, truth: truth)
                    let record = SegmentImageRecord(index: indices[j], name: samples[j].name, predictedClass: prediction.predictedClass,
                                                    predictedName: segmenter.classes[prediction.predictedClass],
                                                    constantMap: prediction.constant, scores: scores)
                    return (record, prediction, truth)
                })
            }
            let finished = try results.values()
            for (j, (record, prediction, truth)) in finished.enumerated() where record.index < options.saveImages {
                let figure = SegmentFigures.segmentationOverlay(
                    picture: SegmentFigures.picture(pixels[j], preprocessing: preprocessing),
                    prediction: prediction.foreground, truth: truth.values,
                    title: "\(record.name): \(record.predictedName)")
                try PNGEncoder.write(figure, to: overlays.appendingPathComponent(overlayName(record)))
            }
            try log.append(finished.map(\.0))
            records += finished.map(\.0)
            start += indices.count
            progress?(records.count, count)
        }
        records.sort { $0.index < $1.index }
        var totals = SegmentationTotals()
        for r in records { totals.add(r.scores) }
        let report = SegmentMetricsReport(
            model: settings.model, weightsSHA256: settings.weightsSHA256, dataset: dataset.source, images: records.count,
            alignment: options.alignment.rawValue, convention: settings.convention, classes: settings.classes,
            classCount: settings.classCount, templateCount: settings.templateCount,
            pixelAccuracy: 100 * totals.pixelAccuracy, mIoU: 100 * totals.meanIoU,
            iou: ["background": 100 * totals.iou(0), "foreground": 100 * totals.iou(1)],
            mAP: 100 * totals.meanAveragePrecision, foregroundIoU: 100 * totals.foregroundIoU,
            constantMaps: records.filter(\.constantMap).count, totals: totals, published: published,
            note: "percent; pixel accuracy and IoU accumulated over all pixels of the dataset, mAP the mean of per-image "
                + "average precision (docs/Segmentation.md)")
        try writeCSV(records, to: output.appendingPathComponent("per_image.csv"))
        try SegmentOutput.writeJSON(report, to: output.appendingPathComponent("metrics.json"))
        return report
    }

    static func overlayName(_ r: SegmentImageRecord) -> String {
        let safe = String(r.name.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) ? Character($0) : "_" })
        return String(format: "%05d_", r.index) + safe + ".png"
    }

    static func csvField(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    static func writeCSV(_ records: [SegmentImageRecord], to url: URL) throws {
        var text = "index,name,predicted_class,predicted_name,pixel_accuracy,foreground_iou,average_precision,correct,labelled,"
            + "intersection_bg,union_bg,intersection_fg,union_fg,constant_map\n"
        for r in records {
            let s = r.scores
            text += [String(r.index), csvField(r.name), String(r.predictedClass), csvField(r.predictedName),
                     String(format: "%.6f", s.pixelAccuracy), String(format: "%.6f", s.foregroundIoU),
                     String(format: "%.6f", s.averagePrecision), String(s.correct), String(s.labelled),
                     String(s.intersection[0]), String(s.union[0]), String(s.intersection[1]), String(s.union[1]),
                     r.constantMap ? "1" : "0"].joined(separator: ",") + "\n"
        }
        try FileOutput.writeAtomically(Data(text.utf8), to: url, what: "the per-image table")
    }
}

// MARK: - Progress log

/// progress.jsonl: the settings line, then one record per line, appended.
final class ProgressLog {
    let url: URL
    private(set) var records: [SegmentImageRecord] = []
    private let handle: FileHandle

    init(url: URL, settings: SegmentRunSettings, resume: Bool) throws {
        self.url = url
        let fm = FileManager.default
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var lines = [Data]()
        if fm.fileExists(atPath: url.path) {
            guard resume else {
                throw HeatmapError("\(url.path) exists: an earlier run is in this directory; continue it with --resume "
                    + "or choose another --output")
            }
            guard let data = fm.contents(atPath: url.path) else { throw HeatmapError("\(url.path): cannot read") }
            // Complete lines only: a killed run may have left a partial last line.
            var parts = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            parts.removeLast()                           // after the last "\n": empty or incomplete
            guard let first = parts.first,
                  let old = try? JSONDecoder().decode(SegmentRunSettings.self, from: Data(first)) else {
                throw HeatmapError("\(url.path): not a segmentation progress file (no settings line)")
            }
            guard old == settings else {
                throw HeatmapError("\(url.path): the run was started with other settings; --resume needs the same model, "
                    + "dataset, --limit, --align, --convention and classes. Earlier: \(Self.describe(old)); now: \(Self.describe(settings))")
            }
            var seen = Set<Int>()
            for (n, part) in parts.dropFirst().enumerated() {
                guard let r = try? JSONDecoder().decode(SegmentImageRecord.self, from: Data(part)) else {
                    throw HeatmapError("\(url.path): line \(n + 2) is not an image record")
                }
                if seen.insert(r.index).inserted { records.append(r) }
            }
            lines = parts.map { Data($0) }
        } else {
            lines = [try encoder.encode(settings)]
        }
        // Rewrite the kept lines (drops a partial tail), then append from there.
        var body = Data()
        for l in lines { body.append(l); body.append(UInt8(ascii: "\n")) }
        try FileOutput.writeAtomically(body, to: url, what: "the progress log")
        do {
            handle = try FileHandle(forWritingTo: url)
            try handle.seekToEnd()
        } catch {
            throw FileWriteError(path: url.path, action: "opening the progress log", reason: FileOutput.reason(of: error, path: url.path))
        }
    }

    deinit { try? handle.close() }

    static func describe(_ s: SegmentRunSettings) -> String {
        "model \(s.model) (\(s.weightsSHA256.prefix(12))), dataset \(s.dataset), \(s.images) images, align \(s.alignment), "
            + "convention \(s.convention), classes \(s.classes) (\(s.classCount) x \(s.templateCount) templates)"
    }

    /// Appends records, one line each, in one write.
    func append(_ new: [SegmentImageRecord]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = Data()
        for r in new { data.append(try encoder.encode(r)); data.append(UInt8(ascii: "\n")) }
        do { try handle.write(contentsOf: data); try handle.synchronize() } catch {
            throw HeatmapError("\(url.path): cannot append: \(error.localizedDescription)")
        }
        records += new
    }
}

// MARK: - Helpers

/// Per-index results written from parallel tasks.
final class ResultBox<T>: @unchecked Sendable {
    private var slots: [Result<T, Error>?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<T, Error>) { lock.lock(); slots[i] = r; lock.unlock() }
    func values() throws -> [T] { try slots.map { try $0!.get() } }
}

enum SHA256Text {
    static func hex(_ s: String) -> String { SHA256.hexDigest(Array(s.utf8)) }
}
