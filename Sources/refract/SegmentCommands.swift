// refract heatmap / segment: parse, call RefractSegment, print.

import ArgumentParser
import Foundation
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractTextSpan

private func parseConvention(_ text: String) throws -> DecompositionConvention {
    guard let c = DecompositionConvention(rawValue: text) else {
        throw ValidationError("--convention must be faithful or gandelsman2024, not '\(text)'")
    }
    return c
}

private func say(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

// MARK: heatmap

struct HeatmapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heatmap",
        abstract: "Token heatmaps: how much each image patch writes into the representation along a text direction.",
        discussion: """
        For each patch token i, map[i] = c_i . t, where c_i is the sum of token i's direct contributions over \
        the chosen heads (all heads of all layers by default) and t the text's L2-normalised embedding, minus \
        the mean of the --contrast texts' embeddings when given. Writes per image <stem>.png (one panel per \
        --text: the preprocessed picture with the map upsampled bilinearly, blue negative, red positive, and a \
        colour bar) and <stem>.npy (float32 [texts, grid, grid], the raw maps), plus heatmap.json. Text \
        embeddings are cached per model weights.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "A text (repeat for one panel per text).") var text: [String] = []
    @Option(name: .long, help: "Contrast texts, one per line: their mean embedding is subtracted from each --text's.") var contrast: String?
    @Option(name: .long, help: "Heads to sum, as LAYER.HEAD: 11.3,10.7 (default: every head).") var heads: String?
    @Option(name: .long, help: "Layers whose every head is summed: all, last:4, 8-11, ... (instead of --heads).") var layers: String?
    @Option(name: .long, help: "faithful (default) or gandelsman2024 (the official code's shares of the biases and LayerNorm mean).")
    var convention = "faithful"
    @Option(name: .long, help: "Output directory.") var output: String
    @Flag(name: .long, help: "Do not read or write the text-embedding cache.") var noCache = false
    @Argument(help: "Image files.") var images: [String] = []

    func run() async throws {
        guard !text.isEmpty else { throw ValidationError("give at least one --text") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file") }
        if heads != nil && layers != nil { throw ValidationError("give --heads or --layers, not both") }
        var options = HeatmapOptions()
        options.convention = try parseConvention(convention)
        let urls = images.map { URL(fileURLWithPath: $0) }
        _ = try HeatmapRun.stems(urls)
        let contrastPool = try contrast.map { try DescriptionPool.load(URL(fileURLWithPath: $0)) }
        let clip = try await modelOptions.load(for: "heatmap")
        let nl = clip.architecture.vision.layers, nh = clip.architecture.vision.heads
        if let heads {
            options.heads = try HeadSet(layers: nl, heads: nh,
                                        members: HeadID.parseList(heads, layers: nl, heads: nh).map { ($0.layer, $0.head) })
        } else if let layers {
            options.heads = try HeadSet.layers(LayerSelection.parse(layers, layers: nl), layers: nl, heads: nh)
        }
        let hash = try clip.weightsSHA256()
        let cache = noCache ? nil : TextEmbeddings.cacheDirectory()
        let directions = try HeatmapRun.directions(texts: text, contrast: contrastPool?.texts, model: clip,
                                                   weightsSHA256: hash, cache: cache)
        let bar = ProgressBar(label: "images")
        let report = try HeatmapRun.run(model: clip, weightsSHA256: hash, images: urls, texts: text, directions: directions,
                                        contrast: contrastPool.map { .init(file: $0.path, texts: $0.count) },
                                        options: options, output: URL(fileURLWithPath: output)) { bar.update(done: $0, total: $1) }
        bar.finish()
        say("wrote \(output): \(report.files.count) figure(s) and map(s) [\(text.count), \(report.grid), \(report.grid)], "
            + "heatmap.json (heads: \(report.heads), convention \(report.convention))")
    }
}

// MARK: segment

struct SegmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segment",
        abstract: "Zero-shot segmentation from token contributions, scored against ground-truth masks (pixel accuracy, mIoU, mAP).",
        discussion: """
        DATASET: gtsegs_ijcv.mat (ImageNet-Segmentation) or a folder with images/ and masks/. Per image, the \
        class predicted by the zero-shot classifier (default: the 1,000 ImageNet classes with the 80 OpenAI \
        templates, as the official code) gives a map over patches (its direction minus the mean class \
        direction, summed over every head), upsampled, clipped at 0, min-max normalised and thresholded at \
        its mean (docs/Segmentation.md). Writes metrics.json and per_image.csv into --output; progress.jsonl \
        lets a stopped run continue with --resume (same model and options).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "gtsegs_ijcv.mat or a folder with images/ and masks/.") var dataset: String
    @Option(name: .long, help: "Output directory.") var output: String
    @Option(name: .long, help: "Class names, one per line (default: the bundled ImageNet-1k names).") var classes: String?
    @Option(name: .long, help: "Templates with {} (default: the bundled 80 OpenAI ImageNet templates).") var templates: String?
    @Option(name: .long, help: "Mask alignment: exact (the image's own resize and centre crop) or gandelsman2024 (the official code's square resize, no crop).")
    var align = "exact"
    @Option(name: .long, help: "gandelsman2024 (default; the official numbers depend on its shares) or faithful.")
    var convention = "gandelsman2024"
    @Option(name: .long, help: "Write overlays for the first N images into OUTPUT/overlays.") var saveImages = 0
    @Option(name: .long, help: "Segment only the first N images.") var limit: Int?
    @Flag(name: .long, help: "Continue a stopped run in --output (same model, dataset and options).") var resume = false
    @Flag(name: .long, help: "Do not read or write the text-embedding cache.") var noCache = false

    func run() async throws {
        guard let alignment = MaskAlignment(rawValue: align) else {
            throw ValidationError("--align must be exact or gandelsman2024, not '\(align)'")
        }
        var options = SegmentRunOptions()
        options.alignment = alignment
        options.convention = try parseConvention(convention)
        options.saveImages = saveImages
        options.limit = limit
        options.resume = resume
        try CountBounds.check("--save-images", saveImages, CountBounds.saveImages)
        try CountBounds.check("--limit", limit, CountBounds.limit)
        let data = try SegmentationDatasets.open(URL(fileURLWithPath: dataset))
        try data.checkSamples(limit: limit)  // a damaged sample is refused before anything is written
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
            ?? SegmentText.imagenetClasses()
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) } ?? SegmentText.imagenetTemplates()
        let clip = try await modelOptions.load(for: "segment")
        let hash = try clip.weightsSHA256()
        let textBar = ProgressBar(label: "class prompts")
        let classifier = try SegmentText.classifier(classes: classNames, templates: templateList, model: clip, weightsSHA256: hash,
                                                    cache: noCache ? nil : TextEmbeddings.cacheDirectory()) {
            textBar.update(done: $0, total: $1)
        }
        textBar.finish()
        let source = classes ?? SegmentText.bundledSource
        say("segmenting \(min(data.count, limit ?? data.count)) of \(data.count) images of \(data.source) "
            + "(\(classNames.count) classes x \(templateList.count) templates, align \(align), convention \(convention))")
        let bar = ProgressBar(label: "images")
        let report = try SegmentRun.run(model: clip, weightsSHA256: hash, dataset: data, classifier: classifier, classesSource: source,
                                        output: URL(fileURLWithPath: output), options: options) { bar.update(done: $0, total: $1) }
        bar.finish()
        print(String(format: "images %d  pixel accuracy %.2f  mIoU %.2f  mAP %.2f  foreground IoU %.2f",
                     report.images, report.pixelAccuracy, report.mIoU, report.mAP, report.foregroundIoU))
        let p = report.published
        print(String(format: "published (%@, %@): pixel accuracy %.2f  mIoU %.2f  mAP %.2f", p.model, p.dataset,
                     p.pixelAccuracy, p.mIoU, p.mAP))
        say("wrote \(output)/metrics.json, per_image.csv" + (saveImages > 0 ? ", overlays/" : ""))
    }
}
