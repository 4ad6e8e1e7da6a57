// MARK: - CLIP
//
// A loaded CLIP checkpoint: both towers, the checkpoint's own preprocessing and tokenizer, and the
// high-level encoders (images, texts, zero-shot classifier). Construct with `CLIP.load(_:)` from a
// local directory or a Hugging Face hub id.

import Foundation
import RefractCheckpoint
import RefractImage
import RefractTensor
import RefractTokenizer

public final class CLIP: VisionModel {
    /// The model id (hub id or directory path) and where it was loaded from.
    public let id: String
    public let directory: URL
    public let layout: ModelLayout
    /// Where the checkpoint was found (directory, layout, model id, hub commit).
    public let location: ModelLocation
    public let architecture: CLIPArchitecture
    public let vision: CLIPVisionTower
    public let text: CLIPTextTower
    /// The stored logit scale (log of the temperature's inverse).
    public let logitScale: Float
    public let preprocessing: ImagePreprocessing
    public let tokenizer: CLIPTokenizer

    /// Loads a model directory or hub id (downloading into the Hugging Face cache when missing).
    public static func load(_ spec: String, options: ModelLocation.Options = .init()) async throws -> CLIP {
        let location = try await ModelLocation.resolve(spec, options: options)
        return try CLIP(location: location)
    }

    public init(location: ModelLocation) throws {
        try BLAS.load()
        id = location.modelId
        directory = location.directory
        layout = location.layout
        self.location = location
        let configURL = location.configFile
        guard let clipLayout = CLIPLayout(layout) else {
            throw ConfigError(file: configURL.path, message: "a \(layout.rawValue) checkpoint, not a CLIP model (OpenCLIP or transformers layout)")
        }
        switch clipLayout {
        case .openCLIP:
            let cfg = try decodeConfig(OpenCLIPConfigFile.self, from: configURL)
            architecture = try cfg.architecture(file: configURL.path)
            preprocessing = try CLIPPreprocessing.openCLIP(cfg, architecture: architecture, file: configURL.path)
            tokenizer = try CLIPTokenizer.openCLIPDefault()
        case .transformers:
            let cfg = try decodeConfig(HFCLIPConfigFile.self, from: configURL)
            architecture = try cfg.architecture(file: configURL.path)
            preprocessing = try CLIPPreprocessing.transformers(directory: location.directory, architecture: architecture)
            tokenizer = try CLIPTokenizer(flavour: .transformers, vocabulary: .directory(location.directory))
        }
        if tokenizer.vocabularySize > architecture.vocabSize {
            throw ConfigError(file: configURL.path, message: "the tokenizer has \(tokenizer.vocabularySize) tokens but the "
                + "text tower's vocabulary has \(architecture.vocabSize) rows")
        }
        // Validated config → memory budget → read, each tensor's shape checked (against the
        // validated config) before its data is read, so nothing is allocated from a wrong header.
        try ModelMemoryBudget.check(parameters: architecture.parameterCount, configFile: configURL.path)
        let loader = try location.makeTensorLoader()
        vision = try CLIPVisionTower(source: loader, layout: clipLayout, arch: architecture)
        text = try CLIPTextTower(source: loader, layout: clipLayout, arch: architecture)
        let scaleKey = CLIPCheckpointKeys.text(clipLayout).logitScale
        logitScale = try loader.take(scaleKey, shape: []).data[0]
        guard ConfigLimits.logitScale.contains(Double(logitScale)) else {
            throw CheckpointError.invalidEntry(path: loader.path(of: scaleKey) ?? directory.path, key: scaleKey, reason: "value \(logitScale) is outside \(ConfigLimits.logitScale) "
                                                + "(exp(logit_scale) multiplies similarities; OpenCLIP clamps it at ln 100 ≈ 4.6)")
        }
        for key in CLIPCheckpointKeys.ignorable(clipLayout) { loader.ignore(key) }
        try loader.finish()
    }

    // MARK: Images

    /// Preprocesses decoded images with the checkpoint's transform: [3, S, S] each.
    public func preprocess(_ images: [RGBImage]) -> [Tensor] {
        images.map { preprocessing($0) }
    }

    /// Image embeddings [N, D'] of preprocessed pixel tensors, raw (before L2 normalisation).
    public func encodeImages(pixels: [Tensor]) -> Tensor { vision(pixels) }

    /// The image embedding (raw) is CLIP's representation.
    public var representationWidth: Int { architecture.embedDim }
    public func represent(pixels: [Tensor]) -> Tensor { vision(pixels) }

    /// Image embeddings [N, D'] of decoded images, raw.
    public func encodeImages(_ images: [RGBImage]) -> Tensor { vision(preprocess(images)) }

    // MARK: Texts

    /// Token rows [N, context] as the checkpoint's library tokenizes them.
    public func tokenize(_ texts: [String]) -> [[Int32]] {
        tokenizer.tokenize(texts, contextLength: architecture.contextLength)
    }

    /// Text embeddings [N, D'], raw. Each text is computed only up to its end-of-text token.
    public func encodeTexts(_ texts: [String], batchSize: Int = 256, progress: ((Int) -> Void)? = nil) -> Tensor {
        var rows = [Float]()
        rows.reserveCapacity(texts.count * architecture.embedDim)
        var start = 0
        while start < texts.count {
            let batch = Array(texts[start..<min(start + batchSize, texts.count)])
            let tokens = tokenize(batch)
            rows += text(tokens: tokens, readout: tokens.map(Self.readoutPosition)).data
            start += batch.count
            progress?(start)
        }
        return Tensor(shape: [texts.count, architecture.embedDim], data: rows)
    }

    /// Where a row is read out: the first occurrence of its largest id (the end-of-text token for
    /// CLIP's vocabulary), as both open_clip (`argmax`) and transformers do.
    public static func readoutPosition(_ row: [Int32]) -> Int {
        var best = 0
        for (i, v) in row.enumerated() where v > row[best] { best = i }
        return best
    }

    // MARK: Zero-shot

    // `zeroShotClassifier(classes:templates:)` (below, with the checks on files and predictions)
    // refuses a class whose text embedding is not finite.
}

// MARK: - Files and predictions

/// A batch size outside 1...`CLIP.maxBatchSize` given to a library call.
public struct CLIPBatchSizeError: Error, CustomStringConvertible, Sendable {
    public var batchSize: Int
    public var description: String { "batch size \(batchSize) is out of range (allowed 1...\(CLIP.maxBatchSize))" }
}

extension CLIP {
    /// The largest batch a library call accepts (the CLI bounds `--batch-size` the same way).
    public static let maxBatchSize = 4096
}

extension CLIP {
    /// Text embeddings [N, D'] as `encodeTexts`, refusing a NaN or ±infinity with a
    /// `NonFiniteError` naming the text (`labels[i]`, e.g. "line 3 of texts.txt", when given).
    public func encodeTextsChecked(_ texts: [String], labels: [String]? = nil, batchSize: Int = 256,
                                   progress: ((Int) -> Void)? = nil) throws -> Tensor {
        let e = encodeTexts(texts, batchSize: batchSize, progress: progress)
        try requireFinite(e, kind: "text embedding", rows: labels ?? texts.map { "'\($0)'" })
        return e
    }

    /// A zero-shot classifier whose class embeddings are all finite (else a `NonFiniteError`
    /// naming the class and its prompts).
    public func zeroShotClassifier(classes: [String], templates: [String] = ZeroShotClassifier.defaultTemplates)
        throws -> ZeroShotClassifier {
        let prompts = ZeroShotClassifier.prompts(classes: classes, templates: templates)
        let labels = prompts.map { "'\($0)'" }
        let e = try encodeTextsChecked(prompts, labels: labels)
        return ZeroShotClassifier(classes: classes, templates: templates, textEmbeddings: e)
    }

}

/// Per-index results written from parallel tasks.
final class ResultSlots<T>: @unchecked Sendable {
    private var slots: [Result<T, Error>?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ r: Result<T, Error>) { lock.lock(); slots[i] = r; lock.unlock() }
    /// Values in order; rethrows the first failure by index.
    func values() throws -> [T] { try slots.map { try $0!.get() } }
}

public struct ClassPrediction: Sendable, Equatable {
    public var index: Int
    public var className: String
    /// Cosine similarity of the image and class embeddings.
    public var score: Float
    /// softmax over classes of exp(logit_scale) · score.
    public var probability: Float
}

extension ZeroShotClassifier {
    /// Top-k predictions per image row of `embeddings` [N, D'] (raw or normalised).
    public func predict(_ embeddings: Tensor, logitScale: Float, topK: Int) -> [[ClassPrediction]] {
        let s = scores(embeddings)                                               // [N, C]
        let c = classes.count
        let scale = Foundation.exp(logitScale)
        return (0..<s.shape[0]).map { n in
            let row = Array(s.data[(n * c)..<((n + 1) * c)])
            let m = row.max() ?? 0
            let e = row.map { Foundation.exp(Double(($0 - m) * scale)) }
            let z = e.reduce(0, +)
            let order = row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
            return order.prefix(topK).map {
                ClassPrediction(index: $0, className: classes[$0], score: row[$0], probability: Float(e[$0] / z))
            }
        }
    }
}
