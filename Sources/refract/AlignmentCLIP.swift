// The CLIP model an alignment maps into, for every command that reads a timm run through --align:
// loaded from `spec` (default: the alignment's own CLIP model id and layout), its weights and width
// checked against the alignment's.

import ArgumentParser
import Foundation
import RefractAlign
import RefractCLIP
import RefractSegment
import RefractTensor

enum AlignmentCLIP {
    /// The text tower and its weights hash. `option` names the option `spec` came from in errors.
    static func load(_ alignment: Alignment, spec: String?, option: String, layout: String? = nil,
                     threads: Int? = nil) async throws -> (CLIP, String) {
        let target = alignment.manifest.target.model
        let id = spec ?? target.id
        let location = try await ModelOptions.locate(id, layout: layout ?? (spec == nil ? target.layout : nil), threads: threads)
        guard location.layout != .timm else { throw ValidationError("\(option) \(id) is a timm model, not the alignment's CLIP: the texts need a CLIP text tower") }
        let clip = try CLIP(location: location)
        let hash = try clip.weightsSHA256()
        guard hash == target.weightsSHA256 else {
            throw ValidationError("\(option) \(id): weights sha256 \(hash.prefix(12))…, but the alignment "
                + "\(alignment.directory.appendingPathComponent(AlignmentManifest.fileName).path) maps into the space of \(target.id) "
                + "(weights \(target.weightsSHA256.prefix(12))…): pass \(option) with that CLIP model (the alignment's CLIP)")
        }
        guard clip.architecture.embedDim == alignment.maps.clipWidth else {
            throw ValidationError("\(option) \(id): text embeddings of width \(clip.architecture.embedDim), the alignment maps into width "
                                  + "\(alignment.maps.clipWidth)")
        }
        return (clip, hash)
    }
}

extension ScoreProperty {
    /// A property's texts embedded as the paper does, e(s) over the 80 ImageNet templates (each template
    /// embedding normalised, averaged, renormalised), through the text-embedding cache.
    static func embedded(name: String, texts: [String], clip: CLIP, weightsSHA256: String, templates: [String], cache: URL?,
                         progress: ((Int, Int) -> Void)? = nil) throws -> ScoreProperty {
        let classifier = try SegmentText.classifier(classes: texts, templates: templates, model: clip, weightsSHA256: weightsSHA256,
                                                    cache: cache, progress: progress)
        return ScoreProperty(name: name, texts: texts, embeddings: Ops.transposed(classifier.weights))          // [k, D]
    }
}
