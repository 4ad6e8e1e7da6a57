// refract-bench: throughput of Refract's CLIP towers and of BLAS on this machine, with the Python
// reference (open_clip) measured in the same run when a Python with torch + open_clip is found;
// the cost of the exact decomposition against the plain tower (interleaved in one run) and against
// the official approach; and the peak memory of a `refract decompose` run over a dataset.
//
//   swift run -c release refract-bench [--quick] [--threads N] [--python PATH] [--no-reference] [--json FILE]
//                                      [--only SECTION,...] [--rounds N] [--memory-images N] [--refract PATH]
//                                      [--textspan-images N]
//
// Sections: peak (FMA loop), sgemm (ViT shapes), image (image towers), text (text tower),
// decompose (ViT-B/16 `CLIPDecomposer` vs the plain tower, interleaved; official approach in
// Python), memory (peak RSS of `refract decompose` over N images; only with --memory-images or
// --only memory), textspan (`TextSpan.run` on one head vs NumPy on the same data, and a
// ViT-L/14-sized head; only with --only textspan; TextSpanBench.swift), textspan-run (`TextSpanRun.run`
// on all 64 heads of a synthetic ViT-L/14-sized run of --textspan-images N images written to a
// temporary directory, default 50000, about 4.9 GB; only with --only textspan-run;
// TextSpanRunBench.swift), align (`AlignRun.run` on a synthetic ViT-B-sized run of --align-images N
// images, default 50000, about 5.1 GB, against a PyTorch implementation of the official loop, and the
// peak memory of `refract align`; only with --only align; AlignBench.swift), score (`ComponentScoring.score`
// over synthetic 50,000-image runs, CLIP layout and timm through an alignment; only with --only score;
// ScoreBench.swift), merge (`StoreMerge.merge` of 4 parts of a synthetic ViT-B/16-shaped run, hard links
// and --copy, against `cp -r`; only with --only merge; MergeBench.swift), serve (the explorer's start-up
// pass and ranking by a text against refract heads' pass; only with --only serve; ServeBench.swift). Default: every section
// but memory, textspan, textspan-run and align.
// `--only decompose` takes a few minutes.
// The issue's memory figure is `--memory-images 2000` (about 10 minutes on 2 cores; needs the
// `refract` product built next to refract-bench: `swift build -c release --product refract`).

import CRefractBench
import Foundation
import RefractCLIP
import RefractTensor
import RefractTokenizer

// MARK: Arguments

enum Section: String, CaseIterable, Codable {
    case peak, sgemm, image, text, decompose, memory, textspan
    case textspanRun = "textspan-run"
    case segment, retrieve, hash, timm, align, score, merge, serve
    static let defaults: [Section] = [.peak, .sgemm, .image, .text, .decompose]
}

struct Arguments {
    static let usage = """
        usage: refract-bench [--quick] [--threads N] [--python PATH] [--no-reference] [--json FILE]
                             [--only SECTION,...] [--rounds N] [--memory-images N] [--refract PATH]
                             [--textspan-images N] [--image-cases b16-1,b16-8,l14-1,l14-8]
                             [--align-images N] [--align-steps S]
          --only             comma-separated sections: \(Section.allCases.map(\.rawValue).joined(separator: ", "))
                             (default: all but memory, textspan, textspan-run and align; --only decompose runs in a few minutes)
          --rounds N         minimum interleaved rounds per batch size in the decompose section
          --memory-images N  also run the memory section over N images (the issue's figure: 2000)
          --refract PATH     the refract binary for the memory section (default: next to refract-bench)
          --memory-model A   the memory section on a random timm checkpoint of architecture A (default: CLIP ViT-B/16)
          --textspan-images N  images of the textspan-run section's synthetic run (default 50000, ~4.9 GB on disk)
          --image-cases L    image-tower cases to run (default all: b16-1,b16-8,l14-1,l14-8)
          --align-images N   images of the align section's synthetic run (default 50000, ~5.1 GB on disk)
          --score-images N   images of the score section's synthetic runs (default 50000, ~10 GB each, one at a time)
          --align-steps S    timed training steps of the align section, after 3 warm-up steps (default 30)
          --merge-images N   images of the merge section's synthetic run (default 8000, ~1.2 GB in 4 parts)
          --serve-images N   images of the serve section's synthetic ViT-B/16 run (default 10000, ~1.6 GB)
        """

    var quick = false
    var threads: Int?
    var python: String?
    var reference = true
    var jsonPath: String?
    var sections = Section.defaults
    var rounds: Int?
    var memoryImages: Int?
    var refract: String?
    var memoryModel: String?
    var textspanImages = TextSpanRunBench.defaultImages
    var alignImages = AlignBench.defaultImages
    var scoreImages = ScoreBench.defaultImages
    var mergeImages = 8000
    var serveImages = 10_000
    var alignSteps = AlignBench.defaultSteps
    /// Image-tower cases to run ("b16-1", "b16-8", "l14-1", "l14-8"); nil: all.
    var imageCases: Set<String>?

    init(_ argv: [String]) throws {
        var it = argv.dropFirst().makeIterator()
        var only: [Section]?
        func int(_ flag: String) throws -> Int {
            guard let s = it.next(), let v = Int(s), v > 0 else { throw BenchError("\(flag) needs a positive integer") }
            return v
        }
        while let a = it.next() {
            switch a {
            case "--quick": quick = true
            case "--threads": threads = try int(a)
            case "--python": python = it.next()
            case "--no-reference": reference = false
            case "--json": jsonPath = it.next()
            case "--only":
                guard let list = it.next() else { throw BenchError("--only needs a list of sections") }
                only = try list.split(separator: ",").map {
                    let name = $0.trimmingCharacters(in: .whitespaces)
                    guard let s = Section(rawValue: name) else {
                        throw BenchError("unknown section '\(name)' (known: \(Section.allCases.map(\.rawValue).joined(separator: ", ")))")
                    }
                    return s
                }
            case "--rounds": rounds = try int(a)
            case "--memory-images": memoryImages = try int(a)
            case "--refract": refract = it.next()
            case "--memory-model": memoryModel = it.next()
            case "--textspan-images": textspanImages = try int(a)
            case "--align-images": alignImages = try int(a)
            case "--score-images": scoreImages = try int(a)
            case "--merge-images": mergeImages = try int(a)
            case "--serve-images": serveImages = try int(a)
            case "--align-steps": alignSteps = try int(a)
            case "--image-cases":
                guard let list = it.next() else { throw BenchError("--image-cases needs a list such as b16-1,l14-8") }
                imageCases = Set(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            case "-h", "--help":
                print(Self.usage)
                exit(0)
            default: throw BenchError("unknown argument \(a)\n\(Self.usage)")
            }
        }
        sections = only ?? Section.defaults
        if memoryImages != nil && !sections.contains(.memory) { sections.append(.memory) }
        if sections.contains(.memory) && memoryImages == nil { memoryImages = MemoryBench.issueImages }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ s: String) { description = s }
}

// MARK: Timing

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Median seconds per call of `body` after one warm-up, repeated for at least `minSeconds`.
func measure(minSeconds: Double, minRuns: Int = 3, _ body: () -> Void) -> Double {
    body()
    var times = [Double]()
    let start = now()
    while times.count < minRuns || now() - start < minSeconds {
        let t0 = now()
        body()
        times.append(now() - t0)
    }
    times.sort()
    return times[times.count / 2]
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    if s.isEmpty { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// The 1, 5 and 15 minute load averages (/proc/loadavg), or nil where there is none.
func loadavg() -> [Double]? {
    guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return nil }
    return s.split(separator: " ").prefix(3).compactMap { Double($0) }
}

func loadString(_ l: [Double]?) -> String { l.map { $0.map { fmt($0) }.joined(separator: " ") } ?? "n/a" }

// MARK: Sections

struct Results: Codable {
    var blas: BLASInfo
    var cores: Int
    var threads: Int
    var sections: [Section]
    var peakGFLOPS: Double?
    var vectorWidth: Int?
    /// The widest vectors' peak, when `peakGFLOPS` is a narrower kernel set's.
    var widestPeakGFLOPS: Double?
    var sgemm: [String: Double] = [:]
    var imagesPerSecond: [String: Double] = [:]
    var promptsPerSecond: Double?
    var decompose: DecomposeResults?
    var memory: MemoryResults?
    var textspan: TextSpanBenchResults?
    var textspanRun: TextSpanRunBenchResults?
    var segment: SegmentBenchResults?
    var retrieve: RetrieveBenchResults?
    var hash: HashBenchResults?
    var timm: TimmBenchResults?
    var align: AlignBenchResults?
    var score: ScoreBenchResults?
    var merge: MergeBenchResults?
    var serve: ServeBenchResults?
    var reference: [String: Double]?
    var referenceInfo: [String: String]?
    var loadavgStart: [Double]?
    var loadavgEnd: [Double]?
}

/// FP32 peak of an FMA loop on `threads` cores with vectors at most `maxWidth` floats wide:
/// (GFLOP/s, the width used).
func peakGFLOPS(threads: Int, seconds: Double, maxWidth: Int = 16) -> (Double, Int) {
    var width: Int32 = 0
    _ = refract_peak_fma_width(1000, Int32(maxWidth), &width)
    let iterations = 20_000_000
    let t = measure(minSeconds: seconds, minRuns: 2) {
        Parallel.forEach(threads) { _ in
            var w: Int32 = 0
            _ = refract_peak_fma_width(iterations, Int32(maxWidth), &w)
        }
    }
    let flopsPerThread = Double(iterations) * 12 * Double(width) * 2
    return (flopsPerThread * Double(threads) / t / 1e9, Int(width))
}

/// The vector width (floats) of an OpenBLAS kernel set's sgemm kernels, where known: the peak
/// its shares are measured against.
func kernelVectorWidth(core: String) -> Int? {
    switch core.lowercased() {
    case "skylakex", "cooperlake", "sapphirerapids": return 16
    case "haswell", "zen", "sandybridge", "excavator", "steamroller", "piledriver", "bulldozer": return 8
    default: return nil
    }
}

func sgemmGFLOPS(m: Int, n: Int, k: Int, seconds: Double) -> Double {
    let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
    var c = [Float](repeating: 0, count: m * n)
    let t = measure(minSeconds: seconds) {
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.sgemm(.none, .transpose, m: m, n: n, k: k, a: ap.baseAddress!, lda: k,
                               b: bp.baseAddress!, ldb: k, c: cp.baseAddress!, ldc: n)
                }
            }
        }
    }
    return 2 * Double(m) * Double(n) * Double(k) / t / 1e9
}

func randomImages(_ n: Int, size: Int) -> [Tensor] {
    var state: UInt32 = 12345
    return (0..<n).map { _ in
        Tensor(shape: [3, size, size], data: (0..<(3 * size * size)).map { _ in
            state = state &* 1664525 &+ 1013904223
            return Float(state >> 8) / Float(1 << 24) * 4 - 2
        })
    }
}

// MARK: Reference (open_clip)

/// The first Python among --python, REFRACT_BENCH_PYTHON, (optionally) the repository's .venv
/// and python3 that can import `modules`.
func findPython(_ explicit: String?, importing modules: String = "torch, open_clip",
                includeRepositoryVenv: Bool = false) -> String? {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let venv = repo.appendingPathComponent(".venv/bin/python").path
    let candidates = [explicit, ProcessInfo.processInfo.environment["REFRACT_BENCH_PYTHON"],
                      includeRepositoryVenv && FileManager.default.isExecutableFile(atPath: venv) ? venv : nil,
                      "python3"].compactMap { $0 }
    for py in candidates {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [py, "-c", "import \(modules)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { continue }
        p.waitUntilExit()
        if p.terminationStatus == 0 { return py }
    }
    return nil
}

func runReference(python: String, threads: Int, quick: Bool, cases: [String]) -> [String: Any]? {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/bench_reference.py")
    guard FileManager.default.fileExists(atPath: script.path) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [python, script.path, "--threads", "\(threads)", "--json", "--only", cases.joined(separator: ",")]
        + (quick ? ["--quick"] : [])
    let out = Pipe()
    p.standardOutput = out
    do { try p.run() } catch { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    // A non-zero status means some case failed; the JSON still holds the ones that ran.
    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
}

// MARK: Main

/// setvbuf(stdout, _IOLBF). `stdout` is a C global Swift 6 will not read directly, so its value is
/// looked up by name.
func lineBufferStandardOutput() {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "stdout") else { return }
    let file = symbol.assumingMemoryBound(to: UnsafeMutablePointer<FILE>?.self).pointee
    setvbuf(file, nil, _IOLBF, 0)
}

func fmt(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }

func main() throws {
    let args = try Arguments(CommandLine.arguments)
    try BLAS.load()
    if let t = args.threads { BLAS.setThreads(t) }
    let threads = BLAS.threads
    let seconds = args.quick ? 1.0 : 4.0
    let run = Set(args.sections)
    var r = Results(blas: BLAS.info, cores: ProcessInfo.processInfo.activeProcessorCount, threads: threads,
                    sections: Section.allCases.filter(run.contains))
    r.loadavgStart = loadavg()
    print("Refract benchmark (release build)")
    for (label, value) in r.blas.reportLines { print("\(label): \(value)") }
    print("CPU cores: \(r.cores); load average at start: \(loadString(r.loadavgStart))")
    print("Sections: \(r.sections.map(\.rawValue).joined(separator: ", "))")

    if run.contains(.peak) {
        let (peak, width) = peakGFLOPS(threads: threads, seconds: seconds)
        (r.peakGFLOPS, r.vectorWidth) = (peak, width)
        print("\nFP32 peak (FMA loop, \(width)-wide, \(threads) threads): \(fmt(peak, 1)) GFLOP/s")
        // A kernel set narrower than the CPU's widest vectors (Haswell on an AVX-512 CPU) is
        // measured against the peak of its own width.
        if let kw = kernelVectorWidth(core: r.blas.coreName), kw < width {
            let (narrow, w) = peakGFLOPS(threads: threads, seconds: seconds, maxWidth: kw)
            (r.peakGFLOPS, r.vectorWidth, r.widestPeakGFLOPS) = (narrow, w, peak)
            print("FP32 peak at the \(r.blas.coreName) kernels' width (\(w)-wide): \(fmt(narrow, 1)) GFLOP/s; shares below are of this")
        }
        if let p = r.peakGFLOPS {
            print("ViT-B/16 image limit at this peak (35.1 GFLOP per image): \(fmt(p / 35.1)) images/s")
        }
    }

    if run.contains(.sgemm) {
        print("\nsgemm on ViT shapes (batch 8), GFLOP/s" + (r.peakGFLOPS != nil ? " and share of peak" : ""))
        let shapes: [(String, Int, Int, Int)] = [
            ("B/16 qkv  1576x2304x768", 8 * 197, 2304, 768), ("B/16 fc1  1576x3072x768", 8 * 197, 3072, 768),
            ("B/16 fc2  1576x768x3072", 8 * 197, 768, 3072), ("L/14 fc1  2056x4096x1024", 8 * 257, 4096, 1024),
        ]
        for (name, m, n, k) in shapes {
            let g = sgemmGFLOPS(m: m, n: n, k: k, seconds: seconds / 2)
            r.sgemm[name] = g
            print("  \(name): \(fmt(g, 1))" + (r.peakGFLOPS.map { "  (\(fmt(100 * g / $0, 0))% of peak)" } ?? ""))
        }
    }

    if run.contains(.image) {
        print("\nImage tower, 224 px, random weights (images/s)")
        for (name, arch, key) in [("ViT-B-16", CLIPArchitecture.vitB16, "b16"), ("ViT-L-14", CLIPArchitecture.vitL14, "l14")] {
            let batches = [1, 8].filter { args.imageCases?.contains("\(key)-\($0)") ?? true }
            if batches.isEmpty { continue }
            let tower = try CLIPVisionTower(weights: RandomWeights(seed: 1), architecture: arch)
            for b in batches {
                if args.quick && args.imageCases == nil && name == "ViT-L-14" && b == 8 { continue }
                let images = randomImages(b, size: 224)
                let t = measure(minSeconds: seconds, minRuns: 2) { _ = tower(images) }
                r.imagesPerSecond["\(name) batch \(b)"] = Double(b) / t
                // Share of the peak-derived limit: 35.1 GFLOP per ViT-B/16 image, 162 per ViT-L/14 image.
                let gflop = name == "ViT-B-16" ? 35.1 : 162.0
                print("  \(name) batch \(b): \(fmt(Double(b) / t))"
                      + (r.peakGFLOPS.map { "  (\(fmt(100 * Double(b) / t * gflop / $0, 0))% of the peak-derived limit)" } ?? ""))
            }
        }
    }

    if run.contains(.text) {
        print("\nText tower (ViT-B-16 shapes), 100 short prompts")
        let textTower = try CLIPTextTower(weights: RandomWeights(seed: 2), architecture: .vitB16)
        let tokenizer = try CLIPTokenizer.openCLIPDefault()
        let classes = ["dog", "cat", "car", "tree", "house", "bird", "boat", "chair", "apple", "guitar"]
        let prompts = (0..<100).map { "a photo of a \(classes[$0 % 10]) number \($0)." }
        let t = measure(minSeconds: seconds) {
            let tokens = tokenizer.tokenize(prompts)
            _ = textTower(tokens: tokens, readout: tokens.map(CLIP.readoutPosition))
        }
        r.promptsPerSecond = 100 / t
        print("  prompts/s (incl. tokenization): \(fmt(100 / t, 1))")
    }

    if run.contains(.decompose) {
        r.decompose = try DecomposeBench.run(quick: args.quick, minRounds: args.rounds)
    }

    if run.contains(.textspan) {
        r.textspan = try TextSpanBench.run(quick: args.quick, python: args.python, reference: args.reference, threads: threads)
    }

    if run.contains(.textspanRun) {
        r.textspanRun = try TextSpanRunBench.run(images: args.textspanImages, quick: args.quick, threads: threads)
    }

    if run.contains(.segment) {
        r.segment = try SegmentBench.run(quick: args.quick, threads: threads)
    }

    if run.contains(.retrieve) {
        r.retrieve = try RetrieveBench.run(quick: args.quick, threads: threads)
    }

    if run.contains(.hash) {
        r.hash = try HashBench.run(quick: args.quick)
    }

    if run.contains(.timm) {
        r.timm = try TimmBench.run(quick: args.quick)
    }

    if run.contains(.score) {
        r.score = try ScoreBench.run(images: args.scoreImages)
    }

    if run.contains(.merge) {
        r.merge = try MergeBench.run(images: args.mergeImages)
    }

    if run.contains(.serve) {
        r.serve = try ServeBench.run(images: args.serveImages)
    }

    if run.contains(.align) {
        r.align = try AlignBench.run(images: args.alignImages, steps: args.alignSteps, threads: threads, python: args.python,
                                     reference: args.reference, refract: args.refract)
    }

    // Reference cases for the sections that ran, in one Python process.
    var cases = [String]()
    if run.contains(.image) {
        let all = [("b16-1", "vit-b-16-b1"), ("b16-8", "vit-b-16-b8"), ("l14-1", "vit-l-14-b1"), ("l14-8", "vit-l-14-b8")]
        cases += all.filter { args.imageCases?.contains($0.0) ?? true }.map(\.1)
    }
    if run.contains(.text) { cases += ["text-b-16"] }
    if run.contains(.decompose) {
        if !cases.contains("vit-b-16-b8") { cases += ["vit-b-16-b8"] }
        cases += [DecomposeBench.officialCase]
    }
    if run.contains(.timm) { cases += TimmBench.cases.map(\.reference) }
    if !cases.isEmpty {
        if args.reference, let py = findPython(args.python) {
            print("\nReference: open_clip via \(py), \(threads) threads, same shapes (\(cases.joined(separator: ", "))) ...")
            if let ref = runReference(python: py, threads: threads, quick: args.quick, cases: cases) {
                var numbers = [String: Double]()
                var infos = [String: String]()
                for (k, v) in ref where !(v is [String: Any]) && !(v is [Any]) { infos[k] = "\(v)" }
                for k in ["loadavg_start", "loadavg_end"] {
                    if let l = ref[k] as? [Double] { infos[k] = loadString(l) }
                }
                for (k, v) in (ref["results"] as? [String: Any]) ?? [:] {
                    if let d = (v as? [String: Any])?["throughput"] as? Double { numbers[k] = d }
                }
                for (k, v) in (ref["errors"] as? [String: Any]) ?? [:] { infos["error \(k)"] = "\(v)" }
                r.reference = numbers
                r.referenceInfo = infos
                let shown = ["torch", "open_clip", "threads", "cpu_capability", "loadavg_start", "loadavg_end"]
                print("  " + shown.compactMap { k in infos[k].map { "\(k)=\($0)" } }.joined(separator: ", "))
                for (k, v) in infos where k.hasPrefix("error ") { print("  \(k): \(v)") }
                let pairs: [(String, String)] = [
                    ("ViT-B-16 batch 1", "vit-b-16-b1"), ("ViT-B-16 batch 8", "vit-b-16-b8"),
                    ("ViT-L-14 batch 1", "vit-l-14-b1"), ("ViT-L-14 batch 8", "vit-l-14-b8"),
                ]
                if run.contains(.image) {
                    print("  images/s: Refract vs open_clip (ratio)")
                    for (ours, theirs) in pairs {
                        guard let a = r.imagesPerSecond[ours], let b = numbers[theirs] else { continue }
                        print("    \(ours): \(fmt(a)) vs \(fmt(b))  (\(fmt(a / b))x)")
                    }
                }
                if var timm = r.timm {
                    TimmBench.compare(&timm, reference: numbers)
                    r.timm = timm
                    print("  timm images/s: Refract vs timm (ratio; target >= \(fmt(timm.targetRatioVsTimm, 1))x)")
                    for c in timm.cases {
                        guard let theirs = c.timmImagesPerSecond, let ratio = c.ratioVsTimm else { continue }
                        print("    \(c.architecture) \(c.imageSize) px batch \(c.batch): \(fmt(c.forwardImagesPerSecond)) vs \(fmt(theirs))  (\(fmt(ratio))x)")
                    }
                }
                if let b = numbers["text-b-16"], let a = r.promptsPerSecond {
                    print("  100 prompts/s: \(fmt(a, 1)) vs \(fmt(b, 1))  (\(fmt(a / b))x)")
                }
                if r.decompose != nil {
                    r.decompose!.compare(official: numbers[DecomposeBench.officialCase], openCLIPTower: numbers["vit-b-16-b8"])
                    r.decompose!.printReferenceComparison()
                }
            } else {
                print("  reference run failed; skipped")
            }
        } else if !args.reference {
            print("\nReference: skipped (--no-reference)")
        } else {
            print("\nReference: skipped (no Python with torch and open_clip; set REFRACT_BENCH_PYTHON or --python)")
        }
    }

    if run.contains(.memory), let n = args.memoryImages {
        r.memory = try MemoryBench.run(images: n, threads: threads, refract: args.refract, timmArchitecture: args.memoryModel)
    }

    r.loadavgEnd = loadavg()
    print("\nLoad average at end: \(loadString(r.loadavgEnd))")
    if let path = args.jsonPath {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(r).write(to: URL(fileURLWithPath: path))
    }
}

// The memory section re-executes this binary as a small intermediate process that starts
// `refract` and reports its resource usage (see MemoryBench.swift); that mode comes first, before
// anything else is loaded.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == ChildMeasure.flag {
    exit(ChildMeasure.main(Array(CommandLine.arguments.dropFirst(2))))
}

// Line-buffered stdout, so progress shows line by line when the output goes to a file or pipe.
lineBufferStandardOutput()

do { try main() } catch {
    FileHandle.standardError.write(Data("refract-bench: \(error)\n".utf8))
    exit(1)
}
