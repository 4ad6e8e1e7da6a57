import Foundation
import RefractCheckpoint

// MARK: - Manifest
//
// `manifest.json` describes a run completely: the model and preprocessing that produced it, the
// per-image tensors (names, shapes, storage types), the full input list, the shard size, and which
// shards are done. It is written pretty-printed with sorted keys; optional fields are written as
// explicit `null` so that every manifest shows every field.

/// Storage type of a tensor in the shard files. Readers always return float32.
public enum StoreDType: String, Codable, Equatable, Hashable, Sendable, CaseIterable {
    case float32
    case float16

    /// The safetensors dtype used in the files.
    public var safetensors: SafetensorsDType { self == .float32 ? .f32 : .f16 }
    /// Bytes per element on disk.
    public var byteSize: Int { self == .float32 ? 4 : 2 }

    /// Rounds a value as storing it does (identity for float32, round-to-nearest-even for float16).
    public func rounded(_ x: Float) -> Float {
        self == .float32 ? x : HalfPrecision.float(fromFloat16: HalfPrecision.float16Bits(from: x))
    }
}

/// One named tensor of a run: per image (`StoreHeader.tensors`, shape without the image axis) or
/// image-independent (`StoreHeader.constants`).
public struct StoreTensorSpec: Codable, Equatable, Hashable, Sendable {
    public var name: String
    /// Shape of one image's tensor (per-image specs) or of the whole constant.
    public var shape: [Int]
    public var dtype: StoreDType
    public var description: String

    public init(name: String, shape: [Int], dtype: StoreDType = .float32, description: String = "") {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.description = description
    }

    /// Elements per image (per-image specs) or in the constant.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// One input image: its path as given, an optional label, optional extra columns (e.g. from a CSV).
public struct StoreImage: Codable, Equatable, Hashable, Sendable {
    public var path: String
    public var label: String?
    public var columns: [String: String]?

    public init(path: String, label: String? = nil, columns: [String: String]? = nil) {
        self.path = path
        self.label = label
        self.columns = columns
    }

    private enum CodingKeys: String, CodingKey { case path, label, columns }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encode(label, forKey: .label)
        try c.encode(columns, forKey: .columns)
    }
}

/// An input image that could not be processed, with the reason.
public struct SkippedImage: Codable, Equatable, Hashable, Sendable {
    /// Index in the input list (`StoreHeader.images`).
    public var index: Int
    public var path: String
    public var error: String

    public init(index: Int, path: String, error: String) {
        self.index = index
        self.path = path
        self.error = error
    }
}

/// The checkpoint a run was computed with.
public struct StoreModelInfo: Codable, Equatable, Hashable, Sendable {
    /// The model spec as given (hub id or directory).
    public var id: String
    /// Checkpoint layout: "openclip" or "transformers".
    public var layout: String
    /// Hub commit, when the model came from the hub cache.
    public var commit: String?
    /// Hex SHA-256 over the weight files (how it is formed is the caller's convention).
    public var weightsSHA256: String
    /// The weight files, as named in the model directory.
    public var weightFiles: [String]

    public init(id: String, layout: String, commit: String? = nil, weightsSHA256: String, weightFiles: [String]) {
        self.id = id
        self.layout = layout
        self.commit = commit
        self.weightsSHA256 = weightsSHA256
        self.weightFiles = weightFiles
    }

    private enum CodingKeys: String, CodingKey { case id, layout, commit, weightsSHA256, weightFiles }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(layout, forKey: .layout)
        try c.encode(commit, forKey: .commit)
        try c.encode(weightsSHA256, forKey: .weightsSHA256)
        try c.encode(weightFiles, forKey: .weightFiles)
    }
}

/// A completed shard as recorded in the manifest.
public struct StoreShardRecord: Codable, Equatable, Hashable, Sendable {
    /// File name inside the run directory (`shard-00000.safetensors`).
    public var file: String
    /// First input index of the shard's range.
    public var first: Int
    /// Number of input images in the range.
    public var count: Int
    /// Rows stored (`count` minus the skipped images of the range).
    public var rows: Int
    /// Lower-case hex SHA-256 of the whole file.
    public var sha256: String

    public init(file: String, first: Int, count: Int, rows: Int, sha256: String) {
        self.file = file
        self.first = first
        self.count = count
        self.rows = rows
        self.sha256 = sha256
    }

    /// Input indices covered by the shard.
    public var range: Range<Int> { first..<(first + count) }
}

/// One of N parts of a run split across machines (`refract decompose --part K/N`): the K-th of N
/// contiguous slices of the run's shards, `⌊K·S/N⌋ ..< ⌊(K+1)·S/N⌋` of its S shards (so the
/// slices follow the image order, differ by at most one shard, and may be empty when N > S).
/// A part is written like a run, into its own directory, under the run id every part of the same
/// header shares (`StoreHeader.partRunId`); `StoreMerge` joins the parts into one run.
public struct StorePart: Codable, Equatable, Hashable, Sendable {
    /// K, from 0 (as Slurm array and Kubernetes Indexed Job indices).
    public var index: Int
    /// N.
    public var count: Int
    /// The first of the run's shards this part holds.
    public var firstShard: Int
    public var shardCount: Int
    /// The input images of those shards: `firstImage ..< firstImage + imageCount`.
    public var firstImage: Int
    public var imageCount: Int
    /// SHA-256 of the whole input list (`StoreHeader.imageListSHA256`).
    public var listSHA256: String

    /// The part `index` of `count` of a run with `header`. Fails on an index outside 0..<count.
    public init(index: Int, count: Int, header: StoreHeader) throws {
        guard count >= 1, count <= 1_000_000 else {
            throw StoreError(.invalidArgument, path: "--part", "\(index)/\(count): the number of parts must be 1...1000000")
        }
        guard (0..<count).contains(index) else {
            throw StoreError(.invalidArgument, path: "--part", "\(index)/\(count): K must be 0...\(count - 1) "
                + "(parts are numbered from 0, as Slurm array and Kubernetes Indexed Job indices)")
        }
        let shards = Self.shardSlice(index: index, count: count, shards: header.shardRanges.count)
        let n = header.images.count, size = max(header.shardSize, 1)
        let first = min(shards.lowerBound * size, n), end = min(shards.upperBound * size, n)
        self.index = index
        self.count = count
        firstShard = shards.lowerBound
        shardCount = shards.count
        firstImage = first
        imageCount = end - first
        listSHA256 = header.imageListSHA256
    }

    /// The shards of part `index` of `count` of a run of `shards` shards: ⌊K·S/N⌋ ..< ⌊(K+1)·S/N⌋.
    public static func shardSlice(index: Int, count: Int, shards: Int) -> Range<Int> {
        (index * shards / count)..<((index + 1) * shards / count)
    }

    /// The run's shards this part holds.
    public var shards: Range<Int> { firstShard..<(firstShard + shardCount) }
    /// The input images this part holds.
    public var images: Range<Int> { firstImage..<(firstImage + imageCount) }
    /// "K/N".
    public var label: String { "\(index)/\(count)" }
}

/// Everything that defines a run's contents; resuming requires the stored header to be equal.
public struct StoreHeader: Equatable, Hashable, Sendable {
    public var model: StoreModelInfo
    public var preprocessing: JSONValue
    /// Decomposition convention (e.g. "faithful").
    public var convention: String
    /// Named sizes (layers, heads, tokens, width, ...).
    public var dimensions: [String: Int]
    /// Run options that affect the contents (token layers, dtype, batch size, ...).
    public var options: JSONValue
    /// Per-image tensors; each shard holds `[rows] + shape` of each.
    public var tensors: [StoreTensorSpec]
    /// Image-independent tensors, stored once in `constants.safetensors`.
    public var constants: [StoreTensorSpec]
    /// The full input list, in input order.
    public var images: [StoreImage]
    public var classNames: [String]?
    /// Images per shard (the last shard may be smaller).
    public var shardSize: Int

    public init(model: StoreModelInfo, preprocessing: JSONValue = .object([:]), convention: String,
                dimensions: [String: Int] = [:], options: JSONValue = .object([:]), tensors: [StoreTensorSpec],
                constants: [StoreTensorSpec] = [], images: [StoreImage], classNames: [String]? = nil,
                shardSize: Int) {
        self.model = model
        self.preprocessing = preprocessing
        self.convention = convention
        self.dimensions = dimensions
        self.options = options
        self.tensors = tensors
        self.constants = constants
        self.images = images
        self.classNames = classNames
        self.shardSize = shardSize
    }

    /// The fixed input ranges of the shards (empty when there are no images or `shardSize` < 1).
    public var shardRanges: [Range<Int>] {
        let n = images.count
        guard n > 0, shardSize > 0 else { return [] }
        let shards = (n - 1) / shardSize + 1
        return (0..<shards).map { i in
            let first = i * shardSize
            return first..<(first + min(shardSize, n - first))
        }
    }

    /// Lower-case hex SHA-256 of the input list (paths, labels and columns, as the manifest's
    /// `images` in canonical JSON: sorted keys, no spaces).
    public var imageListSHA256: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return SHA256.hexDigest(Array((try? encoder.encode(images)) ?? Data()))
    }

    /// The run id every part of a run with this header carries (so that their shards are the shards
    /// of one run): a UUID-shaped prefix of the SHA-256 of the header in canonical JSON.
    public var partRunId: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes = Array((try? encoder.encode(StoreManifest(runId: "", createdBy: "", header: self))) ?? Data())
        let h = Array(SHA256.hexDigest(Array("refract-part-run\n".utf8) + bytes).prefix(32))
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(h[$0]) }.joined(separator: "-")
    }
}

/// The contents of `manifest.json`.
public struct StoreManifest: Codable, Equatable, Sendable {
    /// The format name every run manifest carries.
    public static let formatName = "refract-contributions"
    /// The newest format version this build reads and the one it writes. Version 2 added the
    /// shards' statistics (`sum:NAME`, `sumsq:NAME`) and parts (`part`, `mergedFrom`); version 1
    /// runs are read as before and resumed as version 1.
    public static let currentFormatVersion = 2

    public var format: String
    public var formatVersion: Int
    /// Random UUID chosen when the run was created; kept across resumes.
    public var runId: String
    /// Program and version that created the run (e.g. "refract 0.2.0").
    public var createdBy: String
    public var model: StoreModelInfo
    public var preprocessing: JSONValue
    public var convention: String
    public var dimensions: [String: Int]
    public var options: JSONValue
    public var tensors: [StoreTensorSpec]
    public var constants: [StoreTensorSpec]
    public var images: [StoreImage]
    public var classNames: [String]?
    public var shardSize: Int
    /// Completed shards, in order (shard `i` covers `shardRanges[i]`).
    public var shards: [StoreShardRecord]
    /// Images of the completed shards that could not be processed, by ascending index.
    public var skipped: [SkippedImage]
    /// Whether every shard is written and the run was finished.
    public var complete: Bool
    /// Lower-case hex SHA-256 of `constants.safetensors`, once it is written (null for runs without
    /// constants, and in runs written before it was recorded).
    public var constantsSHA256: String?
    /// Set in a part of a run split across machines (null in a whole run).
    public var part: StorePart?
    /// In a run merged from parts: the parts, in shard order (null otherwise).
    public var mergedFrom: [StorePart]?

    public init(runId: String, createdBy: String, header: StoreHeader, shards: [StoreShardRecord] = [],
                skipped: [SkippedImage] = [], complete: Bool = false) {
        format = Self.formatName
        formatVersion = Self.currentFormatVersion
        self.runId = runId
        self.createdBy = createdBy
        model = header.model
        preprocessing = header.preprocessing
        convention = header.convention
        dimensions = header.dimensions
        options = header.options
        tensors = header.tensors
        constants = header.constants
        images = header.images
        classNames = header.classNames
        shardSize = header.shardSize
        self.shards = shards
        self.skipped = skipped
        self.complete = complete
    }

    /// The header part (everything but runId, createdBy, shards, skipped, complete).
    public var header: StoreHeader {
        StoreHeader(model: model, preprocessing: preprocessing, convention: convention, dimensions: dimensions,
                    options: options, tensors: tensors, constants: constants, images: images,
                    classNames: classNames, shardSize: shardSize)
    }

    /// The fixed input ranges of the shards.
    public var shardRanges: [Range<Int>] { header.shardRanges }

    /// The run's number of recorded shard `i` (a part records a contiguous slice of the shards).
    public func shardNumber(_ i: Int) -> Int { (part?.firstShard ?? 0) + i }
    /// The shards this manifest holds when complete: all of the run's, or its part's.
    public var ownShards: Range<Int> { part?.shards ?? 0..<shardRanges.count }
    /// Whether each shard carries the sums and sums of squares of its rows (format version 2).
    public var hasShardStatistics: Bool { formatVersion >= 2 }

    /// File name of shard `index`.
    public static func shardFileName(_ index: Int) -> String {
        let digits = String(index)
        return "shard-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + ".safetensors"
    }

    private enum CodingKeys: String, CodingKey {
        case format, formatVersion, runId, createdBy, model, preprocessing, convention, dimensions, options
        case tensors, constants, images, classNames, shardSize, shards, skipped, complete, constantsSHA256
        case part, mergedFrom
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(format, forKey: .format)
        try c.encode(formatVersion, forKey: .formatVersion)
        try c.encode(runId, forKey: .runId)
        try c.encode(createdBy, forKey: .createdBy)
        try c.encode(model, forKey: .model)
        try c.encode(preprocessing, forKey: .preprocessing)
        try c.encode(convention, forKey: .convention)
        try c.encode(dimensions, forKey: .dimensions)
        try c.encode(options, forKey: .options)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(constants, forKey: .constants)
        try c.encode(images, forKey: .images)
        try c.encode(classNames, forKey: .classNames)
        try c.encode(shardSize, forKey: .shardSize)
        try c.encode(shards, forKey: .shards)
        try c.encode(skipped, forKey: .skipped)
        try c.encode(complete, forKey: .complete)
        try c.encode(constantsSHA256, forKey: .constantsSHA256)
        if formatVersion >= 2 {
            try c.encode(part, forKey: .part)
            try c.encode(mergedFrom, forKey: .mergedFrom)
        }
    }

    /// Pretty-printed JSON with sorted keys and a final newline (the bytes of `manifest.json`).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(0x0A)
        return data
    }
}

// MARK: - Validation

extension StoreHeader {
    /// Checks names, shapes and the shard size. `path` names the file or directory in errors.
    func validate(path: String, kind: StoreError.Kind) throws {
        func bad(_ message: String) -> StoreError { StoreError(kind, path: path, message) }
        if shardSize < 1 { throw bad("shardSize is \(shardSize); it must be at least 1") }
        var seen = Set<String>()
        for (group, specs) in [("tensor", tensors), ("constant", constants)] {
            for spec in specs {
                if let problem = nameProblem(spec.name) { throw bad("\(group) name '\(spec.name)' \(problem)") }
                if !seen.insert(spec.name).inserted {
                    throw bad("\(group) name '\(spec.name)' is used twice (tensor and constant names share one namespace)")
                }
                if spec.shape.contains(where: { $0 < 0 }) {
                    throw bad("\(group) '\(spec.name)' has a negative extent in shape \(spec.shape)")
                }
                var count = 1
                for d in spec.shape {
                    let (c, o) = count.multipliedReportingOverflow(by: d)
                    if o || c > Int.max / 8 { throw bad("\(group) '\(spec.name)' shape \(spec.shape) has too many elements") }
                    count = c
                }
            }
        }
    }

    /// The first field in which `other` differs from `self`, described with both values.
    func firstDifference(from other: StoreHeader) -> String? {
        func show<T>(_ v: T) -> String { shorten(String(describing: v)) }
        func showOpt(_ v: String?) -> String { v.map { "\"\(shorten($0))\"" } ?? "null" }
        if model.id != other.model.id { return "model.id (stored \"\(model.id)\", requested \"\(other.model.id)\")" }
        if model.layout != other.model.layout {
            return "model.layout (stored \"\(model.layout)\", requested \"\(other.model.layout)\")"
        }
        if model.commit != other.model.commit {
            return "model.commit (stored \(showOpt(model.commit)), requested \(showOpt(other.model.commit)))"
        }
        if model.weightsSHA256 != other.model.weightsSHA256 {
            return "model.weightsSHA256 (stored \(model.weightsSHA256), requested \(other.model.weightsSHA256))"
        }
        if model.weightFiles != other.model.weightFiles {
            return "model.weightFiles (stored \(show(model.weightFiles)), requested \(show(other.model.weightFiles)))"
        }
        if let d = jsonDifference(preprocessing, other.preprocessing, at: "preprocessing") { return d }
        if convention != other.convention {
            return "convention (stored \"\(convention)\", requested \"\(other.convention)\")"
        }
        if dimensions != other.dimensions {
            for key in Set(dimensions.keys).union(other.dimensions.keys).sorted() where dimensions[key] != other.dimensions[key] {
                return "dimensions.\(key) (stored \(dimensions[key].map(String.init) ?? "absent"), "
                    + "requested \(other.dimensions[key].map(String.init) ?? "absent"))"
            }
        }
        if let d = jsonDifference(options, other.options, at: "options") { return d }
        if let d = specDifference(tensors, other.tensors, field: "tensors") { return d }
        if let d = specDifference(constants, other.constants, field: "constants") { return d }
        if images.count != other.images.count {
            return "images (stored \(images.count) images, requested \(other.images.count))"
        }
        for i in images.indices where images[i] != other.images[i] {
            let a = images[i], b = other.images[i]
            if a.path != b.path { return "images[\(i)].path (stored \"\(a.path)\", requested \"\(b.path)\")" }
            if a.label != b.label { return "images[\(i)].label (stored \(showOpt(a.label)), requested \(showOpt(b.label)))" }
            return "images[\(i)].columns (stored \(show(a.columns as Any)), requested \(show(b.columns as Any)))"
        }
        if classNames != other.classNames {
            let a = classNames, b = other.classNames
            if let a, let b, a.count == b.count, let i = a.indices.first(where: { a[$0] != b[$0] }) {
                return "classNames[\(i)] (stored \"\(a[i])\", requested \"\(b[i])\")"
            }
            return "classNames (stored \(a.map { "\($0.count) names" } ?? "null"), requested \(b.map { "\($0.count) names" } ?? "null"))"
        }
        if shardSize != other.shardSize { return "shardSize (stored \(shardSize), requested \(other.shardSize))" }
        return nil
    }
}

/// Why `name` cannot name a tensor (it becomes a file name on export), or nil when it can.
func nameProblem(_ name: String) -> String? {
    if name.isEmpty { return "is empty" }
    if name.utf8.count > 200 { return "is longer than 200 bytes" }
    if name == StoreLayout.imageIndexTensor { return "is reserved (each shard's row index tensor)" }
    if name == "__metadata__" { return "is reserved by safetensors" }
    if name.hasPrefix(".") { return "starts with '.'" }
    let ok = name.utf8.allSatisfy { c in
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
    }
    return ok ? nil : "may only hold ASCII letters, digits, '_', '-' and '.' (it names the exported file)"
}

func shorten(_ s: String, limit: Int = 120) -> String {
    s.count <= limit ? s : String(s.prefix(limit)) + "…"
}

private func specDifference(_ a: [StoreTensorSpec], _ b: [StoreTensorSpec], field: String) -> String? {
    if a == b { return nil }
    if a.count != b.count || a.map(\.name) != b.map(\.name) {
        return "\(field) (stored \(a.map(\.name)), requested \(b.map(\.name)))"
    }
    for (x, y) in zip(a, b) where x != y {
        if x.shape != y.shape { return "\(field).\(x.name).shape (stored \(x.shape), requested \(y.shape))" }
        if x.dtype != y.dtype {
            return "\(field).\(x.name).dtype (stored \(x.dtype.rawValue), requested \(y.dtype.rawValue))"
        }
        return "\(field).\(x.name).description (stored \"\(shorten(x.description))\", requested \"\(shorten(y.description))\")"
    }
    return nil
}

private func jsonDifference(_ a: JSONValue, _ b: JSONValue, at path: String) -> String? {
    if a == b { return nil }
    if case let .object(x) = a, case let .object(y) = b {
        for key in Set(x.keys).union(y.keys).sorted() {
            switch (x[key], y[key]) {
            case let (u?, v?):
                if let d = jsonDifference(u, v, at: "\(path).\(key)") { return d }
            case let (u?, nil):
                return "\(path).\(key) (stored \(shorten(u.compactText)), requested: absent)"
            case let (nil, v?):
                return "\(path).\(key) (stored: absent, requested \(shorten(v.compactText)))"
            case (nil, nil):
                break
            }
        }
    }
    return "\(path) (stored \(shorten(a.compactText)), requested \(shorten(b.compactText)))"
}

extension StoreManifest {
    /// Checks that the manifest is consistent with itself: header, part, shard records, skipped images.
    func validate(path: String) throws {
        try header.validate(path: path, kind: .invalidManifest)
        func bad(_ message: String) -> StoreError { StoreError(.invalidManifest, path: path, message) }
        let ranges = shardRanges
        if formatVersion < 2 && (part != nil || mergedFrom != nil) {
            throw bad("records a part or merged parts, which format version \(formatVersion) does not have")
        }
        if let p = part {
            guard p.count >= 1, (0..<p.count).contains(p.index),
                  p.shards == StorePart.shardSlice(index: p.index, count: p.count, shards: ranges.count) else {
                throw bad("part \(p.label) records shards \(p.shards), but part \(p.label) of \(ranges.count) shards is "
                    + "\(p.count >= 1 ? "\(StorePart.shardSlice(index: p.index, count: p.count, shards: ranges.count))" : "impossible")")
            }
            let first = min(p.firstShard * shardSize, images.count), end = min(p.shards.upperBound * shardSize, images.count)
            if p.images != first..<end { throw bad("part \(p.label) records images \(p.images); its shards hold \(first)..<\(end)") }
            if !isSHA256Hex(p.listSHA256) { throw bad("part.listSHA256 '\(shorten(p.listSHA256))' is not 64 lower-case hex digits") }
        }
        let own = ownShards
        if shards.count > own.count {
            throw bad("records \(shards.count) shards but \(images.count) images in shards of \(shardSize) make only \(own.count)"
                + (part.map { " in part \($0.label)" } ?? ""))
        }
        for (i, s) in shards.enumerated() {
            let number = shardNumber(i), r = ranges[number]
            if s.file != Self.shardFileName(number) {
                throw bad("shards[\(i)].file is '\(s.file)', expected '\(Self.shardFileName(number))'")
            }
            if s.first != r.lowerBound || s.count != r.count {
                throw bad("shards[\(i)] covers first \(s.first), count \(s.count); expected first \(r.lowerBound), count \(r.count)")
            }
            if s.rows < 0 || s.rows > s.count { throw bad("shards[\(i)].rows is \(s.rows), outside 0...\(s.count)") }
            if !isSHA256Hex(s.sha256) { throw bad("shards[\(i)].sha256 '\(shorten(s.sha256))' is not 64 lower-case hex digits") }
        }
        if let h = constantsSHA256 {
            if constants.isEmpty { throw bad("records constantsSHA256 but declares no constants") }
            if !isSHA256Hex(h) { throw bad("constantsSHA256 '\(shorten(h))' is not 64 lower-case hex digits") }
        }
        let start = shards.first?.first ?? 0
        let covered = shards.last.map { $0.first + $0.count } ?? 0
        var previous = -1
        var skippedPerShard = [Int](repeating: 0, count: shards.count)
        for (j, s) in skipped.enumerated() {
            if s.index <= previous { throw bad("skipped[\(j)].index \(s.index) is not in ascending order") }
            if s.index < start || s.index >= covered {
                throw bad("skipped[\(j)].index \(s.index) is outside the completed shards (images \(start)..<\(max(start, covered)))")
            }
            if s.path != images[s.index].path {
                throw bad("skipped[\(j)].path '\(s.path)' is not images[\(s.index)].path '\(images[s.index].path)'")
            }
            skippedPerShard[s.index / shardSize - own.lowerBound] += 1
            previous = s.index
        }
        for (i, s) in shards.enumerated() where s.rows + skippedPerShard[i] != s.count {
            throw bad("shards[\(i)] has \(s.rows) rows and \(skippedPerShard[i]) skipped images, but covers \(s.count) images")
        }
        if complete && shards.count != own.count {
            throw bad("is marked complete but records \(shards.count) of \(own.count) shards" + (part.map { " of part \($0.label)" } ?? ""))
        }
    }
}

func isSHA256Hex(_ s: String) -> Bool {
    s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
}
