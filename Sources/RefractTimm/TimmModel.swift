// MARK: - timm models
//
// A loaded timm checkpoint: its configuration (architecture, model_args, pretrained_cfg), its own
// preprocessing, the network, and the classifier head when it has one. Construct with
// `TimmModel.load(_:)` from a local directory or a hub id such as `timm/vit_base_patch14_dinov2.lvd142m`.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractTensor

/// The network of a timm checkpoint, by family.
public enum TimmNetwork: Sendable {
    case vit(VisionTransformer)
    case swin(SwinTransformer)
    case maxvit(MaxViT)

    public var featureWidth: Int {
        switch self {
        case .vit(let m): return m.config.width
        case .swin(let m): return m.config.featureWidth
        case .maxvit(let m): return m.config.featureWidth
        }
    }

    public var numClasses: Int {
        switch self {
        case .vit(let m): return m.config.numClasses
        case .swin(let m): return m.config.numClasses
        case .maxvit(let m): return m.config.numClasses
        }
    }
}

public final class TimmModel: VisionModel {
    public let id: String
    public let location: ModelLocation
    public let config: TimmConfigFile
    public let family: TimmFamily
    public let network: TimmNetwork
    public let preprocessing: ImagePreprocessing

    /// Loads a model directory or hub id (downloading into the Hugging Face cache when missing).
    public static func load(_ spec: String, options: ModelLocation.Options = .init()) async throws -> TimmModel {
        var options = options
        if options.layout == nil { options.layout = .timm }
        return try TimmModel(location: try await ModelLocation.resolve(spec, options: options))
    }

    public init(location: ModelLocation) throws {
        try BLAS.load()
        id = location.modelId
        self.location = location
        let configURL = location.configFile
        guard location.layout == .timm else {
            throw ConfigError(file: configURL.path, message: "a \(location.layout.rawValue) checkpoint, not a timm model")
        }
        config = try TimmConfigFile(url: configURL)
        preprocessing = config.preprocessing
        let entry = try TimmRegistry.entry(config.architecture, file: configURL.path)
        family = entry.family
        let args = ConfigObject(file: configURL.path, prefix: "model_args.",
                                values: entry.arguments.merging(config.modelArgs.values) { $1 })
        // Validated config → input size → memory budget → read, each tensor's shape checked before its data is read.
        let inputSize = config.inputSize
        func build<C>(_ c: C, imageSize: Int, parameters: Int, _ make: (TensorSource, C) throws -> TimmNetwork) throws -> TimmNetwork {
            if imageSize != inputSize[1] {
                throw ConfigValueError(file: configURL.path, key: "pretrained_cfg.input_size", value: "\(inputSize)",
                                       allowed: "[3, \(imageSize), \(imageSize)] (the model's img_size; other sizes would need resampled position tables)")
            }
            try ModelMemoryBudget.check(parameters: parameters, configFile: configURL.path)
            let loader = try location.makeTensorLoader()
            let network = try make(loader, c)
            try loader.finish()
            return network
        }
        switch entry.family {
        case .vit:
            let c = try ViTConfig.resolve(args, config: config)
            network = try build(c, imageSize: c.imageSize, parameters: c.parameterCount) { .vit(try VisionTransformer(source: $0, config: $1)) }
        case .swin:
            let c = try SwinConfig.resolve(args, config: config)
            network = try build(c, imageSize: c.imageSize, parameters: c.parameterCount) { .swin(try SwinTransformer(source: $0, config: $1)) }
        case .maxvit:
            let c = try MaxViTConfig.resolve(args, config: config)
            network = try build(c, imageSize: c.imageSize, parameters: c.parameterCount) { .maxvit(try MaxViT(source: $0, config: $1)) }
        }
    }

    public var representationWidth: Int { network.featureWidth }

    /// Pre-logits features [N, F] (what is decomposed), one batch slice per core.
    public func represent(pixels: [Tensor]) -> Tensor {
        switch network {
        case .vit(let m): return m(pixels)
        case .swin(let m): return m(pixels)
        case .maxvit(let m): return m(pixels)
        }
    }

    /// Logits [N, C] of the checkpoint's own head for pre-logits features; nil without a head.
    public func logits(_ features: Tensor) -> Tensor? {
        switch network {
        case .vit(let m): return m.logits(features)
        case .swin(let m): return m.logits(features)
        case .maxvit(let m): return m.logits(features)
        }
    }

    /// ∂logit_k/∂f of the checkpoint's own head at the representation `features` [D]: the classifier
    /// row for the linear heads (ViT family, Swin), the linearised head for MaxViT's LayerNorm-MLP
    /// head. The token terms of the representation dotted with it decompose the logit (exactly for a
    /// linear head). nil without a head.
    public func logitGradient(_ features: [Float], class k: Int) -> [Float]? {
        func row(_ head: (weight: Tensor, bias: Tensor)?) -> [Float]? {
            guard let head else { return nil }
            let d = head.weight.shape[1]
            return Array(head.weight.data[(k * d)..<((k + 1) * d)])
        }
        switch network {
        case .vit(let m): return row(m.head)
        case .swin(let m): return row(m.head)
        case .maxvit(let m): return m.logitGradient(features, class: k)
        }
    }

    /// Whether the checkpoint has a classifier head.
    public var hasHead: Bool { network.numClasses > 0 }

    /// Class names for the head: the checkpoint's `label_names`, else nil (the caller decides,
    /// e.g. ImageNet's for 1000 classes).
    public var labelNames: [String]? { config.labelNames }
}

/// One class from a classifier head: its index, logit and softmax probability.
public struct HeadPrediction: Sendable, Equatable {
    public var index: Int
    public var logit: Float
    public var probability: Float
}

public enum HeadPredictions {
    /// The `topK` classes of each row of logits [N, C], by logit (ties by index), with the softmax
    /// over all C classes (computed in Double, shifted by the row's maximum).
    public static func top(logits: Tensor, topK: Int) -> [[HeadPrediction]] {
        let c = logits.shape[1]
        return (0..<logits.shape[0]).map { n in
            let row = Array(logits.data[(n * c)..<((n + 1) * c)])
            let m = row.max() ?? 0
            let e = row.map { Foundation.exp(Double($0 - m)) }
            let z = e.reduce(0, +)
            let order = row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
            return order.prefix(topK).map { HeadPrediction(index: $0, logit: row[$0], probability: Float(e[$0] / z)) }
        }
    }
}

// MARK: Random-weight checkpoints

extension TimmModel {
    /// Writes a random-weight checkpoint of a registered architecture into `directory` in the timm
    /// hub layout (config.json with `model_args` and a `pretrained_cfg`, model.safetensors with
    /// every tensor the model takes), for benchmarks and tests. Returns the weights file's size.
    @discardableResult
    public static func writeRandomCheckpoint(architecture: String, modelArgs: [String: Any] = [:], to directory: URL,
                                             seed: UInt64 = 1) throws -> Int {
        let file = directory.appendingPathComponent("config.json").path
        let entry = try TimmRegistry.entry(architecture, file: file)
        let args = ConfigObject(file: file, prefix: "model_args.", values: entry.arguments.merging(modelArgs) { $1 })
        // The input size the model is built for (the pretrained_cfg must agree with it).
        let size = try args.square("img_size") ?? 224
        let config: [String: Any] = [
            "architecture": architecture,
            "model_args": modelArgs,
            "pretrained_cfg": ["input_size": [3, size, size], "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]],
        ]
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: directory.appendingPathComponent("config.json"))
        let parsed = try TimmConfigFile(url: directory.appendingPathComponent("config.json"))
        let recorder = KeyRecorder()
        switch entry.family {
        case .vit: _ = try VisionTransformer(source: recorder, config: try ViTConfig.resolve(args, config: parsed))
        case .swin: _ = try SwinTransformer(source: recorder, config: try SwinConfig.resolve(args, config: parsed))
        case .maxvit: _ = try MaxViT(source: recorder, config: try MaxViTConfig.resolve(args, config: parsed))
        }
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        let random = RandomWeights(seed: seed)
        for (key, shape) in recorder.keys { try writer.add(key, try random.take(key, shape: shape)) }
        let weights = directory.appendingPathComponent("model.safetensors")
        try writer.write(to: weights)
        return (try FileManager.default.attributesOfItem(atPath: weights.path)[.size] as? Int) ?? 0
    }
}
