// refract decompose / export / ablate: parse, call RefractDecompose and RefractStore, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCLIP
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTimm
#if canImport(Glibc)
import Glibc
#endif

// MARK: decompose

struct Decompose: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decompose every image's representation exactly into its components (init/pre, MLPs, heads, per-token terms), into a run directory.",
        discussion: """
        CLIP models: the image embedding into pre, MLP, per-head (and per-token) terms (conventions faithful, \
        gandelsman2024). timm models (DeiT, DINO, DINOv2, Swin): the pre-logits representation into init, every \
        head and MLP of the decomposed blocks and the constants (conventions faithful, balasubramanian2024), stored \
        as one components tensor described in the manifest; --from-block B lumps blocks before B into init. \
        PATH: image folders (a subfolder directly under the folder names the class of the images in it), \
        CSV/TSV lists with a header (path column: path, filepath, file, filename, image, image_path or \
        img_filename; optional label or class column; other columns are kept), or image files. \
        The run holds manifest.json and safetensors shards (see docs/Store.md). An unreadable image stops \
        the run with its path (or, with --skip-unreadable, is recorded in the manifest and left out); a \
        stopped or killed run continues with --resume, losing and duplicating nothing.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: "Run directory to create (or to continue with --resume).") var output: String
    @Option(name: .long, help: "faithful (exact: each component centred by its own mean; biases kept apart), gandelsman2024 (CLIP: the official code's split; sums to the normalised embedding) or balasubramanian2024 (timm: the official code's numbers).")
    var convention = "faithful"
    @Option(name: .long, help: "Layers (CLIP) or blocks (timm, 0-based over all stages) whose per-token contributions are stored: all, last:N, 11, 8-11, 0,5,10-11 (default: none).")
    var tokens: String?
    @Option(name: .long, help: "timm models: the first decomposed block (0-based over the flattened blocks; earlier ones are lumped into init). The official scripts use 7 (ViT-B) for retrieval.")
    var fromBlock = 0
    @Option(name: .long, help: "Storage type of the components: float32 or float16 (embedding and norm stay float32).")
    var dtype = "float32"
    @Option(name: .long, help: "Images per forward pass.") var batchSize = 8
    @Option(name: .long, help: "Images per shard (default: as many as fit in 256 MB).") var shardSize: Int?
    @Flag(name: .long, help: "Record unreadable images in the manifest and go on, instead of stopping.") var skipUnreadable = false
    @Flag(name: .long, help: "Continue an incomplete run in --output (same model, images and options).") var resume = false
    @Flag(name: .customLong("continue"), help: "Start the run, resume it if --output holds an incomplete one of the same settings, or exit at once if it holds the complete one (for scheduler tasks that may be restarted).")
    var continueRun = false
    @Option(name: .long, help: "Write only part K of N (K from 0, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT): the K-th of N contiguous slices of the run's shards; join the parts with refract merge (docs/Cluster.md).")
    var part: String?
    @Argument(help: "Image folders, CSV/TSV image lists, or image files.") var paths: [String]

    func run() async throws {
        try CountBounds.check("--batch-size", batchSize, CountBounds.batchSize)
        if resume && continueRun { throw ValidationError("--resume and --continue exclude each other (--continue resumes when there is a run to resume)") }
        let thePart = try part.map { try PartOption.parse($0) }
        guard let conv = DecompositionConvention(rawValue: convention) else {
            throw ValidationError("--convention must be faithful, gandelsman2024 (CLIP) or balasubramanian2024 (timm), not '\(convention)'")
        }
        guard let storage = StoreDType(rawValue: dtype) else { throw ValidationError("--dtype must be float32 or float16, not '\(dtype)'") }
        let dataset = try ImageDataset.load(paths)
        guard !dataset.images.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let model = try await modelOptions.loadVisionModel()
        var options = DecomposeRunOptions()
        options.convention = conv
        options.fromBlock = fromBlock
        let layers: Int
        if let clip = model as? CLIP {
            layers = clip.architecture.vision.layers
            if conv == .balasubramanian2024 { throw ValidationError("--convention balasubramanian2024 is for timm models; CLIP runs use faithful or gandelsman2024") }
            if fromBlock != 0 { throw ValidationError("--from-block applies to timm models; CLIP runs decompose every layer") }
        } else {
            layers = TimmDecomposer.blockCount(model as! TimmModel)
            if conv == .gandelsman2024 { throw ValidationError("--convention gandelsman2024 is for CLIP models; timm runs use faithful or balasubramanian2024") }
            try CountBounds.check("--from-block", fromBlock, 0...(layers - 1))
        }
        options.tokenLayers = try tokens.map { try LayerSelection.parse($0, layers: layers) } ?? []
        options.dtype = storage
        options.batchSize = batchSize
        options.onError = skipUnreadable ? .skip : .stop
        options.resume = resume
        options.continueRun = continueRun
        options.part = thePart
        if let shardSize {
            try CountBounds.check("--shard-size", shardSize, CountBounds.shardSize)
            options.shardSize = shardSize
        }
        // For tests of kill-and-resume: SIGKILL ourselves after this many shards are on disk.
        let faultAfter = ProcessInfo.processInfo.environment["REFRACT_FAULT_AFTER_SHARDS"].flatMap(Int.init)
        var shardsThisProcess = 0
        let bar = ProgressBar(label: "images")
        let summary = try DecomposeRun.run(model: model, dataset: dataset, output: URL(fileURLWithPath: output),
                                           options: options, createdBy: "refract decompose",
                                           progress: { bar.update(done: $0, total: $1) },
                                           shardWritten: { _ in
                                               shardsThisProcess += 1
                                               if let faultAfter, shardsThisProcess >= faultAfter { kill(getpid(), SIGKILL) }
                                           })
        bar.finish()
        let what = thePart.map { " (part \($0.index)/\($0.count))" } ?? ""
        var line = "wrote \(output)\(what): \(summary.rows) of \(summary.images) images in \(summary.shardsTotal) shard(s)"
        if summary.shardsWritten == 0 && summary.shardsTotal > 0 && continueRun {
            line = "\(output)\(what) is already complete (\(summary.rows) of \(summary.images) images in \(summary.shardsTotal) shard(s)); nothing to do"
        } else if summary.shardsWritten < summary.shardsTotal {
            line += " (\(summary.shardsWritten) written now, the rest resumed)"
        }
        if let p = thePart, summary.shardsTotal == 0 {
            line += "; this part is empty: the run has fewer shards than \(p.count) parts (give --shard-size at most images/N "
                + "to spread it over every part)"
        }
        if !summary.skipped.isEmpty { line += "; \(summary.skipped.count) unreadable image(s) skipped, listed in manifest.json" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

// MARK: export

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a run's tensors as plain .npy files (one per tensor, [N, ...] float32) with images.txt and labels.txt.",
        discussion: """
        Every run also gets components.npy [N, C, D'] (all its components, stacked; for CLIP runs derived from \
        pre, attn, attn_bias, mlp and readout_bias) and components.json (each component's name, official name, \
        kind, block, stage and head, in the order of components.npy).
        """)

    @Option(name: .long, help: "Run directory.") var run: String
    @Option(name: .long, help: "Output format (npy).") var format = "npy"
    @Option(name: .long, help: "Output directory (must not exist or be empty).") var output: String
    @Option(name: .long, help: "Comma-separated tensor names (default: all).") var tensors: String?

    func run() async throws {
        guard format == "npy" else { throw ValidationError("--format: only npy is supported, not '\(format)'") }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        var names = tensors.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        var (derived, files) = try RunComponents.exportExtras(reader)
        if let asked = names {
            // components is stored (timm) or derived (CLIP): export it only when asked for.
            derived = asked.contains("components") ? derived : []
            if !derived.isEmpty { names = asked.filter { $0 != "components" } }
        }
        try StoreExport.npy(reader, to: URL(fileURLWithPath: output), names: names, derived: derived, files: files)
        FileHandle.standardError.write(Data("wrote \(output): \(reader.rowCount) rows\n".utf8))
    }
}

// MARK: ablate

struct Ablate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mean-ablation study: zero-shot top-1/top-5 with MLPs, class-to-class attention, or attention layers 0..l replaced by their means.",
        discussion: """
        timm runs of models with a classifier head (DeiT, Swin): the layer-ablation curve of Balasubramanian et al.: \
        the last K decomposed blocks (heads, attention bias, MLP) replaced by their means, K = 0 up to every block, \
        classified by the model's own head (--classes optional: the head's label_names, else ImageNet's for 1000 classes) \
        or, for models without one (DINO, DINOv2), by a linear probe (--probe, from refract probe). \
        Labels come from the run (class folders, or a label column). They are matched to --classes by name, \
        as 0-based indices, or (ImageNet folders of synset ids) the i-th sorted label is the i-th class line. \
        Means are taken over the run itself unless --means-from names another run of the same model. \
        Writes ablation.json, ablation.csv and ablation.png (the cumulative curve) into --output.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Class names, one per line (CLIP: required; timm: the head's outputs in order).") var classes: String?
    @Option(name: .long, help: "Templates with {} for the class name, one per line (default: \"a photo of a {}.\").") var templates: String?
    @Option(name: .long, help: "Take the means from this run instead (same model and convention).") var meansFrom: String?
    @Option(name: .long, help: "timm runs: classify with this linear probe (refract probe) instead of the model's head (DINO, DINOv2).")
    var probe: String?
    @Option(name: .long, help: "Model for the text encoder (default: the run's model id); its weights must be the run's.") var model: String?
    @Option(name: .long, help: "BLAS threads.") var threads: Int?
    @Option(name: .long, help: "Output directory.") var output: String

    func run() async throws {
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        let means = try meansFrom.map { try StoreReader(run: URL(fileURLWithPath: $0)) }
        let classNames = try classes.map { try TextLists.readLines(URL(fileURLWithPath: $0), what: "class name") }
        try BLAS.load()
        try CountBounds.check("--threads", threads, CountBounds.threads); if let threads { BLAS.setThreads(threads) }
        let report: AblationReport
        if RunComponents.isTimm(reader), let probe {
            if templates != nil || classes != nil { throw ValidationError("--templates and --classes do not apply with --probe: it has its own classes") }
            let p = try ProbeArtefact.load(URL(fileURLWithPath: probe))
            try p.check(run: reader)
            report = try LayerAblation.run(reader, meansFrom: means, classify: { p.probe.logits($0) }, classes: p.manifest.classes,
                                           classFile: "the classes of the probe \(probe)")
        } else if RunComponents.isTimm(reader) {
            if templates != nil { throw ValidationError("--templates applies to CLIP runs; a timm run is classified by its model's head") }
            guard let timm = try await RunModel.loadAny(for: reader, spec: model) as? TimmModel else {
                throw ValidationError("\(run): a timm run whose model is not a timm model")
            }
            guard timm.hasHead else {
                throw ValidationError("\(timm.id) has no classifier head (num_classes 0): the layer ablation needs one (DeiT, Swin, MaxViT), "
                                      + "or a linear probe of the run's representations (refract probe; --probe)")
            }
            let names = try TimmClassNames.resolve(given: classNames, givenFile: classes, model: timm)
            report = try LayerAblation.run(reader, meansFrom: means, classify: { timm.logits($0)! }, classes: names,
                                           classFile: classes ?? "the classes of \(timm.id)'s head")
        } else {
            if probe != nil { throw ValidationError("--probe is for runs of timm models; a CLIP run is classified zero-shot") }
            guard let classNames, let classes else { throw ValidationError("--classes is required for a CLIP run (zero-shot class names)") }
            let templateList = try templates.map { try TextLists.readTemplates(URL(fileURLWithPath: $0)) }
                ?? ZeroShotClassifier.defaultTemplates
            let clip = try await RunModel.load(for: reader, spec: model)
            let classifier = try clip.zeroShotClassifier(classes: classNames, templates: templateList)
            report = try MeanAblation.run(reader, meansFrom: means, classifier: classifier.weights, classes: classNames,
                                          classFile: classes)
        }
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
