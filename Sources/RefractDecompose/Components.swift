// MARK: - Components of any model family
//
// A decomposition as a flat, ordered list of named components (each a [D'] vector per image), the
// form every family shares: CLIP and the ViT family have one stage of equal blocks, Swin has
// stages of different widths and head counts. Names count blocks 0-based from the input over the
// model's flattened list of blocks (Swin: stage by stage); `official` is the name the official code
// of Balasubramanian et al. (NeurIPS 2024) gives the same term (it counts `layer:00` from the last
// decomposed block backwards).

import Foundation

public struct ComponentInfo: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// The stream entering the first decomposed block (everything before it lumped).
        case `init`
        /// One attention head's output (value bias included; the out-projection bias apart in faithful).
        case head
        /// faithful: a block's attention out-projection bias.
        case attnBias = "attn_bias"
        /// One block's MLP output (its fc2 bias included).
        case mlp
        /// faithful: a patch merge's LayerNorm β (through the reduction), Swin.
        case mergeBias = "merge_bias"
        /// faithful: the read-out's own constant (the final LayerNorm's β).
        case readoutBias = "readout_bias"
        /// MaxViT: a block's MBConv branch output (its BatchNorms, activations and squeeze-excite frozen inside).
        case conv
        /// faithful, MaxViT: the bias of a stage's shortcut convolution.
        case shortcutBias = "shortcut_bias"
    }

    /// Refract's name: `init`, `attn.B.H`, `attn_bias.B`, `mlp.B`, `merge_bias.S`, `readout_bias`
    /// (MaxViT: `conv.B`, `shortcut_bias.B`, `attn.B.window.H`, `mlp.B.grid`, ...).
    public var name: String
    /// The official code's name (`layer:LL, attn_head:HH`, `layer:LL, mlp`, `init`), nil for faithful's constants.
    public var official: String?
    public var kind: Kind
    public var block: Int?
    public var stage: Int?
    public var blockInStage: Int?
    public var head: Int?
    /// The checkpoint module the term comes from (`blocks.3.attn`, `layers.2.blocks.1.mlp`, `norm.bias`).
    public var module: String?

    public init(name: String, official: String?, kind: Kind, block: Int? = nil, stage: Int? = nil, blockInStage: Int? = nil,
                head: Int? = nil, module: String? = nil) {
        self.name = name
        self.official = official
        self.kind = kind
        self.block = block
        self.stage = stage
        self.blockInStage = blockInStage
        self.head = head
        self.module = module
    }

    enum CodingKeys: String, CodingKey {
        case name, official, kind, block, stage, head, module
        case blockInStage = "block_in_stage"
    }

    /// The official name of block `block` when blocks `start..<total` are decomposed.
    public static func officialLayer(block: Int, total: Int) -> String {
        String(format: "layer:%02d", total - 1 - block)
    }
}
