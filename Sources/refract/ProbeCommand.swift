// refract probe: parse, call RefractAlign's `ProbeArtefact.train`, print.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCLIP
import RefractStore
import RefractTensor

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Train a linear probe (logistic regression, Linear(d, K)) on a run's representations with their labels.",
        discussion: """
        The paper's classifier for models without a head of their own (Waterbirds for every timm model; \
        DINO/DINOv2 on ImageNet): cross-entropy, Adam with coupled weight decay, initialised as PyTorch's \
        Linear from --seed. Defaults are the official Waterbirds probe (lr 1e-3, batch 64, 10 epochs, rows \
        in order); the official ImageNet probe is --learning-rate 3e-4 --epochs 3 --max-batches 1000 (batch 64). \
        Rows: the run's images, filtered by --where COLUMN=VALUE (columns of a CSV image list, e.g. \
        Waterbirds' split=0); labels: the run's (class folders or a label column) or --label-column COLUMN, \
        matched to --classes by name, by 0-based index, or in sorted order. Writes PROBE/probe.safetensors \
        (weight [K, d], bias [K]) and PROBE/manifest.json. Used by refract spurious --probe and refract ablate --probe.
        """)

    @Option(name: .long, help: "Run directory (made by refract decompose).") var run: String
    @Option(name: .long, help: "Output directory (new or empty).") var output: String
    @Option(name: .long, help: "Train on rows whose metadata column has this value, as COLUMN=VALUE (repeatable).") var `where`: [String] = []
    @Option(name: .customLong("label-column"), help: "A metadata column holding the labels (default: the run's labels).") var labelColumn: String?
    @Option(name: .long, help: "Class names in label order: comma-separated, or a file with one per line.") var classes: String?
    @Option(name: .long, help: "Epochs (official: 10 Waterbirds, 3 ImageNet).") var epochs = 10
    @Option(name: .customLong("learning-rate"), help: "Adam's learning rate (official: 1e-3 Waterbirds, 3e-4 ImageNet).") var learningRate = 1e-3
    @Option(name: .customLong("batch-size"), help: "Rows per step (official: 64).") var batchSize = 64
    @Option(name: .customLong("max-batches"), help: "At most this many batches an epoch.") var maxBatches: Int?
    @Flag(name: .long, help: "Shuffle the rows every epoch (the official Waterbirds probe does not).") var shuffle = false
    @Option(name: .long, help: "Seed of the initial weights (and the shuffles).") var seed: UInt64 = 0
    @Option(name: .long, help: "BLAS threads.") var threads: Int?

    func run() async throws {
        try CountBounds.check("--epochs", epochs, 1...10_000)
        try CountBounds.check("--batch-size", batchSize, 1...1_000_000)
        if let maxBatches { try CountBounds.check("--max-batches", maxBatches, 1...100_000_000) }
        try CountBounds.check("--threads", threads, CountBounds.threads)
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive, not \(learningRate)") }
        try BLAS.load()
        if let threads { BLAS.setThreads(threads) }
        let reader = try StoreReader(run: URL(fileURLWithPath: run))
        var data = ProbeData()
        data.filters = try `where`.map { f in
            let parts = f.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--where '\(f)': write COLUMN=VALUE, e.g. split=0") }
            return (parts[0], parts[1])
        }
        data.labelColumn = labelColumn
        if let classes {
            if FileManager.default.fileExists(atPath: classes) {
                data.classes = try TextLists.readLines(URL(fileURLWithPath: classes), what: "class name")
            } else {
                data.classes = classes.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            }
            data.classesSource = classes
        }
        var hyper = ProbeHyperparameters()
        hyper.epochs = epochs
        hyper.learningRate = learningRate
        hyper.batchSize = batchSize
        hyper.maxBatchesPerEpoch = maxBatches
        hyper.shuffle = shuffle
        let probe = try ProbeArtefact.train(reader, data: data, hyper: hyper, seed: seed, output: URL(fileURLWithPath: output),
                                            createdBy: "refract probe")
        let m = probe.manifest
        print("wrote \(output): Linear(\(m.width), \(m.classes.count)) on \(m.feature) of \(m.trainRows) rows (\(m.labelMapping))")
        print("loss per epoch: " + m.lossPerEpoch.map { String(format: "%.4f", $0) }.joined(separator: " "))
        print(String(format: "training accuracy: %.2f%%", 100 * m.trainAccuracy))
    }
}
