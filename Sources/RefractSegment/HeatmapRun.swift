// MARK: - Heatmaps for image files: figures, raw maps and a JSON description
//
// For each image: `<stem>.png` (one panel per text) and `<stem>.npy` (float32 [K, G, G], the raw
// patch-grid maps before upsampling); for the run: `heatmap.json`. Every file is written
// atomically; nothing is written before every image has been decoded and the texts embedded.

import Foundation
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractTensor

public struct HeatmapOptions: Sendable {
    public var convention: DecompositionConvention = .faithful
    /// Heads whose per-token terms are summed (nil: every head of every layer).
    public var heads: HeadSet?
    /// Images decomposed per batch.
    public var batchSize = 8
    public init() {}
}

public struct HeatmapReport: Codable, Sendable {
    public struct Contrast: Codable, Sendable {
        public var file: String
        public var texts: Int
        public init(file: String, texts: Int) { self.file = file; self.texts = texts }
    }
    public struct File: Codable, Sendable {
        public var image: String
        public var png: String
        public var npy: String
        /// Per text, the class token's term c_0 · t (not in the map; map sum + this = (Σ_S attn) · t).
        public var classTokenTerms: [Float]
    }
    public var model: String
    public var weightsSHA256: String
    public var convention: String
    public var texts: [String]
    public var contrast: Contrast?
    /// `all`, or the heads as LAYER.HEAD.
    public var heads: String
    public var grid: Int
    public var patchSize: Int
    public var imageSize: Int
    /// What each .npy holds.
    public var npyLayout: String
    public var files: [File]
}

public enum HeatmapRun {
    /// Texts' directions [K, D'] (minus the mean of the contrast texts when given), through the
    /// text-embedding cache.
    public static func directions(texts: [String], contrast: [String]?, model: CLIP, weightsSHA256: String,
                                  cache: URL?) throws -> Tensor {
        guard !texts.isEmpty else { throw HeatmapError("no texts: give at least one") }
        if let bad = texts.first(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) {
            throw HeatmapError("empty text '\(bad)'")
        }
        let t = try SegmentText.embeddings(texts, name: "heatmap texts", model: model, weightsSHA256: weightsSHA256, cache: cache)
        let c = try contrast.map {
            try SegmentText.embeddings($0, name: "heatmap contrast", model: model, weightsSHA256: weightsSHA256, cache: cache)
        }
        return try TokenHeatmaps.directions(texts: t, contrast: c)
    }

    /// Output stems of the images (file names without extension); fails when two images share one.
    public static func stems(_ images: [URL]) throws -> [String] {
        var seen = [String: String]()
        return try images.map { url in
            let stem = url.deletingPathExtension().lastPathComponent
            if let other = seen[stem] {
                throw HeatmapError("\(other) and \(url.path) would both write \(stem).png; rename one or run them separately")
            }
            seen[stem] = url.path
            return stem
        }
    }

    /// Decodes, decomposes and maps every image, then writes the figures, maps and heatmap.json
    /// into `output` (created when missing).
    public static func run(model: CLIP, weightsSHA256: String, images: [URL], texts: [String], directions: Tensor,
                           contrast: HeatmapReport.Contrast?, options: HeatmapOptions, output: URL,
                           progress: ((Int, Int) -> Void)? = nil) throws -> HeatmapReport {
        let arch = model.architecture
        guard !images.isEmpty else { throw HeatmapError("no images given") }
        guard directions.shape == [texts.count, arch.embedDim] else {
            throw HeatmapError("directions \(directions.shape) for \(texts.count) texts of width \(arch.embedDim)")
        }
        guard options.batchSize > 0 else { throw HeatmapError("batch size must be positive") }
        let stems = try stems(images)
        let heads = options.heads ?? HeadSet.all(layers: arch.vision.layers, heads: arch.vision.heads)
        let decomposer = try CLIPDecomposer(tower: model.vision, convention: options.convention, tokenSumHeads: heads)
        let pixels = try model.preprocessFiles(images)                                            // [3, S, S] each
        try FileOutput.createDirectory(output, action: "creating the output folder")
        var files = [HeatmapReport.File]()
        var start = 0
        while start < images.count {
            let range = start..<min(start + options.batchSize, images.count)
            let batch = decomposer(Array(pixels[range]))
            for (j, i) in range.enumerated() {
                let image = batch.image(j)
                let heatmap = try TokenHeatmap(tokenSums: image.tokenSums!, tokens: arch.visionTokens, directions: directions)
                let upsampled = (0..<texts.count).map {
                    TokenHeatmaps.upsampleBilinear(heatmap.map($0), size: heatmap.grid, factor: arch.patchSize)   // [S·S]
                }
                let figure = SegmentFigures.heatmapFigure(picture: SegmentFigures.picture(pixels[i], preprocessing: model.preprocessing),
                                                          maps: upsampled, titles: texts)
                let png = output.appendingPathComponent("\(stems[i]).png"), npy = output.appendingPathComponent("\(stems[i]).npy")
                try PNGEncoder.write(figure, to: png)
                try NPY.write(heatmap.maps, to: npy)
                files.append(.init(image: images[i].path, png: png.lastPathComponent, npy: npy.lastPathComponent,
                                   classTokenTerms: (0..<texts.count).map { heatmap.classTokenTerm($0) }))
            }
            start = range.upperBound
            progress?(start, images.count)
        }
        let report = HeatmapReport(model: model.id, weightsSHA256: weightsSHA256, convention: options.convention.rawValue,
                                   texts: texts, contrast: contrast, heads: heads.description, grid: arch.gridSize,
                                   patchSize: arch.patchSize, imageSize: arch.imageSize,
                                   npyLayout: "float32 [texts, grid, grid]: per text, the patch tokens' c_i . t in grid rows "
                                       + "(token 1 + r*grid + c), before upsampling",
                                   files: files)
        try SegmentOutput.writeJSON(report, to: output.appendingPathComponent("heatmap.json"))
        return report
    }
}

/// JSON and text files written atomically.
enum SegmentOutput {
    static func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try FileOutput.writeAtomically(try e.encode(value), to: url, what: url.lastPathComponent)
    }
}
