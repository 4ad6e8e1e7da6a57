// align section: the issue's CompAlign benchmark. "`align` on a synthetic ViT-B-sized run (66
// components of 768 dims, 50,000 images, CLIP 768): images per second of training against a PyTorch
// implementation of the official loop on the same data and threads in the same run (target ≥ 1.5x),
// peak memory (target ≤ 1 GiB above the maps)."
//
// 1. A synthetic run is written with `SyntheticAlignment.write` (RefractAlign; random components
//    x ~ N(0, 1/d), random unit targets, not planted) into a temporary directory: N images (default
//    50000, `--align-images N`), `components` [66, 768] in float16 (101,376 bytes per image, about
//    5.1 GB for 50000), shards of about 256 MB; beside it the targets as E.npy [N, 768] with
//    E.paths.txt and E.model.json, as `refract embed-images` writes them, so the real CLI runs on it.
//    Free space is checked first (statvfs); N is lowered, with a message, when the run does not fit.
// 2. The run's shard checksums are verified once (timed, reported apart: a reader hashes each shard
//    the first time it touches it, which would otherwise land in the first steps).
// 3. Refract: `AlignRun.run` in this process on that reader, `--align-steps S` timed steps (default
//    30) after 3 warm-up steps, batch 32, 32 rows held out, no checkpoint in the window
//    (checkpointEvery 10^9); per-step times from the progress callback (batch read from the shards
//    included). Images/s = 32·S / (sum of the timed steps' seconds).
// 4. PyTorch: scripts/bench_align_reference.py (the official loop: batched matmul forward, the
//    Gram by a batched matmul, autograd, torch.optim.Adam) on the same run and E.npy, same steps,
//    batch and threads (`torch.set_num_threads`); its images/s, per-step seconds and peak RSS.
// 5. Refract again as in 3 (the two Refract phases bracket the reference in time, since a shared
//    machine's load moves; the ratio uses their mean images/s), then with one checkpoint in the
//    timed window (checkpointEvery = 3 + S/2): the checkpoint's own seconds (from the step before it
//    to the `checkpointed` callback).
// 6. Peak memory: the real `refract align` binary (next to refract-bench, or --refract PATH) as a
//    child, measured by `ChildMeasure` (MemoryBench.swift): `--max-steps 20 --checkpoint-every 10`
//    (one checkpoint written) with the default held-out share (10%, at most 5000 images, whose
//    figures are computed at the end). Peak RSS against the maps (C·d·D·4 bytes) + 1 GiB.
// The temporary directory is removed at the end, also on error.

import Foundation
import RefractAlign
import RefractStore
import RefractTensor

struct AlignTrainingPhase: Codable {
    var label: String
    var warmupSteps: Int
    var timedSteps: Int
    var batch: Int
    var checkpointEvery: Int
    /// Seconds of each timed step (from one progress callback to the next: batch read + step).
    var stepSeconds: [Double]
    var meanStepSeconds: Double
    var medianStepSeconds: Double
    var imagesPerSecond: Double
    /// Seconds of the checkpoint written inside the timed window, when there is one.
    var checkpointSeconds: Double?
    /// The whole `AlignRun.run` call: initial maps, training, held-out figures, maps, plot, manifest.
    var runSeconds: Double
    var firstLoss: Double
    var lastLoss: Double
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

struct AlignReferenceResult: Codable {
    var python: String
    var torch: String?
    var cpuCapability: String?
    var threads: Int?
    var meanStepSeconds: Double
    var medianStepSeconds: Double
    var stepSeconds: [Double]
    var imagesPerSecond: Double
    var peakRSSKiB: Int?
    var rssBeforeTrainingKiB: Int?
    var openSeconds: Double?
    var firstLoss: Double?
    var lastLoss: Double?
}

struct AlignCLIMemory: Codable {
    var command: String
    var exitStatus: Int
    var peakRSSBytes: Int
    var mapsBytes: Int
    var peakMinusMapsBytes: Int
    var budgetBytes: Int
    var withinBudget: Bool
    var measurerRSSBytes: Int
    var wallSeconds: Double
    var userSeconds: Double
    var systemSeconds: Double
    var maxSteps: Int
    var checkpointEvery: Int
}

struct AlignBenchResults: Codable {
    var requestedImages: Int
    var images: Int
    var reducedBecause: String?
    var components: Int
    var width: Int
    var clipWidth: Int
    var batch: Int
    var threads: Int
    var shardSize: Int
    var storeBytes: Int
    var writeSeconds: Double
    var verifySeconds: Double
    /// Of a step: reading one batch of 32 random rows from the shards (`StoreReader.tensor(_:rowList:)`,
    /// float16 → float32) and one `AlignerTrainer.train` call on a batch in memory; medians.
    var batchReadSeconds: Double
    var trainCallSeconds: Double
    var refract: AlignTrainingPhase
    /// The same again right after the PyTorch reference: the two bracket it in time.
    var refractAfter: AlignTrainingPhase?
    /// The mean of `refract` and `refractAfter` images/s: the figure compared with PyTorch.
    var refractImagesPerSecond: Double
    var refractWithCheckpoint: AlignTrainingPhase?
    var reference: AlignReferenceResult?
    var referenceSkipped: String?
    /// `refractImagesPerSecond` over PyTorch's, both measured in this run (target ≥ 1.5).
    var ratioVsPyTorch: Double?
    var targetRatio: Double
    var cli: AlignCLIMemory?
    var cliSkipped: String?
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum AlignBench {
    static let defaultImages = 50_000
    static let defaultSteps = 30
    static let warmupSteps = 3
    static let components = 66, width = 768, clipWidth = 768, batch = 32
    static let targetRatio = 1.5
    static let budgetBytes = 1 << 30
    static let cliSteps = 20, cliCheckpointEvery = 10
    static let seed: UInt64 = 7

    static func mib(_ b: Int) -> String { fmt(Double(b) / Double(1 << 20), 1) + " MiB" }

    static func run(images requested: Int, steps: Int, threads: Int, python explicit: String?, reference: Bool,
                    refract explicitRefract: String?) throws -> AlignBenchResults {
        try LAPACK.load()
        let loadStart = loadavg()
        print("\nCompAlign training (refract align): \(components) components × \(width) → CLIP \(clipWidth), batch \(batch), "
              + "\(warmupSteps) warm-up + \(steps) timed steps, \(threads) threads")
        print("  load average at start: \(loadString(loadStart))")

        // 0. Room on disk: the run (float16), E.npy and the alignments' outputs, with 1 GiB to spare.
        let perImage = components * width * StoreDType.float16.byteSize + clipWidth * 4
        let margin = (1 << 30) + 4 * components * width * clipWidth * 4
        let tmpRoot = FileManager.default.temporaryDirectory
        let (n, reduced) = try SyntheticHeadRun.imagesThatFit(section: "align", requested: requested, perImage: perImage, margin: margin,
                                                              what: "the run and targets")
        let rowsNeeded = (warmupSteps + steps) * batch + 64
        guard n >= rowsNeeded else {
            throw BenchError("align: \(n) images are fewer than the \(rowsNeeded) the steps need; use more --align-images or fewer --align-steps")
        }
        let dir = tmpRoot.appendingPathComponent("refract-bench-align-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(at: dir)
            print("  removed \(dir.path)")
        }

        // 1. The run and its targets.
        let runURL = dir.appendingPathComponent("run")
        let shardSize = max(1, SyntheticHeadRun.shardTargetBytes / (components * width * StoreDType.float16.byteSize))
        let shape = SyntheticAlignment.Shape(images: n, components: components, width: width, clipWidth: clipWidth,
                                             shardSize: shardSize, dtype: .float16)
        let shards = (n + shardSize - 1) / shardSize
        print("  writing \(n) images in \(shards) shards of \(shardSize) to \(runURL.path) ...")
        let t0 = now()
        var lastPrint = t0
        let (targets, _) = try SyntheticAlignment.write(run: runURL, shape: shape, planted: false, seed: seed) { done in
            if now() - lastPrint > 20 || done == n {
                lastPrint = now()
                print("    \(done)/\(n) images (\(fmt(now() - t0, 1)) s)")
            }
        }
        let embeddings = dir.appendingPathComponent("E.npy")
        try NPY.write(targets, to: embeddings)
        let paths = (0..<n).map { "/synthetic/\($0).png" }
        try Data((paths.joined(separator: "\n") + "\n").utf8).write(to: dir.appendingPathComponent("E.paths.txt"))
        let info = SyntheticAlignment.targetInfo(clipWidth: clipWidth)
        try EmbeddingsInfo(model: info.model, rows: n, width: clipWidth, normalized: true).write(for: embeddings)
        let writeSeconds = now() - t0
        let storeBytes = MemoryBench.directorySize(runURL)
        print("  wrote the run (\(fmt(Double(storeBytes) / 1e9, 2)) GB) and E.npy [\(n), \(clipWidth)] in \(fmt(writeSeconds, 1)) s")

        // 2. Verify every shard once.
        let reader = try StoreReader(run: runURL)
        let t1 = now()
        try reader.verifyChecksums()
        let verifySeconds = now() - t1
        print("  verified the run's \(reader.manifest.shards.count) shard checksums in \(fmt(verifySeconds, 1)) s "
              + "(once per reader; kept out of the timed steps)")
        let alignTargets = AlignTargets(embeddings: targets, info: info)

        // Where a step's time goes: reading a batch, and the training step itself.
        var rng = SplitMix64(seed: 99)
        var batches = [[Int]]()
        for _ in 0..<10 { batches.append((0..<batch).map { _ in Int(rng.next() % UInt64(n)) }) }
        var readTimes = [Double]()
        var x: Tensor?
        for rows in batches {
            let t = now()
            x = try reader.tensor(AlignRun.componentsTensor, rowList: rows)
            readTimes.append(now() - t)
        }
        var trainer = AlignerTrainer(maps: .initial(components: components, width: width, clipWidth: clipWidth, std: 0.02, seed: 1))
        let tBatch = Tensor(shape: [batch, clipWidth], data: Array(targets.data[0..<(batch * clipWidth)]))
        var trainTimes = [Double]()
        for _ in 0..<6 {
            let t = now()
            trainer.train(x!, tBatch)
            trainTimes.append(now() - t)
        }
        trainTimes.removeFirst()
        let batchRead = median(readTimes), trainCall = median(trainTimes)
        print("  one step's parts (medians): reading 32 random rows \(fmt(batchRead * 1000, 1)) ms; "
              + "AlignerTrainer.train on a batch in memory \(fmt(trainCall * 1000, 1)) ms")

        // 3. Refract in process.
        func phase(_ label: String, checkpointEvery: Int) throws -> AlignTrainingPhase {
            var options = AlignRunOptions()
            options.seed = 0
            options.heldOutFraction = 0.001
            options.maxHeldOut = 32
            options.checkpointEvery = checkpointEvery
            options.maxSteps = warmupSteps + steps
            let out = dir.appendingPathComponent("align-\(label)")
            var marks = [Double](), losses = [Double]()
            var checkpointAt: (step: Int, time: Double)?
            let loadStart = loadavg()
            let start = now()
            _ = try AlignRun.run(reader: reader, targets: alignTargets, zeroShot: nil, output: out, options: options,
                                 createdBy: "refract-bench", progress: { _, _, loss in
                                     marks.append(now()); losses.append(loss.total)
                                 }, checkpointed: { step in checkpointAt = (step, now()) })
            let runSeconds = now() - start
            try? FileManager.default.removeItem(at: out)
            let intervals = Array(zip(marks.dropFirst(), marks).map { $0 - $1 }.dropFirst(warmupSteps - 1))
            guard intervals.count == steps else { throw BenchError("align: \(marks.count) steps ran, expected \(warmupSteps + steps)") }
            let total = intervals.reduce(0, +)
            // The checkpoint after step k lies between marks[k-1] (step k's callback) and step k+1's.
            let ckpt = checkpointAt.map { $0.time - marks[$0.step - 1] }
            let p = AlignTrainingPhase(label: label, warmupSteps: warmupSteps, timedSteps: steps, batch: batch,
                                       checkpointEvery: checkpointEvery, stepSeconds: intervals, meanStepSeconds: total / Double(steps),
                                       medianStepSeconds: median(intervals), imagesPerSecond: Double(batch * steps) / total,
                                       checkpointSeconds: ckpt, runSeconds: runSeconds, firstLoss: losses.first ?? .nan,
                                       lastLoss: losses.last ?? .nan, loadavgStart: loadStart, loadavgEnd: loadavg())
            print("  Refract (\(label)): \(fmt(p.imagesPerSecond, 1)) images/s; per step mean \(fmt(p.meanStepSeconds, 4)) s, "
                  + "median \(fmt(p.medianStepSeconds, 4)) s, min \(fmt(intervals.min() ?? .nan, 4)) s, max \(fmt(intervals.max() ?? .nan, 4)) s"
                  + (ckpt.map { "; the checkpoint at step \(checkpointAt!.step): \(fmt($0, 2)) s" } ?? "")
                  + "; whole AlignRun.run \(fmt(runSeconds, 1)) s; loss \(fmt(p.firstLoss, 4)) → \(fmt(p.lastLoss, 4))")
            return p
        }
        let standard = try phase("no checkpoint", checkpointEvery: 1_000_000_000)

        var out = AlignBenchResults(requestedImages: requested, images: n, reducedBecause: reduced, components: components,
                                    width: width, clipWidth: clipWidth, batch: batch, threads: threads, shardSize: shardSize,
                                    storeBytes: storeBytes, writeSeconds: writeSeconds, verifySeconds: verifySeconds,
                                    batchReadSeconds: batchRead, trainCallSeconds: trainCall,
                                    refract: standard, refractImagesPerSecond: standard.imagesPerSecond,
                                    targetRatio: targetRatio, loadavgStart: loadStart)

        // 4. PyTorch, same run, targets, steps and threads.
        if !reference {
            out.referenceSkipped = "--no-reference"
            print("  PyTorch reference: skipped (--no-reference)")
        } else if let py = findPython(explicit, importing: "torch, numpy", includeRepositoryVenv: true) {
            print("  PyTorch reference (scripts/bench_align_reference.py, the official loop) via \(py), \(threads) threads ...")
            do {
                let ref = try runReference(python: py, run: runURL, targets: embeddings, threads: threads, steps: steps)
                out.reference = ref
                print("  PyTorch \(ref.torch ?? "?") (cpu_capability=\(ref.cpuCapability ?? "?"), threads=\(ref.threads.map(String.init) ?? "?")): "
                      + "\(fmt(ref.imagesPerSecond, 1)) images/s; per step mean \(fmt(ref.meanStepSeconds, 4)) s, "
                      + "median \(fmt(ref.medianStepSeconds, 4)) s; peak RSS \(ref.peakRSSKiB.map { mib($0 * 1024) } ?? "n/a")"
                      + "; loss \(ref.firstLoss.map { fmt($0, 4) } ?? "?") → \(ref.lastLoss.map { fmt($0, 4) } ?? "?")")
            } catch {
                out.referenceSkipped = "\(error)"
                print("  PyTorch reference failed: \(error)")
            }
        } else {
            out.referenceSkipped = "no Python with torch and numpy"
            print("  PyTorch reference: skipped (no Python with torch and numpy; set REFRACT_BENCH_PYTHON or --python)")
        }

        // Refract again, so the two Refract phases bracket the reference in time (a shared machine's
        // load moves during a run); the ratio uses their mean.
        if let ref = out.reference {
            let after = try phase("no checkpoint, after PyTorch", checkpointEvery: 1_000_000_000)
            out.refractAfter = after
            out.refractImagesPerSecond = (standard.imagesPerSecond + after.imagesPerSecond) / 2
            out.ratioVsPyTorch = out.refractImagesPerSecond / ref.imagesPerSecond
        }

        // 5. Refract with one checkpoint in the timed window.
        out.refractWithCheckpoint = try phase("one checkpoint", checkpointEvery: warmupSteps + steps / 2)

        // 6. Peak memory of the real command.
        do {
            out.cli = try cliMemory(run: runURL, embeddings: embeddings, dir: dir, threads: threads, refract: explicitRefract)
        } catch {
            out.cliSkipped = "\(error)"
            print("  peak memory of refract align: skipped (\(error))")
        }

        // Summary.
        print("  summary (\(threads) threads, \(n) images):")
        if let ref = out.reference, let ratio = out.ratioVsPyTorch {
            print("    images/s: Refract \(fmt(out.refractImagesPerSecond, 1)) (mean of the phases before and after PyTorch) "
                  + "vs PyTorch \(fmt(ref.imagesPerSecond, 1))  "
                  + "(\(fmt(ratio))x; target ≥ \(fmt(targetRatio, 1))x) " + (ratio >= targetRatio ? "[met]" : "[NOT met]"))
            let all = standard.stepSeconds + (out.refractAfter?.stepSeconds ?? [])
            let mean = Double(batch) / out.refractImagesPerSecond
            print("    seconds per step: mean Refract \(fmt(mean, 4)) vs PyTorch \(fmt(ref.meanStepSeconds, 4)); "
                  + "median \(fmt(median(all), 4)) vs \(fmt(ref.medianStepSeconds, 4)) "
                  + "(\(fmt(ref.medianStepSeconds / median(all)))x by medians)")
        }
        if let c = out.cli {
            print("    peak RSS of refract align \(mib(c.peakRSSBytes)); maps \(mib(c.mapsBytes)); peak − maps \(mib(c.peakMinusMapsBytes)) "
                  + "against \(mib(c.budgetBytes)) " + (c.withinBudget ? "[within budget]" : "[OVER budget]"))
        }
        out.loadavgEnd = loadavg()
        print("  load average at end: \(loadString(out.loadavgEnd))")
        return out
    }

    static func runReference(python: String, run: URL, targets: URL, threads: Int, steps: Int) throws -> AlignReferenceResult {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/bench_align_reference.py")
        guard FileManager.default.fileExists(atPath: script.path) else { throw BenchError("no \(script.path)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [python, script.path, "--run", run.path, "--targets", targets.path, "--threads", "\(threads)",
                       "--warmup", "\(warmupSteps)", "--steps", "\(steps)", "--batch", "\(batch)"]
        let outPipe = Pipe()
        p.standardOutput = outPipe
        try p.run()
        let data = outPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let j = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let ips = j["images_per_second"] as? Double, let mean = j["mean_step_seconds"] as? Double,
              let med = j["median_step_seconds"] as? Double else {
            throw BenchError("the reference exited with status \(p.terminationStatus) and no result")
        }
        return AlignReferenceResult(python: python, torch: j["torch"] as? String, cpuCapability: j["cpu_capability"] as? String,
                                    threads: j["threads"] as? Int, meanStepSeconds: mean, medianStepSeconds: med,
                                    stepSeconds: (j["step_seconds"] as? [Double]) ?? [], imagesPerSecond: ips,
                                    peakRSSKiB: j["peak_rss_kib"] as? Int, rssBeforeTrainingKiB: j["rss_before_training_kib"] as? Int,
                                    openSeconds: j["open_seconds"] as? Double, firstLoss: j["first_loss"] as? Double,
                                    lastLoss: j["last_loss"] as? Double)
    }

    static func cliMemory(run: URL, embeddings: URL, dir: URL, threads: Int, refract explicit: String?) throws -> AlignCLIMemory {
        let me = MemoryBench.selfPath()
        let refract = explicit ?? URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("refract").path
        guard FileManager.default.isExecutableFile(atPath: refract) else {
            throw BenchError("no refract binary at \(refract); build it with `swift build -c release --product refract` "
                             + "(same build folder) or pass --refract PATH")
        }
        let output = dir.appendingPathComponent("align-cli"), log = dir.appendingPathComponent("align-cli.log")
        let tail = ["align", "--max-steps", "\(cliSteps)", "--checkpoint-every", "\(cliCheckpointEvery)", "--threads", "\(threads)"]
        let command = [refract, "align", "--run", run.path, "--clip-embeddings", embeddings.path, "--output", output.path] + tail.dropFirst()
        let shown = "refract align --run RUN --clip-embeddings E.npy --output ALIGN " + tail.dropFirst().joined(separator: " ")
        print("  running: \(shown) (peak memory; default held-out share: 10%, at most 5000 images) ...")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: me)
        p.arguments = [ChildMeasure.flag, log.path, "--"] + command
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let logText = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let logTail = logText.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).suffix(6).joined(separator: "\n    ")
        guard p.terminationStatus == 0, let m = try? JSONDecoder().decode(ChildMeasure.Report.self, from: data) else {
            throw BenchError("could not measure refract align (measurer status \(p.terminationStatus)); its output:\n    \(logTail)")
        }
        guard m.exitStatus == 0 else { throw BenchError("refract align failed (\(m.statusDescription)); its output:\n    \(logTail)") }
        let peak = m.maxRSSKiB * 1024, maps = components * width * clipWidth * 4
        let r = AlignCLIMemory(command: shown, exitStatus: m.exitStatus, peakRSSBytes: peak, mapsBytes: maps,
                               peakMinusMapsBytes: peak - maps, budgetBytes: budgetBytes, withinBudget: peak - maps <= budgetBytes,
                               measurerRSSBytes: m.measurerMaxRSSKiB * 1024, wallSeconds: m.wallSeconds, userSeconds: m.userSeconds,
                               systemSeconds: m.systemSeconds, maxSteps: cliSteps, checkpointEvery: cliCheckpointEvery)
        if !logTail.isEmpty { print("    refract: \(logTail)") }
        print("  refract align: peak RSS \(mib(peak)); maps \(mib(maps)) (\(fmt(Double(maps) / 1e6, 1)) MB); peak − maps "
              + "\(mib(peak - maps)) against \(mib(budgetBytes)) " + (r.withinBudget ? "[within budget]" : "[OVER budget]")
              + "; \(fmt(m.wallSeconds, 1)) s wall (user \(fmt(m.userSeconds, 1)) s, sys \(fmt(m.systemSeconds, 1)) s); "
              + "measurer's own peak \(mib(r.measurerRSSBytes))")
        return r
    }
}
