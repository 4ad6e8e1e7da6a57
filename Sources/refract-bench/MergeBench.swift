// MARK: - Merging the parts of a split run
//
// `--only merge`: a synthetic ViT-B/16-shaped run (`attn` [12, 12, 512] float16 per image, 147 KB)
// of `--merge-images` images (default 8,000: 1.2 GB) written as 4 parts with the real
// StoreWriter, then `StoreMerge.merge` into a new run, hard-linking (the default) and copying
// (`--copy`), against coreutils' `cp -r` and `sync` of the same parts in the same run (what moving
// the data would cost without links). Files are in the page cache; each merge checks every shard's SHA-256
// (fresh files carry no verified stamps), so the linking merge costs one read of the data.

import Foundation
import RefractStore
import RefractTensor

struct MergeBenchResults: Codable {
    var images: Int
    var parts: Int
    var bytes: Int
    var linkSeconds: Double
    var copySeconds: Double
    var cpSeconds: Double?
}

enum MergeBench {
    static func run(images requested: Int) throws -> MergeBenchResults {
        let (layers, heads, width, parts) = (12, 12, 512, 4)
        let perImage = layers * heads * width * 2
        let (images, _) = try SyntheticHeadRun.imagesThatFit(section: "merge", requested: requested, perImage: perImage,
                                                             margin: 3 * requested * perImage / 2 + (1 << 30), what: "the parts (and two merges)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-bench-merge-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir); print("  removed \(dir.path)") }
        let header = StoreHeader(
            model: StoreModelInfo(id: "synthetic/vit-b-16", layout: "openclip", weightsSHA256: String(repeating: "0", count: 64), weightFiles: []),
            convention: "faithful", dimensions: ["layers": layers, "heads": heads, "embedDim": width],
            options: .object(["dtype": .string("float16"), "synthetic": .string("merge bench")]),
            tensors: [StoreTensorSpec(name: "attn", shape: [layers, heads, width], dtype: .float16, description: "synthetic")],
            images: (0..<images).map { StoreImage(path: "synthetic/\($0).png") },
            shardSize: max(1, (256 << 20) / perImage))
        var urls: [URL] = []
        let t0 = now()
        for k in 0..<parts {
            let url = dir.appendingPathComponent("part-\(k)")
            let writer = try StoreWriter.open(at: url, header: header, constants: [:], createdBy: "refract-bench", resume: false, part: (k, parts))
            for s in writer.pendingShards {
                let range = writer.shardRanges[s]
                var data = [Float](repeating: 0, count: range.count * layers * heads * width)    // [r, L, H, D']
                for i in 0..<data.count { data[i] = Float((i &* 2654435761) % 2001) * 1e-3 - 1 }
                try writer.writeShard(s, imageIndices: Array(range), rows: ["attn": Tensor(shape: [range.count, layers, heads, width], data: data)], skipped: [])
            }
            try writer.finish()
            urls.append(url)
        }
        let bytes = MemoryBench.directorySize(dir)
        print("  wrote \(images) images in \(parts) parts, \(header.shardRanges.count) shards, \(fmt(Double(bytes) / 1e9, 2)) GB (\(fmt(now() - t0, 1)) s)")

        var t = now()
        _ = try StoreMerge.merge(parts: urls, into: dir.appendingPathComponent("linked"), createdBy: "refract-bench")
        let link = now() - t
        t = now()
        _ = try StoreMerge.merge(parts: urls, into: dir.appendingPathComponent("copied"), copy: true, createdBy: "refract-bench")
        let copy = now() - t
        var cp: Double?
        if FileManager.default.isExecutableFile(atPath: "/bin/cp") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/cp")
            p.arguments = ["-r"] + urls.map(\.path) + [dir.appendingPathComponent("cp").path]
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("cp"), withIntermediateDirectories: true)
            t = now()
            try p.run()
            p.waitUntilExit()
            // Then coreutils' sync of the copies (merge --copy syncs every file it writes).
            let files = (try FileManager.default.subpathsOfDirectory(atPath: dir.appendingPathComponent("cp").path))
                .map { dir.appendingPathComponent("cp").appendingPathComponent($0).path }
            let sync = Process()
            sync.executableURL = URL(fileURLWithPath: "/bin/sync")
            sync.arguments = files
            try sync.run()
            sync.waitUntilExit()
            cp = now() - t
        }
        let gb = Double(bytes) / 1e9
        print("  refract merge (hard links; SHA-256 of every shard): \(fmt(link, 2)) s (\(fmt(gb / link, 2)) GB/s)")
        print("  refract merge --copy (checked, copied, synced):     \(fmt(copy, 2)) s (\(fmt(gb / copy, 2)) GB/s)")
        if let cp { print("  cp -r of the parts, then sync (coreutils):          \(fmt(cp, 2)) s (\(fmt(gb / cp, 2)) GB/s)") }
        return MergeBenchResults(images: images, parts: parts, bytes: bytes, linkSeconds: link, copySeconds: copy, cpSeconds: cp)
    }
}
