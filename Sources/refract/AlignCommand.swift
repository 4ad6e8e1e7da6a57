// refract align: parse, gather the CLIP targets (an embeddings file or a CLIP model), call
// RefractAlign's `AlignRun`, print the held-out figures.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractSegment
import RefractStore
import RefractTensor
#if canImport(Glibc)
import Glibc
#endif

struct AlignCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "align",
        abstract: "CompAlign: train one linear map per component of a timm run into CLIP's space (the official loss, Adam, early stopping).",
        discussion: """
        Targets are the CLIP image embeddings of the run's images: --clip-embeddings E.npy (from refract \
        embed-images of a CLIP model over the same images; E.paths.txt and E.model.json beside it; joined to the \
        run by image path, relative paths resolved against the current directory) or --clip M (the run's images \
        are embedded here, once; cached in ALIGN/checkpoint for --resume). With --clip (alone or beside \
        --clip-embeddings, then it must be the same model), the held-out figures include zero-shot top-1 \
        through the aligned sum with M's text tower (class prompts with the 80 ImageNet templates), beside M's \
        own. A seeded share of the images (--held-out) is kept out of training for the figures. Writes \
        ALIGN/manifest.json, ALIGN/maps.safetensors (weights [C, d, D], bias [D]) and ALIGN/loss.png; a killed \
        run continues with --resume and ends with the same maps. See docs/Align.md.
        """)

    @Option(name: .long, help: "The run of a timm model (refract decompose).") var run: String
    @Option(name: .customLong("clip-embeddings"), help: "CLIP image embeddings of the run's images (.npy, with .paths.txt and .model.json beside it).")
    var clipEmbeddings: String?
    @Option(name: .long, help: "A CLIP model: embeds the run's images when no --clip-embeddings are given; its text tower gives the zero-shot figure.")
    var clip: String?
    @Option(name: .long, help: "Output directory (new or empty; with --resume, the unfinished alignment).") var output: String
    @Option(name: .long, help: "Class names, one per line, for the zero-shot figure (default: the run's class names).") var classes: String?
    @Option(name: .long, help: "Seed of the initial maps, the held-out split and the batch order.") var seed: UInt64 = 0
    @Option(name: .customLong("held-out"), help: "Share of the images held out of training for the figures.") var heldOut = 0.1
    @Option(name: .customLong("max-held-out"), help: "At most this many held-out images.") var maxHeldOut = 5000
    @Option(name: .customLong("batch-size"), help: "Images per Adam step (official: 32).") var batchSize = 32
    @Option(name: .long, help: "At most this many epochs (official: 2).") var epochs = 2
    @Option(name: .long, help: "Stop after this many steps without a new lowest batch loss (official: 50).") var patience = 50
    @Option(name: .customLong("learning-rate"), help: "Adam's learning rate (official: 3e-4).") var learningRate = 3e-4
    @Option(name: .customLong("max-steps"), help: "Stop after this many steps at the latest (default: the official rule alone).") var maxSteps: Int?
    @Option(name: .customLong("checkpoint-every"), help: "Save the training state every this many steps.") var checkpointEvery = 200
    @Option(name: .customLong("clip-batch-size"), help: "Images per forward pass when embedding with --clip.") var clipBatchSize = 8
    @Option(name: .long, help: "BLAS threads (default: all cores).") var threads: Int?
    @Flag(name: .long, help: "Continue the unfinished alignment in --output.") var resume = false

    func run() async throws {
        try CountBounds.check("--threads", threads, CountBounds.threads)
        try CountBounds.check("--batch-size", batchSize, 1...65_536)
        try CountBounds.check("--epochs", epochs, 1...1000)
        try CountBounds.check("--patience", patience, 1...10_000_000)
        try CountBounds.check("--checkpoint-every", checkpointEvery, 1...10_000_000)
        try CountBounds.check("--clip-batch-size", clipBatchSize, CountBounds.batchSize)
        if let maxSteps { try CountBounds.check("--max-steps", maxSteps, 1...100_000_000) }
        guard heldOut >= 0, heldOut < 1 else { throw ValidationError("--held-out must be in [0, 1), not \(heldOut)") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, not \(learningRate)") }
        guard clipEmbeddings != nil || clip != nil else {
            throw ValidationError("give the CLIP targets: --clip-embeddings E.npy (refract embed-images of a CLIP model) or --clip MODEL")
        }
        try BLAS.load()
        try LAPACK.load()
        if let threads { BLAS.setThreads(threads) }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        _ = try AlignRun.requireAlignable(reader)
        let out = URL(fileURLWithPath: output)
        try AlignRun.prepareOutput(out, resume: resume)
        let lock = try RunLock.acquire(out, what: "alignment")
        defer { lock.release() }

        // The CLIP model (texts, and targets when no embeddings are given).
        var clipModel: CLIP?
        var clipInfo: StoreModelInfo?
        if let clip {
            let location = try await ModelOptions.locate(clip, layout: nil, threads: threads)
            guard location.layout != .timm else { throw ValidationError("--clip \(clip) is a timm model, not CLIP") }
            let model = try CLIP(location: location)
            clipModel = model
            clipInfo = try StoreModelInfo(model)
        }
        let targets: AlignTargets
        if let clipEmbeddings {
            targets = try embeddingsTargets(clipEmbeddings, reader: reader, clipInfo: clipInfo)
        } else {
            targets = try embedRunImages(reader, model: clipModel!, info: clipInfo!, output: out)
        }

        var zeroShot: AlignZeroShot?
        if let clipModel { zeroShot = try zeroShotTexts(reader, clip: clipModel) }

        var options = AlignRunOptions()
        options.hyper.batchSize = batchSize
        options.hyper.epochs = epochs
        options.hyper.patience = patience
        options.hyper.learningRate = learningRate
        options.seed = seed
        options.heldOutFraction = heldOut
        options.maxHeldOut = maxHeldOut
        options.checkpointEvery = checkpointEvery
        options.resume = resume
        options.maxSteps = maxSteps
        // For tests of kill-and-resume: SIGKILL ourselves after this many checkpoints are on disk.
        let faultAfter = ProcessInfo.processInfo.environment["REFRACT_FAULT_AFTER_CHECKPOINTS"].flatMap(Int.init)
        var checkpoints = 0
        let bar = ProgressBar(label: "steps")
        let alignment = try AlignRun.run(reader: reader, targets: targets, zeroShot: zeroShot, output: out, options: options,
                                         createdBy: "refract align",
                                         progress: { step, _, _ in bar.update(done: step, total: nil) },
                                         checkpointed: { _ in
                                             checkpoints += 1
                                             if let faultAfter, checkpoints >= faultAfter { kill(getpid(), SIGKILL) }
                                         })
        bar.finish()
        print(Self.summary(alignment.manifest, output: output))
    }

    /// The figures, as the command prints them.
    static func summary(_ m: AlignmentManifest, output: String) -> String {
        let f = m.figures
        func fmt(_ x: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", x) }
        var lines = ["wrote \(output): \(m.components.count) maps [\(m.width) -> \(m.target.width)] of \(m.model.id) into \(m.target.model.id)",
                     "training: \(m.steps) steps over \(m.trainImages) images, \(m.epochs) epoch(s), stopped by \(m.stopped); "
                        + "last batch loss \(m.loss.last.map { fmt($0.total) } ?? "-")",
                     "held out: \(f.images) images; mean cosine to CLIP \(fmt(f.meanCosine)) (initial maps \(fmt(f.meanCosineInitial)))"]
        if let top1 = f.zeroShotTop1, let clipTop1 = f.clipZeroShotTop1, let k = f.zeroShotClasses {
            lines.append("zero-shot top-1 (\(k) classes): aligned \(fmt(100 * top1, 1))%, CLIP itself \(fmt(100 * clipTop1, 1))%")
        }
        let scales = f.isometry.map(\.scale).sorted(), devs = f.isometry.map(\.deviation).sorted()
        if !scales.isEmpty {
            lines.append("isometry: W_cᵀW_c ≈ k·I with k from \(fmt(scales.first!, 3)) to \(fmt(scales.last!, 3)) (median \(fmt(scales[scales.count / 2], 3))); "
                + "relative deviation median \(fmt(devs[devs.count / 2], 3)), worst \(fmt(devs.last!, 3))")
        }
        return lines.joined(separator: "\n")
    }


    /// --clip-embeddings: the array, its paths and its model description, joined to the run.
    func embeddingsTargets(_ path: String, reader: StoreReader, clipInfo: StoreModelInfo?) throws -> AlignTargets {
        let url = URL(fileURLWithPath: path)
        let array = try NPY.read(url).tensor
        let listURL = Output.sidecar(url, "paths.txt")
        let paths = try TextLists.readLines(listURL, what: "image path")
        let info = try EmbeddingsInfo.read(for: url)
        try info?.requireWhole(url)
        let model: StoreModelInfo
        switch (info, clipInfo) {
        case let (info?, clip?):
            guard info.model.weightsSHA256 == clip.weightsSHA256 else {
                throw ValidationError("\(path) holds embeddings of \(info.model.id), not of --clip \(clip.id) (other weights)")
            }
            model = info.model
        case let (info?, nil): model = info.model
        case let (nil, clip?): model = clip
        case (nil, nil):
            throw ValidationError("\(EmbeddingsInfo.url(for: url).path) is missing, so the CLIP model of \(path) is unknown: "
                                  + "embed again with refract embed-images (it writes the file), or name the model with --clip")
        }
        if let info {
            guard info.model.layout != "timm" else { throw ValidationError("\(path) holds features of the timm model \(info.model.id), not CLIP embeddings") }
            guard info.rows == array.shape.first, info.width == array.shape.last else {
                throw ValidationError("\(path) has shape \(array.shape), its description says [\(info.rows), \(info.width)]")
            }
        }
        let width = array.rank == 2 ? array.shape[1] : 0
        return try AlignTargets.join(run: reader, embeddings: array, paths: paths, file: path,
                                     info: AlignmentTarget(model: model, width: width, source: url.lastPathComponent))
    }

    /// --clip alone: embeds the run's images (cached in ALIGN/checkpoint/clip-embeddings.npy).
    func embedRunImages(_ reader: StoreReader, model: CLIP, info: StoreModelInfo, output: URL) throws -> AlignTargets {
        let dir = AlignmentCheckpoint.directory(output)
        let cache = dir.appendingPathComponent("clip-embeddings.npy")
        let paths = reader.rowImages.map(\.path)
        if let cached = try? EmbeddingsInfo.read(for: cache), cached.model.weightsSHA256 == info.weightsSHA256,
           let list = try? TextLists.readLines(Output.sidecar(cache, "paths.txt"), what: "image path"), list == paths,
           let array = try? NPY.read(cache).tensor, array.shape == [paths.count, cached.width] {
            return try AlignTargets.join(run: reader, embeddings: array, paths: paths, file: cache.path,
                                         info: AlignmentTarget(model: info, width: cached.width, source: "model"))
        }
        let bar = ProgressBar(label: "CLIP images")
        let raw = try model.encodeImageFiles(paths.map { URL(fileURLWithPath: $0) }, batchSize: clipBatchSize) {
            bar.update(done: $0, total: paths.count)
        }
        bar.finish()
        let e = Ops.l2Normalized(raw)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Output.writeLines(paths, to: Output.sidecar(cache, "paths.txt"), what: "the image list")
        try NPY.write(e, to: cache)
        try EmbeddingsInfo(model: info, rows: e.shape[0], width: e.shape[1], normalized: true).write(for: cache)
        return try AlignTargets.join(run: reader, embeddings: e, paths: paths, file: cache.path,
                                     info: AlignmentTarget(model: info, width: e.shape[1], source: "model"))
    }

    /// Class embeddings (80 templates) and each row's class, when the run's images have labels.
    func zeroShotTexts(_ reader: StoreReader, clip: CLIP) throws -> AlignZeroShot? {
        let labels = reader.rowImages.map(\.label)
        let present = labels.compactMap { $0 }
        guard !present.isEmpty else {
            FileHandle.standardError.write(Data("note: the run's images have no labels; no zero-shot figure\n".utf8))
            return nil
        }
        let names: [String]
        let file: String
        if let classes {
            names = try TextLists.readLines(URL(fileURLWithPath: classes), what: "class name")
            file = classes
        } else if let runNames = reader.manifest.classNames, !runNames.isEmpty {
            names = runNames
            file = "the run's class names"
        } else {
            names = Set(present).sorted()
            file = "the run's labels"
        }
        let (_, index) = try LabelMapping.resolve(labels: present, classes: names, file: file)
        let classifier = try clip.zeroShotClassifier(classes: names, templates: try SegmentText.imagenetTemplates())
        return AlignZeroShot(classEmbeddings: Ops.transposed(classifier.weights), rowClass: labels.map { $0.flatMap { index[$0] } })
    }
}
