// MARK: - The TextSpan report: what `refract textspan` writes as textspan.json
//
// One entry per head: the descriptions TextSpan chose, in order, with the fraction of the head's
// centred variance each removed and the cumulative fraction. With classes, the paper's check of
// how much of the heads' role the descriptions capture (zero-shot accuracy with the heads replaced
// by their reconstructions, against random text directions and the raw heads).

import Foundation

public struct TextSpanReport: Codable, Sendable, Equatable {
    public var formatVersion: Int = 1
    /// The run directory the contributions came from, and its model.
    public var run: String
    public var model: String
    public var weightsSHA256: String
    public var convention: String
    /// Rows (images) of the run used.
    public var images: Int
    public var pool: PoolSummary
    /// Descriptions asked for per head, and the span rank of the text projection asked for (each
    /// head says the rank it used).
    public var perHead: Int
    public var rank: Int
    public var heads: [HeadReport]
    /// Present when `--classes` was given.
    public var accuracy: AccuracyCheck?
    /// An aligned run's alignment (directory, SHA-256 of its maps, CLIP model): the components were
    /// labelled in that CLIP's space.
    public var alignment: AlignmentReference?

    public init(run: String, model: String, weightsSHA256: String, convention: String, images: Int, pool: PoolSummary,
                perHead: Int, rank: Int, heads: [HeadReport], accuracy: AccuracyCheck? = nil) {
        self.run = run; self.model = model; self.weightsSHA256 = weightsSHA256; self.convention = convention
        self.images = images; self.pool = pool; self.perHead = perHead; self.rank = rank; self.heads = heads
        self.accuracy = accuracy
    }
}

/// The alignment an aligned run was read through.
public struct AlignmentReference: Codable, Sendable, Equatable {
    public var directory: String
    public var mapsSHA256: String
    public var clipModel: String
    public var clipWeightsSHA256: String
    public init(directory: String, mapsSHA256: String, clipModel: String, clipWeightsSHA256: String) {
        self.directory = directory; self.mapsSHA256 = mapsSHA256; self.clipModel = clipModel; self.clipWeightsSHA256 = clipWeightsSHA256
    }
}

/// What was read from the description pool file.
public struct PoolSummary: Codable, Sendable, Equatable {
    public var path: String
    /// SHA-256 of the file's bytes.
    public var sha256: String
    /// Lines in the file, blank lines among them, repeated descriptions dropped (first kept), and
    /// descriptions longer than the text tower's context (truncated as the tokenizer does).
    public var lines: Int
    public var blank: Int
    public var duplicates: Int
    public var truncated: Int
    /// Distinct descriptions used.
    public var used: Int

    public init(path: String, sha256: String, lines: Int, blank: Int, duplicates: Int, truncated: Int, used: Int) {
        self.path = path; self.sha256 = sha256; self.lines = lines; self.blank = blank
        self.duplicates = duplicates; self.truncated = truncated; self.used = used
    }
}

public struct HeadReport: Codable, Sendable, Equatable {
    /// A CLIP run's head: its layer and head. An aligned run's component: `layer` is the component's
    /// index in the run's order, `head` 0, and `component` its name.
    public var layer: Int
    public var head: Int
    public var component: String?
    /// Why a component has no descriptions (constant over the images, or of lower rank than asked).
    public var note: String?
    /// `L<layer>.H<head>`, e.g. `L11.H3`; an aligned run's component name (`attn.10.3`, `mlp.7`, ...).
    public var name: String { component ?? "L\(layer).H\(head)" }
    /// Total centred variance of the head's contributions (sum over dimensions).
    public var totalVariance: Double
    /// Span rank used for this head (the requested one, or the head's own rank when smaller).
    public var rank: Int?
    public var descriptions: [DescriptionStep]

    public init(layer: Int, head: Int, totalVariance: Double, rank: Int? = nil, descriptions: [DescriptionStep]) {
        self.layer = layer; self.head = head; self.totalVariance = totalVariance; self.rank = rank
        self.descriptions = descriptions
    }

    /// An aligned run's component `name`, the `index`-th of the run.
    public init(component name: String, index: Int, totalVariance: Double, rank: Int? = nil, descriptions: [DescriptionStep]) {
        self.init(layer: index, head: 0, totalVariance: totalVariance, rank: rank, descriptions: descriptions)
        component = name
    }

    enum CodingKeys: String, CodingKey { case layer, head, component, note, name, totalVariance, rank, descriptions }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(layer, forKey: .layer)
        try c.encode(head, forKey: .head)
        try c.encodeIfPresent(component, forKey: .component)
        try c.encodeIfPresent(note, forKey: .note)
        try c.encode(name, forKey: .name)
        try c.encode(totalVariance, forKey: .totalVariance)
        try c.encodeIfPresent(rank, forKey: .rank)
        try c.encode(descriptions, forKey: .descriptions)
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layer = try c.decode(Int.self, forKey: .layer)
        head = try c.decode(Int.self, forKey: .head)
        component = try c.decodeIfPresent(String.self, forKey: .component)
        note = try c.decodeIfPresent(String.self, forKey: .note)
        totalVariance = try c.decode(Double.self, forKey: .totalVariance)
        rank = try c.decodeIfPresent(Int.self, forKey: .rank)
        descriptions = try c.decode([DescriptionStep].self, forKey: .descriptions)
    }
}

public struct DescriptionStep: Codable, Sendable, Equatable {
    /// 1-based order of choice.
    public var step: Int
    public var text: String
    /// 0-based line of the description in the pool file.
    public var line: Int
    /// Fraction (0...1) of the head's total centred variance this description's direction removed,
    /// and the running total.
    public var varianceExplained: Double
    public var cumulative: Double

    public init(step: Int, text: String, line: Int, varianceExplained: Double, cumulative: Double) {
        self.step = step; self.text = text; self.line = line
        self.varianceExplained = varianceExplained; self.cumulative = cumulative
    }
}

/// The paper's check (section 4.1): mean-ablate the attention layers before the chosen heads' first
/// layer, replace the chosen heads by their reconstructions, and measure zero-shot accuracy.
public struct AccuracyCheck: Codable, Sendable, Equatable {
    public var classesFile: String
    public var classes: Int
    public var templates: [String]
    /// Attention layers 0..<this were replaced by their means (MLPs kept).
    public var meanAblatedLayersBelow: Int
    public var rows: [AccuracyRow]
    /// Distinct descriptions over all chosen heads.
    public var distinctDescriptions: Int

    public init(classesFile: String, classes: Int, templates: [String], meanAblatedLayersBelow: Int,
                rows: [AccuracyRow], distinctDescriptions: Int) {
        self.classesFile = classesFile; self.classes = classes; self.templates = templates
        self.meanAblatedLayersBelow = meanAblatedLayersBelow; self.rows = rows
        self.distinctDescriptions = distinctDescriptions
    }
}

public struct AccuracyRow: Codable, Sendable, Equatable {
    /// `baseline`, `heads_raw`, `textspan`, `random_directions`.
    public var id: String
    public var description: String
    public var top1: Double
    public var top5: Double

    public init(id: String, description: String, top1: Double, top5: Double) {
        self.id = id; self.description = description; self.top1 = top1; self.top5 = top5
    }
}
