// MARK: - refract align: CompAlign over a stored run
//
// Trains the maps of every component of a timm run towards the CLIP embeddings of the same images
// (`AlignTargets`, joined by image path), as the official `align_with_clip` does (beyond-clip.md §2):
// batches of 32 in a seeded shuffled order, at most 2 epochs, stop after 50 batches without a new
// lowest batch loss. The run is streamed: each batch reads its 32 rows of the components tensor from
// the shards, so memory holds the maps, Adam's moments, one batch and the targets [N, D], never the
// components. A seeded share of the rows (`heldOutFraction`, at most `maxHeldOut`) is held out of
// training for the figures a user judges the maps by (`AlignmentFigures`).
//
// Resumable: every `checkpointEvery` steps the whole training state (maps, moments, step, position
// in the epoch's order, the stopping counters, the loss curve) goes to ALIGN/checkpoint/, written
// atomically; `resume` continues from it and ends with the maps an uninterrupted run makes. The
// manifest is written last, so a directory with a manifest is a finished alignment.

import Foundation
import RefractCheckpoint
import RefractDecompose
import RefractPlot
import RefractStore
import RefractTensor

/// Options of `AlignRun.run`.
public struct AlignRunOptions: Sendable {
    public var hyper = AlignerHyperparameters()
    /// Seeds the initial maps, the held-out split and every epoch's order.
    public var seed: UInt64 = 0
    /// Share of the rows held out of training for the figures, at most `maxHeldOut` rows.
    public var heldOutFraction = 0.1
    public var maxHeldOut = 5000
    /// Save the training state every this many steps (and when training ends).
    public var checkpointEvery = 200
    /// Continue from OUTPUT/checkpoint.
    public var resume = false
    /// Stop after this many steps (benchmarks, tests); nil: the official rule alone.
    public var maxSteps: Int?
    public init() {}
}

/// CLIP image embeddings for every row of a run, row r belonging to run row r.
public struct AlignTargets: Sendable {
    public var embeddings: Tensor                                                    // [rows, D]
    public var info: AlignmentTarget

    public init(embeddings: Tensor, info: AlignmentTarget) {
        self.embeddings = embeddings; self.info = info
    }

    /// Joins embeddings [M, D] of the images `paths` (in order; `file` names them in errors) to the
    /// run's rows by image path. The list must be the run's image list: every image of the run once
    /// (in any order), no image the run does not have. Relative paths are resolved against the
    /// current directory (the run stores absolute ones).
    public static func join(run reader: StoreReader, embeddings: Tensor, paths: [String], file: String,
                            info: AlignmentTarget) throws -> AlignTargets {
        guard embeddings.rank == 2, embeddings.shape[0] == paths.count else {
            throw AlignmentError(path: file, message: "\(embeddings.shape.first ?? 0) embeddings (shape \(embeddings.shape)) for "
                + "\(paths.count) image paths: the array and its paths list do not belong together")
        }
        let e = embeddings.shape[1]
        guard e == info.width else { throw AlignmentError(path: file, message: "embeddings of width \(e), expected \(info.width)") }
        var index = [String: Int]()
        for (i, p) in paths.enumerated() {
            let key = URL(fileURLWithPath: p).standardizedFileURL.path
            if let first = index[key] {
                throw AlignmentError(path: file, message: "image \(p) is listed twice (lines \(first + 1) and \(i + 1))")
            }
            index[key] = i
        }
        let runImages = Set(reader.manifest.images.map { URL(fileURLWithPath: $0.path).standardizedFileURL.path })
        if let extra = index.keys.sorted().first(where: { !runImages.contains($0) }) {
            throw AlignmentError(path: file, message: "image \(extra) is not in the run \(reader.run.path) "
                + "(\(paths.count) embeddings, \(reader.manifest.images.count) run images): embeddings of another image list")
        }
        var out = [Float](repeating: 0, count: reader.rowCount * e)
        for (r, image) in reader.rowImages.enumerated() {
            guard let i = index[URL(fileURLWithPath: image.path).standardizedFileURL.path] else {
                throw AlignmentError(path: file, message: "no embedding of the run's image \(image.path) "
                    + "(\(paths.count) embeddings, \(reader.rowCount) run rows): embed the run's own image list")
            }
            for j in 0..<e {
                let v = embeddings.data[i * e + j]
                guard v.isFinite else { throw AlignmentError(path: file, message: "embedding \(i) (\(paths[i])) holds NaN or infinite values") }
                out[r * e + j] = v
            }
        }
        return AlignTargets(embeddings: Tensor(shape: [reader.rowCount, e], data: out), info: info)
    }

    /// The targets of `rows`, [rows.count, D].
    func rows(_ rows: [Int]) -> Tensor {
        let e = embeddings.shape[1]
        var out = [Float](repeating: 0, count: rows.count * e)
        for (k, r) in rows.enumerated() { for j in 0..<e { out[k * e + j] = embeddings.data[r * e + j] } }
        return Tensor(shape: [rows.count, e], data: out)
    }
}

/// Class text embeddings for the zero-shot figure: `classEmbeddings` [K, D] (L2-normalised rows),
/// `rowClass[r]` the class of run row r (nil: unlabelled, left out).
public struct AlignZeroShot: Sendable {
    public var classEmbeddings: Tensor
    public var rowClass: [Int?]
    public init(classEmbeddings: Tensor, rowClass: [Int?]) {
        self.classEmbeddings = classEmbeddings; self.rowClass = rowClass
    }
}

public enum AlignRun {
    public static let componentsTensor = "components"

    /// The held-out rows and the training rows of a run of `rows` rows: the first `heldOut` of a
    /// seeded permutation, the rest in run order.
    public static func split(rows: Int, options: AlignRunOptions) -> (heldOut: [Int], train: [Int]) {
        var held = min(options.maxHeldOut, Int((Double(rows) * options.heldOutFraction).rounded(.down)))
        if options.heldOutFraction > 0, rows >= 2 { held = max(held, 1) }
        held = min(held, rows - 1)
        let perm = permutation(rows, seed: options.seed ^ 0x5EED_0F_4E1D_0017)
        let heldOut = Array(perm[0..<max(0, held)]).sorted()
        let heldSet = Set(heldOut)
        return (heldOut, (0..<rows).filter { !heldSet.contains($0) })
    }

    /// The order of the training rows in epoch `epoch` (0-based): a seeded Fisher–Yates shuffle.
    public static func epochOrder(_ train: [Int], epoch: Int, seed: UInt64) -> [Int] {
        permutation(train.count, seed: seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(epoch + 1)).map { train[$0] }
    }

    static func permutation(_ n: Int, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed)
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }

    /// What the run feeds the aligner, checked: a finished timm run with a components tensor.
    public static func requireAlignable(_ reader: StoreReader) throws -> (names: [String], width: Int) {
        guard RunComponents.isTimm(reader) else {
            throw AlignmentError(path: reader.run.path, message: "a CLIP run (\(reader.manifest.model.id)): its components are already in CLIP "
                + "space (the official code uses the identity there); refract align is for timm runs")
        }
        guard reader.isComplete else {
            throw AlignmentError(path: reader.run.path, message: "an unfinished run; finish it with refract decompose --resume first")
        }
        let spec = try reader.spec(componentsTensor)
        let names = try RunComponents.describe(reader).map(\.name)
        guard spec.shape.count == 2, spec.shape[0] == names.count else {
            throw AlignmentError(path: reader.run.path, message: "components tensor of shape \(spec.shape) for \(names.count) listed components")
        }
        return (names, spec.shape[1])
    }

    /// Trains (or, with `options.resume`, continues) the alignment of `reader`'s run into `output`,
    /// writes maps, loss plot and manifest, and returns the alignment. `zeroShot` adds the zero-shot
    /// figure. `progress(step, epoch, loss)` is called after every step; `checkpointed(step)` after
    /// every checkpoint is on disk.
    public static func run(reader: StoreReader, targets: AlignTargets, zeroShot: AlignZeroShot?, output: URL,
                           options: AlignRunOptions, createdBy: String,
                           progress: ((Int, Int, AlignerLoss) -> Void)? = nil,
                           checkpointed: ((Int) throws -> Void)? = nil) throws -> Alignment {
        let (names, d) = try requireAlignable(reader)
        let c = names.count, e = targets.info.width, h = options.hyper
        guard targets.embeddings.shape == [reader.rowCount, e] else {
            throw AlignmentError(path: reader.run.path, message: "targets \(targets.embeddings.shape) for \(reader.rowCount) rows")
        }
        guard reader.rowCount >= 2 else {
            throw AlignmentError(path: reader.run.path, message: "\(reader.rowCount) image(s): alignment needs at least 2 (one held out)")
        }
        guard h.batchSize >= 1, h.epochs >= 1, h.patience >= 1, options.checkpointEvery >= 1 else {
            throw AlignmentError(path: output.path, message: "batch size, epochs, patience and checkpoint interval must be at least 1")
        }
        try prepareOutput(output, resume: options.resume)
        let (heldOut, train) = split(rows: reader.rowCount, options: options)
        let fingerprint = AlignmentCheckpoint.Fingerprint(runId: reader.manifest.runId, modelSHA256: reader.manifest.model.weightsSHA256,
                                                          target: targets.info, components: names, width: d, hyper: h, seed: options.seed,
                                                          heldOut: heldOut.count, train: train.count)
        var state: AlignmentCheckpoint.State
        var trainer: AlignerTrainer
        if options.resume, let saved = try AlignmentCheckpoint.load(output, expecting: fingerprint) {
            state = saved.state
            trainer = saved.trainer
        } else {
            state = AlignmentCheckpoint.State(fingerprint: fingerprint)
            trainer = AlignerTrainer(maps: .initial(components: c, width: d, clipWidth: e, std: h.initialStd, seed: options.seed), hyper: h)
        }

        // MARK: Training
        var order = state.stopped == nil ? epochOrder(train, epoch: state.epoch, seed: options.seed) : []
        while state.stopped == nil {
            if state.position >= order.count {
                state.epoch += 1
                state.position = 0
                if state.epoch >= h.epochs { state.stopped = "epochs"; break }
                order = epochOrder(train, epoch: state.epoch, seed: options.seed)
                continue
            }
            let rows = Array(order[state.position..<min(order.count, state.position + h.batchSize)])
            let x = try reader.tensor(componentsTensor, rowList: rows)                     // [B, C, d]
            if let bad = x.data.firstIndex(where: { !$0.isFinite }) {
                let row = rows[bad / (c * d)]
                throw AlignmentError(path: reader.run.path, message: "components of row \(row) (\(reader.rowImages[row].path)) hold NaN or infinite values")
            }
            let loss = trainer.train(x, targets.rows(rows))
            guard loss.total.isFinite else {
                throw AlignmentError(path: output.path, message: "training diverged at step \(trainer.step): the loss is \(loss.total)")
            }
            state.position += rows.count
            state.loss.append(AlignmentLossPoint(step: trainer.step, epoch: state.epoch, total: loss.total, cosine: loss.cosine))
            if loss.total < state.minLoss { state.minLoss = loss.total; state.sinceBest = 0 } else { state.sinceBest += 1 }
            if state.sinceBest >= h.patience { state.stopped = "patience" }
            if let maxSteps = options.maxSteps, trainer.step >= maxSteps, state.stopped == nil { state.stopped = "steps" }
            progress?(trainer.step, state.epoch, loss)
            if state.stopped == nil, trainer.step % options.checkpointEvery == 0 {
                try AlignmentCheckpoint.save(output, state: state, trainer: trainer)
                try checkpointed?(trainer.step)
            }
        }

        // MARK: Figures, files
        trainer.releaseOptimizerState()                     // the initial maps below take the moments' place
        let figures = try heldOutFigures(reader: reader, rows: heldOut, targets: targets, zeroShot: zeroShot, maps: trainer.maps,
                                         initial: .initial(components: c, width: d, clipWidth: e, std: h.initialStd, seed: options.seed),
                                         names: names)
        let variance = try componentVariance(reader: reader, maps: trainer.maps)
        let mapsURL = output.appendingPathComponent(AlignmentManifest.mapsFileName)
        let sha = try writeFloatSafetensors(to: mapsURL, metadata: ["format": AlignmentManifest.formatName, "run_id": reader.manifest.runId,
                                                                   "model_weights_sha256": reader.manifest.model.weightsSHA256],
                                            tensors: [("weights", Tensor(shape: [c, d, e], data: trainer.maps.weights)),
                                                      ("bias", Tensor(shape: [e], data: trainer.maps.bias))])
        try lossPlot(state.loss).write(png: output.appendingPathComponent(AlignmentManifest.lossPlotFileName))
        let manifest = AlignmentManifest(createdBy: createdBy, runId: reader.manifest.runId, runPath: reader.run.path,
                                         convention: reader.manifest.convention, model: reader.manifest.model, target: targets.info,
                                         components: names, width: d, hyperparameters: h, seed: options.seed,
                                         heldOut: heldOut.count, trainImages: train.count, steps: trainer.step,
                                         epochs: min(state.epoch + 1, h.epochs), stopped: state.stopped ?? "epochs",
                                         loss: state.loss, figures: figures, componentVariance: variance, mapsSHA256: sha)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileOutput.writeAtomically(try encoder.encode(manifest), to: output.appendingPathComponent(AlignmentManifest.fileName),
                                       what: "the alignment manifest")
        try? FileManager.default.removeItem(at: output.appendingPathComponent(AlignmentCheckpoint.directoryName))
        return Alignment(manifest: manifest, maps: trainer.maps, directory: output)
    }

    /// An output directory that may be written: new or empty, or (resume) an unfinished alignment.
    public static func prepareOutput(_ output: URL, resume: Bool) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: output.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw AlignmentError(path: output.path, message: "exists and is not a directory") }
            let entries = (try? fm.contentsOfDirectory(atPath: output.path)) ?? []
            if entries.contains(AlignmentManifest.fileName) {
                throw AlignmentError(path: output.path, message: "already holds a finished alignment; choose another --output")
            }
            if AlignmentCheckpoint.exists(output), !resume {
                throw AlignmentError(path: output.path, message: "holds an unfinished alignment; continue it with --resume or choose another --output")
            }
            // What an earlier attempt may leave: its checkpoint directory, a plot or maps written
            // before the manifest (all rewritten).
            let ours: Set<String> = [AlignmentCheckpoint.directoryName, AlignmentManifest.mapsFileName, AlignmentManifest.lossPlotFileName]
            if let other = entries.sorted().first(where: { !ours.contains($0) && !$0.hasPrefix(".") }) {
                throw AlignmentError(path: output.path, message: "is not empty and holds no alignment (found \(other)); choose an empty or new directory")
            }
        } else {
            do { try fm.createDirectory(at: output, withIntermediateDirectories: true) } catch {
                throw AlignmentError(path: output.path, message: "cannot create the directory: \(error.localizedDescription)")
            }
        }
    }

    // MARK: Figures

    /// tr Cov(x_c·W_c) over every row, per component: one pass, a shard's rows per GEMM, the shards'
    /// means and sums of squared deviations merged exactly (Chan et al.) in float64.
    public static func componentVariance(reader: StoreReader, maps: AlignerWeights) throws -> ComponentVariance {
        let c = maps.components, d = maps.width, e = maps.clipWidth
        var count = 0
        var mean = [Double](repeating: 0, count: c * e), m2 = [Double](repeating: 0, count: c)
        try reader.forEachShardInPlace([componentsTensor]) { rows, buffers in
            let r = rows.count
            guard r > 0, let x = buffers[0].baseAddress else { return }
            var a = [Float](repeating: 0, count: r * e)                                         // [r, D]
            for k in 0..<c {
                a.withUnsafeMutableBufferPointer { ap in
                    maps.weights.withUnsafeBufferPointer { w in
                        BLAS.sgemm(.none, .none, m: r, n: e, k: d, a: x + k * d, lda: c * d, b: w.baseAddress! + k * d * e, ldb: e,
                                   c: ap.baseAddress!, ldc: e)                                   // x_c [r, d] · W_c [d, D]
                    }
                }
                var shardMean = [Double](repeating: 0, count: e)
                for i in 0..<r { for t in 0..<e { shardMean[t] += Double(a[i * e + t]) } }
                for t in 0..<e { shardMean[t] /= Double(r) }
                var shardM2 = 0.0
                for i in 0..<r { for t in 0..<e { let v = Double(a[i * e + t]) - shardMean[t]; shardM2 += v * v } }
                guard shardM2.isFinite else {
                    throw AlignmentError(path: reader.run.path, message: "components of rows \(rows) hold NaN or infinite values")
                }
                let n = Double(count + r), fa = Double(count) / n, fb = Double(r) / n
                var delta2 = 0.0
                for t in 0..<e {
                    let delta = shardMean[t] - mean[k * e + t]
                    delta2 += delta * delta
                    mean[k * e + t] = fa * mean[k * e + t] + fb * shardMean[t]
                }
                m2[k] += shardM2 + delta2 * Double(count) * Double(r) / n
            }
            count += r
        }
        return ComponentVariance(images: count, traces: m2.map { $0 / Double(max(count, 1)) })
    }

    /// Mean cosine (trained and initial maps), zero-shot top-1 (aligned and CLIP's own), isometry.
    static func heldOutFigures(reader: StoreReader, rows: [Int], targets: AlignTargets, zeroShot: AlignZeroShot?,
                               maps: AlignerWeights, initial: AlignerWeights, names: [String]) throws -> AlignmentFigures {
        let e = maps.clipWidth
        var cosSum = 0.0, cosInitialSum = 0.0
        var correct = 0, clipCorrect = 0, labelled = 0
        for start in stride(from: 0, to: rows.count, by: 256) {
            let chunk = Array(rows[start..<min(rows.count, start + 256)])
            let x = try reader.tensor(componentsTensor, rowList: chunk)
            let t = targets.rows(chunk)
            let z = maps.alignedSums(x), z0 = initial.alignedSums(x)                       // [n, D]
            for i in 0..<chunk.count {
                cosSum += cosine(z.data, t.data, i * e, e)
                cosInitialSum += cosine(z0.data, t.data, i * e, e)
            }
            if let zs = zeroShot {
                for (i, r) in chunk.enumerated() {
                    guard let label = zs.rowClass[r] else { continue }
                    labelled += 1
                    if argmaxScore(z.data, i * e, zs.classEmbeddings) == label { correct += 1 }
                    if argmaxScore(t.data, i * e, zs.classEmbeddings) == label { clipCorrect += 1 }
                }
            }
        }
        let n = Double(max(rows.count, 1))
        let zeroShotOK = zeroShot != nil && labelled > 0
        return AlignmentFigures(images: rows.count, meanCosine: cosSum / n, meanCosineInitial: cosInitialSum / n,
                                zeroShotTop1: zeroShotOK ? Double(correct) / Double(labelled) : nil,
                                clipZeroShotTop1: zeroShotOK ? Double(clipCorrect) / Double(labelled) : nil,
                                zeroShotClasses: zeroShotOK ? zeroShot!.classEmbeddings.shape[0] : nil,
                                isometry: isometry(maps, names: names))
    }

    static func cosine(_ a: [Float], _ b: [Float], _ offset: Int, _ n: Int) -> Double {
        var ab = 0.0, aa = 0.0, bb = 0.0
        for j in 0..<n {
            let x = Double(a[offset + j]), y = Double(b[offset + j])
            ab += x * y; aa += x * x; bb += y * y
        }
        return ab / max((aa * bb).squareRoot(), 1e-300)
    }

    /// The class whose embedding has the largest dot product with row `offset` of `a` (ties: the first).
    static func argmaxScore(_ a: [Float], _ offset: Int, _ classes: Tensor) -> Int {
        let k = classes.shape[0], e = classes.shape[1]
        var best = 0, bestScore = -Double.infinity
        for q in 0..<k {
            var s = 0.0
            for j in 0..<e { s += Double(a[offset + j]) * Double(classes.data[q * e + j]) }
            if s > bestScore { bestScore = s; best = q }
        }
        return best
    }

    /// k_c = tr(W_cᵀW_c)/D and ‖W_cᵀW_c − k_c·I‖_F / ‖k_c·I‖_F for every map.
    public static func isometry(_ maps: AlignerWeights, names: [String]) -> [IsometryFigure] {
        let d = maps.width, e = maps.clipWidth
        var gram = [Float](repeating: 0, count: e * e)
        var out = [IsometryFigure]()
        maps.weights.withUnsafeBufferPointer { wp in
            gram.withUnsafeMutableBufferPointer { gp in
                for k in 0..<maps.components {
                    try! LAPACK.ssyrkUpperTransposed(n: e, k: d, a: wp.baseAddress! + k * d * e, lda: e, beta: 0, c: gp.baseAddress!, ldc: e)
                    var trace = 0.0
                    for r in 0..<e { trace += Double(gp[r * e + r]) }
                    let scale = trace / Double(e)
                    var dev = 0.0
                    for r in 0..<e {
                        let diag = Double(gp[r * e + r]) - scale
                        dev += diag * diag
                        for q in (r + 1)..<max(r + 1, e) { dev += 2 * Double(gp[r * e + q]) * Double(gp[r * e + q]) }
                    }
                    let norm = abs(scale) * Double(e).squareRoot()
                    out.append(IsometryFigure(component: names[k], scale: scale, deviation: norm > 0 ? dev.squareRoot() / norm : .infinity))
                }
            }
        }
        return out
    }

    // MARK: Loss plot

    /// The batch losses (total and cosine part) against the step, averaged over windows so at most
    /// 1,000 points are drawn.
    public static func lossPlot(_ points: [AlignmentLossPoint]) -> LinePlot {
        let window = max(1, (points.count + 999) / 1000)
        var xs = [Double](), total = [Double](), cosine = [Double]()
        for start in stride(from: 0, to: points.count, by: window) {
            let chunk = points[start..<min(points.count, start + window)]
            xs.append(Double(chunk.last!.step))
            total.append(chunk.reduce(0) { $0 + $1.total } / Double(chunk.count))
            cosine.append(chunk.reduce(0) { $0 + $1.cosine } / Double(chunk.count))
        }
        let title = window > 1 ? "CompAlign loss (mean of \(window) batches)" : "CompAlign loss per batch"
        return LinePlot(title: title, xLabel: "step", yLabel: "loss",
                        series: [Series(name: "total", x: xs, y: total, marker: xs.count > 60 ? MarkerShape.none : .circle),
                                 Series(name: "1 - cos", x: xs, y: cosine, marker: xs.count > 60 ? MarkerShape.none : .square)])
    }
}
