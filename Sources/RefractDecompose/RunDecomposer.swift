// MARK: - What a run stores, per model family
//
// `DecomposeRun` writes whatever a decomposer lists: CLIP runs their per-kind tensors (pre, mlp,
// attn, ...; docs/Store.md), timm runs one components tensor described in the manifest.

import Foundation
import RefractStore
import RefractTensor

/// A decomposer as a run uses it: the per-image tensors it writes and what describes them.
protocol RunDecomposer: Sendable {
    /// Per-image tensors: name, shape, description, and whether it stays float32 whatever the run's dtype.
    var runTensors: [(name: String, shape: [Int], description: String, float32: Bool)] { get }
    var runDimensions: [String: Int] { get }
    /// Options that decide the contents (checked on --resume), beside the run's dtype and batch size.
    var runOptions: [String: JSONValue] { get }
    /// The tensors of a batch of preprocessed images: name → [B, ...].
    func decomposeRows(_ pixels: [Tensor]) -> [String: Tensor]
}

extension CLIPDecomposer: RunDecomposer {
    var runTensors: [(name: String, shape: [Int], description: String, float32: Bool)] {
        shape.tensorShapes(convention).map { ($0.0.rawValue, $0.1, $0.0.summary, $0.0 == .embedding || $0.0 == .norm) }
    }
    var runDimensions: [String: Int] {
        ["layers": shape.layers, "heads": shape.heads, "tokens": shape.tokens, "width": shape.width,
         "embedDim": shape.outputWidth, "imageSize": tower.arch.imageSize, "patchSize": tower.arch.patchSize]
    }
    var runOptions: [String: JSONValue] { ["tokenLayers": .array(shape.tokenLayers.map { .number(Double($0)) })] }
    func decomposeRows(_ pixels: [Tensor]) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: self(pixels).tensors.map { ($0.key.rawValue, $0.value) })
    }
}

extension TimmDecomposer: RunDecomposer {
    var runTensors: [(name: String, shape: [Int], description: String, float32: Bool)] {
        let d = paths.outputWidth
        var list: [(name: String, shape: [Int], description: String, float32: Bool)] = [
            ("representation", [d], "the model's representation (timm's pre-logits); faithful components sum to it", true),
            ("components", [components.count, d], "the components in the order of the manifest's options.components", false),
        ]
        for site in sites where tokenBlocks.contains(site.index) {
            let shape: [Int]
            if case .vit(let m) = model.network {
                shape = [site.heads, m.config.tokens, d]
            } else {
                let r = site.partition!.resolution
                shape = [site.heads, r, r, d]
            }
            list.append(("tokens.\(site.key)", shape, "sub-block \(site.key)'s heads split by source token (Σ over tokens = the head's component)", false))
        }
        return list
    }

    var runDimensions: [String: Int] {
        ["components": components.count, "width": paths.outputWidth, "blocks": TimmDecomposer.blockCount(model), "fromBlock": fromBlock,
         "imageSize": model.preprocessing.imageSize]
    }

    var runOptions: [String: JSONValue] {
        let described = (try? JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(components))) ?? .array([])
        return ["fromBlock": .number(Double(fromBlock)), "tokenBlocks": .array(tokenBlocks.map { .number(Double($0)) }),
                "family": .string(model.family.rawValue), "architecture": .string(model.config.architecture),
                "components": described]
    }

    func decomposeRows(_ pixels: [Tensor]) -> [String: Tensor] {
        let batch = self(pixels)
        var rows = ["representation": batch.representation, "components": batch.values]
        for (key, t) in batch.tokens { rows["tokens.\(key)"] = t }
        return rows
    }
}
