// refract heatmap / segment: parse, call RefractSegment, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractStore
import RefractTextSpan
import RefractTimm

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

        A timm model (DeiT, DINO, DINOv2, Swin, MaxViT) needs --align ALIGN (refract align on a faithful run of \
        that model): each chosen head's per-token terms go through its map W_c (no bias) into the alignment's CLIP \
        space, map[i] = sum_c (x_c,i . W_c) . t, with t from the text tower of the alignment's CLIP model (--clip \
        to give its location; its weights must match). Heads: --components attn.B.H,... (attn.B.* for every head \
        of a block), --top-heads K (by variance_explained over --run, the aligned run), else every head of the \
        decomposed blocks (Swin, MaxViT: those on the last grid).
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "A text (repeat for one panel per text).") var text: [String] = []
    @Option(name: .long, help: "Contrast texts, one per line: their mean embedding is subtracted from each --text's.") var contrast: String?
    @Option(name: .long, help: "CLIP: heads to sum, as LAYER.HEAD: 11.3,10.7 (default: every head).") var heads: String?
    @Option(name: .long, help: "CLIP: layers whose every head is summed: all, last:4, 8-11, ... (instead of --heads).") var layers: String?
    @Option(name: .long, help: "CLIP: faithful (default) or gandelsman2024 (the official code's shares of the biases and LayerNorm mean). timm: the alignment's.")
    var convention: String?
    @Option(name: .long, help: "timm: the alignment into CLIP space (made by refract align).") var align: String?
    @Option(name: .long, help: "timm: the CLIP model of the text tower (default: the alignment's CLIP model); its weights must match the alignment's.")
    var clip: String?
    @Option(name: .long, help: "timm: heads to sum, by component name: attn.11.3,attn.10.0 or attn.11.* (default: every head of the decomposed blocks).")
    var components: String?
    @Option(name: .long, help: "timm: sum the K heads (among --components, else the default heads) with the largest variance_explained by the texts over --run.")
    var topHeads: Int?
    @Option(name: .long, help: "timm: the run the alignment was trained on, for --top-heads.") var run: String?
    @Option(name: .long, help: "Output directory.") var output: String
    @Flag(name: .long, help: "Do not read or write the text-embedding cache.") var noCache = false
    @Argument(help: "Image files.") var images: [String] = []

    func run() async throws {
        guard !text.isEmpty else { throw ValidationError("give at least one --text") }
        guard !images.isEmpty else { throw ValidationError("give at least one image file") }
        if heads != nil && layers != nil { throw ValidationError("give --heads or --layers, not both") }
        let urls = images.map { URL(fileURLWithPath: $0) }
        _ = try HeatmapRun.stems(urls)
        let contrastPool = try contrast.map { try DescriptionPool.load(URL(fileURLWithPath: $0)) }
        let location = try await modelOptions.locate()
        if location.layout == .timm {
            try await runTimm(location: location, urls: urls, contrastPool: contrastPool)
            return
        }
        for (given, name) in [(align, "--align"), (clip, "--clip"), (components, "--components"), (run, "--run")] where given != nil {
            throw ValidationError("\(name) is for timm models: \(modelOptions.model) is a CLIP model, whose heads are in CLIP space already "
                                  + "(choose them with --heads or --layers)")
        }
        if topHeads != nil { throw ValidationError("--top-heads is for timm models; choose a CLIP model's heads with --heads or --layers") }
        var options = HeatmapOptions()
        options.convention = try parseConvention(convention ?? "faithful")
        let clip = try CLIP(location: location)
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

    /// A timm model through an alignment: everything is checked (alignment, model weights, heads, text
    /// tower) before any image is decomposed.
    func runTimm(location: ModelLocation, urls: [URL], contrastPool: DescriptionPool?) async throws {
        guard let align else {
            throw ValidationError("\(modelOptions.model) is a timm model, whose components live in its own space, not CLIP's: "
                + "its heatmaps need them mapped into CLIP space; make an alignment with `refract decompose --model \(modelOptions.model) "
                + "--output RUN IMAGES` and `refract align --run RUN --clip CLIP --output ALIGN`, then pass --align ALIGN")
        }
        if heads != nil || layers != nil {
            throw ValidationError("--heads and --layers are for CLIP models; choose a timm model's heads with --components attn.B.H,...")
        }
        if run != nil && topHeads == nil { throw ValidationError("--run is only used with --top-heads") }
        if topHeads != nil && run == nil { throw ValidationError("--top-heads needs --run RUN, the run the alignment was trained on") }
        if let topHeads { try CountBounds.check("--top-heads", topHeads, 1...10_000) }
        let alignment = try Alignment.load(URL(fileURLWithPath: align))
        if let convention, convention != alignment.manifest.convention {
            throw ValidationError("--convention \(convention): the alignment \(align) was trained on a \(alignment.manifest.convention) run, "
                                  + "and the decomposition must be the same; leave out --convention")
        }
        let model = try TimmModel(location: location)
        let hash = try model.weightsSHA256()
        let names = components.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        var plan = try TimmHeatmaps.plan(model: model, weightsSHA256: hash, alignment: alignment, components: names)

        // The text tower: the alignment's CLIP model (or --clip), with the same weights.
        let (clipModel, clipHash) = try await AlignmentCLIP.load(alignment, spec: clip, option: "--clip", threads: modelOptions.threads)
        let cache = noCache ? nil : TextEmbeddings.cacheDirectory()
        let directions = try HeatmapRun.directions(texts: text, contrast: contrastPool?.texts, model: clipModel,
                                                   weightsSHA256: clipHash, cache: cache)
        var selection = TimmHeatmapReport.Selection(rule: plan.selection)
        if let topHeads, let run {
            let reader = try StoreReader(run: URL(fileURLWithPath: run))
            let embeddings = try SegmentText.embeddings(text, name: "heatmap texts", model: clipModel, weightsSHA256: clipHash, cache: cache)
            let bar = ProgressBar(label: "scoring heads")
            let top = try TimmHeatmaps.topHeads(run: reader, alignment: alignment, candidates: plan.components, texts: text,
                                                embeddings: embeddings, k: topHeads) { bar.update(done: $0, total: reader.rowCount) }
            bar.finish()
            let among = components == nil ? plan.selection : "--components"
            plan = try TimmHeatmaps.plan(model: model, weightsSHA256: hash, alignment: alignment, components: top.map(\.component.name))
            selection = .init(rule: "top \(topHeads) by variance_explained of the texts over the run, among \(among)",
                              run: reader.run.path, varianceExplained: top.map(\.score))
            say("top heads by variance_explained: " + top.map { String(format: "%@ %.4f", $0.component.name, $0.score) }.joined(separator: ", "))
        }
        let bar = ProgressBar(label: "images")
        let report = try TimmHeatmapRun.run(
            model: model, weightsSHA256: hash, alignment: alignment, plan: plan,
            clipModel: .init(id: clipModel.id, weightsSHA256: clipHash), images: urls, texts: text, directions: directions,
            contrast: contrastPool.map { .init(file: $0.path, texts: $0.count) }, selection: selection,
            output: URL(fileURLWithPath: output)) { bar.update(done: $0, total: $1) }
        bar.finish()
        say("wrote \(output): \(report.files.count) figure(s) and map(s) [\(text.count), \(report.grid), \(report.grid)], "
            + "heatmap.json (\(report.components.count) heads: \(selection.rule); alignment \(align))")
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
        lets a stopped run continue with --resume (same model and options). \
        timm models (Balasubramanian et al.): the class their head (or, for DINO/DINOv2, --probe) predicts; \
        its logit decomposed over the tokens of the last blocks (--token-blocks; the official ones by \
        default), every head summed, each block's map upsampled to the input and added; then as above.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "gtsegs_ijcv.mat or a folder with images/ and masks/.") var dataset: String
    @Option(name: .long, help: "Output directory.") var output: String
    @Option(name: .long, help: "Class names, one per line (default: the bundled ImageNet-1k names).") var classes: String?
    @Option(name: .long, help: "Templates with {} (default: the bundled 80 OpenAI ImageNet templates).") var templates: String?
    @Option(name: .long, help: "Mask alignment: exact (the image's own resize and centre crop) or gandelsman2024 (the official code's square resize, no crop).")
    var align = "exact"
    @Option(name: .long, help: "CLIP: gandelsman2024 (default; the official numbers depend on its shares) or faithful; timm models: faithful.")
    var convention: String?
    @Option(name: .long, help: "timm models without a head (DINO, DINOv2): the linear probe that classifies them (refract probe).") var probe: String?
    @Option(name: .customLong("token-blocks"), help: "timm models: blocks (0-based over all stages) whose tokens are summed: last:7, 14-23, ... (default: the official ones).")
    var tokenBlocks: String?
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
        options.saveImages = saveImages
        options.limit = limit
        options.resume = resume
        try CountBounds.check("--save-images", saveImages, CountBounds.saveImages)
        try CountBounds.check("--limit", limit, CountBounds.limit)
        let data = try SegmentationDatasets.open(URL(fileURLWithPath: dataset))
        try data.checkSamples(limit: limit)  // a damaged sample is refused before anything is written
        let location = try await modelOptions.locate()
        if location.layout == .timm { return try await runTimm(location: location, data: data, options: options) }
        guard probe == nil, tokenBlocks == nil else { throw ValidationError("--probe and --token-blocks are for timm models") }
        options.convention = try parseConvention(convention ?? "gandelsman2024")
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
            ?? SegmentText.imagenetClasses()
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) } ?? SegmentText.imagenetTemplates()
        let clip = try CLIP(location: location)
        let hash = try clip.weightsSHA256()
        let textBar = ProgressBar(label: "class prompts")
        let classifier = try SegmentText.classifier(classes: classNames, templates: templateList, model: clip, weightsSHA256: hash,
                                                    cache: noCache ? nil : TextEmbeddings.cacheDirectory()) {
            textBar.update(done: $0, total: $1)
        }
        textBar.finish()
        let source = classes ?? SegmentText.bundledSource
        say("segmenting \(min(data.count, limit ?? data.count)) of \(data.count) images of \(data.source) "
            + "(\(classNames.count) classes x \(templateList.count) templates, align \(align), convention \(options.convention.rawValue))")
        let bar = ProgressBar(label: "images")
        let report = try SegmentRun.run(model: clip, weightsSHA256: hash, dataset: data, classifier: classifier, classesSource: source,
                                        output: URL(fileURLWithPath: output), options: options) { bar.update(done: $0, total: $1) }
        bar.finish()
        summarize(report)
    }

    func summarize(_ report: SegmentMetricsReport) {
        print(String(format: "images %d  pixel accuracy %.2f  mIoU %.2f  mAP %.2f  foreground IoU %.2f",
                     report.images, report.pixelAccuracy, report.mIoU, report.mAP, report.foregroundIoU))
        if let p = report.published {
            print(String(format: "published (%@, %@): pixel accuracy %.2f  mIoU %.2f  mAP %.2f", p.model, p.dataset,
                         p.pixelAccuracy, p.mIoU, p.mAP))
        }
        say("wrote \(output)/metrics.json, per_image.csv" + (saveImages > 0 ? ", overlays/" : ""))
    }

    /// A timm model: its head's (or a probe's) predicted class, decomposed over the tokens of the last blocks.
    func runTimm(location: ModelLocation, data: any SegmentationDataset, options: SegmentRunOptions) async throws {
        guard templates == nil else { throw ValidationError("--templates is for CLIP models; a timm model is classified by its head or a probe") }
        if let convention, convention != "faithful" {
            throw ValidationError("--convention \(convention): per-token terms of timm models are faithful-convention terms; leave it out")
        }
        var options = options
        options.convention = .faithful
        let model = try TimmModel(location: location)
        let hash = try model.weightsSHA256()
        let blocks = try tokenBlocks.map { try LayerSelection.parse($0, layers: TimmDecomposer.blockCount(model)) }
            ?? TimmSegmentation.defaultTokenBlocks(model)
        var probeArtefact: ProbeArtefact?
        let classNames: [String], source: String
        if let probe {
            guard classes == nil else { throw ValidationError("--classes does not apply with --probe: it has its own classes") }
            let p = try ProbeArtefact.load(URL(fileURLWithPath: probe))
            guard p.manifest.model.weightsSHA256 == hash else {
                throw ValidationError("\(probe) is a probe of \(p.manifest.model.id) (weights \(p.manifest.model.weightsSHA256.prefix(12))…), "
                                      + "not of \(model.id) (weights \(hash.prefix(12))…)")
            }
            probeArtefact = p
            classNames = p.manifest.classes
            source = "the probe \(probe) (weights \(p.manifest.weightsSHA256.prefix(12))…)"
        } else {
            let given = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
            classNames = model.hasHead ? try TimmClassNames.resolve(given: given, givenFile: classes, model: model) : []
            source = classes ?? "the classes of \(model.id)'s head"
        }
        let segmenter = try TimmSegmentation.segmenter(model: model, probe: probeArtefact, classes: classNames, tokenBlocks: blocks)
        let blockText = blocks.map(String.init).joined(separator: ",")
        let settings = SegmentRunSettings(model: model.id, weightsSHA256: hash, dataset: data.source, images: 0,
                                          alignment: options.alignment.rawValue, convention: "faithful", classes: source,
                                          classCount: classNames.count, templateCount: 0,
                                          textsSHA256: SHA256.hexDigest(Array((classNames.joined(separator: "\n") + "\u{0}" + source
                                                                                + "\u{0}blocks " + blockText).utf8)))
        say("segmenting \(min(data.count, limit ?? data.count)) of \(data.count) images of \(data.source) with \(model.id) "
            + "(the predicted class of \(source); tokens of blocks \(blockText); align \(align))")
        let bar = ProgressBar(label: "images")
        let report = try SegmentRun.run(segmenter, settings: settings, dataset: data, output: URL(fileURLWithPath: output), options: options,
                                        published: TimmSegmentation.published(model)) { bar.update(done: $0, total: $1) }
        bar.finish()
        summarize(report)
    }
}
