// MARK: - Checkpoint keys
//
// Every tensor name of both CLIP checkpoint layouts, in one place. Loading is strict: each key
// listed here must be present with the expected shape, and no other tensor may be left unused
// (except the buffers named in `ignorable`).

import RefractCheckpoint

enum Tower { case vision, text }

/// Names of one residual block's tensors. q,k,v are fused in OpenCLIP and separate in transformers.
struct BlockKeys {
    var ln1Weight, ln1Bias: String
    /// OpenCLIP: one fused [3D, D] weight; transformers: q, k, v [D, D] each.
    var qkvWeight: [String]
    var qkvBias: [String]
    var outWeight, outBias: String
    var ln2Weight, ln2Bias: String
    var fc1Weight, fc1Bias, fc2Weight, fc2Bias: String
}

enum CLIPCheckpointKeys {
    static func block(_ layout: ModelLayout, _ tower: Tower, _ i: Int) -> BlockKeys {
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

    static func vision(_ layout: ModelLayout) -> VisionKeys {
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

    static func text(_ layout: ModelLayout) -> TextKeys {
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
    static func ignorable(_ layout: ModelLayout) -> [String] {
        switch layout {
        case .openCLIP: return ["attn_mask", "visual.attn_mask"]
        case .transformers: return ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"]
        }
    }
}
