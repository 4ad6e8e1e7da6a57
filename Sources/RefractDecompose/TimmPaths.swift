// MARK: - The path from each stage to the representation (timm models)
//
// Per model and convention: which class each recorded token of a stage belongs to and the matrix
// M_{s,k} [C_s, D'] a component row of that class goes through. Per image (frozen at the true
// forward pass): each token's weight, and the LayerNorm constants. See TimmDecomposer.swift.

import Foundation
import RefractCLIP
import RefractTensor
import RefractTimm

struct StagePaths: Sendable {
    let convention: DecompositionConvention
    /// The blocks' LayerNorm eps (ViT 1e-6, Swin 1e-5).
    let modelEps: Float
    /// The first path level the decomposition starts from (`init`'s); ViT and Swin levels are
    /// stages, MaxViT's level 0 is the stem and level s + 1 its stage s.
    let firstLevel: Int
    let outputWidth: Int
    /// Rows recorded per image per stage (a class-token ViT keeps only its class row).
    let tokens: [Int]
    /// Per stage, per recorded token: its class.
    let classOf: [[Int]]
    /// Per stage, per class: [C_s, D'].
    let maps: [[Tensor]]
    let source: Source

    enum Source: Sendable {
        /// ViT: class-token pooling (one recorded row), or the mean of the patch tokens with the
        /// LayerNorm after pooling (`fc_norm`) or before it on every token.
        case vitToken(norm: (Tensor, Tensor))
        case vitAverage(prefix: Int, tokens: Int, norm: (Tensor, Tensor), afterPooling: Bool)
        /// Swin: the final LayerNorm per token then the mean; by the stage each merge opens, its β
        /// and γ through the reduction and the rest of the path, per class of that stage [D'].
        case swin(resolutions: [Int], norm: (Tensor, Tensor), merges: [Int: MergeConstants])
        /// MaxViT: no LayerNorm on the path; the mean over the last stage's tokens. Each stage's first
        /// block pools its input 2×2 and (when the width changes) maps it by a 1×1 conv whose bias,
        /// carried to the representation, is kept here by stage [D'].
        case maxvit(shortcutBias: [Int: [Float]])
    }

    /// A merge LayerNorm's β and γ as rows [4C] through the reduction and M_{s,k}: β·Rᵀ·M_{s,k} and
    /// γ·Rᵀ·M_{s,k} per class k [D'], so that per image a class's constant is two scaled rows.
    struct MergeConstants: Sendable {
        let beta: [[Float]]
        let gamma: [[Float]]
    }

    /// The read-out's own LayerNorm β (faithful's `readout_bias`; MaxViT has none).
    var readoutBias: [Float] {
        switch source {
        case .vitToken(let n), .vitAverage(_, _, let n, _), .swin(_, let n, _): return n.1.data
        case .maxvit: return [Float](repeating: 0, count: outputWidth)
        }
    }

    init(model: TimmModel, convention: DecompositionConvention, firstLevel: Int) throws {
        self.convention = convention
        self.firstLevel = firstLevel
        let faithful = convention == .faithful
        /// A LayerNorm's linear part on a row vector [C] → [C]: γ ⊙ (r − mean r) (faithful) or γ ⊙ r.
        func normMatrix(_ gamma: Tensor) -> Tensor {
            let c = gamma.count
            var m = Tensor(zeros: [c, c])
            for i in 0..<c {
                for j in 0..<c {
                    let centring: Float = faithful ? (i == j ? 1 : 0) - 1 / Float(c) : (i == j ? 1 : 0)
                    m.data[i * c + j] = centring * gamma.data[j]
                }
            }
            return m
        }
        switch model.network {
        case .vit(let vit):
            let c = vit.config
            modelEps = c.tower.layerNormEps
            outputWidth = c.width
            let norm: (Tensor, Tensor)
            if let fc = vit.fcNorm { norm = (fc.weight, fc.bias) } else if let n = vit.norm { norm = (n.weight, n.bias) } else {
                throw TimmDecompositionError(message: "\(model.id) has no final LayerNorm (final_norm false without fc_norm); its read-out is not decomposed")
            }
            maps = [[normMatrix(norm.0)]]
            if c.globalPool == "token" {
                tokens = [1]
                classOf = [[0]]
                source = .vitToken(norm: norm)
            } else {
                tokens = [c.tokens]
                classOf = [[Int](repeating: 0, count: c.tokens)]
                source = .vitAverage(prefix: c.prefixTokens, tokens: c.tokens, norm: norm, afterPooling: c.fcNorm)
            }
        case .swin(let swin):
            let c = swin.config
            modelEps = c.layerNormEps
            outputWidth = c.featureWidth
            let last = c.stages - 1
            var maps = [[Tensor]](repeating: [], count: c.stages)
            var classOf = [[Int]](repeating: [], count: c.stages)
            var merges: [Int: MergeConstants] = [:]
            maps[last] = [normMatrix(swin.norm.weight)]
            classOf[last] = [Int](repeating: 0, count: c.resolution(stage: last) * c.resolution(stage: last))
            var s = last
            while s > firstLevel {
                // The merge into stage s: part p of the 4C vector, LayerNorm (centring over 4C), reduction.
                let stage = swin.stages[s]
                let gamma = stage.mergeNorm!.weight, beta = stage.mergeNorm!.bias, reduction = stage.mergeReduction!   // [2C], [2C], [C', 4C]
                func throughPath(_ row: Tensor) -> [[Float]] {
                    let reduced = Ops.linear(row.reshaped([1, row.count]), weight: reduction, bias: nil)          // [1, C']
                    return maps[s].map { Ops.matmul(reduced, $0).data }                                           // [D'] per class
                }
                merges[s] = MergeConstants(beta: throughPath(beta), gamma: throughPath(gamma))
                let g = Ops.matmul(normMatrix(gamma), Ops.transposed(reduction))                  // [4C, C']
                let cPrev = c.width(stage: s - 1), k = maps[s].count
                var previous: [Tensor] = []
                for p in 0..<4 {
                    let part = Tensor(shape: [cPrev, g.shape[1]], data: Array(g.data[(p * cPrev * g.shape[1])..<((p + 1) * cPrev * g.shape[1])]))
                    for kk in 0..<k { previous.append(Ops.matmul(part, maps[s][kk])) }      // class p·K + kk
                }
                maps[s - 1] = previous
                let r = c.resolution(stage: s - 1), half = r / 2
                classOf[s - 1] = (0..<(r * r)).map { t in
                    let y = t / r, x = t % r
                    let p = (y % 2) + 2 * (x % 2)
                    return p * k + classOf[s][(y / 2) * half + x / 2]
                }
                s -= 1
            }
            self.maps = maps
            self.classOf = classOf
            tokens = (0..<c.stages).map { c.resolution(stage: $0) * c.resolution(stage: $0) }
            source = .swin(resolutions: (0..<c.stages).map { c.resolution(stage: $0) }, norm: (swin.norm.weight, swin.norm.bias), merges: merges)
        case .maxvit(let m):
            let c = m.config
            modelEps = c.normEps
            outputWidth = c.featureWidth
            // Levels: 0 the stem output, s + 1 stage s.
            let widths = [c.stemWidth] + c.embedDims
            let sides = [c.imageSize / 2] + (0..<c.stages).map { c.resolution(stage: $0) }
            var maps = [[Tensor]](repeating: [], count: widths.count)
            var identity = Tensor(zeros: [outputWidth, outputWidth])
            for i in 0..<outputWidth { identity.data[i * outputWidth + i] = 1 }
            maps[widths.count - 1] = [identity]
            var level = widths.count - 1
            var biases: [Int: [Float]] = [:]
            while level > firstLevel {
                // Level `level` is stage s = level − 1, whose first block pools 2×2 (weights) and maps by its 1×1 conv.
                let stage = level - 1
                if let shortcut = m.stages[stage][0].conv.shortcut {
                    biases[stage] = Ops.matmul(shortcut.bias.reshaped([1, shortcut.bias.count]), maps[level][0]).data
                    maps[level - 1] = [Ops.matmul(Ops.transposed(shortcut.weight), maps[level][0])]      // [C_prev, D']
                } else {
                    maps[level - 1] = maps[level]
                }
                level -= 1
            }
            self.maps = maps
            tokens = sides.map { $0 * $0 }
            classOf = tokens.map { [Int](repeating: 0, count: $0) }
            source = .maxvit(shortcutBias: biases)
        }
    }

    // MARK: Frozen statistics

    /// Per image, frozen at the true forward pass.
    struct Frozen {
        /// Per stage: weights [B·T_s].
        var weights: [Int: [Float]] = [:]
        /// balasubramanian2024: the final LayerNorm's constant mapped to the representation [B, D'],
        /// and each merge's (by the stage it opens), before the split over the leaves.
        var finalConstant: [Float]?
        var mergeConstants: [Int: [Float]] = [:]
        /// faithful: each merge's β through the rest of the path [B, D'] (by the stage it opens).
        var mergeBiases: [Int: [Float]] = [:]
    }

    /// A row's mean and its sum of squared deviations from it (two passes, in Double).
    static func moments(_ row: UnsafePointer<Float>, _ c: Int) -> (mean: Double, squares: Double) {
        var mean = 0.0
        for j in 0..<c { mean += Double(row[j]) }
        mean /= Double(c)
        var sq = 0.0
        for j in 0..<c { let d = Double(row[j]) - mean; sq += d * d }
        return (mean, sq)
    }

    /// Mean and σ of a row: σ = sqrt(biased variance + eps) (faithful) or sqrt(unbiased variance + 1e-5).
    func statistics(_ row: UnsafePointer<Float>, _ c: Int) -> (mean: Double, sigma: Double) {
        let (mean, sq) = Self.moments(row, c)
        let sigma = convention == .faithful ? (sq / Double(c) + Double(modelEps)).squareRoot() : (sq / Double(c - 1) + 1e-5).squareRoot()
        return (mean, sigma)
    }

    func classSums(stage s: Int, weights: [Float], image b: Int) -> [Double] {
        var sums = [Double](repeating: 0, count: maps[s].count)
        let t = tokens[s]
        for i in 0..<t { sums[classOf[s][i]] += Double(weights[b * t + i]) }
        return sums
    }

    /// `final`: the final stream as the model returns it (class rows [B, C] for class-token
    /// pooling, every row otherwise); `merges`: each merge's gathered input by the stage it opens.
    func freeze(final: Tensor, merges: [Int: Tensor], images: Int) -> Frozen {
        var frozen = Frozen()
        let official = convention == .balasubramanian2024
        let c = final.shape[1]
        switch source {
        case .vitToken(let norm):
            var w = [Float](repeating: 0, count: images)
            var constant = [Float](repeating: 0, count: images * c)
            final.data.withUnsafeBufferPointer { x in
                for b in 0..<images {
                    let (mean, sigma) = statistics(x.baseAddress! + b * c, c)
                    w[b] = Float(1 / sigma)
                    for j in 0..<c { constant[b * c + j] = norm.1.data[j] - norm.0.data[j] * Float(mean / sigma) }
                }
            }
            frozen.weights[0] = w
            if official { frozen.finalConstant = constant }
        case .vitAverage(let prefix, let t, _, let afterPooling):
            var w = [Float](repeating: 0, count: images * t)
            let n = Double(t - prefix)
            final.data.withUnsafeBufferPointer { x in
                for b in 0..<images {
                    if afterPooling {
                        var pooled = [Float](repeating: 0, count: c)
                        for i in prefix..<t { for j in 0..<c { pooled[j] += x[(b * t + i) * c + j] } }
                        for j in 0..<c { pooled[j] = Float(Double(pooled[j]) / n) }
                        let sigma = pooled.withUnsafeBufferPointer { statistics($0.baseAddress!, c).sigma }
                        for i in prefix..<t { w[b * t + i] = Float(1 / (n * sigma)) }
                    } else {
                        for i in prefix..<t { w[b * t + i] = Float(1 / (n * statistics(x.baseAddress! + (b * t + i) * c, c).sigma)) }
                    }
                }
            }
            frozen.weights[0] = w
        case .swin(let resolutions, let norm, let mergeConstants):
            let firstStage = firstLevel
            let last = resolutions.count - 1
            let t = tokens[last]
            var w = [Float](repeating: 0, count: images * t)
            var constant = [Float](repeating: 0, count: images * c)
            final.data.withUnsafeBufferPointer { x in
                for b in 0..<images {
                    for i in 0..<t {
                        let (mean, sigma) = statistics(x.baseAddress! + (b * t + i) * c, c)
                        w[b * t + i] = Float(1 / (Double(t) * sigma))
                        for j in 0..<c {
                            constant[b * c + j] += Float((Double(norm.1.data[j]) - Double(norm.0.data[j]) * mean / sigma) / Double(t))
                        }
                    }
                }
            }
            frozen.weights[last] = w
            if official { frozen.finalConstant = constant }
            var s = last
            while s > firstStage {
                let constants = mergeConstants[s]!
                let gathered = merges[s]!                                   // [B·T_s, 4C]
                let width = gathered.shape[1], tNext = tokens[s], tPrev = tokens[s - 1]
                let r = resolutions[s - 1], half = r / 2
                let next = frozen.weights[s]!
                var prev = [Float](repeating: 0, count: images * tPrev)
                var mergeTerm = [Float](repeating: 0, count: images * outputWidth)
                gathered.data.withUnsafeBufferPointer { x in
                    for b in 0..<images {
                        var sigma = [Double](repeating: 0, count: tNext), mean = [Double](repeating: 0, count: tNext)
                        for i in 0..<tNext { (mean[i], sigma[i]) = statistics(x.baseAddress! + (b * tNext + i) * width, width) }
                        for i in 0..<tPrev {
                            let merged = ((i / r) / 2) * half + (i % r) / 2
                            prev[b * tPrev + i] = Float(Double(next[b * tNext + merged]) / sigma[merged])
                        }
                        // The constant each merged token adds, weighted by the token's weight: faithful
                        // β·Rᵀ·M_k; official (β − γμ/σ̂)·Rᵀ·M_k. Per class k that is Σw·(βRᵀM_k) − Σwμ/σ̂·(γRᵀM_k).
                        var betaWeight = [Double](repeating: 0, count: maps[s].count), gammaWeight = betaWeight
                        for i in 0..<tNext {
                            let k = classOf[s][i], wi = Double(next[b * tNext + i])
                            betaWeight[k] += wi
                            if official { gammaWeight[k] += wi * mean[i] / sigma[i] }
                        }
                        for k in 0..<maps[s].count {
                            let wb = betaWeight[k], wg = gammaWeight[k]
                            let beta = constants.beta[k], gamma = constants.gamma[k]
                            for j in 0..<outputWidth {
                                mergeTerm[b * outputWidth + j] += Float(wb * Double(beta[j]) - wg * Double(gamma[j]))
                            }
                        }
                    }
                }
                frozen.weights[s - 1] = prev
                if official { frozen.mergeConstants[s] = mergeTerm } else { frozen.mergeBiases[s] = mergeTerm }
                s -= 1
            }
        case .maxvit(let biases):
            // Pooling and the final mean give every token of a level the same weight, 1/T.
            for level in firstLevel..<tokens.count {
                frozen.weights[level] = [Float](repeating: 1 / Float(tokens[level]), count: images * tokens[level])
            }
            if official {
                // Each shortcut bias entering stage s is split over the components present there.
                for (stage, vector) in biases { frozen.mergeConstants[stage] = (0..<images).flatMap { _ in vector } }
            }
        }
        return frozen
    }
}

// MARK: Per-token terms

/// What a chosen block keeps for its per-token terms until the weights are known.
enum TokenTerms {
    /// ViT, class query: a[h, cls, j]·v_h[j] as [B, H, T, dh].
    case classQuery([Float], heads: Int, tokens: Int)
    /// Swin, MaxViT: the block's qkv (partition order) and partition; attention is recomputed.
    case windows(qkv: Tensor, layout: any TokenPartition)

    static func classQuery(qkv: Tensor, heads: Int, images: Int, tokens t: Int) -> TokenTerms {
        let terms = CLIPDecomposer.classQueryTerms(qkv: qkv, images: images, tokens: t, heads: heads, keepTokens: true)
        return .classQuery(terms.tokens!, heads: heads, tokens: t)
    }
}

// MARK: Assembly

extension TimmDecomposer {
    /// Σ_{t ∈ k} w[t]·x[t] for every image and class: [B, K, C]. `order`, when given, maps each
    /// row of an image in `x` to its grid token (a Swin block's window order), so `x` needs no
    /// reordering first.
    func classWeighted(_ x: Tensor, stage s: Int, weights: [Float], images: Int, order: [Int]? = nil) -> [Float] {
        let c = x.shape[1], t = paths.tokens[s], k = paths.maps[s].count
        var out = [Float](repeating: 0, count: images * k * c)
        let classes = paths.classOf[s]
        x.data.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                for b in 0..<images {
                    for r in 0..<t {
                        let token = order?[r] ?? r
                        let w = weights[b * t + token]
                        if w == 0 { continue }
                        let dst = op.baseAddress! + (b * k + classes[token]) * c, src = xp.baseAddress! + (b * t + r) * c
                        for j in 0..<c { dst[j] += w * src[j] }
                    }
                }
            }
        }
        return out
    }

    /// values[b, slot] += Σ_k sums[b, k, columns] · maps[k][rows: columns] for every image.
    func accumulate(_ values: inout Tensor, slot: Int, sums: [Float], classes k: Int, width c: Int, columns: Range<Int>,
                    maps: [Tensor], images: Int) {
        let d = paths.outputWidth, count = components.count
        values.data.withUnsafeMutableBufferPointer { vp in
            sums.withUnsafeBufferPointer { sp in
                for kk in 0..<k {
                    maps[kk].data.withUnsafeBufferPointer { mp in
                        BLAS.sgemm(.none, .none, m: images, n: d, k: columns.count,
                                   a: sp.baseAddress! + kk * c + columns.lowerBound, lda: k * c,
                                   b: mp.baseAddress! + columns.lowerBound * d, ldb: d,
                                   beta: 1, c: vp.baseAddress! + slot * d, ldc: count * d)
                    }
                }
            }
        }
    }

    /// values[b, slot] += scale · Σ_k W[b, k] · mapped[k], with W[b, k] the image's summed token
    /// weights of class k and `mapped[k]` a constant row already carried through M_k [D'].
    func accumulateConstant(_ values: inout Tensor, slot: Int, mapped: [[Float]], scale: Float = 1, stage s: Int, weights: [Float],
                            images: Int) {
        let d = paths.outputWidth, count = components.count
        for b in 0..<images {
            let sums = paths.classSums(stage: s, weights: weights, image: b)
            for (k, total) in sums.enumerated() where total != 0 {
                let f = scale * Float(total)
                let row = mapped[k]
                for j in 0..<d { values.data[(b * count + slot) * d + j] += f * row[j] }
            }
        }
    }

    func assemble(records: [Record?], convs: [Int: Tensor], initInput: Tensor, initOrder: [Int]?, frozen: StagePaths.Frozen,
                  representation: Tensor, images b: Int) -> TimmDecompositionBatch {
        let d = paths.outputWidth, count = components.count
        let official = convention == .balasubramanian2024
        var values = Tensor(zeros: [b, count, d])                                              // [B, C, D']
        // init: the stream entering the first decomposed block.
        let w0 = frozen.weights[initLevel]!
        accumulate(&values, slot: slot["init"]!, sums: classWeighted(initInput, stage: initLevel, weights: w0, images: b, order: initOrder),
                   classes: paths.maps[initLevel].count, width: initInput.shape[1], columns: 0..<initInput.shape[1],
                   maps: paths.maps[initLevel], images: b)
        // MaxViT: every MBConv branch (on its block's output level), and faithful's shortcut biases.
        for (block, branch) in convs {
            let site = sites.first { $0.index == block }!
            let w = frozen.weights[site.level]!
            accumulate(&values, slot: slot["conv.\(block)"]!, sums: classWeighted(branch, stage: site.level, weights: w, images: b),
                       classes: 1, width: branch.shape[1], columns: 0..<branch.shape[1], maps: paths.maps[site.level], images: b)
            if !official, case .maxvit(let biases) = paths.source, let index = slot["shortcut_bias.\(block)"], let bias = biases[site.stage] {
                for bi in 0..<b { for j in 0..<d { values.data[(bi * count + index) * d + j] += bias[j] } }
            }
        }
        var tokens: [String: Tensor] = [:]
        for site in sites where site.index >= fromBlock {
            let record = records[site.position]!
            let s = site.level, c = site.width, h = site.heads, dh = c / h, k = paths.maps[s].count
            let w = frozen.weights[s]!
            let headSums = classWeighted(record.heads, stage: s, weights: w, images: b, order: record.order)
            for head in 0..<h {
                accumulate(&values, slot: slot["attn.\(site.key).\(head)"]!, sums: headSums, classes: k, width: c,
                           columns: (head * dh)..<((head + 1) * dh), maps: headMaps[site.position], images: b)
            }
            if official {
                // b_O/H on every head.
                for head in 0..<h {
                    accumulateConstant(&values, slot: slot["attn.\(site.key).\(head)"]!, mapped: biasMaps[site.position], scale: 1 / Float(h),
                                       stage: s, weights: w, images: b)
                }
            } else {
                accumulateConstant(&values, slot: slot["attn_bias.\(site.key)"]!, mapped: biasMaps[site.position], stage: s, weights: w, images: b)
            }
            accumulate(&values, slot: slot["mlp.\(site.key)"]!, sums: classWeighted(record.mlp, stage: s, weights: w, images: b, order: record.order),
                       classes: k, width: c, columns: 0..<c, maps: paths.maps[s], images: b)
            if let terms = record.tokenTerms { tokens[site.key] = tokenMaps(terms, site: site, weights: w, images: b) }
        }
        // Constants.
        if official {
            // Each LayerNorm's constant split equally over the leaves present at it.
            func spread(_ constant: [Float], over leaves: [Int]) {
                let share = 1 / Float(leaves.count)
                for bi in 0..<b { for slotIndex in leaves { for j in 0..<d { values.data[(bi * count + slotIndex) * d + j] += share * constant[bi * d + j] } } }
            }
            let leafNames = components.map(\.name)
            for (stage, constant) in frozen.mergeConstants {
                // Leaves present at the merge opening `stage`: init and the blocks of earlier stages.
                let present = leafNames.enumerated().filter { _, name in
                    name == "init" || (components[slot[name]!].stage ?? 0) < stage
                }.map { slot[$0.element]! }
                spread(constant, over: present)
            }
            if let constant = frozen.finalConstant { spread(constant, over: Array(0..<count)) }
        } else {
            if let readout = slot["readout_bias"] {
                let beta = paths.readoutBias
                for bi in 0..<b { for j in 0..<d { values.data[(bi * count + readout) * d + j] += beta[j] } }
            }
            for (stage, term) in frozen.mergeBiases {
                let index = slot["merge_bias.\(stage)"]!
                for bi in 0..<b { for j in 0..<d { values.data[(bi * count + index) * d + j] += term[bi * d + j] } }
            }
        }
        return TimmDecompositionBatch(components: components, values: values, representation: representation, tokens: tokens)
    }

    /// A chosen block's heads split by source token, mapped to the representation.
    func tokenMaps(_ terms: TokenTerms, site: BlockSite, weights w: [Float], images b: Int) -> Tensor {
        let c = site.width, h = site.heads, dh = c / h, d = paths.outputWidth
        let maps = headMaps[site.position]
        switch terms {
        case .classQuery(let values, _, let t):
            // [B, H, T, dh] · w[cls] → through the head's block of M (one class).
            var out = Tensor(zeros: [b, h, t, d])
            values.withUnsafeBufferPointer { vp in
                maps[0].data.withUnsafeBufferPointer { mp in
                    out.data.withUnsafeMutableBufferPointer { op in
                        for bi in 0..<b {
                            for hh in 0..<h {
                                let off = (bi * h + hh) * t
                                BLAS.sgemm(.none, .none, m: t, n: d, k: dh, alpha: w[bi], a: vp.baseAddress! + off * dh, lda: dh,
                                           b: mp.baseAddress! + hh * dh * d, ldb: d, c: op.baseAddress! + off * d, ldc: d)
                            }
                        }
                    }
                }
            }
            return out
        case .windows(let qkv, let layout):
            // For source j of a window: coefficient per class k = Σ_{queries q of its window in class k} w[q]·A[q, j];
            // term = Σ_k coefficient_k · (v_h[j] · (W_O,hᵀ M_k)). Placed at j's real grid position.
            let n = layout.tokensPerWindow, r = layout.resolution, per = r * r, k = paths.maps[site.level].count
            let ld = 3 * c, scale = 1 / Float(dh).squareRoot()
            var out = Tensor(zeros: [b, h, r, r, d])
            var probs = [Float](repeating: 0, count: n * n)
            var coefficients = [Float](repeating: 0, count: n * k)                     // [n sources, K]
            var term = [Float](repeating: 0, count: d)
            qkv.data.withUnsafeBufferPointer { qp in
                for bi in 0..<b {
                    for win in 0..<layout.windows {
                        let rowBase = bi * per + win * n                                   // window-order rows of this window
                        let group = win % layout.bias.groups
                        for hh in 0..<h {
                            probs.withUnsafeMutableBufferPointer { pp in
                                let base = qp.baseAddress! + rowBase * ld
                                BLAS.sgemm(.none, .transpose, m: n, n: n, k: dh, a: base + hh * dh, lda: ld, b: base + c + hh * dh, ldb: ld,
                                           c: pp.baseAddress!, ldc: n)
                                layout.bias.values.withUnsafeBufferPointer { bp in
                                    let bias = bp.baseAddress! + (group * h + hh) * n * n
                                    for i in 0..<(n * n) { pp[i] = pp[i] * scale + bias[i] }
                                }
                                Kernels.softmaxRows(pp.baseAddress!, rows: n, cols: n, ld: n, scale: 1, causal: false)
                            }
                            for i in 0..<(n * k) { coefficients[i] = 0 }
                            for q in 0..<n {
                                let grid = layout.source[win * n + q]
                                let wq = w[bi * per + grid], kq = paths.classOf[site.level][grid]
                                if wq == 0 { continue }
                                for j in 0..<n { coefficients[j * k + kq] += wq * probs[q * n + j] }
                            }
                            for j in 0..<n {
                                let v = qp.baseAddress! + (rowBase + j) * ld + 2 * c + hh * dh
                                for x in 0..<d { term[x] = 0 }
                                for kk in 0..<k where coefficients[j * k + kk] != 0 {
                                    let coefficient = coefficients[j * k + kk]
                                    maps[kk].data.withUnsafeBufferPointer { mp in
                                        for e in 0..<dh {
                                            let a = coefficient * v[e]
                                            let row = mp.baseAddress! + (hh * dh + e) * d
                                            for x in 0..<d { term[x] += a * row[x] }
                                        }
                                    }
                                }
                                let grid = layout.source[win * n + j]
                                let dst = (((bi * h + hh) * per) + grid) * d
                                for x in 0..<d { out.data[dst + x] = term[x] }
                            }
                        }
                    }
                }
            }
            return out
        }
    }
}
