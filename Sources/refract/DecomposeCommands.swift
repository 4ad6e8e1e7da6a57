// refract decompose / export / ablate: parse, call RefractDecompose and RefractStore, print.

import ArgumentParser
import Foundation
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
#if canImport(Glibc)
import Glibc
#endif

// MARK: decompose

struct Decompose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decompose every image's embedding exactly into pre, MLP, per-head (and per-token) terms, into a run directory.",
        discussion: """
        PATH: image folders (a subfolder directly under the folder names the class of the images in it), \
        CSV/TSV lists with a header (path column: path, filepath, file, filename, image, image_path or \
        img_filename; optional label or class column; other columns are kept), or image files. \
        The run holds manifest.json and safetensors shards (see docs/Store.md). An unreadable image stops \
        the run with its path (or, with --skip-unreadable, is recorded in the manifest and left out); a \
        stopped or killed run continues with --resume, losing and duplicating nothing.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Run directory to create (or to continue with --resume).") var output: String
    @Option(name: .long, help: "faithful (each component centred by its own mean; biases kept apart) or gandelsman2024 (the official code's split; sums to the normalised embedding).")
    var convention = "faithful"
    @Option(name: .long, help: "Layers whose per-token contributions are stored as attn_tokens: all, last:N, 11, 8-11, 0,5,10-11 (default: none).")
    var tokens: String?
    @Option(name: .long, help: "Storage type of the components: float32 or float16 (embedding and norm stay float32).")
    var dtype = "float32"
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Option(name: .long, help: "Images per shard (default: as many as fit in 256 MB).") var shardSize: Int?
    @Flag(name: .long, help: "Record unreadable images in the manifest and go on, instead of stopping.") var skipUnreadable = false
    @Flag(name: .long, help: "Continue an incomplete run in --output (same model, images and options).") var resume = false
    @Argument(help: "Image folders, CSV/TSV image lists, or image files.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        guard let conv = DecompositionConvention(rawValue: convention) else {
            throw ValidationError("--convention must be faithful or gandelsman2024, not '\(convention)'")
        }
        guard let storage = StoreDType(rawValue: dtype) else { throw ValidationError("--dtype must be float32 or float16, not '\(dtype)'") }
        let dataset = try ImageDataset.load(paths)
        guard !dataset.images.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let clip = try await modelOptions.load(for: "decompose", why: "decomposes CLIP models only in this version (timm decomposition is the rest of issue 12)")
        var options = DecomposeRunOptions()
        options.convention = conv
        options.tokenLayers = try tokens.map { try LayerSelection.parse($0, layers: clip.architecture.vision.layers) } ?? []
        options.dtype = storage
        options.batchSize = batchSize
        options.onError = skipUnreadable ? .skip : .stop
        options.resume = resume
        if let shardSize {
            try CountBounds.check("--shard-size", shardSize, CountBounds.shardSize)
            options.shardSize = shardSize
        }
        // For tests of kill-and-resume: SIGKILL ourselves after this many shards are on disk.
        let faultAfter = ProcessInfo.processInfo.environment["REFRACT_FAULT_AFTER_SHARDS"].flatMap(Int.init)
        var shardsThisProcess = 0
        let bar = ProgressBar(label: "images")
        let summary = try DecomposeRun.run(model: clip, dataset: dataset, output: URL(fileURLWithPath: output),
                                           options: options, createdBy: "refract decompose",
                                           progress: { bar.update(done: $0, total: $1) },
                                           shardWritten: { _ in
                                               shardsThisProcess += 1
                                               if let faultAfter, shardsThisProcess >= faultAfter { kill(getpid(), SIGKILL) }
                                           })
        bar.finish()
        var line = "wrote \(output): \(summary.rows) of \(summary.images) images in \(summary.shardsTotal) shard(s)"
        if summary.shardsWritten < summary.shardsTotal { line += " (\(summary.shardsWritten) written now, the rest resumed)" }
        if !summary.skipped.isEmpty { line += "; \(summary.skipped.count) unreadable image(s) skipped, listed in manifest.json" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

// MARK: export

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a run's tensors as plain .npy files (one per tensor, [N, ...] float32) with images.txt and labels.txt.")

    @Option(name: .long, help: "Run directory.") var run: String
    @Option(name: .long, help: "Output format (npy).") var format = "npy"
    @Option(name: .long, help: "Output directory (must not exist or be empty).") var output: String
    @Option(name: .long, help: "Comma-separated tensor names (default: all).") var tensors: String?

    func run() async throws {
        guard format == "npy" else { throw ValidationError("--format: only npy is supported, not '\(format)'") }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let names = tensors.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        try StoreExport.npy(reader, to: URL(fileURLWithPath: output), names: names)
        FileHandle.standardError.write(Data("wrote \(output): \(reader.rowCount) rows\n".utf8))
    }
}

// MARK: ablate

struct Ablate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mean-ablation study: zero-shot top-1/top-5 with MLPs, class-to-class attention, or attention layers 0..l replaced by their means.",
        discussion: """
        Labels come from the run (class folders, or a label column). They are matched to --classes by name, \
        as 0-based indices, or (ImageNet folders of synset ids) the i-th sorted label is the i-th class line. \
        Means are taken over the run itself unless --means-from names another run of the same model. \
        Writes ablation.json, ablation.csv and ablation.png (the cumulative curve) into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Class names, one per line.") var classes: String
    @Option(name: .long, help: "Templates with {} for the class name, one per line (default: \"a photo of a {}.\").") var templates: String?
    @Option(name: .long, help: "Take the means from this run instead (same model and convention).") var meansFrom: String?
    @Option(name: .long, help: "Model for the text encoder (default: the run's model id); its weights must be the run's.") var model: String?
    @Option(name: .long, help: "BLAS threads.") var threads: Int?
    @Option(name: .long, help: "Output directory.") var output: String

    func run() async throws {
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let means = try meansFrom.map { try StoreReader(run: URL(fileURLWithPath: $0)) }
        let classNames = try TextLists.readLines(URL(fileURLWithPath: classes), what: "class name")
        let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
            ?? ZeroShotClassifier.defaultTemplates
        try BLAS.load()
        try CountBounds.check("--threads", threads, CountBounds.threads); if let threads { BLAS.setThreads(threads) }
        let clip = try await RunModel.load(for: reader, spec: model)
        let classifier = try clip.zeroShotClassifier(classes: classNames, templates: templateList)
        let report = try MeanAblation.run(reader, meansFrom: means, classifier: classifier.weights, classes: classNames,
                                          classFile: classes)
        let dir = URL(fileURLWithPath: output)
        try FileOutput.createDirectory(dir, action: "creating the output folder")
        try FileOutput.writeAtomically(Data(try Output.json(report).utf8), to: dir.appendingPathComponent("ablation.json"),
                                       what: "the ablation report")
        try FileOutput.writeAtomically(Data(MeanAblation.csv(report).utf8), to: dir.appendingPathComponent("ablation.csv"),
                                       what: "the ablation table")
        try AblationPlot.write(report, to: dir.appendingPathComponent("ablation.png"))
        for s in report.studies {
            print(s.id.padding(toLength: max(18, s.id.count), withPad: " ", startingAt: 0)
                + String(format: " top-1 %6.2f%%  top-5 %6.2f%%", s.top1, s.top5))
        }
        FileHandle.standardError.write(Data("wrote \(output)/ablation.json, ablation.csv, ablation.png\n".utf8))
    }
}
