// MARK: - CLIP configuration
//
// `CLIPArchitecture` is what the model code needs; it is built from the checkpoint's own config
// file, whose keys the `Codable` structs below mirror exactly (OpenCLIP `open_clip_config.json`,
// transformers `config.json`). Preprocessing belongs to the checkpoint too (see CLIPPreprocessing).

import Foundation
import RefractCheckpoint
import RefractTensor

/// Architecture of one transformer tower.
public struct TowerArchitecture: Sendable, Codable, Equatable {
    public var width: Int
    public var layers: Int
    public var heads: Int
    public var mlpWidth: Int
    public var layerNormEps: Float
    public var activation: Ops.Activation

    public init(width: Int, layers: Int, heads: Int, mlpWidth: Int, layerNormEps: Float, activation: Ops.Activation) {
        self.width = width
        self.layers = layers
        self.heads = heads
        self.mlpWidth = mlpWidth
        self.layerNormEps = layerNormEps
        self.activation = activation
    }
}

/// Everything the forward passes need, independent of the checkpoint layout.
public struct CLIPArchitecture: Sendable, Codable, Equatable {
    public var vision: TowerArchitecture
    public var imageSize: Int
    public var patchSize: Int
    public var text: TowerArchitecture
    public var contextLength: Int
    public var vocabSize: Int
    /// Joint embedding width D'.
    public var embedDim: Int

    public var gridSize: Int { imageSize / patchSize }
    /// Tokens of the image tower: class token + patches.
    public var visionTokens: Int { gridSize * gridSize + 1 }
}

public struct ConfigError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public init(file: String, message: String) { self.file = file; self.message = message }
    public var description: String { "\(file): \(message)" }
}

// MARK: OpenCLIP open_clip_config.json

/// `open_clip_config.json` as OpenCLIP's hub export writes it.
public struct OpenCLIPConfigFile: Codable, Sendable {
    public var model_cfg: OpenCLIPModelCfg
    public var preprocess_cfg: OpenCLIPPreprocessCfg?
}

/// A scalar or a pair, as OpenCLIP allows for image_size / patch_size.
public enum IntOrPair: Codable, Sendable, Equatable {
    case one(Int), pair(Int, Int)
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .one(v); return }
        let a = try c.decode([Int].self)
        guard a.count == 2 else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected an integer or a pair")
        }
        self = .pair(a[0], a[1])
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .one(let v): try c.encode(v)
        case .pair(let a, let b): try c.encode([a, b])
        }
    }
    /// The side of a square, or nil for a non-square pair.
    public var square: Int? {
        switch self {
        case .one(let v): return v
        case .pair(let a, let b): return a == b ? a : nil
        }
    }
}

public struct OpenCLIPModelCfg: Codable, Sendable {
    public var embed_dim: Int
    public var quick_gelu: Bool?
    public var vision_cfg: OpenCLIPVisionCfg
    public var text_cfg: OpenCLIPTextCfg
}

public struct OpenCLIPVisionCfg: Codable, Sendable {
    public var image_size: IntOrPair?
    public var layers: Int?
    public var width: Int?
    public var patch_size: IntOrPair?
    public var head_width: Int?
    public var mlp_ratio: Double?
    public var ls_init_value: Double?
    public var attentional_pool: Bool?
    public var pool_type: String?
    public var final_ln_after_pool: Bool?
    public var no_ln_pre: Bool?
    public var timm_model_name: String?
    public var act_kwargs: [String: Double]?
    public var norm_kwargs: [String: Double]?
}

public struct OpenCLIPTextCfg: Codable, Sendable {
    public var context_length: Int?
    public var vocab_size: Int?
    public var width: Int?
    public var heads: Int?
    public var layers: Int?
    public var mlp_ratio: Double?
    public var ls_init_value: Double?
    public var hf_model_name: String?
    public var hf_tokenizer_name: String?
    public var pool_type: String?
    public var proj_bias: Bool?
    public var embed_cls: Bool?
    public var no_causal_mask: Bool?
    public var norm_kwargs: [String: Double]?
}

public struct OpenCLIPPreprocessCfg: Codable, Sendable {
    public var mean: [Double]?
    public var std: [Double]?
    public var interpolation: String?
    public var resize_mode: String?
    public var fill_color: Int?
}

extension OpenCLIPConfigFile {
    /// Maps to the architecture, refusing OpenCLIP variants Refract does not implement (by name).
    public func architecture(file: String) throws -> CLIPArchitecture {
        let v = model_cfg.vision_cfg, t = model_cfg.text_cfg
        func unsupported(_ what: String) -> ConfigError {
            ConfigError(file: file, message: "unsupported OpenCLIP model: \(what)")
        }
        if let name = v.timm_model_name { throw unsupported("timm vision tower '\(name)'") }
        if let name = t.hf_model_name { throw unsupported("Hugging Face text tower '\(name)'") }
        if v.ls_init_value != nil || t.ls_init_value != nil { throw unsupported("layer scale (ls_init_value)") }
        if v.attentional_pool == true { throw unsupported("attentional pooling") }
        if let p = v.pool_type, p != "tok" { throw unsupported("vision pool_type '\(p)' (only 'tok')") }
        if v.final_ln_after_pool == true { throw unsupported("final_ln_after_pool") }
        if v.no_ln_pre == true { throw unsupported("no_ln_pre") }
        if let p = t.pool_type, p != "argmax" { throw unsupported("text pool_type '\(p)' (only 'argmax')") }
        if t.proj_bias == true { throw unsupported("text projection bias") }
        if t.embed_cls == true { throw unsupported("embed_cls") }
        if t.no_causal_mask == true { throw unsupported("no_causal_mask") }
        guard let rawImage = (v.image_size ?? .one(224)).square else { throw unsupported("non-square image_size") }
        guard let rawPatch = (v.patch_size ?? .one(16)).square else { throw unsupported("non-square patch_size") }
        // Every number is checked against ConfigLimits before it is used in any arithmetic.
        let b = ConfigBounds(file: file)
        let vk = "model_cfg.vision_cfg.", tk = "model_cfg.text_cfg."
        let imageSize = try b.int(vk + "image_size", rawImage, in: ConfigLimits.imageSize)
        let patch = try b.int(vk + "patch_size", rawPatch, in: ConfigLimits.patchSize)
        try b.multiple(vk + "image_size", imageSize, of: vk + "patch_size", patch)
        _ = try b.derived(vk + "image_size / patch_size", imageSize / patch, in: ConfigLimits.gridSide)
        let act: Ops.Activation = model_cfg.quick_gelu == true ? .quickGELU : .gelu
        let vWidth = try b.int(vk + "width", v.width, default: 768, in: ConfigLimits.width)
        let vLayers = try b.int(vk + "layers", v.layers, default: 12, in: ConfigLimits.layers)
        let headWidth = try b.int(vk + "head_width", v.head_width, default: 64, in: ConfigLimits.headWidth)
        try b.multiple(vk + "width", vWidth, of: vk + "head_width", headWidth)
        let vHeads = try b.derived(vk + "width / head_width", vWidth / headWidth, in: ConfigLimits.heads)
        let vRatio = try b.double(vk + "mlp_ratio", v.mlp_ratio, default: 4, in: ConfigLimits.mlpRatio)
        let vMLP = try b.derived(vk + "width × mlp_ratio", Int(Double(vWidth) * vRatio), in: ConfigLimits.mlpWidth)
        let vEps = try b.double(vk + "norm_kwargs.eps", v.norm_kwargs?["eps"], default: 1e-5, in: ConfigLimits.layerNormEps)
        let tWidth = try b.int(tk + "width", t.width, default: 512, in: ConfigLimits.width)
        let tLayers = try b.int(tk + "layers", t.layers, default: 12, in: ConfigLimits.layers)
        let tHeads = try b.int(tk + "heads", t.heads, default: 8, in: ConfigLimits.heads)
        try b.multiple(tk + "width", tWidth, of: tk + "heads", tHeads)
        _ = try b.derived(tk + "width / heads", tWidth / tHeads, in: ConfigLimits.headWidth)
        let tRatio = try b.double(tk + "mlp_ratio", t.mlp_ratio, default: 4, in: ConfigLimits.mlpRatio)
        let tMLP = try b.derived(tk + "width × mlp_ratio", Int(Double(tWidth) * tRatio), in: ConfigLimits.mlpWidth)
        let tEps = try b.double(tk + "norm_kwargs.eps", t.norm_kwargs?["eps"], default: 1e-5, in: ConfigLimits.layerNormEps)
        let context = try b.int(tk + "context_length", t.context_length, default: 77, in: ConfigLimits.contextLength)
        let vocab = try b.int(tk + "vocab_size", t.vocab_size, default: 49408, in: ConfigLimits.vocabSize)
        let embedDim = try b.int("model_cfg.embed_dim", model_cfg.embed_dim, in: ConfigLimits.embedDim)
        return CLIPArchitecture(
            vision: TowerArchitecture(width: vWidth, layers: vLayers, heads: vHeads, mlpWidth: vMLP,
                                      layerNormEps: Float(vEps), activation: act),
            imageSize: imageSize, patchSize: patch,
            text: TowerArchitecture(width: tWidth, layers: tLayers, heads: tHeads, mlpWidth: tMLP,
                                    layerNormEps: Float(tEps), activation: act),
            contextLength: context, vocabSize: vocab, embedDim: embedDim)
    }
}

// MARK: transformers config.json

/// transformers `CLIPConfig` (`config.json`); missing keys take transformers' defaults.
public struct HFCLIPConfigFile: Codable, Sendable {
    public var model_type: String?
    public var architectures: [String]?
    public var projection_dim: Int?
    public var logit_scale_init_value: Double?
    public var text_config: HFCLIPTextConfig?
    public var vision_config: HFCLIPVisionConfig?
}

public struct HFCLIPTextConfig: Codable, Sendable {
    public var hidden_size: Int?
    public var intermediate_size: Int?
    public var num_attention_heads: Int?
    public var num_hidden_layers: Int?
    public var max_position_embeddings: Int?
    public var vocab_size: Int?
    public var hidden_act: String?
    public var layer_norm_eps: Double?
    public var eos_token_id: Int?
    public var bos_token_id: Int?
    public var pad_token_id: Int?
    public var projection_dim: Int?
}

public struct HFCLIPVisionConfig: Codable, Sendable {
    public var hidden_size: Int?
    public var intermediate_size: Int?
    public var num_attention_heads: Int?
    public var num_hidden_layers: Int?
    public var image_size: Int?
    public var patch_size: Int?
    public var num_channels: Int?
    public var hidden_act: String?
    public var layer_norm_eps: Double?
    public var projection_dim: Int?
}

extension HFCLIPConfigFile {
    static func activation(_ name: String?, file: String) throws -> Ops.Activation {
        switch name ?? "quick_gelu" {
        case "quick_gelu": return .quickGELU
        case "gelu": return .gelu
        case let other:
            throw ConfigError(file: file, message: "unsupported hidden_act '\(other)' (supported: gelu, quick_gelu)")
        }
    }

    public func architecture(file: String) throws -> CLIPArchitecture {
        if let t = model_type, t != "clip" {
            throw ConfigError(file: file, message: "model_type '\(t)' is not a CLIP model (expected 'clip')")
        }
        let t = text_config ?? HFCLIPTextConfig(), v = vision_config ?? HFCLIPVisionConfig()
        if let c = v.num_channels, c != 3 {
            throw ConfigError(file: file, message: "vision num_channels \(c) (only RGB, 3, is supported)")
        }
        // Every number is checked against ConfigLimits before it is used in any arithmetic.
        let b = ConfigBounds(file: file)
        let vk = "vision_config.", tk = "text_config."
        let imageSize = try b.int(vk + "image_size", v.image_size, default: 224, in: ConfigLimits.imageSize)
        let patch = try b.int(vk + "patch_size", v.patch_size, default: 32, in: ConfigLimits.patchSize)
        try b.multiple(vk + "image_size", imageSize, of: vk + "patch_size", patch)
        _ = try b.derived(vk + "image_size / patch_size", imageSize / patch, in: ConfigLimits.gridSide)
        func tower(_ k: String, width: Int?, heads: Int?, layers: Int?, mlp: Int?, eps: Double?, act: String?,
                   defaults: (width: Int, heads: Int, mlp: Int)) throws -> TowerArchitecture {
            let w = try b.int(k + "hidden_size", width, default: defaults.width, in: ConfigLimits.width)
            let h = try b.int(k + "num_attention_heads", heads, default: defaults.heads, in: ConfigLimits.heads)
            try b.multiple(k + "hidden_size", w, of: k + "num_attention_heads", h)
            _ = try b.derived(k + "hidden_size / num_attention_heads", w / h, in: ConfigLimits.headWidth)
            return TowerArchitecture(
                width: w, layers: try b.int(k + "num_hidden_layers", layers, default: 12, in: ConfigLimits.layers), heads: h,
                mlpWidth: try b.int(k + "intermediate_size", mlp, default: defaults.mlp, in: ConfigLimits.mlpWidth),
                layerNormEps: Float(try b.double(k + "layer_norm_eps", eps, default: 1e-5, in: ConfigLimits.layerNormEps)),
                activation: try Self.activation(act, file: file))
        }
        let vision = try tower(vk, width: v.hidden_size, heads: v.num_attention_heads, layers: v.num_hidden_layers,
                               mlp: v.intermediate_size, eps: v.layer_norm_eps, act: v.hidden_act,
                               defaults: (768, 12, 3072))
        let text = try tower(tk, width: t.hidden_size, heads: t.num_attention_heads, layers: t.num_hidden_layers,
                             mlp: t.intermediate_size, eps: t.layer_norm_eps, act: t.hidden_act,
                             defaults: (512, 8, 2048))
        return CLIPArchitecture(
            vision: vision, imageSize: imageSize, patchSize: patch, text: text,
            contextLength: try b.int(tk + "max_position_embeddings", t.max_position_embeddings, default: 77,
                                     in: ConfigLimits.contextLength),
            vocabSize: try b.int(tk + "vocab_size", t.vocab_size, default: 49408, in: ConfigLimits.vocabSize),
            embedDim: try b.int("projection_dim", projection_dim, default: 512, in: ConfigLimits.embedDim))
    }
}

// MARK: Parameters

extension TowerArchitecture {
    /// Weights of the tower's residual blocks: per block two LayerNorms, fused q,k,v and the output
    /// projection (with biases), and the MLP.
    public var blockParameters: Int {
        let d = width, f = mlpWidth
        return layers * (4 * d + 3 * d * d + 3 * d + d * d + d + f * d + f + d * f + d)
    }
}

extension CLIPArchitecture {
    /// Float weights the architecture needs (both towers and the logit scale), computed from the
    /// configuration alone; every factor is bounded by `ConfigLimits`, so this cannot overflow.
    public var parameterCount: Int {
        let d = vision.width, w = text.width
        let visionRest = d * 3 * patchSize * patchSize + d + visionTokens * d + 4 * d + d * embedDim
        let textRest = vocabSize * w + contextLength * w + 2 * w + w * embedDim
        return vision.blockParameters + visionRest + text.blockParameters + textRest + 1
    }
}

/// Decodes a JSON config file with errors that name the file and the offending key.
func decodeConfig<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
    let data: Data
    do { data = try Data(contentsOf: url) } catch {
        throw ConfigError(file: url.path, message: "cannot read: \(error.localizedDescription)")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let DecodingError.dataCorrupted(ctx) {
        throw ConfigError(file: url.path, message: "malformed JSON\(path(ctx)): \(ctx.debugDescription) \(ctx.underlyingError.map { "\($0)" } ?? "")")
    } catch let DecodingError.keyNotFound(key, ctx) {
        throw ConfigError(file: url.path, message: "missing key '\(key.stringValue)'\(path(ctx))")
    } catch let DecodingError.typeMismatch(_, ctx) {
        throw ConfigError(file: url.path, message: "wrong type\(path(ctx)): \(ctx.debugDescription)")
    } catch let DecodingError.valueNotFound(_, ctx) {
        throw ConfigError(file: url.path, message: "null value\(path(ctx))")
    } catch {
        throw ConfigError(file: url.path, message: "\(error)")
    }
}

private func path(_ ctx: DecodingError.Context) -> String {
    ctx.codingPath.isEmpty ? "" : " at " + ctx.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
}
