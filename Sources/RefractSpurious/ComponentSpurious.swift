// MARK: - Waterbirds for models beyond CLIP: a probe, components chosen by score, mean-ablated
//
// Balasubramanian et al. §4.6 (beyond-clip.md): the classifier is a linear probe on the model's
// representation (trained on the correlated training split: `refract probe`); the components to
// remove are the top K by score(spurious texts) − score(core texts), the scores of their aligned
// contributions (CompAlign only chooses, it does not classify); each is mean-ablated — replaced by
// its mean over the evaluated images — in the sum of components the probe classifies. Worst-group
// and average-group accuracy before and after, against K random components (a control), beside
// the published table.

import Foundation
import RefractAlign
import RefractDecompose
import RefractStore
import RefractTensor
import RefractTextSpan

/// How the components were chosen.
public struct ComponentSelectionSummary: Codable, Sendable, Equatable {
    /// `explicit`, or `score` (spurious minus core).
    public var rule: String
    public var property: String?
    public var spuriousTexts: [String]?
    public var coreTexts: [String]?
    /// The alignment whose aligned components were scored.
    public var alignment: String?
    /// Per chosen component, its key (spurious score − core score), for `score`.
    public var keys: [Double]?
    public init(rule: String, property: String? = nil, spuriousTexts: [String]? = nil, coreTexts: [String]? = nil,
                alignment: String? = nil, keys: [Double]? = nil) {
        self.rule = rule; self.property = property; self.spuriousTexts = spuriousTexts; self.coreTexts = coreTexts
        self.alignment = alignment; self.keys = keys
    }
}

/// The paper's Waterbirds table (worst-group and average-group accuracy, before → after).
public struct PublishedWaterbirds: Codable, Sendable, Equatable {
    public var model: String
    public var worstBefore: Double, worstAfter: Double
    public var averageBefore: Double, averageAfter: Double

    public static let balasubramanian2024: [PublishedWaterbirds] = [
        .init(model: "DeiT", worstBefore: 0.733, worstAfter: 0.815, averageBefore: 0.874, averageAfter: 0.913),
        .init(model: "CLIP ViT-B-16 laion2b", worstBefore: 0.507, worstAfter: 0.744, averageBefore: 0.727, averageAfter: 0.790),
        .init(model: "DINO", worstBefore: 0.800, worstAfter: 0.911, averageBefore: 0.900, averageAfter: 0.938),
        .init(model: "DINOv2", worstBefore: 0.967, worstAfter: 0.978, averageBefore: 0.983, averageAfter: 0.986),
        .init(model: "Swin", worstBefore: 0.834, worstAfter: 0.871, averageBefore: 0.927, averageAfter: 0.944),
        .init(model: "MaxViT", worstBefore: 0.777, worstAfter: 0.814, averageBefore: 0.875, averageAfter: 0.887),
    ]
}

public struct ComponentSpuriousReport: Codable, Sendable, Equatable {
    public var formatVersion = 1
    public var run: String
    public var model: String
    public var weightsSHA256: String
    public var convention: String
    public var classes: [String]
    /// The probe (directory and SHA-256 of its weights) that classifies Σ components.
    public var probe: String
    public var probeSHA256: String
    public var evaluation: EvaluationSummary
    public var averaging: String
    public var means: String
    public var selection: ComponentSelectionSummary
    public var components: [String]
    public var settings: [SettingResult]
    public var random: RandomControl?
    /// The paper's figures are fractions (0...1); Refract's are percentages.
    public var published: [PublishedWaterbirds]
}

public enum ComponentSpuriousStudy {
    /// The paper's texts (beyond-clip.md §4.6).
    public static let spuriousTexts = ["water", "ocean", "lake", "sky", "land", "forest", "trees", "bamboo", "leaves"]
    public static let coreTexts = ["bird", "finch", "hummingbird", "crow", "sparrow", "swan", "albatross", "pelican"]

    /// Keeps the images of `evaluation` whose metadata split is in `splits` (the paper evaluates val ∪ test).
    public static func restrict(_ evaluation: EvaluationSet, to splits: Set<WaterbirdsSplit>, metadata: WaterbirdsMetadata) -> EvaluationSet {
        var splitOfLine = [Int: Int]()
        for row in metadata.rows { splitOfLine[row.line] = row.split }
        var out = evaluation
        out.rows = []; out.metadataLines = []; out.y = []; out.place = []
        for i in evaluation.rows.indices {
            guard let s = splitOfLine[evaluation.metadataLines[i]].flatMap(WaterbirdsSplit.init(rawValue:)), splits.contains(s) else {
                out.runRowsOutsideSplit += 1
                continue
            }
            out.rows.append(evaluation.rows[i]); out.metadataLines.append(evaluation.metadataLines[i])
            out.y.append(evaluation.y[i]); out.place.append(evaluation.place[i])
        }
        return out
    }

    /// Runs the settings: nothing ablated, the chosen components mean-ablated, and `randomDraws` sets of
    /// as many random components. `probe` classifies Σ components of each evaluated image.
    public static func run(_ reader: StoreReader, evaluation: EvaluationSet, metadata: String, probe: ProbeArtefact,
                           chosen: [Int], selection: ComponentSelectionSummary, randomDraws: Int = 10, seed: UInt64 = 0) throws -> ComponentSpuriousReport {
        let names = try RunComponents.describe(reader).map(\.name)
        let classes = probe.manifest.classes
        try SpuriousStudy.checkClasses(classes, source: probe.directory.path)
        try probe.check(run: reader)
        guard !chosen.isEmpty else { throw SpuriousError(path: reader.run.path, message: "no components chosen to ablate") }
        if let bad = chosen.first(where: { $0 < 0 || $0 >= names.count }) {
            throw SpuriousError(path: reader.run.path, message: "component index \(bad) is outside the run's \(names.count) components")
        }
        guard evaluation.count > 0 else { throw SpuriousError(path: metadata, message: "no image of the run is evaluated") }
        guard (0...SpuriousOptions.maxRandomDraws).contains(randomDraws) else {
            throw SpuriousError(path: "randomDraws", message: "\(randomDraws) is out of range: allowed 0...\(SpuriousOptions.maxRandomDraws)")
        }
        // The evaluated rows' components [E, C, d]: their sums and the components' means.
        let x = try reader.tensor("components", rowList: evaluation.rows)
        let c = names.count, d = x.shape[2], e = evaluation.count
        if let bad = x.data.firstIndex(where: { !$0.isFinite }) {
            let r = evaluation.rows[bad / (c * d)]
            throw SpuriousError(path: reader.run.path, message: "components of row \(r) (\(reader.rowImages[r].path)) hold NaN or infinite values")
        }
        guard d == probe.manifest.width else {
            throw SpuriousError(path: probe.directory.path, message: "a probe of width \(probe.manifest.width); the run's components have width \(d)")
        }
        var sums = [Double](repeating: 0, count: e * d), means = [Double](repeating: 0, count: c * d)
        for i in 0..<e {
            for k in 0..<c {
                for j in 0..<d {
                    let v = Double(x.data[(i * c + k) * d + j])
                    sums[i * d + j] += v
                    means[k * d + j] += v
                }
            }
        }
        for i in means.indices { means[i] /= Double(e) }
        func setting(_ id: String, _ description: String, _ ablated: [Int]) -> SettingResult {
            var features = [Float](repeating: 0, count: e * d)
            for i in 0..<e {
                for j in 0..<d {
                    var v = sums[i * d + j]
                    for k in ablated { v += means[k * d + j] - Double(x.data[(i * c + k) * d + j]) }
                    features[i * d + j] = Float(v)
                }
            }
            let predictions = probe.probe.predict(Tensor(shape: [e, d], data: features))
            return SettingResult(id: id, description: description, heads: ablated.map { names[$0] }, paperAblations: false,
                                 accuracy: AccuracySummary(predictions: predictions, evaluation: evaluation, classes: classes))
        }
        var settings = [setting("base", "nothing ablated", [])]
        settings.append(setting("ablated", "components \(chosen.map { names[$0] }.joined(separator: ", ")) mean-ablated", chosen))
        var random: RandomControl?
        if randomDraws > 0 {
            // Draws of component indices, through the head-draw sequence (a component i is drawn as "head" 0.i).
            let pool = (0..<c).map { HeadID(layer: 0, head: $0) }
            let draws = SpuriousStudy.lazyRandomDraws(pool: pool, k: chosen.count, draws: randomDraws, seed: seed).enumerated().map { i, drawn in
                let set = drawn.map(\.head)
                return setting("random.\(i + 1)", "random components \(set.map { names[$0] }.joined(separator: ", ")) mean-ablated", set)
            }
            random = RandomControl(pool: "every component of the run (chosen ones not excluded)", poolSize: c, headsPerDraw: chosen.count,
                                   seed: seed, draws: draws)
        }
        let m = reader.manifest
        return ComponentSpuriousReport(
            run: reader.run.path, model: m.model.id, weightsSHA256: m.model.weightsSHA256, convention: m.convention, classes: classes,
            probe: probe.directory.path, probeSHA256: probe.manifest.weightsSHA256,
            evaluation: EvaluationSummary(evaluation, metadata: metadata, classes: classes, runImages: reader.rowCount),
            averaging: "average: accuracy over all evaluated images; meanOverGroups: unweighted mean of the group accuracies "
                + "(the paper's average-group accuracy); worstGroup: the lowest group accuracy",
            means: "mean-ablated components are replaced by their mean over the evaluated images; the probe classifies the sum of components",
            selection: selection, components: chosen.map { names[$0] }, settings: settings, random: random,
            published: PublishedWaterbirds.balasubramanian2024)
    }

    /// spurious.md for a component study.
    public static func markdown(_ r: ComponentSpuriousReport) -> String {
        var out = "# Spurious cues: Waterbirds group accuracy with components mean-ablated\n\n"
        out += "- run: `\(r.run)` (\(r.model), weights sha256 `\(r.weightsSHA256.prefix(12))…`, \(r.convention))\n"
        out += "- classifier: the linear probe `\(r.probe)` on the sum of components\n"
        out += "- evaluated: \(r.evaluation.images) images (\(r.evaluation.split ?? "splits as chosen")); \(r.means)\n"
        let s = r.selection
        if s.rule == "score" {
            out += "- chosen by score(\(s.spuriousTexts?.joined(separator: ", ") ?? "")) − score(\(s.coreTexts?.joined(separator: ", ") ?? "")) "
                + "of the components aligned by `\(s.alignment ?? "")`\n"
        }
        out += "- components: \(r.components.map { "`\($0)`" }.joined(separator: ", "))\n\n"
        out += "| setting | worst group | worst-group accuracy | average-group accuracy | accuracy |\n|---|---|---:|---:|---:|\n"
        for x in r.settings where !x.id.hasPrefix("random.") {
            out += String(format: "| %@ | %@ | %.2f%% | %.2f%% | %.2f%% |\n", x.id, x.accuracy.worstGroup, x.accuracy.worstGroupAccuracy,
                          x.accuracy.meanOverGroups, x.accuracy.average)
        }
        if let rc = r.random {
            out += String(format: "| random (%d draws, mean) | | %.2f%% | %.2f%% | %.2f%% |\n", rc.draws.count, rc.meanWorstGroup,
                          rc.meanOverGroups, rc.meanAverage)
        }
        out += "\nPublished (Balasubramanian et al. 2024; the authors' cleaned Waterbirds and split, so expect the direction and size of the change, "
            + "not the figures):\n\n| model | worst group before → after | average group before → after |\n|---|---|---|\n"
        for p in r.published {
            out += String(format: "| %@ | %.3f → %.3f | %.3f → %.3f |\n", p.model, p.worstBefore, p.worstAfter, p.averageBefore, p.averageAfter)
        }
        return out
    }
}
