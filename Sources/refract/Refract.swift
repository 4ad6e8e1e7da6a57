// refract: command-line front end. Parses arguments, calls the library, prints. Nothing else.

import ArgumentParser
import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractTensor

@main
struct Refract: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refract",
        abstract: "Exact CLIP image and text encoders, and the decomposition of ViT image representations.",
        subcommands: [EmbedImages.self, EmbedTexts.self, Tokenize.self, Classify.self, Decompose.self, Export.self,
                      Ablate.self, TextSpanCommand.self, HeadsCommand.self, HeatmapCommand.self, SegmentCommand.self,
                      RetrieveCommand.self, SpuriousCommand.self, Env.self])
}

// MARK: Shared options

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model: a local directory (transformers or OpenCLIP layout) or a Hugging Face hub id such as openai/clip-vit-base-patch16 (found in, or downloaded into, the Hugging Face cache).")
    var model: String

    @Option(name: .long, help: "Prefer this layout when a directory holds both: transformers or openCLIP.")
    var layout: String?

    @Option(name: .long, help: "BLAS threads (default: OpenBLAS's own choice, all cores).")
    var threads: Int?

    func validate() throws { try CountBounds.check("--threads", threads, CountBounds.threads) }

    func load() async throws -> CLIP {
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        var options = ModelLocation.Options()
        if let layout {
            guard let l = ModelLayout(rawValue: layout) else {
                throw ValidationError("--layout must be 'transformers' or 'openCLIP', not '\(layout)'")
            }
            options.layout = l
        }
        options.progress = TerminalProgress.stderrReporter()
        return try await CLIP.load(model, options: options)
    }
}

struct NormalizeFlag: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "L2-normalise each embedding row (default: on). --no-normalize writes the raw projected features.")
    var normalize = true

    /// Writes the embeddings (normalised unless --no-normalize) as float32 .npy and says so on stderr.
    func write(_ embeddings: Tensor, to output: String) throws {
        let out = normalize ? Ops.l2Normalized(embeddings) : embeddings
        try NPY.write(out, to: URL(fileURLWithPath: output))
        FileHandle.standardError.write(Data("wrote \(output) [\(out.shape.map(String.init).joined(separator: ", "))]\n".utf8))
    }
}

// MARK: embed-images

struct EmbedImages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed-images",
        abstract: "Embed images into a float32 .npy [N, D'] (paths in order beside it, OUTPUT.paths.txt).",
        discussion: """
        Folders are walked recursively for .jpg/.jpeg/.png files (hidden entries skipped), sorted by relative \
        path in Unicode code-point order; arguments keep their order. The list is written to OUTPUT.paths.txt, \
        one path per line, row i of the array belonging to line i. An unreadable image stops the run with its \
        path; nothing is written.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var normalizeFlag: NormalizeFlag
    @Option(name: .long, help: "Output .npy file.") var output: String
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Argument(help: "Image files or folders.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        let files = try ImageListing.expand(paths)
        guard !files.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let clip = try await modelOptions.load()
        let bar = ProgressBar(label: "images")
        let embeddings = try clip.encodeImageFiles(files, batchSize: batchSize) { done in
            bar.update(done: done, total: files.count)
        }
        bar.finish()
        // The list first, then the array: a failure on the array removes the list, so no list is
        // left beside a missing or older array (each file is written atomically).
        let list = Output.sidecar(URL(fileURLWithPath: output), "paths.txt")
        try Output.writeLines(files.map(\.path), to: list, what: "the image list")
        do { try normalizeFlag.write(embeddings, to: output) } catch {
            try? FileManager.default.removeItem(at: list)
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
        let clip = try await modelOptions.load()
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
        let clip = try await modelOptions.load()
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
        abstract: "Zero-shot classification of images against class names.",
        discussion: """
        Each class is embedded with every template ("{}" replaced by the class name), each embedding \
        L2-normalised, averaged and renormalised. Scores are cosine similarities; probabilities are the \
        softmax of the scores times exp(logit_scale) of the checkpoint. Default template: "a photo of a {}."
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Class names, one per line.") var classes: String
    @Option(name: .long, help: "Templates with {} for the class name, one per line.") var templates: String?
    @Option(name: .long, help: "How many classes to show per image.") var topK = 5
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Flag(name: .long, help: "Print JSON instead of text.") var json = false
    @Argument(help: "Image files or folders.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--top-k", topK, CountBounds.top)
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        let classNames = try TextLists.readLines(URL(fileURLWithPath: classes), what: "class name")
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
            ?? ZeroShotClassifier.defaultTemplates
        let files = try ImageListing.expand(paths)
        guard !files.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let clip = try await modelOptions.load()
        let classifier = try clip.zeroShotClassifier(classes: classNames, templates: templateList)
        let bar = ProgressBar(label: "images")
        let embeddings = try clip.encodeImageFiles(files, batchSize: batchSize) { bar.update(done: $0, total: files.count) }
        bar.finish()
        let results = classifier.predict(embeddings, logitScale: clip.logitScale, topK: topK)
        if json {
            let items = zip(files, results).map { file, preds in
                Output.ClassifyItem(path: file.path, predictions: preds.map {
                    .init(class: $0.className, index: $0.index, score: $0.score, probability: $0.probability)
                })
            }
            print(try Output.json(Output.ClassifyReport(model: clip.id, templates: templateList, results: items)))
        } else {
            for (file, preds) in zip(files, results) {
                print(file.path)
                for p in preds {
                    print(String(format: "  %6.2f%%  %@  (cosine %.4f)", Double(p.probability * 100), p.className, Double(p.score)))
                }
            }
        }
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
            cpuCores: ProcessInfo.processInfo.activeProcessorCount, codecs: ImageDecoder.codecVersions,
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
