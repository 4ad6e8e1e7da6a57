// MARK: - Architectures
//
// timm's registered architectures that Refract builds, each with the arguments timm's
// `@register_model` function passes (timm 1.0: vision_transformer.py, deit.py,
// swin_transformer.py). `model_args` in config.json override them, as in
// `timm.create_model(name, **model_args)`. A name timm knows but Refract does not build is
// refused with the list of supported ones.

import Foundation

public enum TimmFamily: String, Sendable, Codable {
    /// timm `VisionTransformer`: DeiT, DINO, DINOv2 (LayerScale, registers), ViT.
    case vit
    /// timm `SwinTransformer` (v1).
    case swin
    /// timm `MaxxVit`, the MaxViT `_tf_` configurations.
    case maxvit
}

public enum TimmRegistry {
    public struct Entry: @unchecked Sendable {
        public var family: TimmFamily
        /// The register function's arguments (timm names and values).
        var arguments: [String: Any]
    }

    static func vit(_ patch: Int, _ width: Int, _ depth: Int, _ heads: Int, _ extra: [String: Any] = [:]) -> Entry {
        Entry(family: .vit, arguments: ["patch_size": patch, "embed_dim": width, "depth": depth, "num_heads": heads]
              .merging(extra) { $1 })
    }

    static func swin(_ window: Int, _ width: Int, _ depths: [Int], _ heads: [Int], _ extra: [String: Any] = [:]) -> Entry {
        Entry(family: .swin, arguments: ["patch_size": 4, "window_size": window, "embed_dim": width, "depths": depths, "num_heads": heads]
              .merging(extra) { $1 })
    }

    static func maxvit(_ dims: [Int], _ depths: [Int], stem: Int, head: Int, size: Int = 224) -> Entry {
        Entry(family: .maxvit, arguments: ["embed_dim": dims, "depths": depths, "stem_width": stem, "head_hidden_size": head, "img_size": size])
    }

    nonisolated(unsafe) static let dinov2: [String: Any] = ["init_values": 1e-5, "img_size": 518]
    nonisolated(unsafe) static let registers: [String: Any] = ["reg_tokens": 4, "no_embed_class": true]
    nonisolated(unsafe) static let giant: [String: Any] = ["init_values": 1e-5, "img_size": 518, "mlp_ratio": 2.66667 * 2,
                                       "mlp_layer": "swiglu_packed", "act_layer": "silu"]

    /// Every architecture name Refract builds.
    public static let entries: [String: Entry] = [
        // ViT (augreg, original) and DINO (`vit_*_224.dino` are tags of these)
        "vit_tiny_patch16_224": vit(16, 192, 12, 3),
        "vit_small_patch16_224": vit(16, 384, 12, 6),
        "vit_base_patch16_224": vit(16, 768, 12, 12),
        "vit_large_patch16_224": vit(16, 1024, 24, 16),
        "vit_small_patch8_224": vit(8, 384, 12, 6),
        "vit_base_patch8_224": vit(8, 768, 12, 12),
        "vit_base_patch16_384": vit(16, 768, 12, 12, ["img_size": 384]),
        "vit_large_patch16_384": vit(16, 1024, 24, 16, ["img_size": 384]),
        // DeiT (the non-distilled models are plain VisionTransformers)
        "deit_tiny_patch16_224": vit(16, 192, 12, 3),
        "deit_small_patch16_224": vit(16, 384, 12, 6),
        "deit_base_patch16_224": vit(16, 768, 12, 12),
        "deit_base_patch16_384": vit(16, 768, 12, 12, ["img_size": 384]),
        // DINOv2, with and without registers
        "vit_small_patch14_dinov2": vit(14, 384, 12, 6, dinov2),
        "vit_base_patch14_dinov2": vit(14, 768, 12, 12, dinov2),
        "vit_large_patch14_dinov2": vit(14, 1024, 24, 16, dinov2),
        "vit_giant_patch14_dinov2": vit(14, 1536, 40, 24, giant),
        "vit_small_patch14_reg4_dinov2": vit(14, 384, 12, 6, dinov2.merging(registers) { $1 }),
        "vit_base_patch14_reg4_dinov2": vit(14, 768, 12, 12, dinov2.merging(registers) { $1 }),
        "vit_large_patch14_reg4_dinov2": vit(14, 1024, 24, 16, dinov2.merging(registers) { $1 }),
        "vit_giant_patch14_reg4_dinov2": vit(14, 1536, 40, 24, giant.merging(registers) { $1 }),
        // Swin v1
        "swin_tiny_patch4_window7_224": swin(7, 96, [2, 2, 6, 2], [3, 6, 12, 24]),
        "swin_small_patch4_window7_224": swin(7, 96, [2, 2, 18, 2], [3, 6, 12, 24]),
        "swin_base_patch4_window7_224": swin(7, 128, [2, 2, 18, 2], [4, 8, 16, 32]),
        "swin_large_patch4_window7_224": swin(7, 192, [2, 2, 18, 2], [6, 12, 24, 48]),
        "swin_base_patch4_window12_384": swin(12, 128, [2, 2, 18, 2], [4, 8, 16, 32], ["img_size": 384]),
        "swin_large_patch4_window12_384": swin(12, 192, [2, 2, 18, 2], [6, 12, 24, 48], ["img_size": 384]),
        // MaxViT, TF-ported (`_tf_`: TF "same" padding, BatchNorm eps 1e-3, GELU-tanh, relative bias "bias_tf")
        "maxvit_tiny_tf_224": maxvit([64, 128, 256, 512], [2, 2, 5, 2], stem: 64, head: 512),
        "maxvit_small_tf_224": maxvit([96, 192, 384, 768], [2, 2, 5, 2], stem: 64, head: 768),
        "maxvit_base_tf_224": maxvit([96, 192, 384, 768], [2, 6, 14, 2], stem: 64, head: 768),
        "maxvit_large_tf_224": maxvit([128, 256, 512, 1024], [2, 6, 14, 2], stem: 128, head: 1024),
        "maxvit_tiny_tf_384": maxvit([64, 128, 256, 512], [2, 2, 5, 2], stem: 64, head: 512, size: 384),
        "maxvit_small_tf_384": maxvit([96, 192, 384, 768], [2, 2, 5, 2], stem: 64, head: 768, size: 384),
    ]

    /// The entry for an architecture name (a `.tag` suffix is ignored), or an error listing the
    /// supported names.
    public static func entry(_ architecture: String, file: String) throws -> Entry {
        let name = architecture.split(separator: ".", maxSplits: 1).first.map(String.init) ?? architecture
        guard let entry = entries[name] else {
            throw UnsupportedArchitecture(file: file, architecture: architecture)
        }
        return entry
    }
}

/// An architecture Refract does not build.
public struct UnsupportedArchitecture: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var architecture: String
    public var description: String {
        "\(file): architecture \"\(architecture)\" is not supported; supported: "
            + TimmRegistry.entries.keys.sorted().joined(separator: ", ")
    }
}
