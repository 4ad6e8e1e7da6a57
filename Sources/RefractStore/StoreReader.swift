import Foundation
import RefractCheckpoint
import RefractTensor

// MARK: - StoreReader
//
// Opening a run validates everything except the tensor data: the manifest (JSON, format, version,
// internal consistency), and for every recorded shard its safetensors header (strict), its
// metadata (format, run id, shard number), its tensors (names, dtypes, shapes with the recorded row
// count) and its `image_index` rows. Data is read only when asked for, one shard mapping at a time.
//
// Integrity: every read (whole tensors, row ranges, `forEachShard`, strided slices, and so export
// and retrieval) first hashes each shard it touches against the SHA-256 in the manifest, once per
// reader (lazily, on the shard's first read; `verifyChecksums()` does all of them up front). A
// damaged shard is refused with an error naming it, both hashes, and that the run is damaged; no
// value from it is ever returned. A shard unchanged since it last matched (same device, inode,
// size and file times: `ShardStamps`) is not hashed again.

/// Reads a run directory written by `StoreWriter`.
public final class StoreReader: Sendable {
    /// The run directory.
    public let run: URL
    /// The decoded, validated manifest.
    public let manifest: StoreManifest
    /// Input index of each stored row, in row order (all shards concatenated).
    public let rowImageIndices: [Int]
    /// The rows each recorded shard holds (`shardRows[i]` for `manifest.shards[i]`).
    public let shardRows: [Range<Int>]
    /// Shards whose SHA-256 this reader has checked.
    let verified = VerifiedShards()

    /// Number of stored rows (images that were not skipped, in the recorded shards).
    public var rowCount: Int { rowImageIndices.count }
    /// The input images of the stored rows, in row order.
    public var rowImages: [StoreImage] { rowImageIndices.map { manifest.images[$0] } }
    /// Whether the run was finished.
    public var isComplete: Bool { manifest.complete }
    /// The per-image tensors of the run.
    public var tensorSpecs: [StoreTensorSpec] { manifest.tensors }

    /// Opens and validates a run. Incomplete runs are refused unless `allowIncomplete`; a part of
    /// a run split across machines unless `allowPart` (its rows are then the part's).
    public init(run: URL, allowIncomplete: Bool = false, allowPart: Bool = false) throws {
        let run = run.standardizedFileURL
        let manifest = try ManifestFile.load(run: run)
        if let part = manifest.part, !allowPart {
            throw StoreError(.isPart, path: run.path,
                             "is part \(part.label) of a run split across machines (images \(part.firstImage)..<"
                                + "\(part.firstImage + part.imageCount)), not a whole run; join the parts with "
                                + "`refract merge --output RUN PART...` and use RUN")
        }
        if !manifest.complete && !allowIncomplete {
            throw StoreError(.incomplete, path: run.path,
                             "the run is incomplete (\(manifest.shards.count) of \(manifest.shardRanges.count) shards written); "
                                + "finish it with --resume")
        }
        let skipped = Set(manifest.skipped.map(\.index))
        var indices: [Int] = []
        var shardRows: [Range<Int>] = []
        for i in manifest.shards.indices {
            let start = indices.count
            indices.append(contentsOf: try checkShard(manifest: manifest, run: run, index: i, skipped: skipped, checkIndices: true))
            shardRows.append(start..<indices.count)
        }
        if !manifest.constants.isEmpty {
            let url = run.appendingPathComponent(ManifestFile.constantsName)
            // An incomplete run may have been killed before its constants were written.
            if manifest.complete || pathKind(url) != .missing {
                let file = try openRunFile(url, role: "the run's constants")
                try checkTensors(file, expected: manifest.constants.map { ($0.name, $0.dtype.safetensors, $0.shape) },
                                 manifestName: ManifestFile.name)
            }
        }
        self.run = run
        self.manifest = manifest
        rowImageIndices = indices
        self.shardRows = shardRows
    }

    /// The spec of a per-image tensor.
    public func spec(_ name: String) throws -> StoreTensorSpec {
        guard let s = manifest.tensors.first(where: { $0.name == name }) else {
            throw StoreError(.unknownName, path: ManifestFile.url(run).path,
                             "the run has no tensor '\(name)' (it has: \(manifest.tensors.map(\.name).joined(separator: ", ")))")
        }
        return s
    }

    /// All rows of a tensor: `[rowCount] + spec.shape`, float32.
    public func tensor(_ name: String) throws -> Tensor {
        try tensor(name, rows: 0..<rowCount)
    }

    /// Rows `rows` of a tensor: `[rows.count] + spec.shape`, float32, read from the shards that
    /// hold them only.
    public func tensor(_ name: String, rows: Range<Int>) throws -> Tensor {
        let spec = try spec(name)
        guard rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw StoreError(.invalidArgument, path: run.path, "rows \(rows) are outside the run's \(rowCount) rows")
        }
        let width = spec.elementCount
        var data = [Float](repeating: 0, count: rows.count * width)
        for (i, shardRange) in shardRows.enumerated() {
            let lo = max(rows.lowerBound, shardRange.lowerBound), hi = min(rows.upperBound, shardRange.upperBound)
            guard lo < hi else { continue }
            let file = try openShard(i)
            let info = file.tensors[name]
            let path = file.path
            try data.withUnsafeMutableBufferPointer { out in
                guard let dst = out.baseAddress, let info else { return }
                try file.withRawBytes(name) { raw in
                    guard raw.count == info.elementCount * info.dtype.byteSize,
                          info.elementCount == shardRange.count * width else {
                        throw StoreError(.invalidShard, path: path, "tensor '\(name)' changed on disk while reading")
                    }
                    convertElements(raw, dtype: info.dtype, start: (lo - shardRange.lowerBound) * width,
                                    count: (hi - lo) * width, into: dst + (lo - rows.lowerBound) * width)
                }
            }
        }
        return Tensor(shape: [rows.count] + spec.shape, data: data)
    }

    /// Calls `body` once per recorded shard, in order, with the shard's row range and its tensors
    /// `names` (float32, `[rows] + shape`). Only one shard is in memory at a time.
    public func forEachShard(_ names: [String], _ body: (Range<Int>, [String: Tensor]) throws -> Void) throws {
        for name in names { _ = try spec(name) }
        for (i, rows) in shardRows.enumerated() {
            var tensors: [String: Tensor] = [:]
            do {
                let file = try openShard(i)
                for name in names {
                    do {
                        tensors[name] = try file.floatTensor(name)
                    } catch let e as CheckpointError {
                        throw StoreError(.invalidShard, path: file.path, stripPath(e.description, file.path))
                    }
                }
            }
            try body(rows, tensors)
        }
    }

    /// Calls `body` once per recorded shard, in order, with the shard's row range and, per name in
    /// `names`, its values `[rows] + shape` as float32: float32 tensors are read in place from the
    /// mapped file (no copy), others are converted into a temporary array. The pointers are valid
    /// only inside `body`. For passes that read a run once and are bound by memory traffic.
    public func forEachShardInPlace(_ names: [String], _ body: (Range<Int>, [UnsafeBufferPointer<Float>]) throws -> Void) throws {
        let widths = try names.map { try spec($0).elementCount }
        for (i, rows) in shardRows.enumerated() {
            let file = try openShard(i)
            let path = file.path
            func step(_ k: Int, _ taken: [UnsafeBufferPointer<Float>]) throws {
                if k == names.count { try body(rows, taken); return }
                let name = names[k], count = rows.count * widths[k]
                guard let info = file.tensors[name], info.elementCount == count else {
                    throw StoreError(.invalidShard, path: path, "tensor '\(name)' is missing or not [\(rows.count)] + its shape")
                }
                if info.dtype == .f32 {
                    try file.withRawBytes(name) { raw in
                        guard raw.count == 4 * count else {
                            throw StoreError(.invalidShard, path: path, "tensor '\(name)' changed on disk while reading")
                        }
                        if count == 0 || Int(bitPattern: raw.baseAddress!) % MemoryLayout<Float>.alignment == 0 {
                            let p = raw.baseAddress.map { $0.assumingMemoryBound(to: Float.self) }
                            try step(k + 1, taken + [UnsafeBufferPointer(start: p, count: count)])
                        } else {
                            let copy = [Float](unsafeUninitializedCapacity: count) { buf, n in
                                UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: raw.baseAddress!, byteCount: 4 * count); n = count
                            }
                            try copy.withUnsafeBufferPointer { try step(k + 1, taken + [$0]) }
                        }
                    }
                } else {
                    let t: Tensor
                    do { t = try file.floatTensor(name) } catch let e as CheckpointError {
                        throw StoreError(.invalidShard, path: path, stripPath(e.description, path))
                    }
                    try t.data.withUnsafeBufferPointer { try step(k + 1, taken + [$0]) }
                }
            }
            try step(0, [])
        }
    }

    /// An image-independent tensor from `constants.safetensors`, float32.
    public func constant(_ name: String) throws -> Tensor {
        guard manifest.constants.contains(where: { $0.name == name }) else {
            throw StoreError(.unknownName, path: ManifestFile.url(run).path,
                             "the run has no constant '\(name)' (it has: \(manifest.constants.map(\.name).joined(separator: ", ")))")
        }
        let url = run.appendingPathComponent(ManifestFile.constantsName)
        let file = try openRunFile(url, role: "the run's constants")
        try checkTensors(file, expected: manifest.constants.map { ($0.name, $0.dtype.safetensors, $0.shape) },
                         manifestName: ManifestFile.name)
        if manifest.constantsSHA256 != nil { try verifyConstantsChecksum(manifest: manifest, run: run) }
        do {
            return try file.floatTensor(name)
        } catch let e as CheckpointError {
            throw StoreError(.invalidShard, path: url.path, stripPath(e.description, url.path))
        }
    }

    /// Fails unless `other` was computed with the same model (id and weights hash), convention and
    /// dimensions, and has the same per-image tensors (names and shapes; storage types may differ).
    public func requireCompatible(with other: StoreReader) throws {
        let a = manifest, b = other.manifest
        let here = run.path, there = other.run.path
        func fail(_ message: String) -> StoreError { StoreError(.incompatibleRuns, path: here, message) }
        if a.model.id != b.model.id || a.model.weightsSHA256 != b.model.weightsSHA256 {
            throw fail("runs of different models: \(here) has '\(a.model.id)' (weights sha256 \(a.model.weightsSHA256)), "
                + "\(there) has '\(b.model.id)' (weights sha256 \(b.model.weightsSHA256))")
        }
        if a.convention != b.convention {
            throw fail("runs with different conventions: \(here) uses '\(a.convention)', \(there) uses '\(b.convention)'")
        }
        if a.dimensions != b.dimensions {
            let key = Set(a.dimensions.keys).union(b.dimensions.keys).sorted().first { a.dimensions[$0] != b.dimensions[$0] } ?? "?"
            throw fail("runs with different dimensions: \(key) is \(a.dimensions[key].map(String.init) ?? "absent") in \(here), "
                + "\(b.dimensions[key].map(String.init) ?? "absent") in \(there)")
        }
        let ta = a.tensors.map { "\($0.name)\($0.shape)" }, tb = b.tensors.map { "\($0.name)\($0.shape)" }
        if ta != tb {
            throw fail("runs with different tensors: \(here) has \(ta.joined(separator: ", ")); \(there) has \(tb.joined(separator: ", "))")
        }
    }

    /// Hashes every shard file (and nothing else) and compares it with the SHA-256 in the manifest
    /// (shards this reader already checked are not hashed again). `progress` is called after each
    /// shard with the number checked so far.
    public func verifyChecksums(progress: ((Int) -> Void)? = nil) throws {
        for i in manifest.shards.indices {
            try verifyShard(i)
            progress?(i + 1)
        }
    }

    /// Checks shard `i`'s SHA-256 against the manifest unless this reader already did.
    func verifyShard(_ i: Int) throws {
        if verified.contains(i) { return }
        try verifyShardChecksum(manifest: manifest, run: run, index: i)
        verified.insert(i)
    }

    /// Checks the shards `indices` (those not yet checked), hashing several at once. The first
    /// damaged shard in index order is the error.
    func verifyShards(_ indices: [Int]) throws {
        let todo = indices.filter { !verified.contains($0) }
        guard !todo.isEmpty else { return }
        if todo.count == 1 { return try verifyShard(todo[0]) }
        let errors = ErrorSlots(count: todo.count)
        DispatchQueue.concurrentPerform(iterations: todo.count) { k in
            do { try verifyShard(todo[k]) } catch { errors.set(k, error) }
        }
        if let e = errors.first { throw e }
    }

    /// Opens shard `i` and re-checks its header against the manifest (the file may have changed
    /// since `init`).
    func openShard(_ i: Int) throws -> SafetensorsFile {
        let file = try checkShardHeader(manifest: manifest, run: run, index: i).file
        try verifyShard(i)
        return file
    }
}

/// The set of shard indices a reader has verified, shared by its threads.
final class VerifiedShards: @unchecked Sendable {
    private let lock = NSLock()
    private var set = Set<Int>()

    func contains(_ i: Int) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return set.contains(i)
    }

    func insert(_ i: Int) {
        lock.lock(); defer { lock.unlock() }
        set.insert(i)
    }
}

/// One error slot per task of a parallel loop; `first` is the lowest-numbered failure.
private final class ErrorSlots: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [Error?]
    init(count: Int) { errors = Array(repeating: nil, count: count) }

    func set(_ k: Int, _ e: Error) {
        lock.lock(); defer { lock.unlock() }
        errors[k] = e
    }

    var first: Error? {
        lock.lock(); defer { lock.unlock() }
        return errors.lazy.compactMap { $0 }.first
    }
}

/// Hashes `constants.safetensors` and compares it with the manifest's `constantsSHA256`.
func verifyConstantsChecksum(manifest: StoreManifest, run: URL) throws {
    guard let recorded = manifest.constantsSHA256 else { return }
    let url = run.appendingPathComponent(ManifestFile.constantsName)
    let hex: String
    do {
        hex = try SHA256.hexDigest(ofFileAt: url)
    } catch let e as CheckpointError {
        throw StoreError(.io, path: url.path, stripPath(e.description, url.path))
    }
    if hex != recorded {
        throw StoreError(.checksumMismatch, path: url.path,
                         "the run is damaged: this file's SHA-256 is \(hex), but \(ManifestFile.name) records \(recorded) "
                            + "(the file was modified or corrupted after it was written); its data cannot be trusted. "
                            + "Recompute the run, or restore the file from a copy")
    }
}

/// Hashes recorded shard `index` of `manifest` and compares it with the manifest's SHA-256.
func verifyShardChecksum(manifest: StoreManifest, run: URL, index: Int) throws {
    let record = manifest.shards[index]
    let url = run.appendingPathComponent(record.file)
    if ShardStamps.isVerified(url, sha256: record.sha256) { return }   // unchanged since it last matched
    let hex: String
    do {
        hex = try SHA256.hexDigest(ofFileAt: url)
    } catch let e as CheckpointError {
        throw StoreError(.io, path: url.path, stripPath(e.description, url.path))
    }
    if hex != record.sha256 {
        throw StoreError(.checksumMismatch, path: url.path,
                         "the run is damaged: this shard's SHA-256 is \(hex), but \(ManifestFile.name) records \(record.sha256) "
                            + "(the file was modified or corrupted after it was written); its data cannot be trusted. "
                            + "Recompute the run, or restore the file from a copy")
    }
    ShardStamps.record(url, sha256: record.sha256)
}

/// Validates recorded shard `index` of `manifest` and returns the input indices of its rows.
func checkShard(manifest: StoreManifest, run: URL, index: Int, skipped: Set<Int>, checkIndices: Bool) throws -> [Int] {
    let record = manifest.shards[index]
    let (file, _) = try checkShardHeader(manifest: manifest, run: run, index: index)
    let expected = record.range.filter { !skipped.contains($0) }
    guard checkIndices else { return expected }
    let stored: [Int64]
    do {
        stored = try file.int64Values(StoreLayout.imageIndexTensor)
    } catch let e as CheckpointError {
        throw StoreError(.invalidShard, path: file.path, stripPath(e.description, file.path))
    }
    if stored.count != expected.count || zip(stored, expected).contains(where: { Int($0) != $1 }) {
        let at = zip(stored, expected).enumerated().first { Int($0.element.0) != $0.element.1 }
        throw StoreError(.invalidShard, path: file.path,
                         "image_index disagrees with \(ManifestFile.name)"
                            + (at.map { " at row \($0.offset): \($0.element.0) stored, \($0.element.1) expected" } ?? ""))
    }
    return expected
}

/// Opens recorded shard `index` and checks metadata, tensor names, dtypes and shapes.
@discardableResult
func checkShardHeader(manifest: StoreManifest, run: URL, index: Int) throws -> (file: SafetensorsFile, rows: Int) {
    let record = manifest.shards[index]
    let number = manifest.shardNumber(index)
    let url = run.appendingPathComponent(record.file)
    let file = try openRunFile(url, role: "shard \(number) of \(manifest.shardRanges.count), recorded in \(ManifestFile.name)")
    let path = file.path
    let meta = file.metadata
    if meta[ShardMetadata.format] != StoreManifest.formatName {
        throw StoreError(.invalidShard, path: path, "is not a refract shard (its metadata has no format \"\(StoreManifest.formatName)\")")
    }
    if meta[ShardMetadata.runId] != manifest.runId {
        throw StoreError(.invalidShard, path: path,
                         "belongs to run \(meta[ShardMetadata.runId] ?? "(none)"), but \(ManifestFile.name) is run \(manifest.runId)")
    }
    if meta[ShardMetadata.shard] != String(number) {
        throw StoreError(.invalidShard, path: path, "is shard \(meta[ShardMetadata.shard] ?? "(none)") by its metadata, expected \(number)")
    }
    let rows = record.rows
    var expected: [(name: String, dtype: SafetensorsDType, shape: [Int])] = [(StoreLayout.imageIndexTensor, .i64, [rows])]
    for spec in manifest.tensors { expected.append((spec.name, spec.dtype.safetensors, [rows] + spec.shape)) }
    if manifest.hasShardStatistics {
        for spec in manifest.tensors {
            expected.append((ShardStatistics.sumName(spec.name), .f64, spec.shape))
            expected.append((ShardStatistics.sumOfSquaresName(spec.name), .f64, spec.shape))
        }
    }
    try checkTensors(file, expected: expected, manifestName: ManifestFile.name)
    return (file, rows)
}

extension StoreReader {
    /// The rows `rows` (any order, repeats allowed) of a tensor: `[rows.count] + spec.shape`, float32,
    /// row i of the result being run row rows[i]. Each shard holding some of them is opened once and
    /// only those rows' bytes are read (from the mapped file).
    public func tensor(_ name: String, rowList rows: [Int]) throws -> Tensor {
        let spec = try spec(name)
        let width = spec.elementCount
        var data = [Float](repeating: 0, count: rows.count * width)
        var byShard = [Int: [(slot: Int, row: Int)]]()
        for (k, r) in rows.enumerated() {
            guard r >= 0, r < rowCount else {
                throw StoreError(.invalidArgument, path: run.path, "row \(r) is outside the run's \(rowCount) rows")
            }
            guard let i = shardRows.firstIndex(where: { $0.contains(r) }) else {
                throw StoreError(.invalidArgument, path: run.path, "row \(r) is in no shard")
            }
            byShard[i, default: []].append((k, r))
        }
        for (i, wanted) in byShard.sorted(by: { $0.key < $1.key }) {
            let shardRange = shardRows[i]
            let file = try openShard(i)
            guard let info = file.tensors[name] else {
                throw StoreError(.invalidShard, path: file.path, "tensor '\(name)' is missing")
            }
            let path = file.path
            try data.withUnsafeMutableBufferPointer { out in
                try file.withRawBytes(name) { raw in
                    guard raw.count == info.elementCount * info.dtype.byteSize, info.elementCount == shardRange.count * width else {
                        throw StoreError(.invalidShard, path: path, "tensor '\(name)' changed on disk while reading")
                    }
                    for (slot, r) in wanted {
                        convertElements(raw, dtype: info.dtype, start: (r - shardRange.lowerBound) * width, count: width,
                                        into: out.baseAddress! + slot * width)
                    }
                }
            }
        }
        return Tensor(shape: [rows.count] + spec.shape, data: data)
    }
}
