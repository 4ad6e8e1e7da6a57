// MARK: - Checkpoint keys
//
// Every tensor name of both CLIP checkpoint layouts, in one place. Loading is strict: each key
// listed here must be present with the expected shape, and no other tensor may be left unused
// (except the buffers named in `ignorable`).

import RefractCheckpoint

/// The two checkpoint layouts a CLIP model comes in.
public enum CLIPLayout: String, Sendable, CaseIterable {
    case openCLIP, transformers

    /// The CLIP layout of a directory layout; nil for layouts that hold other models (timm).
    public init?(_ layout: ModelLayout) {
        switch layout {
        case .openCLIP: self = .openCLIP
        case .transformers: self = .transformers
        case .timm: return nil
        }
    }
}

enum Tower { case vision, text }

/// Names of one pre-LN residual block's tensors. q,k,v are fused in OpenCLIP and timm and
/// separate in transformers; LayerScale gammas exist only in some timm models (DINOv2).
public struct BlockKeys: Sendable {
    public var ln1Weight, ln1Bias: String
    /// One fused [3D, D] weight, or q, k, v [D, D] each.
    public var qkvWeight: [String]
    public var qkvBias: [String]
    public var outWeight, outBias: String
    public var ln2Weight, ln2Bias: String
    public var fc1Weight, fc1Bias, fc2Weight, fc2Bias: String
    /// LayerScale gammas [D] applied to the attention and MLP outputs (nil: none).
    public var layerScale1: String? = nil
    public var layerScale2: String? = nil

    public init(ln1Weight: String, ln1Bias: String, qkvWeight: [String], qkvBias: [String], outWeight: String, outBias: String,
                ln2Weight: String, ln2Bias: String, fc1Weight: String, fc1Bias: String, fc2Weight: String, fc2Bias: String,
                layerScale1: String? = nil, layerScale2: String? = nil) {
        self.ln1Weight = ln1Weight; self.ln1Bias = ln1Bias
        self.qkvWeight = qkvWeight; self.qkvBias = qkvBias
        self.outWeight = outWeight; self.outBias = outBias
        self.ln2Weight = ln2Weight; self.ln2Bias = ln2Bias
        self.fc1Weight = fc1Weight; self.fc1Bias = fc1Bias
        self.fc2Weight = fc2Weight; self.fc2Bias = fc2Bias
        self.layerScale1 = layerScale1; self.layerScale2 = layerScale2
    }
}

enum CLIPCheckpointKeys {
    static func block(_ layout: CLIPLayout, _ tower: Tower, _ i: Int) -> BlockKeys {
        switch layout {
        case .openCLIP:
            let p = (tower == .vision ? "visual.transformer" : "transformer") + ".resblocks.\(i)."
            return BlockKeys(ln1Weight: p + "ln_1.weight", ln1Bias: p + "ln_1.bias",
                             qkvWeight: [p + "attn.in_proj_weight"], qkvBias: [p + "attn.in_proj_bias"],
                             outWeight: p + "attn.out_proj.weight", outBias: p + "attn.out_proj.bias",
                             ln2Weight: p + "ln_2.weight", ln2Bias: p + "ln_2.bias",
                             fc1Weight: p + "mlp.c_fc.weight", fc1Bias: p + "mlp.c_fc.bias",
                             fc2Weight: p + "mlp.c_proj.weight", fc2Bias: p + "mlp.c_proj.bias")
        case .transformers:
            let p = (tower == .vision ? "vision_model" : "text_model") + ".encoder.layers.\(i)."
            return BlockKeys(ln1Weight: p + "layer_norm1.weight", ln1Bias: p + "layer_norm1.bias",
                             qkvWeight: ["q", "k", "v"].map { p + "self_attn.\($0)_proj.weight" },
                             qkvBias: ["q", "k", "v"].map { p + "self_attn.\($0)_proj.bias" },
                             outWeight: p + "self_attn.out_proj.weight", outBias: p + "self_attn.out_proj.bias",
                             ln2Weight: p + "layer_norm2.weight", ln2Bias: p + "layer_norm2.bias",
                             fc1Weight: p + "mlp.fc1.weight", fc1Bias: p + "mlp.fc1.bias",
                             fc2Weight: p + "mlp.fc2.weight", fc2Bias: p + "mlp.fc2.bias")
        }
    }

    struct VisionKeys {
        var classEmbedding, positionalEmbedding, patchWeight: String
        var lnPreWeight, lnPreBias, lnPostWeight, lnPostBias: String
        /// OpenCLIP stores P as [D, D'] and applies x·P; transformers stores [D', D] and applies x·Wᵀ.
        var projection: String
    }

    struct TextKeys {
        var tokenEmbedding, positionalEmbedding: String
        var lnFinalWeight, lnFinalBias: String
        var projection: String
        var logitScale: String
    }

    static func vision(_ layout: CLIPLayout) -> VisionKeys {
        switch layout {
        case .openCLIP:
            return VisionKeys(classEmbedding: "visual.class_embedding", positionalEmbedding: "visual.positional_embedding",
                              patchWeight: "visual.conv1.weight",
                              lnPreWeight: "visual.ln_pre.weight", lnPreBias: "visual.ln_pre.bias",
                              lnPostWeight: "visual.ln_post.weight", lnPostBias: "visual.ln_post.bias",
                              projection: "visual.proj")
        case .transformers:
            return VisionKeys(classEmbedding: "vision_model.embeddings.class_embedding",
                              positionalEmbedding: "vision_model.embeddings.position_embedding.weight",
                              patchWeight: "vision_model.embeddings.patch_embedding.weight",
                              lnPreWeight: "vision_model.pre_layrnorm.weight", lnPreBias: "vision_model.pre_layrnorm.bias",
                              lnPostWeight: "vision_model.post_layernorm.weight",
                              lnPostBias: "vision_model.post_layernorm.bias",
                              projection: "visual_projection.weight")
        }
    }

    static func text(_ layout: CLIPLayout) -> TextKeys {
        switch layout {
        case .openCLIP:
            return TextKeys(tokenEmbedding: "token_embedding.weight", positionalEmbedding: "positional_embedding",
                            lnFinalWeight: "ln_final.weight", lnFinalBias: "ln_final.bias",
                            projection: "text_projection", logitScale: "logit_scale")
        case .transformers:
            return TextKeys(tokenEmbedding: "text_model.embeddings.token_embedding.weight",
                            positionalEmbedding: "text_model.embeddings.position_embedding.weight",
                            lnFinalWeight: "text_model.final_layer_norm.weight",
                            lnFinalBias: "text_model.final_layer_norm.bias",
                            projection: "text_projection.weight", logitScale: "logit_scale")
        }
    }

    /// Non-parameter buffers some exports include; they carry no information Refract needs.
    static func ignorable(_ layout: CLIPLayout) -> [String] {
        switch layout {
        case .openCLIP: return ["attn_mask", "visual.attn_mask"]
        case .transformers: return ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"]
        }
    }
}
