// A synthetic decomposition run (per-head `attn` rows in float16 only) written with the real
// StoreWriter into a temporary directory, for the sections that time reading a large run
// (retrieve, textspan-run). The run is sized to the free space and removed by `remove()`.

import Foundation
import RefractStore
import RefractTensor

struct SyntheticHeadRun {
    static let shardTargetBytes = 256 << 20

    let directory: URL
    var run: URL { directory.appendingPathComponent("run") }
    /// Images in the run: the requested number, or fewer when the disk has no room for them.
    let images: Int
    let reducedBecause: String?
    let layers: Int, heads: Int, width: Int
    var perImageBytes: Int { layers * heads * width * StoreDType.float16.byteSize }
    var shardSize: Int { max(1, Self.shardTargetBytes / perImageBytes) }

    struct WriteStats {
        var shards: Int
        var seconds: Double
        /// Seconds in `rows` and in `StoreWriter.writeShard` (float16, SHA-256, fsync).
        var generateSeconds: Double, storeSeconds: Double
        var bytes: Int
    }

    /// Makes the temporary directory for `requested` images of [layers, heads, width] float16,
    /// keeping 1 GiB spare (rounded down to thousands of images when that does not fit).
    init(section: String, requested: Int, layers: Int, heads: Int, width: Int) throws {
        (self.layers, self.heads, self.width) = (layers, heads, width)
        let perImage = layers * heads * width * StoreDType.float16.byteSize
        let tmpRoot = FileManager.default.temporaryDirectory
        let (n, reduced) = try Self.imagesThatFit(section: section, requested: requested, perImage: perImage, margin: 1 << 30,
                                                  what: "the run")
        images = n
        reducedBecause = reduced
        directory = tmpRoot.appendingPathComponent("refract-bench-\(section)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
        print("  removed \(directory.path)")
    }

    /// How many of `requested` images of `perImage` bytes fit in the temporary directory with `margin`
    /// bytes to spare (rounded down to thousands), and why fewer when fewer; says so on stdout.
    static func imagesThatFit(section: String, requested: Int, perImage: Int, margin: Int, what: String) throws -> (Int, String?) {
        let tmpRoot = FileManager.default.temporaryDirectory
        guard let free = freeBytes(tmpRoot.path) else {
            print("  (statvfs failed on \(tmpRoot.path); free space not checked)")
            return (requested, nil)
        }
        var n = requested
        var reduced: String?
        let needed = n * perImage + margin
        if free < needed {
            let fit = max(0, (free - margin) / perImage) / 1000 * 1000
            guard fit >= 1000 else {
                throw BenchError("\(section): only \(fmt(Double(free) / 1e9, 1)) GB free in \(tmpRoot.path); even 1000 images "
                                 + "(\(fmt(Double(1000 * perImage + margin) / 1e9, 2)) GB with \(fmt(Double(margin) / Double(1 << 30), 1)) GiB to spare) "
                                 + "do not fit; set TMPDIR")
            }
            reduced = "\(fmt(Double(free) / 1e9, 1)) GB free in \(tmpRoot.path); \(requested) images need "
                + "\(fmt(Double(needed) / 1e9, 1)) GB (with \(fmt(Double(margin) / Double(1 << 30), 1)) GiB to spare)"
            print("  NOTE: reducing the run from \(requested) to \(fit) images: \(reduced!)")
            n = fit
        }
        print("  free space in \(tmpRoot.path): \(fmt(Double(free) / 1e9, 1)) GB; \(what) needs \(fmt(Double(n * perImage) / 1e9, 2)) GB")
        return (n, reduced)
    }

    static func freeBytes(_ path: String) -> Int? {
        // statvfs(3), the POSIX form of statfs(2) (Glibc's module exports it; statfs it does not).
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    /// Writes the run: `dimensions` describe the model it imitates (beside layers, heads and
    /// embedDim), `label(i)` labels image i, `rows(shard, range)` gives that shard's rows
    /// [r, L, H, D'] row-major.
    func write(modelID: String, dimensions: [String: Int], synthetic: String, label: (Int) -> String? = { _ in nil },
               rows: (Int, Range<Int>) -> [Float]) throws -> WriteStats {
        let header = StoreHeader(
            model: StoreModelInfo(id: modelID, layout: "openclip", weightsSHA256: String(repeating: "0", count: 64), weightFiles: []),
            convention: "faithful",
            dimensions: dimensions.merging(["layers": layers, "heads": heads, "embedDim": width]) { $1 },
            options: .object(["dtype": .string("float16"), "synthetic": .string(synthetic)]),
            tensors: [StoreTensorSpec(name: "attn", shape: [layers, heads, width], dtype: .float16,
                                      description: "synthetic per-head direct contributions")],
            images: (0..<images).map { StoreImage(path: "synthetic/\($0).png", label: label($0)) },
            shardSize: shardSize)
        let start = now()
        let writer = try StoreWriter.open(at: run, header: header, constants: [:], createdBy: "refract-bench", resume: false)
        let ranges = writer.shardRanges
        print("  writing \(images) images in \(ranges.count) shards of \(shardSize) images "
              + "(\(fmt(Double(shardSize * perImageBytes) / 1e6, 0)) MB each) to \(run.path) ...")
        var generate = 0.0, store = 0.0
        for (i, range) in ranges.enumerated() {
            let t0 = now()
            let shard = Tensor(shape: [range.count, layers, heads, width], data: rows(i, range))   // [r, L, H, D']
            let t1 = now()
            try writer.writeShard(i, imageIndices: Array(range), rows: ["attn": shard], skipped: [])
            generate += t1 - t0
            store += now() - t1
            if (i + 1) % 5 == 0 || i + 1 == ranges.count {
                print("    shard \(i + 1)/\(ranges.count) (\(fmt(now() - start, 1)) s)")
            }
        }
        try writer.finish()
        return WriteStats(shards: ranges.count, seconds: now() - start, generateSeconds: generate, storeSeconds: store,
                          bytes: MemoryBench.directorySize(run))
    }
}
