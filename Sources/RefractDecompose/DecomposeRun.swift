// MARK: - Decomposing a dataset into a run store
//
// Streams a dataset through the decomposer shard by shard: each shard's images are decoded,
// preprocessed and decomposed in batches that always start at the shard's first image, so a run
// resumed after a kill computes exactly what an uninterrupted one would have (bit for bit). Only
// one shard of results is held in memory; its size is chosen so that it stays under
// `DecomposeRunOptions.shardBytes`.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractStore
import RefractTensor
import RefractTimm

public struct DecomposeRunOptions: Sendable {
    public enum OnError: String, Sendable, CaseIterable {
        /// Stop at the first unreadable image, naming it; the run stays resumable.
        case stop
        /// Record the image (path and error) in the manifest's `skipped` list and go on.
        case skip
    }
    public var convention: DecompositionConvention = .faithful
    /// CLIP: layers with per-token terms; timm: blocks with per-token terms.
    public var tokenLayers: [Int] = []
    /// timm: the first decomposed block (earlier blocks are lumped into `init`).
    public var fromBlock: Int = 0
    /// Storage type of the component tensors (`embedding` and `norm` are always float32).
    public var dtype: StoreDType = .float32
    public var batchSize: Int = 8
    /// Upper bound of one shard's size in bytes (sets images per shard) ...
    public var shardBytes: Int = 256 << 20
    /// ... unless the number of images per shard is given.
    public var shardSize: Int? = nil
    public var onError: OnError = .stop
    public var resume: Bool = false
    /// Start the run, or resume it when the output holds an incomplete one of the same settings, or
    /// do nothing when it holds the complete one (for scheduler tasks that may be started again).
    public var continueRun: Bool = false
    /// Write only part K of N of the run (`StorePart`: the K-th of N contiguous slices of its
    /// shards), to be joined with the others by `StoreMerge`.
    public var part: (index: Int, count: Int)? = nil
    public init() {}
}

public struct DecomposeRunSummary: Sendable {
    /// Images of the run (of the part, when writing one).
    public var images: Int
    public var rows: Int
    public var skipped: [SkippedImage]
    public var shardsWritten: Int
    public var shardsTotal: Int
}

public enum DecomposeRun {
    public static let formatCreator = "refract"

    /// The store header a run of `model` over `dataset` with `options` has.
    static func header(model: any VisionModel, decomposer: any RunDecomposer, weightsSHA256: String, dataset: ImageDataset,
                       options: DecomposeRunOptions) throws -> StoreHeader {
        let preprocessing = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(model.preprocessing))
        let tensors = decomposer.runTensors.map {
            StoreTensorSpec(name: $0.name, shape: $0.shape, dtype: $0.float32 ? .float32 : options.dtype, description: $0.description)
        }
        let bytesPerImage = tensors.reduce(0) { $0 + $1.elementCount * $1.dtype.byteSize }
        var shardSize = max(1, min(4096, options.shardBytes / max(bytesPerImage, 1)))
        if shardSize >= options.batchSize { shardSize -= shardSize % options.batchSize }
        if let fixed = options.shardSize { shardSize = max(1, fixed) }
        var runOptions = decomposer.runOptions
        runOptions["dtype"] = .string(options.dtype.rawValue)
        runOptions["batchSize"] = .number(Double(options.batchSize))
        return StoreHeader(
            model: try StoreModelInfo(model, weightsSHA256: weightsSHA256),
            preprocessing: preprocessing,
            convention: options.convention.rawValue,
            dimensions: decomposer.runDimensions,
            options: .object(runOptions),
            tensors: tensors,
            images: dataset.images,
            classNames: dataset.classNames,
            shardSize: shardSize)
    }

    /// The decomposer a run of `model` with `options` uses.
    static func decomposer(model: any VisionModel, options: DecomposeRunOptions) throws -> any RunDecomposer {
        if let clip = model as? CLIP {
            guard options.fromBlock == 0 else {
                throw DatasetError(path: clip.id, message: "--from-block applies to timm models; CLIP runs decompose every layer")
            }
            return try CLIPDecomposer(tower: clip.vision, convention: options.convention, tokenLayers: options.tokenLayers)
        }
        if let timm = model as? TimmModel {
            return try TimmDecomposer(model: timm, convention: options.convention, fromBlock: options.fromBlock, tokenBlocks: options.tokenLayers)
        }
        throw DatasetError(path: model.id, message: "this kind of model cannot be decomposed")
    }

    /// Decomposes every image of `dataset` into the run directory `output`.
    /// `progress(done, total)` is called after each batch; `shardWritten(index)` after each shard is
    /// on disk (recorded in the manifest).
    public static func run(model: any VisionModel, dataset: ImageDataset, output: URL, options: DecomposeRunOptions,
                           createdBy: String = formatCreator,
                           progress: ((Int, Int) -> Void)? = nil,
                           shardWritten: ((Int) -> Void)? = nil) throws -> DecomposeRunSummary {
        if dataset.images.isEmpty { throw DatasetError(path: output.path, message: "no images to decompose") }
        guard (1...CLIP.maxBatchSize).contains(options.batchSize) else {
            throw DatasetError(path: output.path, message: "batch size \(options.batchSize) is out of range (allowed 1...\(CLIP.maxBatchSize))")
        }
        let decomposer = try decomposer(model: model, options: options)
        let header = try header(model: model, decomposer: decomposer, weightsSHA256: try model.weightsSHA256(), dataset: dataset,
                                options: options)
        var resume = options.resume
        if options.continueRun {
            if let complete = try StoreWriter.completedRun(at: output, header: header, part: options.part) {
                let own = complete.ownShards
                return DecomposeRunSummary(images: complete.part?.imageCount ?? complete.images.count,
                                           rows: complete.shards.reduce(0) { $0 + $1.rows }, skipped: complete.skipped,
                                           shardsWritten: 0, shardsTotal: own.count)
            }
            resume = StoreWriter.holdsRun(output)
        }
        let writer = try StoreWriter.open(at: output, header: header, constants: [:], createdBy: createdBy, resume: resume,
                                          part: options.part)
        let ranges = writer.shardRanges
        let own = writer.manifest.ownShards
        let total = own.reduce(0) { $0 + ranges[$1].count }
        var done = (own.lowerBound..<writer.pendingShards.lowerBound).reduce(0) { $0 + ranges[$1].count }   // resumed
        var written = 0
        progress?(done, total)
        for shard in writer.pendingShards {
            let range = ranges[shard]
            var rows = [String: [Float]]()
            var indices = [Int](), skipped = [SkippedImage]()
            var start = range.lowerBound
            while start < range.upperBound {
                let batch = start..<min(start + options.batchSize, range.upperBound)
                var pixels = [Tensor](), batchIndices = [Int]()
                for (i, result) in zip(batch, preprocess(model: model, paths: batch.map { dataset.images[$0].path })) {
                    switch result {
                    case .success(let p): pixels.append(p); batchIndices.append(i)
                    case .failure(let error):
                        if options.onError == .stop {
                            throw DatasetError(path: dataset.images[i].path,
                                               message: "\(error) (the run stops here; fix or remove the image, or pass --skip-unreadable, and resume with --resume)")
                        }
                        skipped.append(SkippedImage(index: i, path: dataset.images[i].path, error: "\(error)"))
                    }
                }
                if !pixels.isEmpty {
                    let result = decomposer.decomposeRows(pixels)
                    // Nothing non-finite reaches a shard: the run stops before this shard is written.
                    let batchPaths = batchIndices.map { dataset.images[$0].path }
                    for spec in header.tensors {
                        guard let t = result[spec.name] else { continue }
                        try requireFinite(t, name: spec.name, images: batchPaths, shard: shard, model: model.id)
                        if spec.dtype == .float16 {
                            try requireHalfRange(t, name: spec.name, images: batchPaths, shard: shard)
                        }
                    }
                    for (name, t) in result { rows[name, default: []] += t.data }
                    indices += batchIndices
                }
                start = batch.upperBound
                done += batch.count
                progress?(done, total)
            }
            var tensors = [String: Tensor]()
            for spec in header.tensors {
                tensors[spec.name] = Tensor(shape: [indices.count] + spec.shape, data: rows[spec.name] ?? [])
            }
            try writer.writeShard(shard, imageIndices: indices, rows: tensors, skipped: skipped)
            written += 1
            shardWritten?(shard)
        }
        try writer.finish()
        return DecomposeRunSummary(images: total, rows: writer.manifest.shards.reduce(0) { $0 + $1.rows },
                                   skipped: writer.manifest.skipped, shardsWritten: written, shardsTotal: own.count)
    }

    /// Refuses a decomposed tensor [B, ...] of a batch that holds a NaN or ±infinity, naming the
    /// image of its row (`images[b]`), the tensor and the position within the image's tensor.
    static func requireFinite(_ t: Tensor, name: String, images: [String], shard: Int, model: String) throws {
        guard let bad = t.firstNonFinite() else { return }
        let perImage = Array(t.shape.dropFirst())
        let width = max(perImage.reduce(1, *), 1)
        let row = bad.index / width
        throw NonFiniteError(source: row < images.count ? images[row] : "row \(row)",
                             subject: "the decomposition's '\(name)' tensor",
                             bad: NonFiniteValue(index: bad.index % width, value: bad.value), shape: perImage,
                             note: "the model \(model) computes non-finite values for this image (its weights are finite, "
                                + "so an intermediate value overflowed float32); shard \(shard) was not written")
    }

    /// Largest magnitude float16 holds; a larger component would be stored as infinity.
    static let float16Max: Float = 65504

    /// Refuses a component beyond float16's range when the run stores float16 (it would become
    /// infinity in the shard), naming the image and the tensor.
    static func requireHalfRange(_ t: Tensor, name: String, images: [String], shard: Int) throws {
        let bad = t.data.withUnsafeBufferPointer { p -> Int? in
            var any = false
            for v in p { any = any || abs(v) > float16Max }
            return any ? p.firstIndex { abs($0) > float16Max } : nil
        }
        guard let i = bad else { return }
        let perImage = Array(t.shape.dropFirst())
        let width = max(perImage.reduce(1, *), 1)
        let row = i / width
        throw DatasetError(path: row < images.count ? images[row] : "row \(row)",
                           message: "the decomposition's '\(name)' tensor holds \(t.data[i]) at index "
                            + "\(Tensor.position(ofFlatIndex: i % width, in: perImage)), beyond float16's range "
                            + "(±\(Int(float16Max))): it would be stored as infinity; decompose with --dtype float32 "
                            + "(shard \(shard) was not written)")
    }

    /// Decodes and preprocesses in parallel; one result per path, in order.
    static func preprocess(model: any VisionModel, paths: [String]) -> [Result<Tensor, Error>] {
        let slots = ResultList(count: paths.count)
        let prep = model.preprocessing
        Parallel.forEach(paths.count) { i in
            slots.set(i, Result { prep(try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: paths[i]))) })
        }
        return slots.values
    }
}

final class ResultList: @unchecked Sendable {
    private var slots: [Result<Tensor, Error>?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<Tensor, Error>) { lock.lock(); slots[i] = r; lock.unlock() }
    var values: [Result<Tensor, Error>] { slots.map { $0! } }
}

// MARK: - The model of a run

extension StoreModelInfo {
    /// What a run or an artefact records of `model`: id, layout, hub commit, the weights' SHA-256
    /// (`model.weightsSHA256()`, passed in when already computed) and weight file names.
    public init(_ model: any VisionModel, weightsSHA256: String? = nil) throws {
        let location = model.location
        self.init(id: location.modelId, layout: location.layout.rawValue, commit: location.commit,
                  weightsSHA256: try weightsSHA256 ?? model.weightsSHA256(),
                  weightFiles: try location.weightFiles().map(\.lastPathComponent))
    }
}

public enum RunModel {
    /// Loads the model a run was made with (`spec`, or the run's own model id), refusing weights
    /// whose SHA-256 differs from the run's.
    public static func load(for reader: StoreReader, spec: String? = nil, options: ModelLocation.Options = .init()) async throws -> CLIP {
        let model = try await loadAny(for: reader, spec: spec, options: options)
        guard let clip = model as? CLIP else {
            throw DatasetError(path: reader.run.path, message: "the run's model \(model.id) is not a CLIP model")
        }
        return clip
    }

    /// The run's model of any family (CLIP or timm), weights checked as in `load`.
    public static func loadAny(for reader: StoreReader, spec: String? = nil, options: ModelLocation.Options = .init()) async throws -> any VisionModel {
        var options = options
        if options.layout == nil, let layout = ModelLayout(rawValue: reader.manifest.model.layout) { options.layout = layout }
        let location = try await ModelLocation.resolve(spec ?? reader.manifest.model.id, options: options)
        let model: any VisionModel = location.layout == .timm ? try TimmModel(location: location) : try CLIP(location: location)
        let hash = try model.weightsSHA256()
        guard hash == reader.manifest.model.weightsSHA256 else {
            throw DatasetError(path: reader.run.path, message: "the run was made with weights sha256 "
                + "\(reader.manifest.model.weightsSHA256.prefix(12))... (\(reader.manifest.model.id)), but \(spec ?? model.id) "
                + "has \(hash.prefix(12))...; pass --model with the run's model")
        }
        return model
    }
}
