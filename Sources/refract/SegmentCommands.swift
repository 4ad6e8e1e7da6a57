// refract heatmap, refract segment (skeleton).
import ArgumentParser

struct HeatmapCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "heatmap", abstract: "Token heatmaps for a text direction (in progress).")
    func run() async throws { throw ValidationError("heatmap: not built yet") }
}

struct SegmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "segment", abstract: "Zero-shot segmentation and its metrics (in progress).")
    func run() async throws { throw ValidationError("segment: not built yet") }
}
