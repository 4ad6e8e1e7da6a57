import Foundation
import RefractTensor

// MARK: - TensorLoader
//
// The strict consumer side of a checkpoint: model code asks for each tensor by name and shape,
// marks known buffers as ignored, and calls `finish()`, which fails if any tensor in the
// checkpoint was never used. Missing tensors, wrong shapes and leftovers therefore surface as
// errors naming the file and key instead of silently producing a wrong model.

/// Hands out the tensors of one safetensors file or a set of shards, tracking which were used.
public final class TensorLoader {
    /// The opened files, in the order given.
    public let files: [SafetensorsFile]
    private var owner: [String: SafetensorsFile] = [:]
    private var used = Set<String>()
    /// Whether to drop each tensor's mapped pages after it is read (default on).
    public var releasesPagesAfterTake = true

    /// Opens one file or several shards. A key present in two files is an error.
    public init(files: [URL]) throws {
        self.files = try files.map { try SafetensorsFile(url: $0) }
        try index()
    }

    /// Wraps already opened files.
    public init(opened: [SafetensorsFile]) throws {
        self.files = opened
        try index()
    }

    private func index() throws {
        for f in files {
            for key in f.keys {
                if let other = owner[key] {
                    throw CheckpointError.duplicateTensor(key: key, paths: [other.path, f.path])
                }
                owner[key] = f
            }
        }
    }

    /// Opens a sharded checkpoint from its `*.safetensors.index.json`. The `weight_map` must name
    /// every tensor of every shard, and each shard must hold exactly the keys mapped to it.
    public convenience init(indexFile: URL) throws {
        let shards = try Self.shardFiles(indexFile: indexFile)
        try self.init(files: shards.map(\.url))
        let indexPath = indexFile.path
        for shard in shards {
            guard let file = files.first(where: { $0.url == shard.url }) else { continue }
            let actual = Set(file.keys)
            if let key = shard.keys.sorted().first(where: { !actual.contains($0) }) {
                throw CheckpointError.invalidIndex(path: indexPath,
                    reason: "weight_map puts '\(key)' in \(shard.url.lastPathComponent), which does not contain it")
            }
            if let key = actual.subtracting(shard.keys).sorted().first {
                throw CheckpointError.invalidIndex(path: indexPath,
                    reason: "\(shard.url.lastPathComponent) contains '\(key)', which weight_map does not map to it")
            }
        }
    }

    /// The shard files named by an index's `weight_map`, each with the keys mapped to it, in
    /// order of first appearance by sorted key.
    public static func shardFiles(indexFile: URL) throws -> [(url: URL, keys: Set<String>)] {
        let path = indexFile.path
        let data: Data
        do { data = try InputFile.read(path) } catch let e as InputFileError {  // refused by type first (a FIFO would block)
            throw CheckpointError.io(path: path, message: "cannot read the weights index: \(e.reason)")
        }
        let json: JSONValue
        do { json = try JSONParser.parse(Array(data)) } catch {
            throw CheckpointError.invalidIndex(path: path, reason: "not valid JSON: \(error)")
        }
        guard case let .object(members) = json else { throw CheckpointError.invalidIndex(path: path, reason: "not a JSON object") }
        guard let map = members.first(where: { $0.key == "weight_map" })?.value, case let .object(pairs) = map else {
            throw CheckpointError.invalidIndex(path: path, reason: "no 'weight_map' object")
        }
        if pairs.isEmpty { throw CheckpointError.invalidIndex(path: path, reason: "'weight_map' is empty") }
        var byShard: [String: Set<String>] = [:]
        var order: [String] = []
        for (key, value) in pairs.sorted(by: { $0.key < $1.key }) {
            guard case let .string(name) = value else {
                throw CheckpointError.invalidIndex(path: path, reason: "weight_map entry for '\(key)' is \(value.kindName), not a file name")
            }
            guard !name.isEmpty, !name.contains("/"), !name.contains("\\"), name != ".", name != ".." else {
                throw CheckpointError.invalidIndex(path: path, reason: "shard name '\(name)' for '\(key)' is not a plain file name")
            }
            if byShard[name] == nil { order.append(name) }
            byShard[name, default: []].insert(key)
        }
        let dir = indexFile.deletingLastPathComponent()
        return order.map { (dir.appendingPathComponent($0), byShard[$0]!) }
    }

    /// All tensor names, sorted.
    public var keys: [String] { owner.keys.sorted() }

    /// Names not yet taken or ignored, sorted.
    public var unusedKeys: [String] { owner.keys.filter { !used.contains($0) }.sorted() }

    /// Whether the checkpoint has `key`.
    public func contains(_ key: String) -> Bool { owner[key] != nil }

    /// The file holding `key`, if present.
    public func path(of key: String) -> String? { owner[key]?.path }

    /// Header entry for `key`, if present.
    public func info(_ key: String) -> SafetensorsTensorInfo? { owner[key]?.tensors[key] }

    private func file(for key: String) throws -> SafetensorsFile {
        guard let f = owner[key] else {
            throw CheckpointError.missingTensor(key: key, paths: files.map(\.path), suggestions: similarKeys(to: key, in: keys))
        }
        return f
    }

    /// Takes a float tensor (F32/F16/BF16 widened to float32), which must have exactly `shape`.
    public func take(_ key: String, shape: [Int]) throws -> Tensor {
        let f = try file(for: key)
        let actual = f.tensors[key]!.shape
        if actual != shape { throw CheckpointError.shapeMismatch(path: f.path, key: key, expected: shape, actual: actual) }
        return try take(key)
    }

    /// Takes a float tensor of whatever shape the file declares. Every value must be finite: a NaN
    /// or ±infinity is an `invalidEntry` error naming the file, the key, the first bad element's
    /// index and its value (one vectorised pass over the widened data; see docs/Checkpoints.md).
    public func take(_ key: String) throws -> Tensor {
        let f = try file(for: key)
        let t = try f.floatTensor(key)
        if releasesPagesAfterTake { f.releasePages(of: key) }
        if let bad = t.firstNonFinite() {
            throw CheckpointError.invalidEntry(path: f.path, key: key, reason: Self.nonFiniteReason(bad, shape: t.shape))
        }
        used.insert(key)
        return t
    }

    /// "holds NaN at flat index 7 (element [1, 3] of shape [2, 4]); ..." for `invalidEntry`.
    static func nonFiniteReason(_ bad: NonFiniteValue, shape: [Int]) -> String {
        "holds \(bad.valueText) at flat index \(bad.index) (element \(Tensor.position(ofFlatIndex: bad.index, in: shape)) "
            + "of shape \(shape)); a checkpoint's weights must all be finite (the file is damaged, or was saved "
            + "from a diverged training run)"
    }

    /// Elements of every F32/F16/BF16 tensor in the files, from the headers alone (nothing is read):
    /// what a model's configuration implies can be compared with it before any weight is loaded.
    public var floatElementCount: Int {
        files.reduce(0) { total, f in
            f.tensors.values.reduce(total) { $1.dtype.isConvertibleToFloat32 ? $0 + $1.elementCount : $0 }
        }
    }

    /// Takes a float tensor if the checkpoint has it (still shape-checked), else returns nil.
    public func takeIfPresent(_ key: String, shape: [Int]) throws -> Tensor? {
        contains(key) ? try take(key, shape: shape) : nil
    }

    /// Takes an I64 tensor (e.g. `position_ids`), which must have exactly `shape`.
    public func takeInt64(_ key: String, shape: [Int]) throws -> [Int64] {
        let f = try file(for: key)
        let actual = f.tensors[key]!.shape
        if actual != shape { throw CheckpointError.shapeMismatch(path: f.path, key: key, expected: shape, actual: actual) }
        let v = try f.int64Values(key)
        used.insert(key)
        return v
    }

    /// Marks `key` as deliberately unused (known buffers such as `position_ids`); absent keys are fine.
    public func ignore(_ key: String) {
        if owner[key] != nil { used.insert(key) }
    }

    /// Marks every key for which `predicate` is true as deliberately unused (e.g. a text tower
    /// when only the vision tower is loaded).
    public func ignoreAll(where predicate: (String) -> Bool) {
        for key in owner.keys where predicate(key) { used.insert(key) }
    }

    /// Succeeds only if every tensor was taken or ignored; otherwise throws `unusedTensors`
    /// listing each leftover key with its file.
    public func finish() throws {
        let left = unusedKeys
        if !left.isEmpty {
            throw CheckpointError.unusedTensors(left.map { .init(key: $0, path: owner[$0]!.path) })
        }
    }
}
