// Memory section: peak resident memory of a real `refract decompose` run over N images.
//
// In a temporary directory it writes (a) a random-weight ViT-B/16 checkpoint in OpenCLIP's layout
// (open_clip_config.json as OpenCLIP's hub export writes it, open_clip_model.safetensors with every
// tensor the loader takes), (b) a few dozen distinct synthetic 256x256 PNGs and a CSV list (`path`
// column) of N rows cycling over them, then (c) runs the release `refract` binary on them:
//
//   refract decompose --model DIR --output RUN LIST.csv --threads T
//
// and reports its peak RSS (ru_maxrss from wait4) against the issue's budget: the weights file
// plus 1 GiB.
//
// Why an intermediate process: Linux charges a new program's ru_maxrss with the high-water RSS of
// the address space it replaced at exec. A child started by posix_spawn (vfork) or fork from this
// process, which has held the weights it wrote (and the towers of earlier sections), would report
// at least this process's peak. So this binary re-executes itself as a small measuring process
// (`ChildMeasure`: a fresh address space of a few MB), which starts `refract`, waits for it with
// wait4 and prints its rusage as JSON.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractTensor
import RefractTimm
#if canImport(Glibc)
import Glibc
#endif

struct MemoryResults: Codable {
    var images: Int
    var distinctImages: Int
    var imagePixels: Int
    var threads: Int
    var command: String
    var exitStatus: Int
    /// ru_maxrss of the `refract decompose` process.
    var peakRSSBytes: Int
    var weightsFileBytes: Int
    var peakMinusWeightsBytes: Int
    var budgetBytes: Int
    var withinBudget: Bool
    /// Peak RSS of the measuring process's address space when it started `refract` (VmHWM), which
    /// Linux carries into the child's ru_maxrss at exec: a floor for the figure.
    var measurerRSSBytes: Int
    var wallSeconds: Double
    var userSeconds: Double
    var systemSeconds: Double
    var imagesPerSecond: Double
    /// Size of the run directory written (manifest + shards).
    var runBytes: Int
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

enum MemoryBench {
    /// The issue's figure: peak memory for 2,000 images.
    static let issueImages = 2000
    static let distinctImages = 32
    static let imageSide = 256
    static let budgetBytes = 1 << 30

    /// open_clip_config.json for ViT-B-16 as OpenCLIP's hub export (`save_config_for_hf`) writes
    /// it: the model config of open_clip's ViT-B-16.json and mean, std, interpolation, resize_mode.
    static let openCLIPConfig = """
        {
          "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {
              "image_size": 224,
              "layers": 12,
              "width": 768,
              "patch_size": 16
            },
            "text_cfg": {
              "context_length": 77,
              "vocab_size": 49408,
              "width": 512,
              "heads": 8,
              "layers": 12
            }
          },
          "preprocess_cfg": {
            "mean": [
              0.48145466,
              0.4578275,
              0.40821073
            ],
            "std": [
              0.26862954,
              0.26130258,
              0.27577711
            ],
            "interpolation": "bicubic",
            "resize_mode": "shortest"
          }
        }
        """

    /// Writes a random-weight ViT-B/16 OpenCLIP checkpoint into `dir`; returns the weights file's size.
    static func writeCheckpoint(_ dir: URL) throws -> Int {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data(openCLIPConfig.utf8).write(to: dir.appendingPathComponent("open_clip_config.json"))
        // Every tensor `CLIP(location:)` takes: both towers (OpenCLIP layout) and the logit scale.
        let recorder = KeyRecorder()
        _ = try CLIPVisionTower(weights: recorder, layout: .openCLIP, architecture: .vitB16)
        _ = try CLIPTextTower(weights: recorder, layout: .openCLIP, architecture: .vitB16)
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        let random = RandomWeights(seed: 7)
        for (key, shape) in recorder.keys {
            try writer.add(key, try random.take(key, shape: shape))
        }
        try writer.add("logit_scale", float32: [Float(Foundation.log(100.0))], shape: [])
        let weights = dir.appendingPathComponent("open_clip_model.safetensors")
        try writer.write(to: weights)
        return try fileSize(weights)
    }

    /// Writes `distinctImages` synthetic PNGs (smooth colour fields with seeded noise and a few
    /// rectangles, all different) into `dir`; returns their paths relative to `dir`'s parent.
    static func writeImages(_ dir: URL) throws -> [String] {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let s = imageSide
        var names = [String]()
        for k in 0..<distinctImages {
            var state = UInt32(2_654_435_761 &* UInt32(k + 1))
            func next() -> UInt32 { state = state &* 1_664_525 &+ 1_013_904_223; return state >> 8 }
            let base = (0..<3).map { _ in Double(next() % 256) }
            let slope = (0..<3).map { _ in Double(Int(next() % 200) - 100) / 100 }
            var pixels = [UInt8](repeating: 0, count: s * s * 3)
            for y in 0..<s {
                for x in 0..<s {
                    for c in 0..<3 {
                        let v = base[c] + slope[c] * Double(c == 1 ? y : x) + Double(next() % 48) - 24
                        pixels[(y * s + x) * 3 + c] = UInt8(max(0, min(255, v)))
                    }
                }
            }
            for _ in 0..<4 {
                let x0 = Int(next() % UInt32(s - 40)), y0 = Int(next() % UInt32(s - 40))
                let w = 20 + Int(next() % 100), h = 20 + Int(next() % 100)
                let colour = (0..<3).map { _ in UInt8(next() % 256) }
                for y in y0..<min(s, y0 + h) {
                    for x in x0..<min(s, x0 + w) {
                        for c in 0..<3 { pixels[(y * s + x) * 3 + c] = colour[c] }
                    }
                }
            }
            let name = String(format: "image-%02d.png", k)
            try PNGEncoder.write(RGBImage(width: s, height: s, pixels: pixels), to: dir.appendingPathComponent(name))
            names.append("\(dir.lastPathComponent)/\(name)")
        }
        return names
    }

    static func fileSize(_ url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue ?? 0
    }

    static func directorySize(_ url: URL) -> Int {
        guard let e = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
        var total = 0
        for case let f as URL in e { total += (try? f.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0 }
        return total
    }

    /// This executable's path (/proc/self/exe where there is one).
    static func selfPath() -> String {
        if let p = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return p }
        return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
    }

    /// `timmArchitecture`: measure a random-weight timm checkpoint of that architecture instead of CLIP ViT-B/16.
    static func run(images n: Int, threads: Int, refract explicit: String?, timmArchitecture: String? = nil) throws -> MemoryResults {
        let me = selfPath()
        let refract = explicit ?? URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("refract").path
        guard FileManager.default.isExecutableFile(atPath: refract) else {
            throw BenchError("memory section: no refract binary at \(refract); build it with "
                             + "`swift build -c release --product refract` (same build folder) or pass --refract PATH")
        }
        print("\nPeak memory of `refract decompose`, \(timmArchitecture.map { "\($0) (random weights, timm layout)" } ?? "ViT-B-16 (random weights, OpenCLIP layout)"), \(n) images, \(threads) threads")
        let tmp = FileManager.default.temporaryDirectory
            .appendingPathComponent("refract-bench-memory-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }

        let t0 = now()
        let model = tmp.appendingPathComponent("model")
        let weightsBytes = try timmArchitecture.map { try TimmModel.writeRandomCheckpoint(architecture: $0, to: model, seed: 5) }
            ?? writeCheckpoint(model)
        let names = try writeImages(tmp.appendingPathComponent("images"))
        let list = tmp.appendingPathComponent("list.csv")
        try Data((["path"] + (0..<n).map { names[$0 % names.count] }).joined(separator: "\n").appending("\n").utf8)
            .write(to: list)
        print("  wrote \(tmp.path): checkpoint (\(fmt(Double(weightsBytes) / 1e6, 1)) MB), \(names.count) PNGs "
              + "\(imageSide)x\(imageSide), list of \(n) rows (\(fmt(now() - t0, 1)) s)")

        let runDir = tmp.appendingPathComponent("run")
        let log = tmp.appendingPathComponent("refract.log")
        let command = [refract, "decompose", "--model", model.path, "--output", runDir.path, list.path, "--threads", "\(threads)"]
        print("  running: refract decompose --model DIR --output RUN LIST.csv --threads \(threads) ...")
        let loadStart = loadavg()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: me)
        p.arguments = [ChildMeasure.flag, log.path, "--"] + command
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let loadEnd = loadavg()
        let logText = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let logTail = logText.split(separator: "\n", omittingEmptySubsequences: true).suffix(5).joined(separator: "\n    ")
        guard p.terminationStatus == 0, let m = try? JSONDecoder().decode(ChildMeasure.Report.self, from: data) else {
            throw BenchError("memory section: could not measure refract (measurer status \(p.terminationStatus)); refract's output:\n    \(logTail)")
        }
        guard m.exitStatus == 0 else {
            throw BenchError("memory section: refract decompose failed (\(m.statusDescription)); its output:\n    \(logTail)")
        }
        let peak = m.maxRSSKiB * 1024
        let r = MemoryResults(images: n, distinctImages: names.count, imagePixels: imageSide, threads: threads,
                              command: "refract decompose --model DIR --output RUN LIST.csv --threads \(threads)",
                              exitStatus: m.exitStatus, peakRSSBytes: peak, weightsFileBytes: weightsBytes,
                              peakMinusWeightsBytes: peak - weightsBytes, budgetBytes: budgetBytes,
                              withinBudget: peak - weightsBytes <= budgetBytes,
                              measurerRSSBytes: m.measurerMaxRSSKiB * 1024, wallSeconds: m.wallSeconds,
                              userSeconds: m.userSeconds, systemSeconds: m.systemSeconds,
                              imagesPerSecond: Double(n) / m.wallSeconds, runBytes: directorySize(runDir),
                              loadavgStart: loadStart, loadavgEnd: loadEnd)
        if !logTail.isEmpty { print("    refract: \(logTail)") }
        func mib(_ b: Int) -> String { fmt(Double(b) / Double(1 << 20), 1) + " MiB" }
        print("  peak RSS \(mib(peak)); weights file \(mib(weightsBytes)); peak − weights \(mib(peak - weightsBytes)) "
              + "against a budget of \(mib(budgetBytes)) " + (r.withinBudget ? "[within budget]" : "[OVER budget]"))
        print("  whole run \(fmt(m.wallSeconds, 1)) s wall (user \(fmt(m.userSeconds, 1)) s, sys \(fmt(m.systemSeconds, 1)) s): "
              + "\(fmt(r.imagesPerSecond)) images/s including model load, hashing, decoding and writing \(mib(r.runBytes))")
        print("  (measuring process's own peak, a floor for the figure: \(mib(r.measurerRSSBytes)); "
              + "load average \(loadString(loadStart)) → \(loadString(loadEnd)))")
        return r
    }
}

// MARK: Measuring process

/// `refract-bench __measure-child LOG -- PROGRAM ARGS...`: starts PROGRAM with stdout and stderr
/// going to LOG, waits for it with wait4 and prints one JSON `Report` on stdout.
enum ChildMeasure {
    static let flag = "__measure-child"

    struct Report: Codable {
        var exitStatus: Int
        var signal: Int
        var maxRSSKiB: Int
        var measurerMaxRSSKiB: Int
        var wallSeconds: Double
        var userSeconds: Double
        var systemSeconds: Double
        var statusDescription: String { signal != 0 ? "killed by signal \(signal)" : "exit status \(exitStatus)" }
    }

    static func main(_ args: [String]) -> Int32 {
        guard args.count >= 3, args[1] == "--" else {
            FileHandle.standardError.write(Data("usage: refract-bench \(flag) LOG -- PROGRAM ARGS...\n".utf8))
            return 2
        }
        let log = args[0], argv = Array(args.dropFirst(2))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        // What a child inherits at exec is this address space's high-water RSS (VmHWM), not this
        // process's ru_maxrss (which itself carries the parent's peak over from our own exec).
        let ownHWM = vmHWMKiB() ?? 0
        var pid: pid_t = 0
        let start = now()
        let rc = posix_spawn(&pid, argv[0], &actions, nil, &cArgs, environ)
        if rc != 0 {
            FileHandle.standardError.write(Data("cannot start \(argv[0]): \(String(cString: strerror(rc)))\n".utf8))
            return 1
        }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            if errno != EINTR {
                FileHandle.standardError.write(Data("wait4 failed: \(String(cString: strerror(errno)))\n".utf8))
                return 1
            }
        }
        let wall = now() - start
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        let signal = Int(status & 0x7f)
        let report = Report(exitStatus: signal == 0 ? Int((status >> 8) & 0xff) : -1, signal: signal,
                            maxRSSKiB: Int(usage.ru_maxrss), measurerMaxRSSKiB: ownHWM,
                            wallSeconds: wall, userSeconds: seconds(usage.ru_utime), systemSeconds: seconds(usage.ru_stime))
        guard let data = try? JSONEncoder().encode(report) else { return 1 }
        FileHandle.standardOutput.write(data)
        return 0
    }

    /// VmHWM of this process in KiB (Linux), the peak RSS of its current address space.
    static func vmHWMKiB() -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return nil }
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
    }
}
