// MARK: - Mean ablation (Paper 1, section 3.2)
//
// Replaces components, for every image, by their mean over a reference set (the run itself unless
// another run of the same model is named) and measures zero-shot top-1/top-5 on the sum:
//   baseline            nothing ablated
//   mlp                 `pre` and every MLP term
//   cls_attn            the class-to-class attention terms (attn_cls of every layer and head)
//   mlp_and_cls_attn    both
//   attn_upto_<l>       attention layers 0...l (every head), MLPs intact, for each l
// Scores are the ablated sums times the classifier (no renormalisation: it does not change a
// ranking). Two passes over the store, one shard in memory at a time.

import Foundation
import RefractStore
import RefractTensor

public struct AblationError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

public struct AblationStudy: Codable, Sendable, Equatable {
    public var id: String
    public var description: String
    /// For attn_upto_<l>: l.
    public var lastAblatedLayer: Int?
    public var top1: Double
    public var top5: Double
    public var top1Correct: Int
    public var top5Correct: Int
}

public struct AblationReport: Codable, Sendable {
    public var run: String
    public var meansFrom: String
    public var model: String
    public var convention: String
    public var images: Int
    public var classes: Int
    /// How run labels were matched to the class list.
    public var labelMapping: String
    public var studies: [AblationStudy]
    /// What the curve's x axis counts (`lastAblatedLayer` of its studies): nil for CLIP's
    /// "last ablated attention layer"; timm runs: blocks ablated from the last backwards.
    public var curve: String? = nil
}

/// How the labels of a run map to the rows of a class list.
public enum LabelMapping: String, Sendable {
    case byName = "labels are class names"
    case byIndex = "labels are 0-based class indices"
    case bySortedLabel = "the i-th sorted label is the i-th class (ImageNet folder layout: sorted synset ids)"

    /// Class index for each label, choosing the first rule that fits: names, integer indices,
    /// sorted-label order (when the counts agree).
    public static func resolve(labels: [String], classes: [String], file: String) throws -> (LabelMapping, [String: Int]) {
        let distinct = Set(labels).sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        var byName = [String: Int]()
        for (i, c) in classes.enumerated() where byName[c] == nil { byName[c] = i }
        if distinct.allSatisfy({ byName[$0] != nil }) { return (.byName, byName) }
        if distinct.allSatisfy({ Int($0).map { $0 >= 0 && $0 < classes.count } ?? false }) {
            return (.byIndex, Dictionary(uniqueKeysWithValues: distinct.map { ($0, Int($0)!) }))
        }
        if distinct.count == classes.count {
            return (.bySortedLabel, Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, $0) }))
        }
        throw AblationError(message: "\(file): \(classes.count) classes, but the run's images have \(distinct.count) distinct labels "
            + "that are neither class names nor class indices (e.g. '\(distinct.first ?? "")'); give one class per label, "
            + "in the labels' sorted order")
    }
}

public enum MeanAblation {
    /// Per-image sums for every study: [studies, D'] for one image, from the image's components
    /// and the reference means. Study order: baseline, mlp, cls_attn, mlp_and_cls_attn, attn_upto_0...
    struct Means {
        var pre: [Double], mlpSum: [Double], clsSum: [Double]
        var attnLayer: [[Double]]
    }

    public static func studyIDs(layers: Int) -> [String] {
        ["baseline", "mlp", "cls_attn", "mlp_and_cls_attn"] + (0..<layers).map { "attn_upto_\($0)" }
    }

    static func studyDescription(_ id: String) -> String {
        switch id {
        case "baseline": return "nothing ablated"
        case "mlp": return "pre and all MLP terms replaced by their means"
        case "cls_attn": return "class-to-class attention terms replaced by their means"
        case "mlp_and_cls_attn": return "MLP terms, pre and class-to-class attention terms replaced by their means"
        default: return "attention layers 0...\(id.dropFirst("attn_upto_".count)) replaced by their means (MLPs intact)"
        }
    }

    static let required = ["pre", "mlp", "attn", "attn_cls"]

    /// Mean over the rows of `reader` of the components the studies replace.
    static func means(_ reader: StoreReader) throws -> Means {
        let l = try dim(reader, "layers"), h = try dim(reader, "heads"), d = try dim(reader, "embedDim")
        if let stats = try StoredValues.finiteStatistics(reader, required) {
            // From the shards' statistics: no pass over the data.
            let pr = stats.mean("pre"), ml = stats.mean("mlp"), at = stats.mean("attn"), ac = stats.mean("attn_cls")
            var mlp = [Double](repeating: 0, count: d), cls = mlp
            var attn = [[Double]](repeating: mlp, count: l)
            for layer in 0..<l {
                for j in 0..<d { mlp[j] += ml[layer * d + j] }
                for head in 0..<h {
                    let o = (layer * h + head) * d
                    for j in 0..<d { attn[layer][j] += at[o + j]; cls[j] += ac[o + j] }
                }
            }
            return Means(pre: pr, mlpSum: mlp, clsSum: cls, attnLayer: attn)
        }
        var pre = [Double](repeating: 0, count: d), mlp = pre, cls = pre
        var attn = [[Double]](repeating: pre, count: l)
        try reader.forEachShard(required) { rows, t in
            try StoredValues.requireFinite(reader, rows: rows, tensors: t, purpose: "ablate (means)")
            let pr = t["pre"]!.data, ml = t["mlp"]!.data, at = t["attn"]!.data, ac = t["attn_cls"]!.data
            for r in 0..<rows.count {
                for j in 0..<d { pre[j] += Double(pr[r * d + j]) }
                for layer in 0..<l {
                    for j in 0..<d { mlp[j] += Double(ml[(r * l + layer) * d + j]) }
                    for head in 0..<h {
                        let o = ((r * l + layer) * h + head) * d
                        for j in 0..<d { attn[layer][j] += Double(at[o + j]); cls[j] += Double(ac[o + j]) }
                    }
                }
            }
        }
        let n = Double(max(reader.rowCount, 1))
        return Means(pre: pre.map { $0 / n }, mlpSum: mlp.map { $0 / n }, clsSum: cls.map { $0 / n },
                     attnLayer: attn.map { $0.map { $0 / n } })
    }

    static func dim(_ reader: StoreReader, _ name: String) throws -> Int {
        guard let v = reader.manifest.dimensions[name] else {
            throw AblationError(message: "\(reader.run.path)/manifest.json: no '\(name)' dimension; not a decomposition run")
        }
        return v
    }

    /// Runs every study. `classifier` [D', C] with `classes` names; `classFile` names the class list
    /// in errors.
    public static func run(_ reader: StoreReader, meansFrom: StoreReader? = nil, classifier: Tensor, classes: [String],
                           classFile: String, onScores: ((_ row: Int, _ study: Int, _ scores: [Float]) -> Void)? = nil) throws -> AblationReport {
        let reference = meansFrom ?? reader
        if let other = meansFrom { try reader.requireCompatible(with: other) }
        for name in required where !reader.manifest.tensors.contains(where: { $0.name == name }) {
            throw AblationError(message: "\(reader.run.path): no '\(name)' tensor; not a decomposition run")
        }
        let l = try dim(reader, "layers"), h = try dim(reader, "heads"), d = try dim(reader, "embedDim")
        guard classifier.shape == [d, classes.count] else {
            throw AblationError(message: "classifier \(classifier.shape) does not fit embeddings of width \(d) and \(classes.count) classes")
        }
        let images = try MeanAblation.labelledImages(reader)
        if let names = reader.manifest.classNames, names.count != classes.count,
           !names.allSatisfy({ classes.contains($0) }), !names.allSatisfy({ Int($0) != nil }) {
            throw AblationError(message: "\(classFile): \(classes.count) classes, but the run has \(names.count) "
                + "(\(names.prefix(3).joined(separator: ", "))...); give one class name per run class, in sorted label order")
        }
        try StoredValues.requireFinite(classifier, source: classFile, what: "the zero-shot classifier [D', classes]",
                                       purpose: "ablate")
        let (mapping, index) = try LabelMapping.resolve(labels: images.map { $0.label! }, classes: classes, file: classFile)
        let means = try Self.means(reference)
        let ids = studyIDs(layers: l)
        var top1 = [Int](repeating: 0, count: ids.count), top5 = top1
        let extra = ["attn_bias", "readout_bias"].filter { n in reader.manifest.tensors.contains { $0.name == n } }
        var row = 0
        try reader.forEachShard(required + extra) { rows, t in
            try StoredValues.requireFinite(reader, rows: rows, tensors: t, purpose: "ablate")
            let r = rows.count
            var totals = [Float](repeating: 0, count: r * ids.count * d)                  // [r, studies, D']
            let pr = t["pre"]!.data, ml = t["mlp"]!.data, at = t["attn"]!.data, ac = t["attn_cls"]!.data
            for i in 0..<r {
                var pre = [Double](repeating: 0, count: d), mlp = pre, cls = pre, base = pre
                var attnLayer = [[Double]](repeating: pre, count: l)
                for j in 0..<d { pre[j] = Double(pr[i * d + j]) }
                for layer in 0..<l {
                    for j in 0..<d { mlp[j] += Double(ml[(i * l + layer) * d + j]) }
                    for head in 0..<h {
                        let o = ((i * l + layer) * h + head) * d
                        for j in 0..<d { attnLayer[layer][j] += Double(at[o + j]); cls[j] += Double(ac[o + j]) }
                    }
                }
                for j in 0..<d { base[j] = pre[j] + mlp[j] + attnLayer.reduce(0) { $0 + $1[j] } }
                if let ab = t["attn_bias"]?.data {
                    for layer in 0..<l { for j in 0..<d { base[j] += Double(ab[(i * l + layer) * d + j]) } }
                }
                if let rb = t["readout_bias"]?.data { for j in 0..<d { base[j] += Double(rb[i * d + j]) } }
                for (s, id) in ids.enumerated() {
                    let dst = (i * ids.count + s) * d
                    for j in 0..<d {
                        var v = base[j]
                        switch id {
                        case "baseline": break
                        case "mlp": v += means.pre[j] + means.mlpSum[j] - pre[j] - mlp[j]
                        case "cls_attn": v += means.clsSum[j] - cls[j]
                        case "mlp_and_cls_attn": v += means.pre[j] + means.mlpSum[j] - pre[j] - mlp[j] + means.clsSum[j] - cls[j]
                        default:
                            let upTo = s - 4
                            for layer in 0...upTo { v += means.attnLayer[layer][j] - attnLayer[layer][j] }
                        }
                        totals[dst + j] = Float(v)
                    }
                }
            }
            let scores = Ops.matmul(Tensor(shape: [r * ids.count, d], data: totals), classifier)   // [r·S, C]
            for i in 0..<r {
                let label = index[images[row + i].label!]!
                for s in 0..<ids.count {
                    let o = (i * ids.count + s) * classes.count
                    onScores?(row + i, s, Array(scores.data[o..<(o + classes.count)]))
                    let higher = rank(scores.data, offset: o, classes: classes.count, label: label)
                    if higher < 1 { top1[s] += 1 }
                    if higher < 5 { top5[s] += 1 }
                }
            }
            row += r
        }
        let n = max(images.count, 1)
        let studies = ids.enumerated().map { s, id in
            AblationStudy(id: id, description: studyDescription(id),
                          lastAblatedLayer: id.hasPrefix("attn_upto_") ? s - 4 : nil,
                          top1: 100 * Double(top1[s]) / Double(n), top5: 100 * Double(top5[s]) / Double(n),
                          top1Correct: top1[s], top5Correct: top5[s])
        }
        return AblationReport(run: reader.run.path, meansFrom: reference.run.path, model: reader.manifest.model.id,
                              convention: reader.manifest.convention, images: images.count, classes: classes.count,
                              labelMapping: mapping.rawValue, studies: studies)
    }

    /// The run's images, all labelled (else an error naming the first unlabelled one).
    static func labelledImages(_ reader: StoreReader) throws -> [StoreImage] {
        let images = reader.rowImages
        let unlabelled = images.filter { $0.label == nil }
        if let first = unlabelled.first {
            throw AblationError(message: "\(reader.run.path): \(unlabelled.count) image(s) have no label (e.g. \(first.path)); "
                + "ablation needs labelled images (class folders, or a label column in the list)")
        }
        return images
    }

    /// The label's rank among `classes` scores at `offset`: how many classes score strictly higher
    /// (ties resolved in the image's favour).
    static func rank(_ scores: [Float], offset o: Int, classes: Int, label: Int) -> Int {
        let mine = scores[o + label]
        var higher = 0
        for c in 0..<classes where scores[o + c] > mine { higher += 1 }
        return higher
    }

    /// The studies as CSV: study,description,top1,top5,top1_correct,top5_correct,images.
    public static func csv(_ report: AblationReport) -> String {
        func quote(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        var out = "study,description,top1,top5,top1_correct,top5_correct,images\n"
        for s in report.studies {
            out += "\(s.id),\(quote(s.description)),\(String(format: "%.4f", s.top1)),\(String(format: "%.4f", s.top5)),"
                + "\(s.top1Correct),\(s.top5Correct),\(report.images)\n"
        }
        return out
    }
}
