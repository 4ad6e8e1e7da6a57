// MARK: - Outputs: spurious.json, spurious.md; the class-list argument
//
// Both files are rendered in memory, written to hidden temporary files in the output directory,
// synced, and only then renamed into place, so a failure leaves no half-written report.

import Foundation
import RefractCLIP

// MARK: Class names

public enum SpuriousClasses {
    /// `landbird,waterbird`, or the path of a file with one class name per line. An argument that
    /// names an existing file is read as a file.
    public static func parse(_ argument: String) throws -> (classes: [String], source: String) {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: argument, isDirectory: &isDir), !isDir.boolValue {
            return (try TextLists.readLines(URL(fileURLWithPath: argument), what: "class name"), argument)
        }
        let names = argument.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        if names.contains(where: \.isEmpty) {
            throw SpuriousError(path: "--classes", message: "'\(argument)' has an empty class name; write landbird,waterbird or name a file")
        }
        return (names, "--classes")
    }
}

// MARK: Rendering

public enum SpuriousRendering {
    public static func json(_ report: SpuriousReport) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try e.encode(report) + Data("\n".utf8)
    }

    static func pct(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "–" }

    static func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ") }

    public static func markdown(_ report: SpuriousReport) -> String {
        var out = "# Spurious cues: Waterbirds group accuracy under head ablations\n\n"
        let e = report.evaluation
        out += "- run: `\(report.run)` (\(report.model), weights sha256 `\(report.weightsSHA256.prefix(12))…`, \(report.convention))\n"
        out += "- metadata: `\(e.metadata)`; split: \(e.split ?? "all rows of the run"); \(e.images) images evaluated"
        out += " (\(e.runImages) in the run, \(e.runImagesOutsideSplit) in other splits; \(e.metadataRowsNotInRun) metadata rows not in the run"
        if let s = e.splitRowsNotInRun { out += ", \(s) of them in this split" }
        out += ")\n"
        out += "- classes: \(report.classes.joined(separator: ", ")) (y = 0, 1); templates: \(report.templates.count)\n"
        out += "- \(report.means); \(report.averaging)\n"
        if let p = report.paperAblations {
            out += "- paper ablations: every head of layers \(p.ablatedLayers.isEmpty ? "(none)" : "\(p.ablatedLayers.first!)...\(p.ablatedLayers.last!)")"
                + ", pre and every MLP mean-ablated in `paper_ablations`, `ablated` and the random draws\n"
        }
        out += "\n## Heads ablated\n\n"
        let s = report.selection
        out += "Chosen by \(s.method.rawValue)"
        if let p = s.property { out += " for \"\(p)\"" }
        if let t = s.textspan { out += " from `\(t)`" }
        out += "; candidates: \(s.candidates) (\(s.candidateCount)).\n\n| rank | head | score | why |\n|---|---|---|---|\n"
        for h in report.heads {
            out += "| \(h.rank.map(String.init) ?? "–") | \(h.name) | \(h.score.map { String(format: "%.4g", $0) } ?? "–") | \(cell(h.reason)) |\n"
        }
        let names = report.settings.first?.accuracy.groups.map(\.name) ?? []
        out += "\n## Accuracy (%)\n\n| setting | " + names.joined(separator: " | ") + " | worst group | average | mean over groups |\n"
        out += "|---|" + String(repeating: "---|", count: names.count + 3) + "\n"
        func row(_ label: String, _ a: AccuracySummary) -> String {
            "| \(label) | " + a.groups.map { pct($0.accuracy) }.joined(separator: " | ")
                + " | \(pct(a.worstGroupAccuracy)) (\(a.worstGroup)) | \(pct(a.average)) | \(pct(a.meanOverGroups)) |\n"
        }
        for setting in report.settings { out += row(setting.id, setting.accuracy) }
        func line(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |\n" }
        if let r = report.random {
            let blank = [String](repeating: "", count: names.count)
            out += line(["random heads, mean of \(r.draws.count)"] + blank + [pct(r.meanWorstGroup), pct(r.meanAverage), pct(r.meanOverGroups)])
            out += line(["random heads, max"] + blank + [pct(r.maxWorstGroup), pct(r.maxAverage), ""])
        }
        out += "\nImages per group: " + names.map { "\($0) \(e.imagesPerGroup[$0] ?? 0)" }.joined(separator: ", ") + ".\n"
        if let r = report.random {
            out += "\n## Random heads\n\n\(r.draws.count) draws of \(r.headsPerDraw) heads from \(r.pool) (\(r.poolSize) heads), seed \(r.seed).\n\n"
            out += "| draw | heads | worst group | average |\n|---|---|---|---|\n"
            for d in r.draws {
                out += "| \(d.id) | \(d.heads.joined(separator: ", ")) | \(pct(d.accuracy.worstGroupAccuracy)) | \(pct(d.accuracy.average)) |\n"
            }
        }
        out += "\n## Published worst-group accuracy (%)\n\nGandelsman et al., ICLR 2024, section 4.3 (OpenCLIP LAION-2B, "
            + "Waterbirds test split, 80 ImageNet templates, heads chosen by hand from TextSpan descriptions, with the paper ablations):\n\n"
        out += "| model | base | random heads | TextSpan heads |\n|---|---|---|---|\n"
        for p in report.published { out += "| \(p.model) | \(pct(p.base)) | \(pct(p.randomHeads)) | \(pct(p.textSpanHeads)) |\n" }
        return out
    }

    /// Writes `spurious.json` and `spurious.md` into `directory` (created when missing), each
    /// through a synced temporary file renamed into place once both are written.
    public static func write(_ report: SpuriousReport, to directory: URL) throws {
        let fm = FileManager.default
        do { try fm.createDirectory(at: directory, withIntermediateDirectories: true) } catch {
            throw SpuriousError(path: directory.path, message: "cannot create the output folder: \(error.localizedDescription)")
        }
        let files: [(String, Data)] = [("spurious.json", try json(report)), ("spurious.md", Data(markdown(report).utf8))]
        var temporary = [URL]()
        defer { for t in temporary { try? fm.removeItem(at: t) } }
        for (name, data) in files {
            let tmp = directory.appendingPathComponent(".\(name).\(UUID().uuidString).tmp")
            temporary.append(tmp)
            guard fm.createFile(atPath: tmp.path, contents: nil) else {
                throw SpuriousError(path: tmp.path, message: "cannot create a file in the output folder")
            }
            do {
                let handle = try FileHandle(forWritingTo: tmp)
                defer { try? handle.close() }
                try handle.write(contentsOf: data)
                try handle.synchronize()
            } catch {
                throw SpuriousError(path: tmp.path, message: "cannot write: \(error.localizedDescription)")
            }
        }
        for (i, (name, _)) in files.enumerated() {
            let target = directory.appendingPathComponent(name)
            guard rename(temporary[i].path, target.path) == 0 else {
                throw SpuriousError(path: target.path, message: "cannot rename into place: \(String(cString: strerror(errno)))")
            }
        }
        temporary = []
    }
}
