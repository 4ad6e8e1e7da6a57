// MARK: - TextSpan over the heads of a run, with the paper's accuracy check

import Foundation
import RefractAlign
import RefractDecompose
import RefractStore
import RefractTensor

public struct TextSpanRunOptions: Sendable {
    public var heads: [HeadID] = []
    public var perHead: Int = 20
    /// Span rank. nil: the official code's 80, lowered to a head's own rank when that is smaller (a
    /// head's contributions live in its value space, 64 dimensions for ViT-B/L); a number: exactly
    /// that rank, an error when it exceeds a head's rank.
    public var rank: Int? = nil
    public static let defaultRank = 80
    /// Seed of the random text directions of the accuracy check's control.
    public var randomSeed: UInt64 = 0
    /// Memory for head contributions read at once.
    public var budgetBytes: Int = 1 << 30
    public init() {}
}

/// What the accuracy check needs: a zero-shot classifier [D', C] and its classes.
public struct AccuracyInputs: Sendable {
    public var classifier: Tensor
    public var classes: [String]
    public var classesFile: String
    public var templates: [String]
    public init(classifier: Tensor, classes: [String], classesFile: String, templates: [String]) {
        self.classifier = classifier; self.classes = classes; self.classesFile = classesFile; self.templates = templates
    }
}

public enum TextSpanRun {
    /// Runs TextSpan on every chosen head of `reader` with the pool's embeddings `texts` [M, D'].
    /// `progress(done, total)` counts heads.
    public static func run(_ reader: StoreReader, pool: DescriptionPool, poolSummary: PoolSummary, texts: Tensor,
                           options: TextSpanRunOptions, accuracy: AccuracyInputs? = nil,
                           progress: ((Int, Int) -> Void)? = nil) throws -> TextSpanReport {
        let (_, _, d) = try HeadContributions.dims(reader)
        guard !options.heads.isEmpty else { throw SelectionError(message: "no heads chosen") }
        try check(reader, pool: pool, texts: texts, width: d, options: options)
        let n = reader.rowCount
        var heads = [HeadReport]()
        var deltaTextSpan = accuracy.map { _ in [Float](repeating: 0, count: n * d) }
        var deltaRandom = deltaTextSpan
        var done = 0
        progress?(0, options.heads.count)
        try HeadContributions.forEachHead(reader, heads: options.heads, budgetBytes: options.budgetBytes) { id, c in
            let result = try analyse(c, label: "head \(id)", reader: reader, pool: pool, texts: texts, options: options)
            heads.append(HeadReport(layer: id.layer, head: id.head, totalVariance: result.totalVariance, rank: result.rank,
                                    descriptions: steps(result, pool)))
            if accuracy != nil {
                accumulate(&deltaTextSpan!, result.reconstruct(c), minus: c)
                let random = randomDirections(count: pool.count, width: d,
                                              seed: options.randomSeed &+ UInt64(id.layer * 1009 + id.head))
                let control = try TextSpan.run(contributions: c, texts: random, steps: options.perHead, rank: result.rank)
                accumulate(&deltaRandom!, control.reconstruct(c), minus: c)
            }
            done += 1
            progress?(done, options.heads.count)
        }
        heads.sort { ($0.layer, $0.head) < ($1.layer, $1.head) }
        var report = TextSpanReport(run: reader.run.path, model: reader.manifest.model.id,
                                    weightsSHA256: reader.manifest.model.weightsSHA256,
                                    convention: reader.manifest.convention, images: n, pool: poolSummary,
                                    perHead: options.perHead, rank: options.rank ?? TextSpanRunOptions.defaultRank, heads: heads)
        if let accuracy {
            let firstLayer = options.heads.map(\.layer).min()!
            report.accuracy = try accuracyCheck(reader, inputs: accuracy, firstLayer: firstLayer,
                                                deltaTextSpan: deltaTextSpan!, deltaRandom: deltaRandom!,
                                                distinct: Set(heads.flatMap { $0.descriptions.map(\.line) }).count)
        }
        return report
    }

    /// TextSpan on components of a non-CLIP run seen through its alignment: the aligned contributions
    /// a_c = x_c·W_c + b/C [N, D] of each component in `components` (indices in the run's order), with
    /// the pool's embeddings `texts` [M, D] in the alignment's CLIP space. `progress(done, total)`
    /// counts components.
    public static func run(_ aligned: AlignedRun, components: [Int], pool: DescriptionPool, poolSummary: PoolSummary, texts: Tensor,
                           options: TextSpanRunOptions, accuracy: AccuracyInputs? = nil,
                           progress: ((Int, Int) -> Void)? = nil) throws -> TextSpanReport {
        let reader = aligned.reader, d = aligned.width, n = reader.rowCount
        guard !components.isEmpty else { throw SelectionError(message: "no components chosen") }
        try check(reader, pool: pool, texts: texts, width: d, options: options)
        var reports = [HeadReport]()
        var deltaTextSpan = accuracy.map { _ in [Float](repeating: 0, count: n * d) }
        var deltaRandom = deltaTextSpan
        progress?(0, components.count)
        try aligned.forEachComponent(components, budgetBytes: options.budgetBytes) { index, c in
            let name = aligned.components[index].name
            do {
                let result = try analyse(c, label: "component \(name)", reader: reader, pool: pool, texts: texts, options: options,
                                         rethrowing: false)
                reports.append(HeadReport(component: name, index: index, totalVariance: result.totalVariance, rank: result.rank,
                                          descriptions: steps(result, pool)))
                if accuracy != nil {
                    accumulate(&deltaTextSpan!, result.reconstruct(c), minus: c)
                    let random = randomDirections(count: pool.count, width: d, seed: options.randomSeed &+ UInt64(index * 1009))
                    let control = try TextSpan.run(contributions: c, texts: random, steps: result.steps.count, rank: result.rank)
                    accumulate(&deltaRandom!, control.reconstruct(c), minus: c)
                }
            } catch let e as TextSpanError where e.kind == .noVariance || e.kind == .steps {
                // Constant components (biases, a lumped init) and ones of lower rank than the steps asked
                // for are reported without descriptions, saying why, instead of stopping the run.
                var report = HeadReport(component: name, index: index, totalVariance: ColumnVariance.total(c), descriptions: [])
                report.note = e.message
                reports.append(report)
            }
            progress?(reports.count, components.count)
        }
        let a = aligned.alignment
        var report = TextSpanReport(run: reader.run.path, model: reader.manifest.model.id,
                                    weightsSHA256: reader.manifest.model.weightsSHA256,
                                    convention: reader.manifest.convention, images: reader.rowCount, pool: poolSummary,
                                    perHead: options.perHead, rank: options.rank ?? TextSpanRunOptions.defaultRank,
                                    heads: reports.sorted { $0.layer < $1.layer })
        report.alignment = AlignmentReference(directory: a.directory.path, mapsSHA256: a.manifest.mapsSHA256,
                                              clipModel: a.manifest.target.model.id,
                                              clipWeightsSHA256: a.manifest.target.model.weightsSHA256)
        if let accuracy {
            let firstBlock = components.compactMap { aligned.components[$0].block }.min() ?? 0
            report.accuracy = try accuracyCheck(aligned, inputs: accuracy, firstBlock: firstBlock, deltaTextSpan: deltaTextSpan!,
                                                deltaRandom: deltaRandom!, distinct: Set(reports.flatMap { $0.descriptions.map(\.line) }).count)
        }
        return report
    }

    /// What both entry points check before reading any contribution.
    static func check(_ reader: StoreReader, pool: DescriptionPool, texts: Tensor, width d: Int, options: TextSpanRunOptions) throws {
        guard texts.shape == [pool.count, d] else {
            throw TextSpanInputError(path: pool.path, message: "text embeddings \(texts.shape), expected [\(pool.count), \(d)]")
        }
        guard options.perHead >= 1 else { throw SelectionError(message: "--per-head must be at least 1") }
        guard options.perHead <= pool.count else {
            throw TextSpanInputError(path: pool.path, message: "--per-head \(options.perHead) is larger than the pool "
                + "(\(pool.count) distinct descriptions)")
        }
        guard reader.rowCount >= 2 else {
            throw TextSpanInputError(path: reader.run.path, message: "\(reader.rowCount) image(s); TextSpan needs at least 2")
        }
    }

    /// TextSpan on one unit's contributions c [N, D'].
    /// TextSpan errors are restated naming the run and the unit, unless `rethrowing` is false.
    static func analyse(_ c: Tensor, label: String, reader: StoreReader, pool: DescriptionPool, texts: Tensor,
                        options: TextSpanRunOptions, rethrowing: Bool = true) throws -> TextSpanResult {
        let rank = min(options.rank ?? TextSpanRunOptions.defaultRank, c.shape[1])
        do {
            return try TextSpan.run(contributions: c, texts: texts, steps: options.perHead, rank: rank, clampRank: options.rank == nil)
        } catch let e as TextSpanError where !rethrowing {
            throw e
        } catch {
            throw TextSpanInputError(path: reader.run.path, message: "\(label): \(error)")
        }
    }

    static func steps(_ result: TextSpanResult, _ pool: DescriptionPool) -> [DescriptionStep] {
        result.steps.enumerated().map { s, step in
            DescriptionStep(step: s + 1, text: pool.texts[step.index], line: pool.lines[step.index],
                            varianceExplained: step.varianceExplained, cumulative: step.cumulative)
        }
    }

    /// Total centred variance Σ_j Var(c[:, j]) (unbiased), float64.
    enum ColumnVariance {
        static func total(_ c: Tensor) -> Double {
            let n = c.shape[0], d = c.shape[1]
            guard n >= 2 else { return 0 }
            var total = 0.0
            for j in 0..<d {
                var s = 0.0, s2 = 0.0
                for i in 0..<n { let v = Double(c.data[i * d + j]); s += v; s2 += v * v }
                total += max(0, s2 - s * s / Double(n)) / Double(n - 1)
            }
            return total
        }
    }

    static func accumulate(_ into: inout [Float], _ a: Tensor, minus b: Tensor) {
        for i in 0..<into.count { into[i] += a.data[i] - b.data[i] }
    }

    /// L2-normalised Gaussian directions [count, width], deterministic per seed.
    public static func randomDirections(count: Int, width: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed: seed ^ 0x9E37_79B9_7F4A_7C15)
        var data = [Float](repeating: 0, count: count * width)
        for i in 0..<data.count { data[i] = Float(rng.normal()) }
        return Ops.l2Normalized(Tensor(shape: [count, width], data: data))
    }

    /// Zero-shot accuracy: nothing ablated; attention layers below `firstLayer` mean-ablated with the
    /// chosen heads raw; the same with the heads replaced by their TextSpan reconstructions, and by
    /// reconstructions from random directions.
    static func accuracyCheck(_ reader: StoreReader, inputs: AccuracyInputs, firstLayer: Int,
                              deltaTextSpan: [Float], deltaRandom: [Float], distinct: Int) throws -> AccuracyCheck {
        let (_, h, d) = try HeadContributions.dims(reader)
        let n = reader.rowCount
        try checkClassifier(reader, inputs: inputs, width: d)
        // Per image: the sum of every component, and of attention layers below firstLayer.
        let summed = reader.manifest.tensors.map(\.name).filter { ["pre", "mlp", "attn", "attn_bias", "readout_bias"].contains($0) }
        var base = [Float](repeating: 0, count: n * d), early = base
        try reader.forEachShard(summed) { rows, t in
            try StoredValues.requireFinite(reader, rows: rows, tensors: t, purpose: "textspan's accuracy check")
            for name in summed {
                let data = t[name]!.data
                let perRow = data.count / max(rows.count, 1)
                for r in 0..<rows.count {
                    let dst = (rows.lowerBound + r) * d
                    for o in stride(from: 0, to: perRow, by: d) {
                        for j in 0..<d { base[dst + j] += data[r * perRow + o + j] }
                    }
                }
                if name == "attn" {
                    for r in 0..<rows.count {
                        let dst = (rows.lowerBound + r) * d
                        for l in 0..<firstLayer {
                            for hh in 0..<h {
                                let o = r * perRow + (l * h + hh) * d
                                for j in 0..<d { early[dst + j] += data[o + j] }
                            }
                        }
                    }
                }
            }
        }
        return try scoreVariants(reader, inputs: inputs, width: d, base: base, early: early, ablatedWords: "attention layers below \(firstLayer)",
                                 unit: "heads", deltaTextSpan: deltaTextSpan, deltaRandom: deltaRandom, firstLayer: firstLayer, distinct: distinct)
    }

    /// The same check on a non-CLIP run through its alignment: the zero-shot classifier reads the
    /// aligned sum Σ_c a_c; the attention heads of the blocks below `firstBlock` are mean-ablated.
    static func accuracyCheck(_ aligned: AlignedRun, inputs: AccuracyInputs, firstBlock: Int,
                              deltaTextSpan: [Float], deltaRandom: [Float], distinct: Int) throws -> AccuracyCheck {
        let reader = aligned.reader, d = aligned.width, n = reader.rowCount
        try checkClassifier(reader, inputs: inputs, width: d)
        let early = aligned.components.enumerated().filter { $0.element.kind == .head && ($0.element.block ?? Int.max) < firstBlock }.map(\.offset)
        let c = aligned.components.count
        var base = [Float](repeating: 0, count: n * d), earlySum = base
        try aligned.forEachShard { rows, a in                                                  // [r, C, D]
            for r in 0..<rows.count {
                let dst = (rows.lowerBound + r) * d
                for k in 0..<c { for j in 0..<d { base[dst + j] += a.data[(r * c + k) * d + j] } }
                for k in early { for j in 0..<d { earlySum[dst + j] += a.data[(r * c + k) * d + j] } }
            }
        }
        return try scoreVariants(reader, inputs: inputs, width: d, base: base, early: earlySum,
                                 ablatedWords: "the attention heads of blocks below \(firstBlock)", unit: "components",
                                 deltaTextSpan: deltaTextSpan, deltaRandom: deltaRandom, firstLayer: firstBlock, distinct: distinct)
    }

    static func checkClassifier(_ reader: StoreReader, inputs: AccuracyInputs, width d: Int) throws {
        guard inputs.classifier.shape == [d, inputs.classes.count] else {
            throw TextSpanInputError(path: inputs.classesFile, message: "classifier \(inputs.classifier.shape) for width \(d)")
        }
        if let missing = reader.rowImages.first(where: { $0.label == nil }) {
            throw TextSpanInputError(path: reader.run.path, message: "image \(missing.path) has no label; the accuracy check "
                + "needs labelled images (class folders or a label column)")
        }
        try StoredValues.requireFinite(inputs.classifier, source: inputs.classesFile,
                                       what: "the zero-shot classifier [D', classes]", purpose: "textspan's accuracy check")
    }

    /// Top-1/top-5 of the four variants from the per-image totals `base` [N, D'], the ablated part
    /// `early` [N, D'] (replaced by its mean) and the reconstruction deltas.
    static func scoreVariants(_ reader: StoreReader, inputs: AccuracyInputs, width d: Int, base: [Float], early: [Float], ablatedWords: String,
                              unit: String, deltaTextSpan: [Float], deltaRandom: [Float], firstLayer: Int, distinct: Int) throws -> AccuracyCheck {
        let n = reader.rowCount
        let images = reader.rowImages
        let (_, index) = try LabelMapping.resolve(labels: images.map { $0.label! }, classes: inputs.classes, file: inputs.classesFile)
        var earlyMean = [Double](repeating: 0, count: d)
        for r in 0..<n { for j in 0..<d { earlyMean[j] += Double(early[r * d + j]) } }
        for j in 0..<d { earlyMean[j] /= Double(n) }
        func variant(_ f: (Int, Int) -> Float) -> Tensor {
            var out = [Float](repeating: 0, count: n * d)
            for r in 0..<n { for j in 0..<d { out[r * d + j] = f(r, j) } }
            return Tensor(shape: [n, d], data: out)
        }
        let ablated = { (r: Int, j: Int) -> Float in base[r * d + j] - early[r * d + j] + Float(earlyMean[j]) }
        let variants: [(String, String, Tensor)] = [
            ("baseline", "nothing ablated", variant { base[$0 * d + $1] }),
            ("heads_raw", "\(ablatedWords) mean-ablated; chosen \(unit) as they are", variant(ablated)),
            ("textspan", "as heads_raw, with the chosen \(unit) replaced by their TextSpan reconstructions",
             variant { ablated($0, $1) + deltaTextSpan[$0 * d + $1] }),
            ("random_directions", "as heads_raw, with the chosen \(unit) reconstructed from random text directions",
             variant { ablated($0, $1) + deltaRandom[$0 * d + $1] }),
        ]
        let rows = variants.map { id, description, totals -> AccuracyRow in
            let scores = Ops.matmul(totals, inputs.classifier)                       // [N, C]
            var top1 = 0, top5 = 0
            let c = inputs.classes.count
            for r in 0..<n {
                let label = index[images[r].label!]!
                let mine = scores.data[r * c + label]
                var higher = 0
                for k in 0..<c where scores.data[r * c + k] > mine { higher += 1 }
                if higher < 1 { top1 += 1 }
                if higher < 5 { top5 += 1 }
            }
            return AccuracyRow(id: id, description: description, top1: 100 * Double(top1) / Double(n),
                               top5: 100 * Double(top5) / Double(n))
        }
        return AccuracyCheck(classesFile: inputs.classesFile, classes: inputs.classes.count, templates: inputs.templates,
                             meanAblatedLayersBelow: firstLayer, rows: rows, distinctDescriptions: distinct)
    }
}
