// MARK: - CLIP configuration
//
// `CLIPArchitecture` is what the model code needs; it is built from the checkpoint's own config
// file, whose keys the `Codable` structs below mirror exactly (OpenCLIP `open_clip_config.json`,
// transformers `config.json`). Preprocessing belongs to the checkpoint too (see CLIPPreprocessing).

import Foundation
import RefractTensor

/// Architecture of one transformer tower.
public struct TowerArchitecture: Sendable, Codable, Equatable {
    public var width: Int
    public var layers: Int
    public var heads: Int
    public var mlpWidth: Int
    public var layerNormEps: Float
    public var activation: Ops.Activation
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
        guard let imageSize = (v.image_size ?? .one(224)).square else { throw unsupported("non-square image_size") }
        guard let patch = (v.patch_size ?? .one(16)).square else { throw unsupported("non-square patch_size") }
        guard imageSize % patch == 0 else {
            throw ConfigError(file: file, message: "image_size \(imageSize) is not a multiple of patch_size \(patch)")
        }
        let act: Ops.Activation = model_cfg.quick_gelu == true ? .quickGELU : .gelu
        let vWidth = v.width ?? 768, vLayers = v.layers ?? 12, headWidth = v.head_width ?? 64
        guard vWidth % headWidth == 0 else {
            throw ConfigError(file: file, message: "vision width \(vWidth) is not a multiple of head_width \(headWidth)")
        }
        let tWidth = t.width ?? 512, tHeads = t.heads ?? 8
        guard tWidth % tHeads == 0 else {
            throw ConfigError(file: file, message: "text width \(tWidth) is not a multiple of heads \(tHeads)")
        }
        let vEps = Float(v.norm_kwargs?["eps"] ?? 1e-5), tEps = Float(t.norm_kwargs?["eps"] ?? 1e-5)
        return CLIPArchitecture(
            vision: TowerArchitecture(width: vWidth, layers: vLayers, heads: vWidth / headWidth,
                                      mlpWidth: Int(Double(vWidth) * (v.mlp_ratio ?? 4)), layerNormEps: vEps,
                                      activation: act),
            imageSize: imageSize, patchSize: patch,
            text: TowerArchitecture(width: tWidth, layers: t.layers ?? 12, heads: tHeads,
                                    mlpWidth: Int(Double(tWidth) * (t.mlp_ratio ?? 4)), layerNormEps: tEps,
                                    activation: act),
            contextLength: t.context_length ?? 77, vocabSize: t.vocab_size ?? 49408, embedDim: model_cfg.embed_dim)
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
        let vWidth = v.hidden_size ?? 768, vHeads = v.num_attention_heads ?? 12
        let tWidth = t.hidden_size ?? 512, tHeads = t.num_attention_heads ?? 8
        guard vWidth % vHeads == 0, tWidth % tHeads == 0 else {
            throw ConfigError(file: file, message: "hidden_size is not a multiple of num_attention_heads")
        }
        let imageSize = v.image_size ?? 224, patch = v.patch_size ?? 32
        guard patch > 0, imageSize % patch == 0 else {
            throw ConfigError(file: file, message: "image_size \(imageSize) is not a multiple of patch_size \(patch)")
        }
        return CLIPArchitecture(
            vision: TowerArchitecture(width: vWidth, layers: v.num_hidden_layers ?? 12, heads: vHeads,
                                      mlpWidth: v.intermediate_size ?? 3072,
                                      layerNormEps: Float(v.layer_norm_eps ?? 1e-5),
                                      activation: try Self.activation(v.hidden_act, file: file)),
            imageSize: imageSize, patchSize: patch,
            text: TowerArchitecture(width: tWidth, layers: t.num_hidden_layers ?? 12, heads: tHeads,
                                    mlpWidth: t.intermediate_size ?? 2048,
                                    layerNormEps: Float(t.layer_norm_eps ?? 1e-5),
                                    activation: try Self.activation(t.hidden_act, file: file)),
            contextLength: t.max_position_embeddings ?? 77, vocabSize: t.vocab_size ?? 49408,
            embedDim: projection_dim ?? 512)
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
