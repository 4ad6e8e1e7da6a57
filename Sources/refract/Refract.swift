// refract: command-line front end. Parses arguments, calls the library, prints. Nothing else.

import ArgumentParser
import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractSegment
import RefractStore
import RefractTensor
import RefractTimm

@main
struct Refract: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refract",
        abstract: "Exact CLIP image and text encoders, and the decomposition of ViT image representations explained with text (CLIP runs directly, timm runs through CompAlign).",
        subcommands: [EmbedImages.self, EmbedTexts.self, Tokenize.self, Classify.self, Decompose.self, Export.self,
                      Ablate.self, TextSpanCommand.self, HeadsCommand.self, HeatmapCommand.self, SegmentCommand.self,
                      RetrieveCommand.self, SpuriousCommand.self, AlignCommand.self, ProbeCommand.self, ScoreCommand.self, MergeCommand.self, ServeCommand.self, Env.self])
}

// MARK: Shared options

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model: a local directory (transformers, OpenCLIP or timm layout) or a Hugging Face hub id such as openai/clip-vit-base-patch16 or timm/vit_base_patch14_dinov2.lvd142m (found in, or downloaded into, the Hugging Face cache).")
    var model: String

    @Option(name: .long, help: "Prefer this layout when a directory holds several: transformers, openCLIP or timm.")
    var layout: String?

    @Option(name: .long, help: "BLAS threads (default: the CPUs the process is given: SLURM_CPUS_PER_TASK, a container's CPU limit, the affinity mask, else all cores; OPENBLAS_NUM_THREADS is respected).")
    var threads: Int?

    func validate() throws { try CountBounds.check("--threads", threads, CountBounds.threads) }

    /// Where the checkpoint is (downloading it when needed), with BLAS set up.
    func locate() async throws -> ModelLocation {
        try await Self.locate(model, layout: layout, threads: threads)
    }

    /// Where the checkpoint `model` is (downloading it when needed), with BLAS set up; for commands
    /// that take a second model under another option name (`align --clip`).
    static func locate(_ model: String, layout: String?, threads: Int?) async throws -> ModelLocation {
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        var options = ModelLocation.Options()
        if let layout {
            guard let l = ModelLayout(rawValue: layout) else {
                throw ValidationError("--layout must be 'transformers', 'openCLIP' or 'timm', not '\(layout)'")
            }
            options.layout = l
        }
        options.progress = TerminalProgress.stderrReporter()
        return try await ModelLocation.resolve(model, options: options)
    }

    /// Any image model: CLIP (OpenCLIP or transformers) or timm.
    func loadVisionModel() async throws -> any VisionModel {
        let location = try await locate()
        return location.layout == .timm ? try TimmModel(location: location) : try CLIP(location: location)
    }

    /// A CLIP model, for commands that work in CLIP's joint space (a timm model is refused, saying why).
    func load(for command: String = "this command", why: String = "needs CLIP's text tower and joint space") async throws -> CLIP {
        let location = try await locate()
        guard location.layout != .timm else {
            throw ValidationError("\(model) is a timm model, not CLIP: \(command) \(why) "
                                  + "(embed-images and classify take timm models)")
        }
        return try CLIP(location: location)
    }
}

struct NormalizeFlag: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "L2-normalise each row (default: on for CLIP embeddings, off for timm features, which are written as the model computes them).")
    var normalize: Bool?

    /// Writes the rows (normalised when asked, else by the model's default) as float32 .npy and says so on stderr.
    func write(_ embeddings: Tensor, to output: String, normalizeByDefault: Bool = true) throws {
        let out = normalize ?? normalizeByDefault ? Ops.l2Normalized(embeddings) : embeddings
        try NPY.write(out, to: URL(fileURLWithPath: output))
        FileHandle.standardError.write(Data("wrote \(output) [\(out.shape.map(String.init).joined(separator: ", "))]\n".utf8))
    }
}

// MARK: embed-images

struct EmbedImages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-images",
        abstract: "Embed images into a float32 .npy [N, D'] (paths in order beside it, OUTPUT.paths.txt; the model in OUTPUT.model.json).",
        discussion: """
        CLIP models write the image embedding (L2-normalised unless --no-normalize); timm models write the \
        representation Refract decomposes, timm's pre-logits features (ViT family: the final norm at the class \
        token; Swin: the final norm, then the mean over tokens), as computed unless --normalize. PATHs are read \
        as refract decompose reads them: folders are walked recursively for .jpg/.jpeg/.png files (hidden \
        entries skipped), sorted by relative path in Unicode code-point order; CSV/TSV image lists give their \
        path column; arguments keep their order. The list (absolute paths) is written to OUTPUT.paths.txt, one \
        path per line, row i of the array belonging to line i, and the model to OUTPUT.model.json. An unreadable \
        image stops the run with its path; nothing is written.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var normalizeFlag: NormalizeFlag
    @Option(name: .long, help: "Output .npy file.") var output: String
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Option(name: .long, help: "Embed only part K of N (K from 0): the K-th of N contiguous slices of the list, cut at batch boundaries; join the parts with refract merge (docs/Cluster.md).")
    var part: String?
    @Argument(help: "Image folders, CSV/TSV image lists, or image files.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        let thePart = try part.map { try PartOption.parse($0) }
        // The same inputs and order as `refract decompose` (folders, CSV/TSV image lists, files), so an
        // embeddings file and a run of the same PATHs list the same images (`refract align` joins them).
        var files = try ImageDataset.load(paths).images.map { URL(fileURLWithPath: $0.path) }
        guard !files.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let slice = try thePart.map { try EmbeddingsPart(index: $0.index, count: $0.count, paths: files.map(\.path), batchSize: batchSize) }
        if let slice { files = Array(files[slice.images]) }
        let model = try await modelOptions.loadVisionModel()
        let bar = ProgressBar(label: "images")
        let embeddings = try model.encodeImageFiles(files, batchSize: batchSize) { done in
            bar.update(done: done, total: files.count)
        }
        bar.finish()
        // The list first, then the array: a failure on the array removes the list, so no list is
        // left beside a missing or older array (each file is written atomically).
        // The description (E.model.json) goes with them, written before the array for the same reason.
        let outURL = URL(fileURLWithPath: output)
        let list = Output.sidecar(outURL, "paths.txt")
        try Output.writeLines(files.map(\.path), to: list, what: "the image list")
        let normalized = normalizeFlag.normalize ?? (model is CLIP)
        do {
            var info = EmbeddingsInfo(model: try StoreModelInfo(model), rows: embeddings.shape[0], width: embeddings.shape[1],
                                      normalized: normalized)
            info.part = slice
            try info.write(for: outURL)
            try normalizeFlag.write(embeddings, to: output, normalizeByDefault: model is CLIP)
        } catch {
            try? FileManager.default.removeItem(at: list)
            try? FileManager.default.removeItem(at: EmbeddingsInfo.url(for: outURL))
            throw error
        }
    }
}

// MARK: embed-texts

struct EmbedTexts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-texts",
        abstract: "Embed texts (one per line) into a float32 .npy [N, D'].")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var normalizeFlag: NormalizeFlag
    @Option(name: .long, help: "UTF-8 text file, one text per line.") var texts: String
    @Option(name: .long, help: "Output .npy file.") var output: String

    func run() async throws {
        let lines = try TextLists.readLines(URL(fileURLWithPath: texts))
        let clip = try await modelOptions.load(for: "embed-texts")
        let bar = ProgressBar(label: "texts")
        let e = try clip.encodeTextsChecked(lines, labels: lines.indices.map { "\(texts) line \($0 + 1)" }) {
            bar.update(done: $0, total: lines.count)
        }
        bar.finish()
        try normalizeFlag.write(e, to: output)
    }
}

// MARK: tokenize

struct Tokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize texts (one per line) as the checkpoint's library does: int64 .npy [N, context].")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "UTF-8 text file, one text per line.") var texts: String
    @Option(name: .long, help: "Output .npy file.") var output: String

    func run() async throws {
        let lines = try TextLists.readLines(URL(fileURLWithPath: texts))
        let clip = try await modelOptions.load(for: "tokenize")
        let rows = clip.tokenize(lines)
        let ctx = clip.architecture.contextLength
        try NPY.write(.int64(shape: [rows.count, ctx], values: rows.flatMap { $0.map(Int64.init) }),
                      to: URL(fileURLWithPath: output))
        FileHandle.standardError.write(Data("wrote \(output) [\(rows.count), \(ctx)]\n".utf8))
    }
}

// MARK: classify

struct Classify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify images: zero-shot against class names (CLIP), or with the checkpoint's own head (timm).",
        discussion: """
        CLIP: each class is embedded with every template ("{}" replaced by the class name), each embedding \
        L2-normalised, averaged and renormalised. Scores are cosine similarities; probabilities are the \
        softmax of the scores times exp(logit_scale) of the checkpoint. Default template: "a photo of a {}." \
        timm models with a classifier head (DeiT, Swin, ...): probabilities are the softmax of the head's logits; \
        class names come from --classes, else the checkpoint's label_names, else ImageNet's for 1000 classes.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Class names, one per line (CLIP: required; timm: names of the head's outputs in order).") var classes: String?
    @Option(name: .long, help: "Templates with {} for the class name, one per line (CLIP only).") var templates: String?
    @Option(name: .long, help: "How many classes to show per image.") var topK = 5
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Flag(name: .long, help: "Print JSON instead of text.") var json = false
    @Argument(help: "Image files or folders.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--top-k", topK, CountBounds.top)
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
        // The same inputs and order as `refract decompose` (folders, CSV/TSV image lists, files), so an
        // embeddings file and a run of the same PATHs list the same images (`refract align` joins them).
        let files = try ImageDataset.load(paths).images.map { URL(fileURLWithPath: $0.path) }
        guard !files.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let model = try await modelOptions.loadVisionModel()
        let bar = ProgressBar(label: "images")
        let results: [[Output.Prediction]]
        var templateList: [String]?
        if let clip = model as? CLIP {
            guard let classNames else { throw ValidationError("--classes is required for a CLIP model (zero-shot class names)") }
            let chosen = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) } ?? ZeroShotClassifier.defaultTemplates
            templateList = chosen
            let classifier = try clip.zeroShotClassifier(classes: classNames, templates: chosen)
            let embeddings = try clip.encodeImageFiles(files, batchSize: batchSize) { bar.update(done: $0, total: files.count) }
            results = classifier.predict(embeddings, logitScale: clip.logitScale, topK: topK).map { preds in
                preds.map { .init(class: $0.className, index: $0.index, score: $0.score, probability: $0.probability) }
            }
        } else if let timm = model as? TimmModel {
            if templates != nil { throw ValidationError("--templates applies to CLIP models; \(timm.id) classifies with its own head") }
            let features = try timm.encodeImageFiles(files, batchSize: batchSize) { bar.update(done: $0, total: files.count) }
            guard let logits = timm.logits(features) else {
                throw ValidationError("\(timm.id) has no classifier head (num_classes 0): embed its features with embed-images instead")
            }
            let names = try TimmClassNames.resolve(given: classNames, givenFile: classes, model: timm)
            results = HeadPredictions.top(logits: logits, topK: topK).map { preds in
                preds.map { .init(class: names[$0.index], index: $0.index, logit: $0.logit, probability: $0.probability) }
            }
        } else {
            throw ValidationError("\(modelOptions.model): unsupported model kind")
        }
        bar.finish()
        if json {
            let items = zip(files, results).map { Output.ClassifyItem(path: $0.path, predictions: $1) }
            print(try Output.json(Output.ClassifyReport(model: model.id, templates: templateList, results: items)))
        } else {
            for (file, preds) in zip(files, results) {
                print(file.path)
                for p in preds {
                    let detail = p.score.map { String(format: "cosine %.4f", Double($0)) } ?? String(format: "logit %.4f", Double(p.logit ?? 0))
                    print(String(format: "  %6.2f%%  %@  (%@)", Double(p.probability * 100), p.class, detail))
                }
            }
        }
    }
}

/// Names of a timm head's outputs: `--classes`, else the checkpoint's `label_names`, else
/// ImageNet's (bundled) for a 1000-way head, else "class N".
enum TimmClassNames {
    static func resolve(given: [String]?, givenFile: String?, model: TimmModel) throws -> [String] {
        let n = model.network.numClasses
        if let given {
            guard given.count == n else {
                throw ValidationError("\(givenFile ?? "--classes") lists \(given.count) class names, but \(model.id)'s head has \(n) outputs")
            }
            return given
        }
        if let labels = model.labelNames, labels.count == n { return labels }
        if n == 1000 { return try SegmentText.imagenetClasses() }
        return (0..<n).map { "class \($0)" }
    }
}

// MARK: env

struct Env: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the CPU, the BLAS library, its kernel set (and who chose it, why) and threads, codecs and caches.")

    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        let info = try BLAS.load()
        let env = ProcessInfo.processInfo.environment
        let cache = HubCache(environment: env).root.path
        let report = Output.EnvReport(
            blasLibrary: info.library, blasCore: info.coreName, blasThreads: info.threads, blasConfig: info.config,
            cpu: info.cpu, blasCoreChoice: info.coreChoice,
            cpuCores: ProcessInfo.processInfo.activeProcessorCount, cpuAllocation: CPUAllocation.current, codecs: ImageDecoder.codecVersions,
            huggingFaceCache: cache, offline: env["HF_HUB_OFFLINE"].map { $0 == "1" || $0.lowercased() == "true" } ?? false)
        if json {
            print(try Output.json(report))
        } else {
            for (label, value) in info.reportLines {
                print((label + ":").padding(toLength: 21, withPad: " ", startingAt: 0) + value)
            }
            print("BLAS config:         \(report.blasConfig)")
            print("CPU cores:           \(report.cpuCores)")
            print("Image codecs:        \(report.codecs)")
            print("Hugging Face cache:  \(report.huggingFaceCache)\(report.offline ? " (offline)" : "")")
        }
    }
}
