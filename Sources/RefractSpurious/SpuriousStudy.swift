// MARK: - The spurious-cue study (Paper 1, section 4.3)
//
// Settings, each scored per Waterbirds group (y, place):
//   base             nothing ablated;
//   paper_ablations  (with `paperAblations`) every head of the layers before the last 4 and `pre`
//                    plus every MLP mean-ablated, the chosen heads intact: what the official
//                    script (compute_use_specific_heads.py) ablates besides the chosen heads;
//   ablated          the chosen heads mean-ablated (plus the paper ablations when asked);
//   random.<i>       as many heads as were chosen, drawn uniformly without replacement from the
//                    heads the paper ablations leave intact (every head of the run without them),
//                    chosen heads not excluded; plus the paper ablations when asked.
// Means are over the evaluated images. Accuracies are in percent.

import Foundation
import RefractCLIP
import RefractStore
import RefractTensor
import RefractTextSpan

// MARK: Options and records

public struct SpuriousOptions: Sendable {
    /// Also mean-ablate every head of the layers before the last `paperKeptLayers` and `pre` plus
    /// every MLP, as the official script does.
    public var paperAblations = false
    public var paperKeptLayers = 4
    /// Random-head control: number of draws (0: none, at most `maxRandomDraws`) and the seed of the draws.
    public var randomDraws = 10
    /// Most random draws a study makes: each is scored over every image and kept in the report
    /// (spurious.json), so the count is bounded before any draw is made.
    public static let maxRandomDraws = 10_000
    public var seed: UInt64 = 0
    public init() {}
}

public struct SettingResult: Codable, Sendable, Equatable {
    public var id: String
    public var description: String
    /// Heads mean-ablated beyond the paper ablations (the chosen or drawn ones).
    public var heads: [String]
    /// Whether the paper ablations (early layers, pre and MLPs) were applied too.
    public var paperAblations: Bool
    public var accuracy: AccuracySummary
}

public struct RandomControl: Codable, Sendable, Equatable {
    /// Which heads draws come from, in words, and how many there are.
    public var pool: String
    public var poolSize: Int
    public var headsPerDraw: Int
    public var seed: UInt64
    public var draws: [SettingResult]
    /// Over the draws: mean and maximum of the worst-group accuracy, of the average (over
    /// images) and of the mean over groups.
    public var meanWorstGroup: Double
    public var maxWorstGroup: Double
    public var meanAverage: Double
    public var maxAverage: Double
    public var meanOverGroups: Double

    /// The control of `draws` (at least one), with its summary over them.
    public init(pool: String, poolSize: Int, headsPerDraw: Int, seed: UInt64, draws: [SettingResult]) {
        precondition(!draws.isEmpty, "a random control of no draws")
        self.pool = pool; self.poolSize = poolSize; self.headsPerDraw = headsPerDraw; self.seed = seed; self.draws = draws
        let worst = draws.map(\.accuracy.worstGroupAccuracy), avg = draws.map(\.accuracy.average)
        let n = Double(draws.count)
        meanWorstGroup = worst.reduce(0, +) / n
        maxWorstGroup = worst.max()!
        meanAverage = avg.reduce(0, +) / n
        maxAverage = avg.max()!
        meanOverGroups = draws.reduce(0) { $0 + $1.accuracy.meanOverGroups } / n
    }
}

public struct PaperAblationSpec: Codable, Sendable, Equatable {
    /// Layers whose every head is mean-ablated (those before the last `keptLayers`).
    public var ablatedLayers: [Int]
    public var keptLayers: Int
    public var preAndMLPs: Bool = true
}

public struct EvaluationSummary: Codable, Sendable, Equatable {
    public var metadata: String
    public var split: String?
    public var images: Int
    public var imagesPerGroup: [String: Int]
    public var runImages: Int
    public var runImagesOutsideSplit: Int
    public var metadataRowsNotInRun: Int
    public var splitRowsNotInRun: Int?
    public var matchedBySuffix: Int

    /// The summary of `evaluation` (its images per group, named by `classes`) over a run of `runImages` rows.
    public init(_ evaluation: EvaluationSet, metadata: String, classes: [String], runImages: Int) {
        let groupNames = AccuracySummary.groupNames(classes: classes)
        var perGroup = [String: Int]()
        for g in 0..<4 { perGroup[groupNames[g]] = 0 }
        for g in evaluation.groups { perGroup[groupNames[g], default: 0] += 1 }
        self.metadata = metadata
        split = evaluation.split?.name
        images = evaluation.count
        imagesPerGroup = perGroup
        self.runImages = runImages
        runImagesOutsideSplit = evaluation.runRowsOutsideSplit
        metadataRowsNotInRun = evaluation.metadataRowsNotInRun
        splitRowsNotInRun = evaluation.splitRowsNotInRun
        matchedBySuffix = evaluation.matchedBySuffix
    }
}

/// Published Waterbirds worst-group accuracies (Gandelsman et al., ICLR 2024, section 4.3; OpenCLIP
/// LAION-2B models): base model, random heads ablated, TextSpan-chosen heads ablated.
public struct PublishedResult: Codable, Sendable, Equatable {
    public var model: String
    public var base: Double
    public var randomHeads: Double
    public var textSpanHeads: Double

    public static let gandelsman2024: [PublishedResult] = [
        PublishedResult(model: "ViT-B-16", base: 45.6, randomHeads: 52.3, textSpanHeads: 57.5),
        PublishedResult(model: "ViT-L-14", base: 47.7, randomHeads: 57.7, textSpanHeads: 72.9),
        PublishedResult(model: "ViT-H-14", base: 37.2, randomHeads: 37.0, textSpanHeads: 43.3),
    ]
}

public struct SpuriousReport: Codable, Sendable, Equatable {
    public var formatVersion = 1
    public var run: String
    public var model: String
    public var weightsSHA256: String
    public var convention: String
    public var classes: [String]
    public var templates: [String]
    public var evaluation: EvaluationSummary
    /// How the averages are taken.
    public var averaging: String
    public var means: String
    public var paperAblations: PaperAblationSpec?
    public var selection: HeadSelectionSummary
    public var heads: [ChosenHead]
    public var settings: [SettingResult]
    public var random: RandomControl?
    public var published: [PublishedResult]
}

// MARK: The study

public enum SpuriousStudy {
    /// Checks the class list: Waterbirds is binary (y = 0 the first class, 1 the second).
    public static func checkClasses(_ classes: [String], source: String) throws {
        guard classes.count == 2 else {
            throw SpuriousError(path: source, message: "\(classes.count) class\(classes.count == 1 ? "" : "es") "
                + "(\(classes.joined(separator: ", "))); Waterbirds needs exactly 2: the class of y = 0 then of y = 1, "
                + "e.g. landbird,waterbird")
        }
        guard classes[0] != classes[1] else {
            throw SpuriousError(path: source, message: "the two classes are both '\(classes[0])'")
        }
    }

    /// Heads the random control draws from: those the paper ablations leave intact, or all.
    public static func randomPool(layers: Int, heads: Int, options: SpuriousOptions) -> (heads: [HeadID], words: String) {
        let first = options.paperAblations ? max(0, layers - options.paperKeptLayers) : 0
        let pool = (first..<layers).flatMap { l in (0..<heads).map { HeadID(layer: l, head: $0) } }
        let words = options.paperAblations
            ? "every head of layers \(first)...\(layers - 1) (those the paper ablations leave intact; chosen heads not excluded)"
            : "every head of the run (chosen heads not excluded)"
        return (pool, words)
    }

    /// `draws` sets of `k` distinct heads of `pool`, each sorted, from one SplitMix64 stream seeded
    /// with `seed` (a partial Fisher–Yates shuffle per draw).
    /// Draws are made one at a time as the result is consumed (a lazy sequence), so no more than
    /// one draw's heads are held beyond what the caller keeps; `run` bounds their number.
    public static func randomDraws(pool: [HeadID], k: Int, draws: Int, seed: UInt64) -> [[HeadID]] {
        Array(lazyRandomDraws(pool: pool, k: k, draws: draws, seed: seed))
    }

    /// The draws of `randomDraws` as a sequence that makes each draw when it is reached (each
    /// iteration starts again from `seed`).
    public static func lazyRandomDraws(pool: [HeadID], k: Int, draws: Int, seed: UInt64) -> RandomDraws {
        RandomDraws(pool: pool, k: min(max(0, k), pool.count), draws: max(0, draws), seed: seed)
    }

    /// `draws` draws of `k` distinct heads of `pool`, made one at a time.
    public struct RandomDraws: Sequence {
        let pool: [HeadID], k: Int, draws: Int, seed: UInt64

        public struct Iterator: IteratorProtocol {
            let pool: [HeadID], k: Int
            var remaining: Int
            var rng: SplitMix64

            public mutating func next() -> [HeadID]? {
                guard remaining > 0 else { return nil }
                remaining -= 1
                var items = pool
                for i in 0..<k {
                    let j = i + Swift.min(items.count - i - 1, Int(rng.uniformOpen() * Double(items.count - i)))
                    items.swapAt(i, j)
                }
                return Array(items.prefix(k)).sorted()
            }
        }

        public func makeIterator() -> Iterator {
            Iterator(pool: pool, k: k, remaining: draws, rng: SplitMix64(seed: seed))
        }
    }

    /// Runs every setting. `classifier` holds the class names and templates; `choice` the heads.
    public static func run(_ reader: StoreReader, evaluation: EvaluationSet, metadata: String, classifier: ZeroShotClassifier,
                           choice: HeadChoice, options: SpuriousOptions = .init()) throws -> SpuriousReport {
        try checkClasses(classifier.classes, source: "classes")
        let scorer = try GroupScorer(reader, evaluation: evaluation, classifier: classifier.weights)
        let l = scorer.layers, h = scorer.heads
        guard !choice.heads.isEmpty else { throw SpuriousError(path: reader.run.path, message: "no heads chosen to ablate") }
        if let bad = choice.heads.first(where: { $0.layer < 0 || $0.layer >= l || $0.head < 0 || $0.head >= h }) {
            throw SpuriousError(path: reader.run.path, message: "head \(bad.name) does not exist: the run has layers 0...\(l - 1) "
                + "and heads 0...\(h - 1)")
        }
        guard options.paperKeptLayers > 0 else {
            throw SpuriousError(path: reader.run.path, message: "paperKeptLayers must be positive (got \(options.paperKeptLayers))")
        }
        guard (0...SpuriousOptions.maxRandomDraws).contains(options.randomDraws) else {
            throw SpuriousError(path: "randomDraws", message: "\(options.randomDraws) is out of range: allowed 0...\(SpuriousOptions.maxRandomDraws)")
        }
        let paperLayers = options.paperAblations ? Array(0..<max(0, l - options.paperKeptLayers)) : []
        let paperHeads = paperLayers.flatMap { layer in (0..<h).map { HeadID(layer: layer, head: $0) } }
        let chosen = choice.ids
        func setting(_ id: String, _ description: String, heads: [HeadID], paper: Bool) -> SettingResult {
            let scores = scorer.scores(ablating: paper ? heads + paperHeads : heads, mlps: paper)
            return SettingResult(id: id, description: description, heads: heads.map(\.description), paperAblations: paper,
                                 accuracy: AccuracySummary(predictions: scorer.predictions(scores), evaluation: evaluation,
                                                           classes: classifier.classes))
        }
        let paperWords = paperLayers.isEmpty ? "pre and every MLP (no layer lies before the last \(options.paperKeptLayers))"
            : "every head of layers 0...\(paperLayers.last!), pre and every MLP"
        var settings = [setting("base", "nothing ablated", heads: [], paper: false)]
        if options.paperAblations {
            settings.append(setting("paper_ablations", "\(paperWords) mean-ablated; the chosen heads intact",
                                    heads: [], paper: true))
        }
        let names = chosen.map(\.description).joined(separator: ", ")
        settings.append(setting("ablated", "heads \(names) mean-ablated" + (options.paperAblations ? ", with \(paperWords)" : ""),
                                heads: chosen, paper: options.paperAblations))
        var random: RandomControl?
        if options.randomDraws > 0 {
            let (pool, words) = randomPool(layers: l, heads: h, options: options)
            guard chosen.count <= pool.count else {
                throw SpuriousError(path: reader.run.path, message: "\(chosen.count) heads chosen, but the random control "
                    + "draws from only \(pool.count) (\(words))")
            }
            let draws = lazyRandomDraws(pool: pool, k: chosen.count, draws: options.randomDraws, seed: options.seed).enumerated().map { i, heads in
                setting("random.\(i + 1)", "random heads \(heads.map(\.description).joined(separator: ", ")) mean-ablated"
                        + (options.paperAblations ? ", with \(paperWords)" : ""), heads: heads, paper: options.paperAblations)
            }
            random = RandomControl(pool: words, poolSize: pool.count, headsPerDraw: chosen.count, seed: options.seed, draws: draws)
        }
        let m = reader.manifest
        return SpuriousReport(
            run: reader.run.path, model: m.model.id, weightsSHA256: m.model.weightsSHA256, convention: m.convention,
            classes: classifier.classes, templates: classifier.templates,
            evaluation: EvaluationSummary(evaluation, metadata: metadata, classes: classifier.classes, runImages: reader.rowCount),
            averaging: "average: accuracy over all evaluated images; meanOverGroups: unweighted mean of the group accuracies; "
                + "worstGroup: the lowest group accuracy",
            means: "mean-ablated components are replaced by their mean over the evaluated images",
            paperAblations: options.paperAblations ? PaperAblationSpec(ablatedLayers: paperLayers, keptLayers: options.paperKeptLayers) : nil,
            selection: choice.summary, heads: choice.heads, settings: settings, random: random,
            published: PublishedResult.gandelsman2024)
    }
}
