// MARK: - Choosing the heads to ablate
//
// Three ways, each recording for every head why it was picked:
//   explicit     the user's list (`--ablate 11.3,10.7`);
//   text-variance  heads ranked by the variance of their contributions along the property's text
//                direction (`HeadRanking.byTextVariance`, over every row of the run), top k;
//   textspan     heads of a TextSpan report ranked by how well their descriptions match the
//                property: score = Σ_d varianceExplained_d · cos(ẽ_d, ẽ_p), where ẽ are the
//                L2-normalised text embeddings centred by the mean embedding of the report's
//                distinct descriptions (CLIP text embeddings share a large common component that
//                would otherwise make every description look alike), top k.
// Candidates can be restricted to some layers (with the paper's ablations, the last 4: the others
// are ablated anyway).

import Foundation
import RefractStore
import RefractTensor
import RefractTextSpan

// MARK: Records

/// A description of a TextSpan head and how it matches the property.
public struct MatchedDescription: Codable, Sendable, Equatable {
    public var text: String
    /// Fraction of the head's variance the description explained (from the TextSpan report).
    public var varianceExplained: Double
    /// Cosine of the centred embeddings of the description and the property.
    public var cosine: Double
    /// varianceExplained · cosine: this description's part of the head's score.
    public var contribution: Double
}

/// A head picked for ablation and why.
public struct ChosenHead: Codable, Sendable, Equatable {
    public var layer: Int
    public var head: Int
    /// 1-based rank among the candidates (nil for an explicit list).
    public var rank: Int?
    /// The ranking score: the variance along the text, or the TextSpan match score.
    public var score: Double?
    public var reason: String
    /// text-variance: variance of contribution · t̂ and its fraction of the head's variance.
    public var variance: Double?
    public var fractionOfHead: Double?
    /// textspan: the head's descriptions that contribute most to its score (at most 3).
    public var descriptions: [MatchedDescription]?

    public var id: HeadID { HeadID(layer: layer, head: head) }
    public var name: String { id.description }

    public init(layer: Int, head: Int, rank: Int? = nil, score: Double? = nil, reason: String, variance: Double? = nil,
                fractionOfHead: Double? = nil, descriptions: [MatchedDescription]? = nil) {
        self.layer = layer; self.head = head; self.rank = rank; self.score = score; self.reason = reason
        self.variance = variance; self.fractionOfHead = fractionOfHead; self.descriptions = descriptions
    }

    enum CodingKeys: String, CodingKey { case layer, head, name, rank, score, reason, variance, fractionOfHead, descriptions }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(layer, forKey: .layer)
        try c.encode(head, forKey: .head)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(rank, forKey: .rank)
        try c.encodeIfPresent(score, forKey: .score)
        try c.encode(reason, forKey: .reason)
        try c.encodeIfPresent(variance, forKey: .variance)
        try c.encodeIfPresent(fractionOfHead, forKey: .fractionOfHead)
        try c.encodeIfPresent(descriptions, forKey: .descriptions)
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layer = try c.decode(Int.self, forKey: .layer)
        head = try c.decode(Int.self, forKey: .head)
        rank = try c.decodeIfPresent(Int.self, forKey: .rank)
        score = try c.decodeIfPresent(Double.self, forKey: .score)
        reason = try c.decode(String.self, forKey: .reason)
        variance = try c.decodeIfPresent(Double.self, forKey: .variance)
        fractionOfHead = try c.decodeIfPresent(Double.self, forKey: .fractionOfHead)
        descriptions = try c.decodeIfPresent([MatchedDescription].self, forKey: .descriptions)
    }
}

/// How the heads were chosen.
public struct HeadSelectionSummary: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable { case explicit, textVariance = "text-variance", textspan }
    public var method: Method
    /// The property text (text-variance, textspan).
    public var property: String?
    /// The TextSpan report used (textspan).
    public var textspan: String?
    /// Heads asked for (text-variance, textspan).
    public var top: Int?
    /// Which heads were candidates, in words, and how many.
    public var candidates: String
    public var candidateCount: Int
}

public struct HeadChoice: Sendable, Equatable {
    public var summary: HeadSelectionSummary
    public var heads: [ChosenHead]
    public var ids: [HeadID] { heads.map(\.id) }
}

// MARK: Selection

public enum HeadSelection {
    static func layerWords(_ layers: [Int]?) -> String {
        guard let layers, !layers.isEmpty else { return "every head of the run" }
        return layers.count == 1 ? "every head of layer \(layers[0])"
            : "every head of layers \(layers.first!)...\(layers.last!)"
    }

    /// The user's heads, as given (sorted, distinct).
    public static func explicit(_ heads: [HeadID]) throws -> HeadChoice {
        guard !heads.isEmpty else { throw SpuriousError(path: "--ablate", message: "no heads given") }
        let sorted = Array(Set(heads)).sorted()
        return HeadChoice(summary: HeadSelectionSummary(method: .explicit, candidates: "the heads given", candidateCount: sorted.count),
                          heads: sorted.map { ChosenHead(layer: $0.layer, head: $0.head, reason: "given") })
    }

    /// The `top` heads (of `layers`, or all) whose contributions vary most along `direction`
    /// (the property's text embedding, [D']).
    public static func byTextVariance(_ reader: StoreReader, property: String, direction: [Float], top: Int,
                                      layers: [Int]? = nil) throws -> HeadChoice {
        let ranking = try HeadRanking.byTextVariance(reader, text: direction)
            .filter { r in layers.map { $0.contains(r.layer) } ?? true }
        try checkTop(top, candidates: ranking.count, layers: layers)
        let heads = ranking.prefix(top).enumerated().map { i, r in
            ChosenHead(layer: r.layer, head: r.head, rank: i + 1, score: r.variance,
                       reason: String(format: "variance %.4g along \"%@\" (%.1f%% of the head's variance)",
                                      r.variance, property, 100 * r.fractionOfHead),
                       variance: r.variance, fractionOfHead: r.fractionOfHead)
        }
        return HeadChoice(summary: HeadSelectionSummary(method: .textVariance, property: property, top: top,
                                                        candidates: layerWords(layers), candidateCount: ranking.count),
                          heads: heads)
    }

    /// Reads `textspan.json` (given directly or as the directory holding it).
    public static func loadTextSpanReport(_ url: URL) throws -> (TextSpanReport, URL) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw SpuriousError(path: url.path, message: "no such file or folder (give a textspan output folder or its textspan.json)")
        }
        let file = isDir.boolValue ? url.appendingPathComponent("textspan.json") : url
        let data: Data
        do { data = try InputFile.read(file.path) } catch let e as InputFileError {
            throw SpuriousError(path: file.path, message: "cannot read the TextSpan report: \(e.reason)")
        }
        do {
            return (try JSONDecoder().decode(TextSpanReport.self, from: data), file)
        } catch {
            throw SpuriousError(path: file.path, message: "not a TextSpan report (refract textspan's textspan.json): \(error)")
        }
    }

    /// A report's heads are those of one model: refuses a report of other weights than the run's.
    public static func requireSameModel(_ report: TextSpanReport, file: String, as reader: StoreReader) throws {
        let run = reader.manifest.model
        guard report.weightsSHA256 == run.weightsSHA256 else {
            throw SpuriousError(path: file, message: "made with weights sha256 \(report.weightsSHA256.prefix(12))... (\(report.model)), "
                + "but \(reader.run.path) with \(run.weightsSHA256.prefix(12))... (\(run.id)); use a TextSpan report of the run's model")
        }
    }

    /// The distinct descriptions of a TextSpan report, in order of first appearance.
    public static func descriptions(of report: TextSpanReport) -> [String] {
        var seen = Set<String>(), out = [String]()
        for head in report.heads { for d in head.descriptions where seen.insert(d.text).inserted { out.append(d.text) } }
        return out
    }

    /// The `top` heads of `report` (of `layers`, or all) whose descriptions best match the
    /// property. `embeddings` [M, D'] are the L2-normalised text embeddings of
    /// `descriptions(of: report)`, in that order; `property` [D'] the property's.
    /// `runLayers`/`runHeads` are the run's dimensions (the report's heads must exist in it).
    public static func byTextSpan(_ report: TextSpanReport, file: String, property: String, propertyEmbedding: [Float],
                                  descriptionEmbeddings embeddings: Tensor, top: Int, layers: [Int]? = nil,
                                  runLayers: Int, runHeads: Int) throws -> HeadChoice {
        let texts = descriptions(of: report)
        let d = propertyEmbedding.count
        guard !texts.isEmpty else { throw SpuriousError(path: file, message: "the report has no descriptions") }
        guard embeddings.shape == [texts.count, d] else {
            throw SpuriousError(path: file, message: "description embeddings \(embeddings.shape) do not fit \(texts.count) descriptions of width \(d)")
        }
        if let bad = report.heads.first(where: { $0.layer >= runLayers || $0.head >= runHeads || $0.layer < 0 || $0.head < 0 }) {
            throw SpuriousError(path: file, message: "head \(bad.layer).\(bad.head) does not exist in the run "
                + "(layers 0...\(runLayers - 1), heads 0...\(runHeads - 1)); was the report made from another model?")
        }
        // Centre by the mean description embedding, then cosines with the property.
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<texts.count { for j in 0..<d { mean[j] += Double(embeddings.data[i * d + j]) } }
        for j in 0..<d { mean[j] /= Double(texts.count) }
        func centred(_ v: ArraySlice<Float>) -> [Double] { zip(v, mean).map { Double($0) - $1 } }
        let p = centred(propertyEmbedding[...])
        let pNorm = p.reduce(0) { $0 + $1 * $1 }.squareRoot()
        var cosine = [String: Double]()
        for (i, t) in texts.enumerated() {
            let e = centred(embeddings.data[(i * d)..<((i + 1) * d)])
            let eNorm = e.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let dot = zip(e, p).reduce(0) { $0 + $1.0 * $1.1 }
            cosine[t] = eNorm > 0 && pNorm > 0 ? dot / (eNorm * pNorm) : 0
        }
        struct Scored { var layer: Int, head: Int, score: Double, matched: [MatchedDescription] }
        let scored = report.heads.filter { h in layers.map { $0.contains(h.layer) } ?? true }.map { h -> Scored in
            let matched = h.descriptions.map { s in
                MatchedDescription(text: s.text, varianceExplained: s.varianceExplained, cosine: cosine[s.text]!,
                                   contribution: s.varianceExplained * cosine[s.text]!)
            }
            return Scored(layer: h.layer, head: h.head, score: matched.reduce(0) { $0 + $1.contribution }, matched: matched)
        }.sorted { ($0.score, $1.layer, $1.head) > ($1.score, $0.layer, $0.head) }
        try checkTop(top, candidates: scored.count, layers: layers, source: file)
        let heads = scored.prefix(top).enumerated().map { i, s in
            let best = s.matched.sorted { $0.contribution > $1.contribution }.prefix(3)
            let words = best.map { String(format: "\"%@\" (%.1f%% × cos %.2f)", $0.text, 100 * $0.varianceExplained, $0.cosine) }
            return ChosenHead(layer: s.layer, head: s.head, rank: i + 1, score: s.score,
                              reason: String(format: "TextSpan match %.4f with \"%@\": ", s.score, property) + words.joined(separator: ", "),
                              descriptions: Array(best))
        }
        let candidates = layers == nil ? "every head of the TextSpan report"
            : "the TextSpan report's heads in layers \(layers!.first!)...\(layers!.last!)"
        return HeadChoice(summary: HeadSelectionSummary(method: .textspan, property: property, textspan: file, top: top,
                                                        candidates: candidates, candidateCount: scored.count),
                          heads: heads)
    }

    static func checkTop(_ top: Int, candidates: Int, layers: [Int]?, source: String = "--top") throws {
        guard top > 0 else { throw SpuriousError(path: "--top", message: "must be positive (got \(top))") }
        guard top <= candidates else {
            throw SpuriousError(path: source, message: "\(top) heads asked for, but there are only \(candidates) candidates "
                + "(\(layerWords(layers)))")
        }
    }
}
