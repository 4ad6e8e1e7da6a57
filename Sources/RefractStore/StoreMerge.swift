import Foundation
import RefractCheckpoint
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Merging the parts of a run
//
// `refract decompose --part K/N` writes the K-th of N slices of a run's shards into a directory of
// its own (a *part*: a manifest with `part`, the run's full header and input list, and the shard
// files of its slice under their run-wide names and numbers, all parts of one header sharing one
// run id). Merging checks the parts against each other and against the run they claim to be
// (same header: model, weights, preprocessing, convention, options, tensors, image list, shard
// size; same constants; every shard of the run in exactly one part; every part complete and
// intact), then makes RUN an ordinary run: each shard hard-linked (same file system: no copy, no
// extra space) or copied (`copy: true`), then the manifest, written last, is the same manifest one
// process would have written but for `createdBy` and `mergedFrom`. So every command reads RUN as
// a run written in one go, and its tensors, statistics and exports are those of such a run.
//
// A killed merge leaves RUN without a manifest: not a run. Merging again (same parts) removes what
// the killed merge left and does it again; merging into a finished merge of the same parts does
// nothing (idempotent).

public struct StoreMergeSummary: Sendable {
    public var run: URL
    public var parts: Int
    public var shards: Int
    public var rows: Int
    public var skipped: Int
    /// Whether RUN already held this merge (nothing was done).
    public var alreadyMerged: Bool
    /// Whether shards were copied rather than linked.
    public var copied: Bool
}

public enum StoreMerge {
    /// Merges the part directories `parts` (any order) into the run `output`. With `copy`, shard
    /// files are copied (for an output on another file system); otherwise hard-linked, and a part
    /// on another file system is refused with a hint to copy.
    /// `placed(k)` is called after the k-th file is linked or copied into `output` (tests kill the
    /// process there).
    public static func merge(parts: [URL], into output: URL, copy: Bool = false, createdBy: String,
                             placed: ((Int) -> Void)? = nil) throws -> StoreMergeSummary {
        let output = output.standardizedFileURL
        guard !parts.isEmpty else { throw StoreError(.invalidArgument, path: output.path, "no parts to merge") }
        // Each part is checked against the first as it is read (header, constants, run id), and then
        // shares the first's image list (equal by that check), so N parts of a long list hold one
        // list in memory, not N.
        var loaded: [(url: URL, manifest: StoreManifest)] = []
        for url in parts.map(\.standardizedFileURL) {
            if loaded.contains(where: { $0.url.path == url.path }) {
                throw StoreError(.mergeRefused, path: url.path, "is given twice")
            }
            if url.path == output.path { throw StoreError(.mergeRefused, path: url.path, "is both a part and the output") }
            var m = try ManifestFile.load(run: url)
            guard let part = m.part else {
                throw StoreError(.mergeRefused, path: url.path,
                                 "is a whole run, not a part (parts are written with refract decompose --part K/N)")
            }
            if !m.complete {
                throw StoreError(.mergeRefused, path: url.path,
                                 "part \(part.label) is incomplete (\(m.shards.count) of \(part.shardCount) shards written); "
                                    + "finish it with --resume (or --continue) before merging")
            }
            if let first = loaded.first {
                try requireSameRun(m, at: url, as: first.manifest, at: first.url)
                m.images = first.manifest.images
            }
            loaded.append((url, m))
        }
        let first = loaded[0]
        let header = first.manifest.header
        if header.imageListSHA256 != first.manifest.part!.listSHA256 {
            throw StoreError(.mergeRefused, path: first.url.path, "its image list does not match the hash its part records")
        }

        // Every shard in exactly one part.
        let total = header.shardRanges.count
        let ranges = header.shardRanges
        var owner = [Int?](repeating: nil, count: total)
        let sorted = loaded.sorted { ($0.manifest.part!.firstShard, $0.manifest.part!.shardCount) < ($1.manifest.part!.firstShard, $1.manifest.part!.shardCount) }
        func images(_ shards: Range<Int>) -> String {
            shards.isEmpty ? "no images" : "images \(ranges[shards.lowerBound].lowerBound)..<\(ranges[shards.upperBound - 1].upperBound)"
        }
        for (k, (url, m)) in sorted.enumerated() {
            let p = m.part!
            for s in p.shards {
                if let o = owner[s] {
                    let other = sorted[o]
                    let overlap = p.shards.clamped(to: other.manifest.part!.shards)
                    throw StoreError(.mergeRefused, path: url.path,
                                     "part \(p.label) overlaps \(other.url.path) (part \(other.manifest.part!.label)): both hold "
                                        + "\(images(overlap)) (shards \(overlap.lowerBound)..<\(overlap.upperBound)); give each part once")
                }
                owner[s] = k
            }
        }
        if let gap = owner.firstIndex(where: { $0 == nil }) {
            let end = owner[gap...].firstIndex(where: { $0 != nil }) ?? total
            let counts = Set(loaded.map { $0.manifest.part!.count })
            var hint = ""
            if counts.count == 1, let n = counts.first {
                let missing = (0..<n).filter { k in !loaded.contains { $0.manifest.part!.index == k }
                    && !StorePart.shardSlice(index: k, count: n, shards: total).isEmpty }
                if !missing.isEmpty { hint = "; missing part(s) " + missing.map { "\($0)/\(n)" }.joined(separator: ", ") }
            }
            throw StoreError(.mergeRefused, path: output.path,
                             "the parts do not cover the run: \(images(gap..<end)) (shards \(gap)..<\(end)) are in no part given\(hint)")
        }

        // Every shard intact before anything is linked.
        for (url, m) in loaded {
            let skipped = Set(m.skipped.map(\.index))
            for i in m.shards.indices {
                _ = try checkShard(manifest: m, run: url, index: i, skipped: skipped, checkIndices: true)
                try verifyShardChecksum(manifest: m, run: url, index: i)
            }
            if m.constantsSHA256 != nil { try verifyConstantsChecksum(manifest: m, run: url) }
        }

        // The merged manifest.
        var merged = StoreManifest(runId: first.manifest.runId, createdBy: createdBy, header: header)
        merged.formatVersion = first.manifest.formatVersion
        merged.shards = sorted.flatMap(\.manifest.shards)
        merged.skipped = sorted.flatMap(\.manifest.skipped)
        merged.constantsSHA256 = first.manifest.constantsSHA256
        merged.mergedFrom = sorted.map { $0.manifest.part! }
        merged.complete = true
        let summary = StoreMergeSummary(run: output, parts: loaded.count, shards: merged.shards.count,
                                        rows: merged.shards.reduce(0) { $0 + $1.rows }, skipped: merged.skipped.count,
                                        alreadyMerged: false, copied: copy)

        // The output: missing, empty, left by a killed merge, or this merge already done.
        if pathKind(output) == .other { throw StoreError(.exists, path: output.path, "exists and is not a directory; use another path") }
        if pathKind(output) == .missing {
            do { try FileOutput.createDirectory(output, action: "creating the run directory") } catch let e as FileWriteError {
                throw StoreError(.io, path: output.path, "cannot write: \(e.action): \(e.reason)")
            }
        }
        let lock = try RunLock.acquire(output, what: "the run")
        defer { lock.release() }
        if pathKind(ManifestFile.url(output)) != .missing {
            let existing = try ManifestFile.load(run: output)
            var a = existing, b = merged
            a.createdBy = ""; b.createdBy = ""
            if a == b {
                for i in existing.shards.indices { try verifyShardChecksum(manifest: existing, run: output, index: i) }
                var done = summary
                done.alreadyMerged = true
                return done
            }
            throw StoreError(.exists, path: output.path, "holds another run (manifest.json); merge into another path")
        }
        let marker = ".refract-merge"
        let entries = try directoryEntries(output).filter { $0 != RunLock.fileName }
        let ours = entries.allSatisfy { $0 == marker || shardIndex(fromFileName: $0) != nil || $0 == ManifestFile.constantsName
            || ($0.hasPrefix(".") && $0.contains(temporaryMarker)) }
        if !entries.isEmpty && !(ours && entries.contains(marker)) {
            throw StoreError(.exists, path: output.path, "exists and is not empty; merge into a new or empty directory")
        }
        for name in entries where name != marker {                      // what a killed merge left
            do { try FileManager.default.removeItem(at: output.appendingPathComponent(name)) } catch {
                throw StoreError(.io, path: output.appendingPathComponent(name).path, "cannot remove a file a killed merge left: \(error.localizedDescription)")
            }
        }
        try writeAtomically(Data("refract merge in progress; run the same merge again to finish it\n".utf8),
                            to: output.appendingPathComponent(marker))

        var count = 0
        for (url, m) in sorted {
            for s in m.shards {
                try place(url.appendingPathComponent(s.file), at: output.appendingPathComponent(s.file), copy: copy)
                count += 1
                placed?(count)
            }
        }
        if first.manifest.constantsSHA256 != nil || !header.constants.isEmpty {
            try place(first.url.appendingPathComponent(ManifestFile.constantsName),
                      at: output.appendingPathComponent(ManifestFile.constantsName), copy: copy)
        }
        syncDirectory(output.path)
        try ManifestFile.write(merged, run: output)
        unlink(output.appendingPathComponent(marker).path)
        syncDirectory(output.path)
        return summary
    }

    /// Refuses part `m` (at `url`) unless it is a part of the same run as `first`: header (named
    /// as resuming names it), image list hash, constants, run id and format.
    static func requireSameRun(_ m: StoreManifest, at url: URL, as first: StoreManifest, at firstURL: URL) throws {
        let label = m.part?.label ?? "?", firstLabel = first.part?.label ?? "?"
        if let field = first.header.firstDifference(from: m.header) {
            let what: String
            if field.hasPrefix("model") { what = "a part of another model" }
            else if field.hasPrefix("images") || field.hasPrefix("classNames") { what = "a part of another image list" }
            else { what = "a part with other settings" }
            throw StoreError(.mergeRefused, path: url.path,
                             "part \(label) is \(what) than \(firstURL.path) (part \(firstLabel)): " + restate(field))
        }
        if m.part?.listSHA256 != first.part?.listSHA256 {
            throw StoreError(.mergeRefused, path: url.path, "part \(label) records another image list hash than \(firstURL.path)")
        }
        if m.constantsSHA256 != first.constantsSHA256 {
            throw StoreError(.mergeRefused, path: url.path, "part \(label) has other constants than \(firstURL.path)")
        }
        if m.runId != first.runId || m.formatVersion != first.formatVersion {
            throw StoreError(.mergeRefused, path: url.path, "part \(label) belongs to run \(m.runId), \(firstURL.path) to "
                + "\(first.runId) (written by different versions of refract?)")
        }
    }

    /// Hard-links (or copies) `source` to `target`, which must not exist.
    static func place(_ source: URL, at target: URL, copy: Bool) throws {
        if !copy {
            if link(source.path, target.path) == 0 { return }
            let e = errno
            if e == EXDEV {
                throw StoreError(.io, path: target.path, "cannot link \(source.path) here: the part is on another file system; "
                    + "merge with --copy (copies the shards)")
            }
            throw StoreError(.io, path: target.path, "cannot link \(source.path): \(FileOutput.reason(e, path: target.path))")
        }
        let file = try AtomicFile(target: target)
        let fd = open(source.path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw StoreError(.io, path: source.path, "cannot read: \(errnoText())") }
        defer { close(fd) }
        try file.append(contentsOf: fd, path: source.path)
        try file.commit()
    }

    /// "images[3].path (stored A, requested B)", A of the first part and B of this one →
    /// "images[3].path (there A, here B)".
    static func restate(_ field: String) -> String {
        field.replacingOccurrences(of: "(stored ", with: "(there ").replacingOccurrences(of: ", requested ", with: ", here ")
            .replacingOccurrences(of: "(stored: ", with: "(there: ").replacingOccurrences(of: ", requested: ", with: ", here: ")
    }
}
