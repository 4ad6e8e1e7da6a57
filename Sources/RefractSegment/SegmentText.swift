// MARK: - Texts for heatmaps and segmentation: bundled ImageNet names, cached text embeddings
//
// The default segmentation classifier is the official one: the 1,000 ImageNet-1k class names
// with the 80 OpenAI templates (bundled from open_clip, see Resources/README.md). Text embeddings
// go through RefractTextSpan's cache (per model weights and text list), so the 80,000 prompts
// are embedded once per model.

import Foundation
import RefractCLIP
import RefractTensor
import RefractTextSpan

public enum SegmentText {
    /// Where the bundled list files are.
    static func resource(_ name: String) throws -> URL {
        if let url = Bundle.module.url(forResource: name, withExtension: "txt")
            ?? Bundle.module.url(forResource: name, withExtension: "txt", subdirectory: "Resources") {
            return url
        }
        throw HeatmapError("bundled resource \(name).txt missing from \(Bundle.module.bundlePath)")
    }

    /// The 1,000 ImageNet-1k class names in class-index order (open_clip's IMAGENET_CLASSNAMES).
    public static func imagenetClasses() throws -> [String] {
        try TextLists.readLines(try resource("imagenet_classes"), what: "class name")
    }

    /// The 80 OpenAI ImageNet templates, `{}` for the class name.
    public static func imagenetTemplates() throws -> [String] {
        try TextLists.readTemplates(try resource("openai_imagenet_templates"))
    }

    /// Human-readable source of the bundled lists, for reports.
    public static let bundledSource = "bundled ImageNet-1k names and 80 OpenAI templates (open_clip 3.3.0)"

    /// L2-normalised embeddings [N, D'] of `texts` in order, through the text-embedding cache
    /// (`cache` nil: computed, not cached). `name` labels the list in the cache's side-car.
    public static func embeddings(_ texts: [String], name: String, model: CLIP, weightsSHA256: String, cache: URL?,
                                  progress: ((Int) -> Void)? = nil) throws -> Tensor {
        let pool = DescriptionPool(texts: texts, name: name)
        return try TextEmbeddings.load(pool: pool, model: model, weightsSHA256: weightsSHA256, cache: cache,
                                       progress: progress).0
    }

    /// The zero-shot classifier of `classes` × `templates` (each prompt L2-normalised, averaged
    /// over templates, renormalised), with the prompts' embeddings cached.
    public static func classifier(classes: [String], templates: [String], model: CLIP, weightsSHA256: String, cache: URL?,
                                  progress: ((Int, Int) -> Void)? = nil) throws -> ZeroShotClassifier {
        let prompts = ZeroShotClassifier.prompts(classes: classes, templates: templates)
        let e = try embeddings(prompts, name: "\(classes.count) classes x \(templates.count) templates", model: model,
                               weightsSHA256: weightsSHA256, cache: cache) { progress?($0, prompts.count) }
        return ZeroShotClassifier(classes: classes, templates: templates, textEmbeddings: e)                 // [D', C]
    }
}
