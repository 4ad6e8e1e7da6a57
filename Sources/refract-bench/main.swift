// refract-bench: throughput of Refract's CLIP towers and of BLAS on this machine, with the Python
// reference (open_clip) measured in the same run when a Python with torch + open_clip is found.
//
//   swift run -c release refract-bench [--quick] [--threads N] [--python PATH] [--no-reference] [--json FILE]

import CRefractBench
import Foundation
import RefractCLIP
import RefractTensor
import RefractTokenizer

// MARK: Arguments

struct Arguments {
    var quick = false
    var threads: Int?
    var python: String?
    var reference = true
    var jsonPath: String?

    init(_ argv: [String]) throws {
        var it = argv.dropFirst().makeIterator()
        while let a = it.next() {
            switch a {
            case "--quick": quick = true
            case "--threads": threads = it.next().flatMap(Int.init)
            case "--python": python = it.next()
            case "--no-reference": reference = false
            case "--json": jsonPath = it.next()
            case "-h", "--help":
                print("usage: refract-bench [--quick] [--threads N] [--python PATH] [--no-reference] [--json FILE]")
                exit(0)
            default: throw BenchError("unknown argument \(a)")
            }
        }
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

// MARK: Sections

struct Results: Codable {
    var blas: BLASInfo
    var cores: Int
    var peakGFLOPS: Double
    var vectorWidth: Int
    var sgemm: [String: Double] = [:]
    var imagesPerSecond: [String: Double] = [:]
    var promptsPerSecond: Double = 0
    var reference: [String: Double]?
    var referenceInfo: [String: String]?
}

func peakGFLOPS(threads: Int, seconds: Double) -> (Double, Int) {
    var width: Int32 = 0
    _ = refract_peak_fma(1000, &width)
    let iterations = 20_000_000
    let t = measure(minSeconds: seconds, minRuns: 2) {
        Parallel.forEach(threads) { _ in
            var w: Int32 = 0
            _ = refract_peak_fma(iterations, &w)
        }
    }
    let flopsPerThread = Double(iterations) * 12 * Double(width) * 2
    return (flopsPerThread * Double(threads) / t / 1e9, Int(width))
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

func findPython(_ explicit: String?) -> String? {
    let candidates = [explicit, ProcessInfo.processInfo.environment["REFRACT_BENCH_PYTHON"], "python3"].compactMap { $0 }
    for py in candidates {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [py, "-c", "import torch, open_clip"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { continue }
        p.waitUntilExit()
        if p.terminationStatus == 0 { return py }
    }
    return nil
}

func runReference(python: String, threads: Int, quick: Bool) -> [String: Any]? {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/bench_reference.py")
    guard FileManager.default.fileExists(atPath: script.path) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [python, script.path, "--threads", "\(threads)", "--json", "--only",
                   "vit-b-16-b1,vit-b-16-b8,vit-l-14-b1,vit-l-14-b8,text-b-16"] + (quick ? ["--quick"] : [])
    let out = Pipe()
    p.standardOutput = out
    do { try p.run() } catch { return nil }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    // A non-zero status means some case failed; the JSON still holds the ones that ran.
    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
}

// MARK: Main

func fmt(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }

func main() throws {
    let args = try Arguments(CommandLine.arguments)
    try BLAS.load()
    if let t = args.threads { BLAS.setThreads(t) }
    let threads = BLAS.threads
    let seconds = args.quick ? 1.0 : 4.0
    var r = Results(blas: BLAS.info, cores: ProcessInfo.processInfo.activeProcessorCount, peakGFLOPS: 0, vectorWidth: 0)
    print("Refract benchmark (release build)")
    print("BLAS: \(r.blas.library), core \(r.blas.coreName), \(threads) threads"
          + (r.blas.coreTypeOverride.map { ", OPENBLAS_CORETYPE=\($0)\(r.blas.coreTypeSetByRefract ? " (set by Refract)" : "")" } ?? ""))
    print("CPU cores: \(r.cores)")

    (r.peakGFLOPS, r.vectorWidth) = peakGFLOPS(threads: threads, seconds: seconds)
    print("\nFP32 peak (FMA loop, \(r.vectorWidth)-wide, \(threads) threads): \(fmt(r.peakGFLOPS, 1)) GFLOP/s")

    print("\nsgemm on ViT shapes (batch 8), GFLOP/s and share of peak")
    let shapes: [(String, Int, Int, Int)] = [
        ("B/16 qkv  1576x2304x768", 8 * 197, 2304, 768), ("B/16 fc1  1576x3072x768", 8 * 197, 3072, 768),
        ("B/16 fc2  1576x768x3072", 8 * 197, 768, 3072), ("L/14 fc1  2056x4096x1024", 8 * 257, 4096, 1024),
    ]
    for (name, m, n, k) in shapes {
        let g = sgemmGFLOPS(m: m, n: n, k: k, seconds: seconds / 2)
        r.sgemm[name] = g
        print("  \(name): \(fmt(g, 1))  (\(fmt(100 * g / r.peakGFLOPS, 0))% of peak)")
    }

    print("\nImage tower, 224 px, random weights (images/s)")
    for (name, arch) in [("ViT-B-16", CLIPArchitecture.vitB16), ("ViT-L-14", CLIPArchitecture.vitL14)] {
        let tower = try CLIPVisionTower(weights: RandomWeights(seed: 1), architecture: arch)
        for b in [1, 8] {
            if args.quick && name == "ViT-L-14" && b == 8 { continue }
            let images = randomImages(b, size: 224)
            let t = measure(minSeconds: seconds, minRuns: 2) { _ = tower(images) }
            r.imagesPerSecond["\(name) batch \(b)"] = Double(b) / t
            print("  \(name) batch \(b): \(fmt(Double(b) / t))")
        }
    }

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
    print("  prompts/s (incl. tokenization): \(fmt(r.promptsPerSecond, 1))")

    if args.reference, let py = findPython(args.python) {
        print("\nReference: open_clip via \(py), \(threads) threads, same shapes ...")
        if let ref = runReference(python: py, threads: threads, quick: args.quick) {
            var numbers = [String: Double]()
            var infos = [String: String]()
            for (k, v) in ref where !(v is [String: Any]) && !(v is [Any]) { infos[k] = "\(v)" }
            for (k, v) in (ref["results"] as? [String: Any]) ?? [:] {
                if let d = (v as? [String: Any])?["throughput"] as? Double { numbers[k] = d }
            }
            r.reference = numbers
            r.referenceInfo = infos
            let shown = ["torch", "open_clip", "threads", "cpu_capability"]
            print("  " + shown.compactMap { k in infos[k].map { "\(k)=\($0)" } }.joined(separator: ", "))
            let pairs: [(String, String)] = [
                ("ViT-B-16 batch 1", "vit-b-16-b1"), ("ViT-B-16 batch 8", "vit-b-16-b8"),
                ("ViT-L-14 batch 1", "vit-l-14-b1"), ("ViT-L-14 batch 8", "vit-l-14-b8"),
            ]
            print("  images/s: Refract vs open_clip (ratio)")
            for (ours, theirs) in pairs {
                guard let a = r.imagesPerSecond[ours], let b = numbers[theirs] else { continue }
                print("    \(ours): \(fmt(a)) vs \(fmt(b))  (\(fmt(a / b))x)")
            }
            if let b = numbers["text-b-16"] {
                print("  100 prompts/s: \(fmt(r.promptsPerSecond, 1)) vs \(fmt(b, 1))  (\(fmt(r.promptsPerSecond / b))x)")
            }
        } else {
            print("  reference run failed; skipped")
        }
    } else {
        print("\nReference: skipped (no Python with torch and open_clip; set REFRACT_BENCH_PYTHON or --python)")
    }

    if let path = args.jsonPath {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(r).write(to: URL(fileURLWithPath: path))
    }
}

do { try main() } catch {
    FileHandle.standardError.write(Data("refract-bench: \(error)\n".utf8))
    exit(1)
}
