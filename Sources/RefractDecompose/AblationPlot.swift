// MARK: - The cumulative attention-ablation curve as a PNG

import Foundation
import RefractPlot

public enum AblationPlot {
    /// Top-1 and top-5 accuracy against the last mean-ablated attention layer, with the baseline and
    /// the MLP-ablated accuracies as dashed reference lines.
    public static func plot(_ report: AblationReport) -> LinePlot {
        let curve = report.studies.filter { $0.lastAblatedLayer != nil }
        let xs = curve.map { Double($0.lastAblatedLayer!) }
        var lines = [ReferenceLine]()
        if let base = report.studies.first(where: { $0.id == "baseline" }) {
            lines.append(ReferenceLine(y: base.top1, label: String(format: "baseline top-1 %.1f%%", base.top1), color: PlotColor(hex: 0x444444)))
        }
        if let mlp = report.studies.first(where: { $0.id == "mlp" }) {
            lines.append(ReferenceLine(y: mlp.top1, label: String(format: "MLPs ablated top-1 %.1f%%", mlp.top1), color: PlotColor(hex: 0x999999)))
        }
        let name = URL(fileURLWithPath: report.model).lastPathComponent
        let blocks = report.curve != nil
        return LinePlot(
            title: blocks ? "Mean-ablating the last K blocks: \(name) (\(report.images) images)"
                          : "Mean-ablating attention layers 0..l: \(name) (\(report.images) images)",
            xLabel: blocks ? (report.curve!.hasPrefix("parts") ? "parts ablated from the last" : "blocks ablated from the last, K")
                           : "last ablated attention layer l",
            yLabel: blocks ? "accuracy of the model's head (%)" : "zero-shot accuracy (%)",
            series: [Series(name: "top-1", x: xs, y: curve.map(\.top1)),
                     Series(name: "top-5", x: xs, y: curve.map(\.top5))],
            horizontalLines: lines)
    }

    public static func write(_ report: AblationReport, to url: URL) throws {
        try plot(report).write(png: url)
    }
}
