import Foundation
import RefractCheckpoint
import RefractTensor

// MARK: - StoreWriter
//
// Writes a run shard by shard. Order of operations, chosen so that a kill at any moment leaves a
// run that `open(..., resume: true)` continues:
//
// 1. new run: the directory is created, `manifest.json` written (no shards, `complete: false`),
//    then `constants.safetensors`;
// 2. each shard: the shard file is written to a temporary name, synced and renamed; only then
//    is the manifest rewritten (atomically) to record it with its SHA-256;
// 3. `finish()`: the manifest is rewritten with `complete: true`.
//
// A kill between the rename of a shard and the manifest update leaves a shard file the manifest
// does not record; resuming deletes it (and any temporary files) and writes the shard again.
// Everything written is a pure function of the header, the constants and the rows, so a resumed
// run is byte-for-byte the run that would have been written without the interruption.
//
// One writer per run: before anything is written the writer takes an exclusive lock on
// `RUN/.refract.lock` (`RunLock`) and holds it for its lifetime; a second writer, in this process
// or another, is refused naming the holder's pid.

/// Writes a run directory: manifest, constants and shards, resumable after a kill.
public final class StoreWriter {
    /// The run directory.
    public let run: URL
    /// The manifest as last written.
    public private(set) var manifest: StoreManifest
    /// The input ranges of the shards, fixed by the number of images and the shard size.
    public let shardRanges: [Range<Int>]

    /// The header of the run.
    public var header: StoreHeader { manifest.header }
    /// Shards written so far.
    public var completedShards: Int { manifest.shards.count }
    /// The shards still to write, in order (a part writes only its own slice of the run's shards).
    public var pendingShards: Range<Int> { manifest.shardNumber(manifest.shards.count)..<manifest.ownShards.upperBound }
    /// The part this writer writes, or nil for a whole run.
    public var part: StorePart? { manifest.part }
    /// Whether `finish()` has been called (here or before a resume).
    public var isComplete: Bool { manifest.complete }

    /// The run's writer lock, held while this writer exists.
    private let runLock: RunLock

    private init(run: URL, manifest: StoreManifest, lock: RunLock) {
        self.run = run
        self.manifest = manifest
        runLock = lock
        shardRanges = manifest.shardRanges
    }

    /// Releases the run's lock early (it is released anyway when the writer is freed or the
    /// process ends). The writer must not be used afterwards.
    public func close() { runLock.release() }

    /// Opens a run for writing.
    ///
    /// - New run (`resume == false`): `run` must not exist or be an empty directory.
    /// - Either way, the run's lock is taken before anything is written; another writer holding it
    ///   is a `.locked` error naming its pid.
    /// - Resume: `run` must hold an incomplete run whose header equals `header` (the error names
    ///   the first differing field) and whose constants equal `constants`. Temporary files and
    ///   shard files the manifest does not record (left by a kill) are removed; recorded shards are
    ///   checked (tensors, dtypes, shapes, image indices).
    ///
    /// - Parameters:
    ///   - constants: one tensor per `header.constants` spec, with exactly its shape.
    ///   - createdBy: program and version, e.g. "refract 0.2.0" (kept from the first session on resume).
    ///   - runId: the run's id; a new random UUID when nil (ignored on resume and for parts).
    ///   - part: `(K, N)` to write part K of N of the run (`StorePart`): only its shards, under the
    ///     run id all parts of `header` share.
    ///   - formatVersion: of a new run: the current one, or 1 for a run that builds before shard
    ///     statistics read (no statistics, no parts). A resumed run keeps its own.
    public static func open(at run: URL, header: StoreHeader, constants: [String: Tensor], createdBy: String,
                            resume: Bool, runId: String? = nil, part: (index: Int, count: Int)? = nil,
                            formatVersion: Int = StoreManifest.currentFormatVersion) throws -> StoreWriter {
        guard (1...StoreManifest.currentFormatVersion).contains(formatVersion), formatVersion >= 2 || part == nil else {
            throw StoreError(.invalidArgument, path: run.path, "cannot write format version \(formatVersion)"
                + (part != nil ? " with parts (they exist from version 2 on)" : ""))
        }
        let run = run.standardizedFileURL
        try header.validate(path: run.path, kind: .invalidArgument)
        try checkConstantArguments(constants, specs: header.constants, path: run.path)
        let thePart = try part.map { try StorePart(index: $0.index, count: $0.count, header: header) }
        if resume {
            return try resumeRun(run, header: header, constants: constants, part: thePart)
        }

        // Refuse what is plainly not a new run before touching anything; then create the directory,
        // take the lock, and check again (another writer may have started the run meanwhile).
        try checkNewRunTarget(run)
        if pathKind(run) == .missing {
            do {
                try FileOutput.createDirectory(run, action: "creating the run directory")
            } catch let e as FileWriteError {
                throw StoreError(.io, path: run.path, "cannot write: \(e.action): \(e.reason)")
            }
        }
        let lock = try RunLock.acquire(run, what: "the run")
        try checkNewRunTarget(run)
        var manifest = StoreManifest(runId: thePart != nil ? header.partRunId : runId ?? UUID().uuidString.lowercased(),
                                     createdBy: createdBy, header: header)
        manifest.part = thePart
        manifest.formatVersion = formatVersion
        try ManifestFile.write(manifest, run: run)
        let writer = StoreWriter(run: run, manifest: manifest, lock: lock)
        try writer.writeConstants(constants)
        return writer
    }

    /// A new run goes into a missing or empty directory (a lock file left by an earlier writer, or
    /// temporary files, do not count).
    private static func checkNewRunTarget(_ run: URL) throws {
        switch pathKind(run) {
        case .other:
            throw StoreError(.exists, path: run.path, "exists and is not a directory; use another path")
        case .directory:
            // Temporary files are another writer's work in progress (its manifest about to be renamed
            // into place: the lock then names it) or a killed writer's leftovers: not content.
            let entries = try directoryEntries(run).filter { $0 != RunLock.fileName && !($0.hasPrefix(".") && $0.contains(temporaryMarker)) }
            if entries.contains(ManifestFile.name) {
                throw StoreError(.exists, path: run.path, "exists and holds a run (manifest.json); use --resume or another path")
            }
            if !entries.isEmpty {
                throw StoreError(.exists, path: run.path, "exists and is not empty; use --resume or another path")
            }
        case .missing:
            break
        }
    }

    /// The manifest of the complete run at `run` when it is the run `header` (and `part`) describe;
    /// nil when `run` is missing, empty, or holds an incomplete run (which a resume continues).
    /// A complete run of other settings is refused, naming the first difference. For tasks that a
    /// scheduler may start again (`--continue`).
    public static func completedRun(at run: URL, header: StoreHeader, part: (index: Int, count: Int)? = nil) throws -> StoreManifest? {
        let run = run.standardizedFileURL
        guard pathKind(run) == .directory, pathKind(ManifestFile.url(run)) != .missing else { return nil }
        let manifest = try ManifestFile.load(run: run)
        guard manifest.complete else { return nil }
        if let field = manifest.header.firstDifference(from: header) {
            throw StoreError(.headerMismatch, path: ManifestFile.url(run).path,
                             "holds a complete run with different settings: \(field); use another path")
        }
        let requested = try part.map { try StorePart(index: $0.index, count: $0.count, header: header) }
        if manifest.part != requested {
            throw StoreError(.headerMismatch, path: ManifestFile.url(run).path,
                             "holds \(describePart(manifest.part)), but \(describePart(requested)) was requested; use another path")
        }
        return manifest
    }

    /// Whether a directory holds anything to continue: a run manifest (complete or not).
    public static func holdsRun(_ run: URL) -> Bool {
        pathKind(run) == .directory && pathKind(ManifestFile.url(run)) != .missing
    }

    private static func resumeRun(_ run: URL, header: StoreHeader, constants: [String: Tensor], part: StorePart?) throws -> StoreWriter {
        let manifestPath = ManifestFile.url(run).path
        if pathKind(run) == .missing {
            throw StoreError(.missingFile, path: run.path, "does not exist; there is nothing to resume (drop --resume to start a new run)")
        }
        if pathKind(run) != .directory || pathKind(ManifestFile.url(run)) == .missing {
            _ = try ManifestFile.load(run: run)         // the precise "not a run directory" error, before any write
        }
        let lock = try RunLock.acquire(run, what: "the run")
        let manifest = try ManifestFile.load(run: run)
        if manifest.complete {
            throw StoreError(.alreadyComplete, path: run.path,
                             "is already complete (\(manifest.shards.count) shards); there is nothing to resume")
        }
        if let field = manifest.header.firstDifference(from: header) {
            throw StoreError(.headerMismatch, path: manifestPath,
                             "cannot resume: the run was started with different settings: \(field)")
        }
        if manifest.part != part {
            throw StoreError(.headerMismatch, path: manifestPath,
                             "cannot resume: the directory holds \(describePart(manifest.part)), but \(describePart(part)) was requested")
        }
        let writer = StoreWriter(run: run, manifest: manifest, lock: lock)
        try writer.removeLeftovers()
        let skippedSet = Set(manifest.skipped.map(\.index))
        for i in manifest.shards.indices {
            _ = try checkShard(manifest: manifest, run: run, index: i, skipped: skippedSet, checkIndices: true)
            try verifyShardChecksum(manifest: manifest, run: run, index: i)
        }
        let constantsURL = run.appendingPathComponent(ManifestFile.constantsName)
        if !header.constants.isEmpty {
            if pathKind(constantsURL) == .missing {
                try writer.writeConstants(constants)  // killed right after the first manifest write
            } else {
                if manifest.constantsSHA256 != nil { try verifyConstantsChecksum(manifest: manifest, run: run) }
                try checkStoredConstants(constantsURL, manifest: manifest, given: constants)
                if manifest.constantsSHA256 == nil {
                    // Killed between writing the constants and recording their hash: they were just
                    // compared value for value with the given ones; record the hash now.
                    let sha: String
                    do { sha = try SHA256.hexDigest(ofFileAt: constantsURL) } catch {
                        throw StoreError(.io, path: constantsURL.path, stripPath("\(error)", constantsURL.path))
                    }
                    try writer.recordConstantsHash(sha)
                }
            }
        }
        return writer
    }

    /// Removes temporary files and shard files the manifest does not record.
    private func removeLeftovers() throws {
        for name in try directoryEntries(run) {
            var remove = name.hasPrefix(".") && name.contains(temporaryMarker)
            if let index = shardIndex(fromFileName: name),
               !(manifest.shardNumber(0)..<manifest.shardNumber(manifest.shards.count)).contains(index) {
                remove = true
            }
            guard remove else { continue }
            let url = run.appendingPathComponent(name)
            do {
                try FileManager.default.removeItem(at: url)
            } catch {
                throw StoreError(.io, path: url.path, "cannot remove leftover file: \(error.localizedDescription)")
            }
        }
    }

    /// Writes `constants.safetensors`, then records its SHA-256 in the manifest.
    private func writeConstants(_ constants: [String: Tensor]) throws {
        let specs = manifest.constants
        guard !specs.isEmpty else { return }
        let entries = specs.compactMap { spec in
            constants[spec.name].map { FileEntry(name: spec.name, shape: spec.shape, source: .float($0, spec.dtype)) }
        }
        let sha = try writeSafetensorsStreaming(
            to: run.appendingPathComponent(ManifestFile.constantsName),
            metadata: [ShardMetadata.format: StoreManifest.formatName, ShardMetadata.runId: manifest.runId,
                       ShardMetadata.contents: "constants"],
            entries: entries)
        try recordConstantsHash(sha)
    }

    private func recordConstantsHash(_ sha: String) throws {
        var next = manifest
        next.constantsSHA256 = sha
        try ManifestFile.write(next, run: run)
        manifest = next
    }

    /// Writes shard `index` (which must be the next one) and records it in the manifest.
    ///
    /// - Parameters:
    ///   - imageIndices: input indices of the rows, ascending, inside `shardRanges[index]`.
    ///   - rows: for every tensor spec, a tensor of shape `[imageIndices.count] + spec.shape`.
    ///   - skipped: the other images of the range (each image of the range is either a row or
    ///     skipped), with `path` equal to the input's path.
    public func writeShard(_ index: Int, imageIndices: [Int], rows: [String: Tensor], skipped: [SkippedImage]) throws {
        let path = run.path
        func bad(_ message: String) -> StoreError { StoreError(.invalidArgument, path: path, "shard \(index): \(message)") }
        if manifest.complete {
            throw StoreError(.alreadyComplete, path: path, "the run is already finished; cannot write shard \(index)")
        }
        let nextShard = pendingShards.lowerBound
        guard index == nextShard else {
            if let p = manifest.part, !p.shards.contains(index) {
                throw bad("not in part \(p.label), which holds shards \(p.shards)")
            }
            if index >= 0 && index < nextShard {
                throw bad("already written (shards are written in order; the next is \(nextShard))")
            }
            throw bad("out of order: the next shard to write is \(nextShard) of \(shardRanges.count)")
        }
        guard pendingShards.contains(index) else {
            throw bad("the run has only \(shardRanges.count) shards (all written; call finish)")
        }
        let range = shardRanges[index]

        var previous = Int.min
        for i in imageIndices {
            if !range.contains(i) { throw bad("image index \(i) is outside the shard's range \(range)") }
            if i <= previous { throw bad("image indices are not strictly ascending (\(i) after \(previous))") }
            previous = i
        }
        let rowSet = Set(imageIndices)
        let sortedSkipped = skipped.sorted { $0.index < $1.index }
        var skippedSet = Set<Int>()
        for s in sortedSkipped {
            if !range.contains(s.index) { throw bad("skipped image \(s.index) is outside the shard's range \(range)") }
            if rowSet.contains(s.index) { throw bad("image \(s.index) is both a row and skipped") }
            if !skippedSet.insert(s.index).inserted { throw bad("image \(s.index) is skipped twice") }
            let expected = manifest.images[s.index].path
            if s.path != expected { throw bad("skipped image \(s.index) has path '\(s.path)', the input list has '\(expected)'") }
        }
        if imageIndices.count + sortedSkipped.count != range.count {
            throw bad("\(imageIndices.count) rows and \(sortedSkipped.count) skipped images do not cover the \(range.count) images of \(range)")
        }
        let r = imageIndices.count
        for spec in manifest.tensors {
            guard let t = rows[spec.name] else { throw bad("no rows for tensor '\(spec.name)'") }
            if t.shape != [r] + spec.shape { throw bad("tensor '\(spec.name)' has shape \(t.shape), expected \([r] + spec.shape)") }
        }
        let specNames = Set(manifest.tensors.map(\.name))
        if let extra = rows.keys.sorted().first(where: { !specNames.contains($0) }) {
            throw bad("tensor '\(extra)' is not in the run's tensor list \(manifest.tensors.map(\.name))")
        }

        let file = manifest.shardFileName(index)
        var entries = [FileEntry(name: StoreLayout.imageIndexTensor, shape: [r], source: .int64(imageIndices.map { Int64($0) }))]
        for spec in manifest.tensors {
            if let t = rows[spec.name] { entries.append(FileEntry(name: spec.name, shape: t.shape, source: .float(t, spec.dtype))) }
        }
        if manifest.hasShardStatistics {
            for spec in manifest.tensors {
                guard let t = rows[spec.name] else { continue }
                let (sum, sumsq) = ShardStatistics.sums(t, rows: r, dtype: spec.dtype)
                entries.append(FileEntry(name: ShardStatistics.sumName(spec.name), shape: spec.shape, source: .float64(sum)))
                entries.append(FileEntry(name: ShardStatistics.sumOfSquaresName(spec.name), shape: spec.shape, source: .float64(sumsq)))
            }
        }
        let sha = try writeSafetensorsStreaming(
            to: run.appendingPathComponent(file),
            metadata: [ShardMetadata.format: StoreManifest.formatName, ShardMetadata.runId: manifest.runId,
                       ShardMetadata.shard: String(index)],
            entries: entries)

        var next = manifest
        next.shards.append(StoreShardRecord(file: file, first: range.lowerBound, count: range.count, rows: r, sha256: sha))
        next.skipped.append(contentsOf: sortedSkipped)
        try ManifestFile.write(next, run: run)
        manifest = next
    }

    /// Marks the run complete. Fails when shards are missing; does nothing when already complete.
    public func finish() throws {
        if manifest.complete { return }
        guard manifest.shards.count == manifest.ownShards.count else {
            throw StoreError(.incomplete, path: run.path,
                             "cannot finish: \(manifest.shards.count) of \(manifest.ownShards.count) shards are written")
        }
        var next = manifest
        next.complete = true
        try ManifestFile.write(next, run: run)
        manifest = next
    }
}

extension StoreManifest {
    func shardFileName(_ index: Int) -> String { Self.shardFileName(index) }
}

/// "part 1/4" or "a whole run", for messages.
func describePart(_ part: StorePart?) -> String {
    part.map { "part \($0.label) (images \($0.firstImage)..<\($0.firstImage + $0.imageCount))" } ?? "a whole run"
}

/// The shard index of a file named like `shard-00012.safetensors`, or nil.
func shardIndex(fromFileName name: String) -> Int? {
    guard name.hasPrefix("shard-"), name.hasSuffix(".safetensors") else { return nil }
    let digits = name.dropFirst("shard-".count).dropLast(".safetensors".count)
    guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    return Int(digits)
}

/// Checks that the constants given to a writer match the specs exactly.
private func checkConstantArguments(_ constants: [String: Tensor], specs: [StoreTensorSpec], path: String) throws {
    for spec in specs {
        guard let t = constants[spec.name] else {
            throw StoreError(.invalidArgument, path: path, "constant '\(spec.name)' is declared but not given")
        }
        if t.shape != spec.shape {
            throw StoreError(.invalidArgument, path: path, "constant '\(spec.name)' has shape \(t.shape), declared \(spec.shape)")
        }
    }
    let names = Set(specs.map(\.name))
    if let extra = constants.keys.sorted().first(where: { !names.contains($0) }) {
        throw StoreError(.invalidArgument, path: path, "constant '\(extra)' is given but not declared in the header")
    }
}

/// On resume: the stored constants must be the ones given (after rounding to their dtype).
private func checkStoredConstants(_ url: URL, manifest: StoreManifest, given: [String: Tensor]) throws {
    let file = try openRunFile(url, role: "the run's constants")
    try checkTensors(file, expected: manifest.constants.map { ($0.name, $0.dtype.safetensors, $0.shape) },
                     manifestName: ManifestFile.name)
    for spec in manifest.constants {
        guard let g = given[spec.name] else { continue }
        let stored: Tensor
        do { stored = try file.floatTensor(spec.name) } catch {
            throw StoreError(.invalidShard, path: url.path, stripPath("\(error)", url.path))
        }
        for i in 0..<min(stored.data.count, g.data.count) {
            let a = stored.data[i], b = spec.dtype.rounded(g.data[i])
            if a.bitPattern != b.bitPattern && !(a.isNaN && b.isNaN) {
                throw StoreError(.headerMismatch, path: url.path,
                                 "cannot resume: constant '\(spec.name)' differs from the one given (element \(i): stored \(a), given \(b))")
            }
        }
    }
}
