// MARK: - Layer ablation of timm runs (Balasubramanian et al., the component-ablation curve)
//
// For a model with a classifier head (DeiT, Swin): the components of the last K decomposed
// blocks (every head, the attention bias and the MLP) are replaced by their means over the run,
// cumulatively from the last block backwards, and the head classifies what remains:
// representation − Σ_ablated (c − mean c). Top-1 and top-5 against K, K = 0 (nothing) up to every
// decomposed block; one more study replaces `init` alone. The official script's quirks (a subset
// of 20 classes, `init` always ablated) are not copied; see docs/Decomposition.md.

import Foundation
import RefractStore
import RefractTensor

public enum LayerAblation {
    /// `classify`: the model's head on representations [N, D'] → logits [N, classes] (MaxViT's is
    /// not linear); `classes` its output names.
    public static func run(_ reader: StoreReader, meansFrom: StoreReader? = nil, classify: (Tensor) -> Tensor,
                           classes: [String], classFile: String) throws -> AblationReport {
        let reference = meansFrom ?? reader
        if let other = meansFrom { try reader.requireCompatible(with: other) }
        let components = try RunComponents.describe(reader)
        let d = try reader.spec("representation").shape[0]
        let probe = classify(Tensor(zeros: [1, d]))
        guard probe.shape == [1, classes.count] else {
            throw AblationError(message: "the classifier head gives \(probe.shape[1]) outputs for representations of width \(d), not \(classes.count) classes")
        }
        let images = try MeanAblation.labelledImages(reader)
        let (mapping, index) = try LabelMapping.resolve(labels: images.map { $0.label! }, classes: classes, file: classFile)
        // Blocks from the last backwards, and the components of each. MaxViT goes part by part, in the
        // official order within a block: grid MLP, grid attention, window MLP, window attention, conv.
        let blocks = Array(Set(components.compactMap { $0.kind == .`init` ? nil : $0.block })).sorted(by: >)
        let initSlot = components.firstIndex { $0.kind == .`init` }!
        var ids = ["baseline", "init"]
        var ablated: [[Int]] = [[], [initSlot]]
        var descriptions = ["nothing ablated", "init (the stream entering block \(components[initSlot].block ?? 0)) replaced by its mean"]
        var cumulative: [Int] = []
        let maxvit = components.contains { $0.kind == .conv }
        for block in blocks {
            let mine = components.indices.filter { components[$0].block == block && components[$0].kind != .`init` }
            if maxvit {
                for (part, label) in [(".grid", "grid MLP"), (".grid", "grid attention"), (".window", "window MLP"),
                                      (".window", "window attention"), ("", "MBConv")] {
                    let slots = mine.filter { i in
                        let name = components[i].name
                        switch label {
                        case "grid MLP", "window MLP": return name == "mlp.\(block)\(part)"
                        case "MBConv": return components[i].kind == .conv || components[i].kind == .shortcutBias
                        default: return name.hasPrefix("attn.\(block)\(part).") || name == "attn_bias.\(block)\(part)"
                        }
                    }
                    cumulative += slots
                    ids.append("block_\(block)_\(label.replacingOccurrences(of: " ", with: "_").lowercased())")
                    ablated.append(cumulative)
                    descriptions.append("from the last block down to block \(block)'s \(label): every part replaced by its mean")
                }
            } else {
                cumulative += mine
                ids.append("last_\(ablated.count - 1)_blocks")
                ablated.append(cumulative)
                descriptions.append("the last \(ablated.count - 2) decomposed block(s) (\(block)...\(blocks[0])): every head, attention bias and MLP replaced by its mean")
            }
        }
        let c = components.count
        // Means of every component over the reference run: from its shards' statistics when it has
        // them (no pass over the data), else one pass.
        var means: [Double]
        if let stats = try StoredValues.finiteStatistics(reference, ["components"]) {
            means = stats.mean("components")
        } else {
            means = [Double](repeating: 0, count: c * d)
            try reference.forEachShard(["components"]) { rows, t in
                try StoredValues.requireFinite(reference, rows: rows, tensors: t, purpose: "ablate (means)")
                let v = t["components"]!.data
                for r in 0..<rows.count { for i in 0..<(c * d) { means[i] += Double(v[r * c * d + i]) } }
            }
            let n = Double(max(reference.rowCount, 1))
            means = means.map { $0 / n }
        }
        var top1 = [Int](repeating: 0, count: ids.count), top5 = top1
        var row = 0
        try reader.forEachShard(["representation", "components"]) { rows, t in
            try StoredValues.requireFinite(reader, rows: rows, tensors: t, purpose: "ablate")
            let r = rows.count, rep = t["representation"]!.data, v = t["components"]!.data
            var totals = [Float](repeating: 0, count: r * ids.count * d)                    // [r, studies, D']
            for i in 0..<r {
                for (s, slots) in ablated.enumerated() {
                    for j in 0..<d {
                        var x = Double(rep[i * d + j])
                        for k in slots { x += means[k * d + j] - Double(v[(i * c + k) * d + j]) }
                        totals[(i * ids.count + s) * d + j] = Float(x)
                    }
                }
            }
            let logits = classify(Tensor(shape: [r * ids.count, d], data: totals))
            for i in 0..<r {
                let label = index[images[row + i].label!]!
                for s in 0..<ids.count {
                    let o = (i * ids.count + s) * classes.count
                    let higher = MeanAblation.rank(logits.data, offset: o, classes: classes.count, label: label)
                    if higher < 1 { top1[s] += 1 }
                    if higher < 5 { top5[s] += 1 }
                }
            }
            row += r
        }
        let count = max(images.count, 1)
        let studies = ids.enumerated().map { s, id -> AblationStudy in
            AblationStudy(id: id, description: descriptions[s], lastAblatedLayer: s >= 2 ? s - 1 : (s == 0 ? 0 : nil),
                          top1: 100 * Double(top1[s]) / Double(count), top5: 100 * Double(top5[s]) / Double(count),
                          top1Correct: top1[s], top5Correct: top5[s])
        }
        var report = AblationReport(run: reader.run.path, meansFrom: reference.run.path, model: reader.manifest.model.id,
                                    convention: reader.manifest.convention, images: images.count, classes: classes.count,
                                    labelMapping: mapping.rawValue, studies: studies)
        report.curve = maxvit ? "parts mean-ablated, from the last block backwards (grid MLP, grid attention, window MLP, window attention, MBConv)"
                              : "blocks mean-ablated, from the last backwards"
        return report
    }
}
