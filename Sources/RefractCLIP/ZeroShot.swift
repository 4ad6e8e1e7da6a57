// MARK: - Zero-shot classification

import Foundation
import RefractTensor

public struct ZeroShotClassifier: Sendable {
    public var classes: [String]
    public var templates: [String]
    /// Columns are class directions: [D', C], each column L2-normalised.
    public var weights: Tensor

    /// The template used when none is given.
    public static let defaultTemplates = ["a photo of a {}."]

    /// Scores [N, C] = embeddings (L2-normalised here) · weights (cosine similarities).
    public func scores(_ embeddings: Tensor) -> Tensor {
        Ops.matmul(Ops.l2Normalized(embeddings), weights)
    }

    /// Builds the classifier from text embeddings of every (class, template) pair, class-major:
    /// `textEmbeddings[c * T + t]`. Each is L2-normalised, averaged over templates, renormalised.
    public init(classes: [String], templates: [String], textEmbeddings: Tensor) {
        let c = classes.count, t = templates.count, d = textEmbeddings.shape[1]
        precondition(textEmbeddings.shape[0] == c * t)
        let normalised = Ops.l2Normalized(textEmbeddings)                         // [C·T, D']
        var mean = [Float](repeating: 0, count: c * d)                             // [C, D']
        for k in 0..<c {
            for j in 0..<t { for i in 0..<d { mean[k * d + i] += normalised.data[(k * t + j) * d + i] } }
            for i in 0..<d { mean[k * d + i] /= Float(t) }
        }
        let classRows = Ops.l2Normalized(Tensor(shape: [c, d], data: mean))        // [C, D']
        self.classes = classes
        self.templates = templates
        self.weights = Ops.transposed(classRows)                                   // [D', C]
    }

    /// The prompts to embed, class-major (class c, template t at c·T + t).
    public static func prompts(classes: [String], templates: [String]) -> [String] {
        classes.flatMap { name in templates.map { $0.replacingOccurrences(of: "{}", with: name) } }
    }
}
