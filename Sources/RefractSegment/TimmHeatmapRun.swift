// MARK: - Heatmaps of timm models for image files: figures, raw maps and heatmap.json
//
// As HeatmapRun for CLIP: per image `<stem>.png` (one panel per text, over the picture after the
// model's own preprocessing) and `<stem>.npy` (float32 [K, G, G], the raw maps); for the run
// `heatmap.json`, recording the model, the alignment, the CLIP model of the text directions, the
// heads and the grid. Every file is written atomically; nothing is written before every image has
// been decoded.

import Foundation
import RefractAlign
import RefractDecompose
import RefractImage
import RefractTensor
import RefractTimm

public struct TimmHeatmapReport: Codable, Sendable {
    public struct AlignmentInfo: Codable, Sendable {
        public var directory: String
        public var runId: String
        public var mapsSHA256: String
        /// The decomposition the maps were trained on.
        public var convention: String
        public var fromBlock: Int
        public init(directory: String, runId: String, mapsSHA256: String, convention: String, fromBlock: Int) {
            self.directory = directory; self.runId = runId; self.mapsSHA256 = mapsSHA256
            self.convention = convention; self.fromBlock = fromBlock
        }
    }
    public struct Model: Codable, Sendable {
        public var id: String
        public var weightsSHA256: String
        public init(id: String, weightsSHA256: String) { self.id = id; self.weightsSHA256 = weightsSHA256 }
    }
    public struct Selection: Codable, Sendable {
        /// `--components`, the default set, or `top K by variance_explained over RUN`.
        public var rule: String
        /// The run scored (top heads only).
        public var run: String?
        /// variance_explained of each chosen head, in `components` order (top heads only).
        public var varianceExplained: [Double]?
        public init(rule: String, run: String? = nil, varianceExplained: [Double]? = nil) {
            self.rule = rule; self.run = run; self.varianceExplained = varianceExplained
        }
    }
    public struct File: Codable, Sendable {
        public var image: String
        public var png: String
        public var npy: String
        /// ViT: per text, the class token's and registers' terms (not in the map); empty for Swin and MaxViT.
        public var prefixTokenTerms: [[Float]]
        /// Per text, the sum over every token: (Σ_S x_c·W_c)·t, the chosen heads' aligned contribution (no bias).
        public var totals: [Double]
    }
    public var model: Model
    public var family: String
    public var convention: String
    public var alignment: AlignmentInfo
    /// The CLIP model whose text tower gives the directions (the alignment's target space).
    public var clipModel: Model
    public var texts: [String]
    public var contrast: HeatmapReport.Contrast?
    public var components: [String]
    public var selection: Selection
    public var grid: Int
    /// Input pixels per grid cell (the upsampling factor).
    public var cellSize: Int
    public var imageSize: Int
    /// The tokens left out of the maps (ViT: the class token and registers), 0 for Swin and MaxViT.
    public var prefixTokens: Int
    public var npyLayout: String
    public var files: [File]
}

public enum TimmHeatmapRun {
    /// Decodes, decomposes and maps every image, then writes the figures, maps and heatmap.json into
    /// `output` (created when missing). `directions` [K, D] are in the alignment's CLIP space.
    public static func run(model: TimmModel, weightsSHA256: String, alignment: Alignment, plan: TimmHeatmapPlan,
                           clipModel: TimmHeatmapReport.Model, images: [URL], texts: [String], directions: Tensor,
                           contrast: HeatmapReport.Contrast?, selection: TimmHeatmapReport.Selection, output: URL, batchSize: Int = 8,
                           progress: ((Int, Int) -> Void)? = nil) throws -> TimmHeatmapReport {
        guard !images.isEmpty else { throw HeatmapError("no images given") }
        guard directions.shape == [texts.count, alignment.maps.clipWidth] else {
            throw HeatmapError("directions \(directions.shape) for \(texts.count) texts of width \(alignment.maps.clipWidth)")
        }
        guard batchSize > 0 else { throw HeatmapError("batch size must be positive") }
        let stems = try HeatmapRun.stems(images)
        let pixels = try model.preprocessFiles(images)                                          // [3, S, S] each
        let size = pixels[0].shape[2]
        guard size % plan.grid == 0 else {
            throw HeatmapError("the input size \(size) is not a whole multiple of the \(plan.grid)x\(plan.grid) grid")
        }
        let cell = size / plan.grid
        let folded = TimmHeatmaps.folded(alignment.maps, components: plan.components, directions: directions)
        try FileOutput.createDirectory(output, action: "creating the output folder")
        var files = [TimmHeatmapReport.File]()
        var start = 0
        while start < images.count {
            let range = start..<min(start + batchSize, images.count)
            let batch = plan.decomposer(Array(pixels[range]))
            for (j, i) in range.enumerated() {
                let heatmap = try TimmHeatmaps.heatmap(batch, image: j, components: plan.components, folded: folded, grid: plan.grid,
                                                       prefixTokens: plan.prefixTokens)
                let upsampled = (0..<texts.count).map {
                    TokenHeatmaps.upsampleBilinear(heatmap.map($0), size: plan.grid, factor: cell)      // [S·S]
                }
                let figure = SegmentFigures.heatmapFigure(picture: SegmentFigures.picture(pixels[i], preprocessing: model.preprocessing),
                                                          maps: upsampled, titles: texts)
                let png = output.appendingPathComponent("\(stems[i]).png"), npy = output.appendingPathComponent("\(stems[i]).npy")
                try PNGEncoder.write(figure, to: png)
                try NPY.write(heatmap.maps, to: npy)
                files.append(.init(image: images[i].path, png: png.lastPathComponent, npy: npy.lastPathComponent,
                                   prefixTokenTerms: plan.prefixTokens > 0 ? (0..<texts.count).map { heatmap.prefixTerms($0) } : [],
                                   totals: (0..<texts.count).map { heatmap.total($0) }))
            }
            start = range.upperBound
            progress?(start, images.count)
        }
        let m = alignment.manifest
        let layout = plan.prefixTokens > 0
            ? "float32 [texts, grid, grid]: per text, sum over the heads of (x_c,i . W_c) . t for the patch tokens in grid rows "
                + "(token \(plan.prefixTokens) + r*grid + c; class token and registers apart), before upsampling"
            : "float32 [texts, grid, grid]: per text, sum over the heads of (x_c,i . W_c) . t on the stage's real token grid "
                + "(row r, column c; windows, shift and partitions undone), before upsampling"
        let report = TimmHeatmapReport(
            model: .init(id: model.id, weightsSHA256: weightsSHA256), family: model.family.rawValue, convention: m.convention,
            alignment: .init(directory: alignment.directory.path, runId: m.runId, mapsSHA256: m.mapsSHA256, convention: m.convention,
                             fromBlock: plan.decomposer.fromBlock),
            clipModel: clipModel, texts: texts, contrast: contrast, components: plan.components.map(\.name), selection: selection,
            grid: plan.grid, cellSize: cell, imageSize: size, prefixTokens: plan.prefixTokens, npyLayout: layout, files: files)
        try SegmentOutput.writeJSON(report, to: output.appendingPathComponent("heatmap.json"))
        return report
    }
}
