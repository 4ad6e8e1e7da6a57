// MARK: - refract score's report: score.json, score.md and a self-contained score.html
//
// The report holds, per component in the run's order, both scores of the property, the scores of the
// properties subtracted (--against, --minus), the ranking key and the rank; the rankings by key and by
// each score; what was scored (run, decomposed model, text model, alignment, texts, templates). The
// HTML page draws one horizontal bar per component (the key, and variance_explained as a thin bar),
// offline: no scripts, fonts or styles from elsewhere. Everything from users (texts, names, paths,
// model ids) is escaped for the format it goes into. The three files are written to temporary
// siblings first and renamed into place only when all are written.

import Foundation
import RefractPlot
import RefractStore
import RefractTensor

/// A property as reported: name and texts.
public struct ScorePropertyTexts: Codable, Sendable, Equatable {
    public var name: String
    public var texts: [String]
    public init(name: String, texts: [String]) { self.name = name; self.texts = texts }
}

/// How the ranking key is made.
public enum ScoreRule: Sendable, Equatable {
    /// The score itself (text retrieval).
    case score
    /// score − max(0, max over --against properties) (image retrieval, §3.4).
    case against([String])
    /// score − score of one other property (Waterbirds, §3.4).
    case minus(String)

    public var text: String {
        switch self {
        case .score: return "score"
        case .against(let names): return "score − max(0, max of the scores of \(names.joined(separator: ", ")))"
        case .minus(let name): return "score − score of \(name)"
        }
    }
}

/// score.json.
public struct ScoreReport: Codable, Sendable, Equatable {
    public static let formatName = "refract-score"
    public static let currentFormatVersion = 1

    public struct RunInfo: Codable, Sendable, Equatable {
        public var id: String
        public var path: String
        public var convention: String
        public var images: Int
        public init(id: String, path: String, convention: String, images: Int) {
            self.id = id; self.path = path; self.convention = convention; self.images = images
        }
    }
    public struct TextModel: Codable, Sendable, Equatable {
        public var id: String
        public var weightsSHA256: String
        public init(id: String, weightsSHA256: String) { self.id = id; self.weightsSHA256 = weightsSHA256 }
    }
    public struct AlignmentInfo: Codable, Sendable, Equatable {
        public var path: String
        public var runId: String
        public var mapsSHA256: String
        public var clipModel: String
        public init(path: String, runId: String, mapsSHA256: String, clipModel: String) {
            self.path = path; self.runId = runId; self.mapsSHA256 = mapsSHA256; self.clipModel = clipModel
        }
    }
    public struct Component: Codable, Sendable, Equatable {
        public var index: Int
        public var name: String
        public var varianceAttributed: Double
        public var varianceExplained: Double?
        /// The ranking key and the rank by it (1 = first).
        public var key: Double
        public var rank: Int
        /// Basis directions of the property along which the component is constant (scored 0 there).
        public var constantDirections: Int
        /// The subtracted properties' scores (by the ranked score), by name.
        public var others: [String: Double]
    }
    public struct Rankings: Codable, Sendable, Equatable {
        public var key: [String]
        public var varianceAttributed: [String]
        public var varianceExplained: [String]?
    }

    public var format = formatName
    public var formatVersion = currentFormatVersion
    public var createdBy: String
    public var run: RunInfo
    /// The decomposed model.
    public var model: StoreModelInfo
    public var textModel: TextModel
    public var alignment: AlignmentInfo?
    /// Templates each text was embedded with (e(s): the renormalised mean of the normalised template embeddings).
    public var templates: Int
    public var templatesSource: String
    public var property: ScorePropertyTexts
    public var against: [ScorePropertyTexts]
    public var minus: ScorePropertyTexts?
    /// "variance_attributed" or "variance_explained": the score the key is made from.
    public var rankedBy: String
    public var rule: String
    public var top: Int
    public var components: [Component]
    public var rankings: Rankings
    /// Components constant over the images (zero total variance).
    public var constantComponents: [String]
    public var seconds: Double?

    /// The report of `property` from `result` (which holds it and the subtracted properties).
    public static func make(result: ScoreResult, property: String, rule: ScoreRule, rankedBy explained: Bool, top: Int,
                            createdBy: String, run: RunInfo, model: StoreModelInfo, textModel: TextModel, alignment: AlignmentInfo?,
                            templates: Int, templatesSource: String, seconds: Double? = nil) throws -> ScoreReport {
        guard let p = result.property(property) else { throw ScoreError(property, "not among the scored properties") }
        func score(_ s: PropertyScores) throws -> [Double] {
            if explained {
                guard let e = s.varianceExplained else { throw ScoreError(s.name, "variance_explained was not computed") }
                return e
            }
            return s.varianceAttributed
        }
        let mine = try score(p)
        var others: [(String, [Double])] = []
        let keys: [Double]
        var minusTexts: ScorePropertyTexts?
        var againstTexts: [ScorePropertyTexts] = []
        switch rule {
        case .score:
            keys = mine
        case .against(let names):
            for n in names {
                guard let o = result.property(n) else { throw ScoreError(n, "not among the scored properties") }
                others.append((n, try score(o)))
                againstTexts.append(ScorePropertyTexts(name: n, texts: o.texts))
            }
            keys = ScoreRanking.keys(mine, against: others.map(\.1))
        case .minus(let n):
            guard let o = result.property(n) else { throw ScoreError(n, "not among the scored properties") }
            others.append((n, try score(o)))
            minusTexts = ScorePropertyTexts(name: n, texts: o.texts)
            keys = ScoreRanking.keys(mine, minus: others[0].1)
        }
        let order = ScoreRanking.order(keys)
        var rank = [Int](repeating: 0, count: keys.count)
        for (r, c) in order.enumerated() { rank[c] = r + 1 }
        let names = result.components.count == keys.count ? result.components : keys.indices.map { "component \($0)" }
        let components = keys.indices.map { c in
            Component(index: c, name: names[c], varianceAttributed: p.varianceAttributed[c], varianceExplained: p.varianceExplained?[c],
                      key: keys[c], rank: rank[c], constantDirections: p.constantDirections[c],
                      others: Dictionary(uniqueKeysWithValues: others.map { ($0.0, $0.1[c]) }))
        }
        let rankings = Rankings(key: order.map { names[$0] },
                                varianceAttributed: ScoreRanking.order(p.varianceAttributed).map { names[$0] },
                                varianceExplained: p.varianceExplained.map { ScoreRanking.order($0).map { names[$0] } })
        return ScoreReport(createdBy: createdBy, run: run, model: model, textModel: textModel, alignment: alignment, templates: templates,
                           templatesSource: templatesSource, property: ScorePropertyTexts(name: p.name, texts: p.texts),
                           against: againstTexts, minus: minusTexts,
                           rankedBy: explained ? "variance_explained" : "variance_attributed", rule: rule.text, top: top,
                           components: components, rankings: rankings,
                           constantComponents: result.constantComponents.map { names[$0] }, seconds: seconds)
    }

    /// The components in ranking order.
    public var ranked: [Component] { components.sorted { $0.rank < $1.rank } }
}

// MARK: - Rendering

public enum ScoreRendering {
    public static func json(_ report: ScoreReport) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var data = try e.encode(report)
        data.append(0x0A)
        return data
    }

    /// A number with four decimals ("NaN" for NaN).
    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        var s = String(format: "%.4f", v)
        if s == "-0.0000" { s = "0.0000" }
        return s
    }

    /// The top-K table as plain text, for the terminal.
    public static func table(_ report: ScoreReport, top: Int) -> String {
        let rows = report.ranked.prefix(top)
        let width = max(9, rows.map(\.name.count).max() ?? 0)
        var out = "rank  " + "component".padding(toLength: width, withPad: " ", startingAt: 0) + "  " + "key".leftPad(9)
            + "  " + "attributed".leftPad(10) + "  " + "explained".leftPad(9) + "\n"
        for r in rows {
            out += String(r.rank).leftPad(4) + "  " + r.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                + number(r.key).leftPad(9) + "  " + number(r.varianceAttributed).leftPad(10) + "  "
                + (r.varianceExplained.map(number) ?? "-").leftPad(9) + "\n"
        }
        return out
    }

    // MARK: Markdown

    public static func markdown(_ report: ScoreReport) -> String {
        let m = Markdown.inline, cell = Markdown.cell
        var out = "# Component scores: \(m(report.property.name))\n\n"
        out += "- Run: `\(code(report.run.path))` (id \(m(report.run.id)), \(report.run.images) images, convention \(m(report.run.convention)))\n"
        out += "- Model: \(m(report.model.id)) (weights SHA-256 `\(code(report.model.weightsSHA256))`)\n"
        out += "- Text model: \(m(report.textModel.id)) (weights SHA-256 `\(code(report.textModel.weightsSHA256))`)\n"
        if let a = report.alignment {
            out += "- Alignment: `\(code(a.path))` (maps SHA-256 `\(code(a.mapsSHA256))`)\n"
        } else {
            out += "- Alignment: none (CLIP run: the identity)\n"
        }
        out += "- Texts: " + report.property.texts.map(m).joined(separator: "; ") + " (each over \(report.templates) templates, \(m(report.templatesSource)))\n"
        for a in report.against { out += "- Against \(m(a.name)): " + a.texts.map(m).joined(separator: "; ") + "\n" }
        if let mi = report.minus { out += "- Minus \(m(mi.name)): " + mi.texts.map(m).joined(separator: "; ") + "\n" }
        out += "- Ranked by: \(report.rankedBy), key = \(m(report.rule))\n"
        if !report.constantComponents.isEmpty {
            out += "- Constant over the images (scored 0): " + report.constantComponents.map(m).joined(separator: ", ") + "\n"
        }
        let others = report.against.map(\.name) + (report.minus.map { [$0.name] } ?? [])
        func table(_ rows: ArraySlice<ScoreReport.Component>) -> String {
            var t = "| rank | component | key | variance attributed | variance explained |"
            t += others.map { " \(cell($0)) |" }.joined() + "\n|---:|---|---:|---:|---:|" + others.map { _ in "---:|" }.joined() + "\n"
            for r in rows {
                t += "| \(r.rank) | \(cell(r.name)) | \(number(r.key)) | \(number(r.varianceAttributed)) | \(r.varianceExplained.map(number) ?? "–") |"
                t += others.map { " \(r.others[$0].map(number) ?? "–") |" }.joined() + "\n"
            }
            return t
        }
        let ranked = report.ranked
        out += "\n## Top \(min(report.top, ranked.count))\n\n" + table(ranked.prefix(report.top))
        out += "\n## All \(ranked.count) components\n\n" + table(ranked[...])
        return out
    }

    static func code(_ s: String) -> String {
        s.replacingOccurrences(of: "`", with: "'").replacingOccurrences(of: "\n", with: " ")
    }

    // MARK: HTML

    public static func html(_ report: ScoreReport) -> String {
        let h = escape
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        out += HTMLPage.opening(title: "Component scores: \(report.property.name)", stylesheet: stylesheet)
        line("<header>")
        line("<h1>Component scores: \(h(report.property.name))</h1>")
        line("<dl class=\"meta\">")
        func meta(_ k: String, _ v: String) { line("<dt>\(k)</dt><dd>\(v)</dd>") }
        meta("Run", "<span class=\"mono\">\(h(report.run.path))</span> <span class=\"muted\">(\(report.run.images) images, "
             + "convention \(h(report.run.convention)))</span>")
        meta("Model", "<span class=\"mono\">\(h(report.model.id))</span>")
        meta("Text model", "<span class=\"mono\">\(h(report.textModel.id))</span>")
        meta("Alignment", report.alignment.map { "<span class=\"mono\">\(h($0.path))</span>" } ?? "none (CLIP run: the identity)")
        meta("Texts", report.property.texts.map { "<span class=\"text\">\(h($0))</span>" }.joined(separator: " ")
             + " <span class=\"muted\">(\(report.templates) templates each)</span>")
        for a in report.against {
            meta("Against \(h(a.name))", a.texts.map { "<span class=\"text\">\(h($0))</span>" }.joined(separator: " "))
        }
        if let mi = report.minus {
            meta("Minus \(h(mi.name))", mi.texts.map { "<span class=\"text\">\(h($0))</span>" }.joined(separator: " "))
        }
        meta("Ranked by", "\(h(report.rankedBy)); key = \(h(report.rule))")
        if !report.constantComponents.isEmpty {
            meta("Constant (scored 0)", h(report.constantComponents.joined(separator: ", ")))
        }
        line("</dl>")
        line("</header>")
        line("<main>")
        let ranked = report.ranked
        let scale = max(ranked.map { $0.key.isFinite ? abs($0.key) : 0 }.max() ?? 0, 1e-12)
        line("<h2>Components by key</h2>")
        line("<p class=\"muted\">Bars: the key (full width = \(h(number(scale))), the largest magnitude; red: negative); "
             + "thin bars: variance explained (full width = 1). The top \(min(report.top, ranked.count)) are marked.</p>")
        line("<ol class=\"bars\">")
        for r in ranked {
            let w = r.key.isFinite ? min(100, abs(r.key) / scale * 100) : 0
            let cls = (r.rank <= report.top ? "top" : "") + (r.key < 0 ? " neg" : "")
            line("<li class=\"\(cls.trimmingCharacters(in: .whitespaces))\" value=\"\(r.rank)\">")
            var title = "variance attributed \(number(r.varianceAttributed))"
            if let e = r.varianceExplained { title += ", variance explained \(number(e))" }
            for (n, v) in r.others.sorted(by: { $0.key < $1.key }) { title += ", \(n) \(number(v))" }
            if r.constantDirections > 0 { title += ", constant along \(r.constantDirections) direction(s)" }
            line("<span class=\"name mono\" title=\"\(h(title))\">\(h(r.name))</span>")
            line("<span class=\"track\"><span class=\"fill\" style=\"width: \(String(format: "%.2f", w))%\"></span></span>")
            line("<span class=\"val\">\(h(number(r.key)))</span>")
            if let e = r.varianceExplained {
                let we = e.isFinite ? min(100, max(0, e) * 100) : 0
                line("<span></span><span class=\"track thin\"><span class=\"fill\" style=\"width: \(String(format: "%.2f", we))%\"></span></span>"
                     + "<span class=\"val muted\">\(h(number(e)))</span>")
            }
            line("</li>")
        }
        line("</ol>")
        line("</main>")
        line("<footer class=\"muted\">variance_attributed: the mean over an orthonormal basis of the texts' span (Gram–Schmidt in "
             + "list order) of the correlation between the component's projection and the whole representation's, × (N−1)/N; "
             + "variance_explained: the span's share of the component's variance (Balasubramanian et al., NeurIPS 2024). "
             + "Rendered by Refract.</footer>")
        line("</body>")
        line("</html>")
        return out
    }

    static let stylesheet = """
    :root { --bg: #ffffff; --fg: #1d2129; --muted: #5f6b7a; --track: #e3e8ee; --bar: #2f6fd0; --cum: #8fa8c8; --odd: #b3261e; }
    @media (prefers-color-scheme: dark) {
      :root { --bg: #0f1216; --fg: #e4e8ee; --muted: #98a3b1; --track: #2a3038; --bar: #5b9bf0; --cum: #5d6f88; --odd: #f28b82; }
    }
    * { box-sizing: border-box; }
    html { background: var(--bg); color: var(--fg); }
    body { margin: 0 auto; max-width: 70rem; padding: 1.5rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
      Roboto, "Helvetica Neue", Arial, sans-serif; }
    h1 { font-size: 1.6rem; margin: 0 0 0.8rem; }
    h2 { font-size: 1.2rem; margin: 1.6rem 0 0.6rem; }
    .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.92em; overflow-wrap: anywhere; }
    .muted { color: var(--muted); }
    .text { display: inline-block; border: 1px solid var(--track); border-radius: 0.3rem; padding: 0 0.35rem; margin: 0.1rem 0.2rem 0.1rem 0; }
    dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0; }
    dl.meta dt { color: var(--muted); }
    dl.meta dd { margin: 0; overflow-wrap: anywhere; }
    ol.bars { padding-left: 3rem; }
    ol.bars li { display: grid; grid-template-columns: 12rem 1fr 5.5rem; gap: 0.1rem 0.6rem; align-items: center; margin: 0.15rem 0; }
    ol.bars li.top .name { font-weight: 600; }
    .track { display: block; height: 0.8rem; background: var(--track); border-radius: 0.2rem; overflow: hidden; }
    .track.thin { height: 0.3rem; }
    .fill { display: block; height: 100%; background: var(--bar); }
    .thin .fill { background: var(--cum); }
    li.neg > .track:not(.thin) .fill { background: var(--odd); }
    .val { text-align: right; font-variant-numeric: tabular-nums; }

    """

    /// Escapes text for HTML content and quoted attributes; control characters become U+FFFD.
    public static func escape(_ s: String) -> String { HTMLPage.escape(s) }

    static func isControl(_ u: Unicode.Scalar) -> Bool { HTMLPage.isControl(u) }

    enum Markdown {
        static let backslashed: Set<Unicode.Scalar> = ["\\", "`", "*", "_", "[", "]", "|", "~", "$", "!", "#"]
        /// Inline Markdown: significant punctuation backslash-escaped, &, <, > as entities, breaks as spaces.
        static func inline(_ s: String) -> String { escape(s, lineBreak: " ") }
        /// A table cell: as `inline`, with line breaks as <br>.
        static func cell(_ s: String) -> String { escape(s, lineBreak: "<br>") }
        static func escape(_ s: String, lineBreak: String) -> String {
            var out = ""
            for u in s.unicodeScalars {
                switch u {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\n", "\r", "\u{2028}", "\u{2029}": out += lineBreak
                case "\t": out += " "
                default:
                    if backslashed.contains(u) { out += "\\"; out.unicodeScalars.append(u) }
                    else if isControl(u) { out += "\u{FFFD}" } else { out.unicodeScalars.append(u) }
                }
            }
            return out
        }
    }

    // MARK: Writing

    /// Writes score.json, score.md and score.html into `directory` (created when missing): each to a
    /// synced temporary sibling, then all renamed into place; on any failure none is left half-written.
    public static func write(_ report: ScoreReport, to directory: URL) throws {
        try FileOutput.createDirectory(directory, action: "creating the output folder")
        let files: [(String, Data, String)] = [("score.json", try json(report), "the scores (JSON)"),
                                               ("score.md", Data(markdown(report).utf8), "the scores (Markdown)"),
                                               ("score.html", Data(html(report).utf8), "the scores (HTML)")]
        var pending: [(URL, URL)] = []
        defer { for (tmp, _) in pending { try? FileManager.default.removeItem(at: tmp) } }
        for (name, data, what) in files {
            let tmp = directory.appendingPathComponent(".\(name).pending-\(UUID().uuidString)")
            try FileOutput.writeAtomically(data, to: tmp, what: what)
            pending.append((tmp, directory.appendingPathComponent(name)))
        }
        for (_, target) in pending {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: target.path, isDirectory: &isDir), isDir.boolValue {
                throw FileWriteError(path: target.path, action: "moving the finished file into place", reason: "\(target.path) is a folder, not a file")
            }
        }
        while let (tmp, target) = pending.first {
            if rename(tmp.path, target.path) != 0 { throw FileOutput.error(target.path, "moving the finished file into place") }
            pending.removeFirst()
        }
        pending = []
    }
}

extension String {
    fileprivate func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
