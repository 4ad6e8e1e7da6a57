// MARK: - Human-readable renderings of a TextSpan report (Markdown and a self-contained HTML page)
//
// Both renderings show the same header (model, run, images, the description pool with its blank,
// duplicate and truncated counts, descriptions per head, span rank), the accuracy check when the
// report has one, then every head, ordered by layer then head, with its descriptions in the order
// TextSpan chose them. Everything that comes from users (descriptions, paths, model ids, class file
// names, templates) is escaped for the target format. Variance fractions (0...1) are printed as
// percentages with one decimal place, as given (NaN, negative and >100% values included); bar widths
// are clamped to 0...100%. Accuracy values are percentages already (0...100), as in the mean-ablation
// study, and are printed with one decimal place.

import Foundation
import RefractPlot

public enum TextSpanRendering {
    /// GitHub-flavoured Markdown: a header (model, run, images, pool summary incl. blank/duplicate/truncated
    /// counts, per-head m, rank), the accuracy table when present (rows: id/description, top-1, top-5, and
    /// the distinct-description count, the ablated layers), then one section per head (layer.head name,
    /// total variance) with a table listing step, description, variance explained (%) and cumulative (%).
    public static func markdown(_ report: TextSpanReport) -> String {
        var out = ""
        func line(_ s: String = "") { out += s + "\n" }
        let md = MarkdownEscaping.inline

        line("# TextSpan report")
        line()
        line("- **Model:** \(md(report.model))")
        line("- **Run:** \(md(report.run))")
        line("- **Weights SHA-256:** \(md(report.weightsSHA256))")
        if let a = report.alignment {
            line("- **Aligned into CLIP space by:** \(md(a.directory)) (maps SHA-256 \(md(a.mapsSHA256)); CLIP \(md(a.clipModel)))")
        }
        line("- **Convention:** \(md(report.convention))")
        line("- **Images:** \(report.images)")
        let pool = report.pool
        line("- **Description pool:** \(md(pool.path)) (SHA-256 \(md(pool.sha256)))")
        line("  - \(poolCounts(pool))")
        line("- **Descriptions per head (m):** \(report.perHead)")
        line("- **Text span rank:** \(report.rank) (each head: at most its own rank)")
        line("- **Heads:** \(report.heads.count)")

        if let acc = report.accuracy {
            line()
            line("## Zero-shot accuracy check")
            line()
            line("\(acc.classes) classes from \(md(acc.classesFile)), \(templatesSummary(acc.templates.count)).")
            line()
            line("| Row | Description | Top-1 | Top-5 |")
            line("| --- | --- | ---: | ---: |")
            for row in acc.rows {
                line("| \(MarkdownEscaping.cell(row.id)) | \(MarkdownEscaping.cell(row.description)) | "
                     + "\(Numbers.percentValue(row.top1)) | \(Numbers.percentValue(row.top5)) |")
            }
            line()
            line("- **Distinct descriptions over all chosen heads:** \(acc.distinctDescriptions)")
            line("- **Mean-ablated attention layers:** \(ablatedLayers(acc.meanAblatedLayersBelow)) (MLPs kept)")
            if !acc.templates.isEmpty {
                let shown = acc.templates.prefix(5).map { md($0) }.joined(separator: "; ")
                let more = acc.templates.count > 5 ? "; … and \(acc.templates.count - 5) more" : ""
                line("- **Templates:** \(shown)\(more)")
            }
        }

        line()
        line("## Heads")
        let heads = orderedHeads(report.heads)
        if heads.isEmpty {
            line()
            line("No heads in this report.")
        }
        for head in heads {
            line()
            line("### \(head.name)")
            line()
            line("Total variance: \(Numbers.general(head.totalVariance))" + (head.rank.map { ", span rank \($0)" } ?? ""))
            line()
            if head.descriptions.isEmpty {
                line(head.note.map { "No descriptions: \(md($0))" } ?? "No descriptions chosen.")
                continue
            }
            line("| Step | Description | Variance explained | Cumulative |")
            line("| ---: | --- | ---: | ---: |")
            for d in head.descriptions {
                line("| \(d.step) | \(MarkdownEscaping.cell(d.text)) | \(Numbers.percent(d.varianceExplained)) | "
                     + "\(Numbers.percent(d.cumulative)) |")
            }
        }
        return out
    }

    /// One self-contained HTML page (inline CSS, no external resources; a small inline script adds a text
    /// filter, the page reads fully without it): the same header and accuracy table, a compact table of
    /// contents by layer, then every head (ordered by layer then head) as a card with its ordered
    /// descriptions, a bar per description whose width is its variance fraction (clamped to 0...100%,
    /// percentage printed as given) and a thin cumulative bar. Light and dark via prefers-color-scheme.
    public static func html(_ report: TextSpanReport) -> String {
        let h = HTMLPage.escape
        var out = ""
        func line(_ s: String) { out += s + "\n" }

        out += HTMLPage.opening(title: "TextSpan report: \(report.model)", stylesheet: stylesheet)

        // Header.
        line("<header>")
        line("<h1>TextSpan report</h1>")
        line("<dl class=\"meta\">")
        func meta(_ key: String, _ valueHTML: String) { line("<dt>\(key)</dt><dd>\(valueHTML)</dd>") }
        meta("Model", "<span class=\"mono\">\(h(report.model))</span>")
        meta("Run", "<span class=\"mono\">\(h(report.run))</span>")
        meta("Weights SHA-256", "<span class=\"mono\">\(h(report.weightsSHA256))</span>")
        if let a = report.alignment {
            meta("Aligned by", "\(h(a.directory)) (CLIP \(h(a.clipModel)); maps <span class=\"mono\">\(h(String(a.mapsSHA256.prefix(16))))…</span>)")
        }
        meta("Convention", h(report.convention))
        meta("Images", "\(report.images)")
        let pool = report.pool
        meta("Description pool", "<span class=\"mono\">\(h(pool.path))</span> "
             + "<span class=\"muted\">(SHA-256 <span class=\"mono\">\(h(pool.sha256))</span>)</span>")
        meta("Pool lines", h(poolCounts(pool)))
        meta("Descriptions per head (m)", "\(report.perHead)")
        meta("Text span rank", "\(report.rank)")
        meta("Heads", "\(report.heads.count)")
        line("</dl>")
        line("</header>")

        // Accuracy check.
        if let acc = report.accuracy {
            line("<section class=\"accuracy\" id=\"accuracy\">")
            line("<h2>Zero-shot accuracy check</h2>")
            line("<p>\(acc.classes) classes from <span class=\"mono\">\(h(acc.classesFile))</span>, "
                 + "\(h(templatesSummary(acc.templates.count))).</p>")
            line("<table>")
            line("<thead><tr><th>Row</th><th>Description</th><th class=\"num\">Top-1</th><th class=\"num\">Top-5</th></tr></thead>")
            line("<tbody>")
            for row in acc.rows {
                line("<tr><td class=\"mono\">\(h(row.id))</td><td>\(h(row.description))</td>"
                     + "<td class=\"num\">\(h(Numbers.percentValue(row.top1)))</td>"
                     + "<td class=\"num\">\(h(Numbers.percentValue(row.top5)))</td></tr>")
            }
            line("</tbody>")
            line("</table>")
            line("<p>Distinct descriptions over all chosen heads: <strong>\(acc.distinctDescriptions)</strong>. "
                 + "Mean-ablated attention layers: <strong>\(h(ablatedLayers(acc.meanAblatedLayersBelow)))</strong> (MLPs kept).</p>")
            if !acc.templates.isEmpty {
                line("<details><summary>Templates (\(acc.templates.count))</summary>")
                line("<ul class=\"templates\">")
                for t in acc.templates { line("<li class=\"mono\">\(h(t))</li>") }
                line("</ul>")
                line("</details>")
            }
            line("</section>")
        }

        let heads = orderedHeads(report.heads)
        let ids = anchors(heads)

        // Table of contents by layer (an aligned run's components: in the run's order).
        if heads.contains(where: { $0.component != nil }) {
            line("<nav class=\"toc\" id=\"toc\">")
            line("<h2>Components</h2>")
            line("<p>" + zip(heads, ids).map { "<a href=\"#\($1)\">\(h($0.name))</a>" }.joined(separator: " ") + "</p>")
            line("</nav>")
        } else if !heads.isEmpty {
            line("<nav class=\"toc\" id=\"toc\">")
            line("<h2>Heads by layer</h2>")
            line("<ul>")
            var i = 0
            while i < heads.count {
                let layer = heads[i].layer
                var links: [String] = []
                while i < heads.count, heads[i].layer == layer {
                    links.append("<a href=\"#\(ids[i])\">H\(heads[i].head)</a>")
                    i += 1
                }
                line("<li><span class=\"layer\">L\(layer)</span> \(links.joined(separator: " "))</li>")
            }
            line("</ul>")
            line("</nav>")
        }

        // Heads.
        line("<main>")
        line("<h2>Heads</h2>")
        line("<p class=\"filter\" id=\"filter-row\" hidden><label>Filter descriptions "
             + "<input type=\"search\" id=\"filter\" placeholder=\"text to find\" autocomplete=\"off\"></label> "
             + "<span id=\"filter-count\" class=\"muted\"></span></p>")
        if heads.isEmpty {
            line("<p class=\"empty\">No heads in this report.</p>")
        }
        line("<div class=\"heads\">")
        for (head, id) in zip(heads, ids) {
            line("<article class=\"head\" id=\"\(id)\">")
            line("<h3>\(h(head.name)) <span class=\"total\">total variance \(h(Numbers.general(head.totalVariance)))"
                 + (head.rank.map { ", rank \($0)" } ?? "") + "</span></h3>")
            if head.descriptions.isEmpty {
                line("<p class=\"empty\">" + (head.note.map { "No descriptions: \(h($0))" } ?? "No descriptions chosen.") + "</p>")
            } else {
                line("<ol class=\"steps\">")
                for d in head.descriptions {
                    let odd = Numbers.isOutOfRange(d.varianceExplained) ? " odd" : ""
                    let oddCum = Numbers.isOutOfRange(d.cumulative) ? " odd" : ""
                    line("<li value=\"\(d.step)\">")
                    line("<div class=\"text\" title=\"pool line \(d.line + 1)\">\(h(d.text))</div>")
                    line("<div class=\"row\"><div class=\"bar\"><div class=\"fill\" style=\"width: "
                         + "\(Numbers.width(d.varianceExplained))%\"></div></div>"
                         + "<span class=\"pct\(odd)\">\(h(Numbers.percent(d.varianceExplained)))</span></div>")
                    line("<div class=\"row cumrow\"><div class=\"bar cum\"><div class=\"fill\" style=\"width: "
                         + "\(Numbers.width(d.cumulative))%\"></div></div>"
                         + "<span class=\"pct cumpct\(oddCum)\">Σ \(h(Numbers.percent(d.cumulative)))</span></div>")
                    line("</li>")
                }
                line("</ol>")
            }
            line("</article>")
        }
        line("</div>")
        line("</main>")
        line("<footer class=\"muted\">Bars: fraction of the head's total centred variance removed by each description "
             + "(full width = 100%); thin bars: cumulative. Rendered by Refract.</footer>")
        line("<script>\n\(filterScript)</script>")
        line("</body>")
        line("</html>")
        return out
    }

    // MARK: Shared pieces

    static func orderedHeads(_ heads: [HeadReport]) -> [HeadReport] {
        // Stable: heads with the same (layer, head) keep their report order.
        heads.enumerated().sorted {
            ($0.element.layer, $0.element.head, $0.offset) < ($1.element.layer, $1.element.head, $1.offset)
        }.map(\.element)
    }

    /// Element ids of the heads' cards, `L<layer>-H<head>`, unique even if a head appears twice (`L11-H0-2`).
    static func anchors(_ heads: [HeadReport]) -> [String] {
        var seen: [String: Int] = [:]
        return heads.map { head in
            let base = head.component == nil ? "L\(head.layer)-H\(head.head)" : "C\(head.layer)"
            let n = seen[base, default: 0] + 1
            seen[base] = n
            return n == 1 ? base : "\(base)-\(n)"
        }
    }

    static func poolCounts(_ pool: PoolSummary) -> String {
        "\(pool.lines) lines: \(pool.blank) blank, \(pool.duplicates) duplicates dropped, "
            + "\(pool.truncated) truncated, \(pool.used) used"
    }

    static func templatesSummary(_ count: Int) -> String {
        count == 1 ? "1 template" : "\(count) templates"
    }

    static func ablatedLayers(_ below: Int) -> String {
        if below <= 0 { return "none" }
        if below == 1 { return "layer 0" }
        return "layers 0–\(below - 1)"
    }

    // MARK: Styles and script (no user data in either)

    static let stylesheet = HTMLPage.baseStylesheet + """
    table { border-collapse: collapse; margin: 0.4rem 0; }
    th, td { border-bottom: 1px solid var(--border); padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
    th { font-weight: 600; }
    td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
    ul.templates { columns: 2 20rem; }
    nav.toc ul { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: 0.25rem 1.5rem; }
    nav.toc li { white-space: nowrap; }
    nav.toc .layer { font-weight: 600; display: inline-block; min-width: 2.6em; }
    nav.toc a { text-decoration: none; margin-right: 0.35em; font-variant-numeric: tabular-nums; }
    .filter input { font: inherit; padding: 0.2rem 0.5rem; min-width: 16rem; color: var(--fg); background: var(--card);
      border: 1px solid var(--border); border-radius: 4px; }
    .heads { display: grid; grid-template-columns: repeat(auto-fill, minmax(21rem, 1fr)); gap: 1rem; align-items: start; }
    article.head { background: var(--card); border: 1px solid var(--border); border-radius: 6px; padding: 0.7rem 0.9rem;
      break-inside: avoid; page-break-inside: avoid; min-width: 0; }
    article.head h3 { margin: 0 0 0.5rem; font-size: 1.05rem; display: flex; justify-content: space-between;
      align-items: baseline; gap: 0.5rem; flex-wrap: wrap; }
    article.head h3 .total { font-size: 0.8rem; font-weight: 400; color: var(--muted); }
    ol.steps { margin: 0; padding-left: 1.7rem; }
    ol.steps li { margin: 0 0 0.45rem; }
    ol.steps li::marker { color: var(--muted); font-variant-numeric: tabular-nums; }
    ol.steps li.dim { opacity: 0.35; }
    .text { overflow-wrap: anywhere; white-space: pre-wrap; }
    .row { display: flex; align-items: center; gap: 0.5rem; }
    .bar { flex: 1; height: 0.6rem; background: var(--track); border-radius: 3px; overflow: hidden; }
    .bar .fill { height: 100%; background: var(--bar); }
    .bar.cum { height: 0.2rem; }
    .bar.cum .fill { background: var(--cum); }
    .bar, .bar .fill { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
    .pct { flex: none; width: 4.6rem; text-align: right; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
    .pct.cumpct { font-size: 0.72rem; color: var(--muted); }
    .pct.odd { color: var(--odd); font-weight: 600; }
    .empty { color: var(--muted); font-style: italic; }
    footer { margin-top: 2rem; font-size: 0.85rem; }
    @media print {
      :root { --bg: #fff; --fg: #000; --muted: #555; --card: #fff; --border: #bbb; --track: #e6e6e6; --bar: #2f6fd0;
        --cum: #8fa8c8; --accent: #000; --odd: #b3261e; }
      html { font-size: 11px; }
      body { max-width: none; padding: 0; font-size: 11px; }
      .filter, nav.toc { display: none !important; }
      .heads { grid-template-columns: repeat(2, 1fr); gap: 0.6rem; }
      article.head { display: block !important; }
      ol.steps li.dim { opacity: 1; }
      a { text-decoration: none; }
    }

    """

    static let filterScript = """
    (function () {
      var input = document.getElementById("filter");
      var row = document.getElementById("filter-row");
      var count = document.getElementById("filter-count");
      var heads = document.querySelectorAll("article.head");
      if (!input || !row || heads.length === 0) return;
      row.hidden = false;
      input.addEventListener("input", function () {
        var q = input.value.trim().toLowerCase();
        var shown = 0;
        for (var i = 0; i < heads.length; i++) {
          var head = heads[i];
          var items = head.querySelectorAll("ol.steps li");
          var nameHit = head.querySelector("h3").textContent.toLowerCase().indexOf(q) >= 0;
          var any = false;
          for (var j = 0; j < items.length; j++) {
            var text = items[j].querySelector(".text").textContent.toLowerCase();
            var hit = q === "" || text.indexOf(q) >= 0;
            items[j].classList.toggle("dim", q !== "" && !hit && !nameHit);
            if (hit) any = true;
          }
          var visible = q === "" || any || nameHit;
          head.hidden = !visible;
          if (visible) shown++;
        }
        count.textContent = q === "" ? "" : shown + " of " + heads.length + " heads";
      });
    })();

    """
}

// MARK: - Escaping

extension TextSpanRendering {
    enum MarkdownEscaping {
        /// ASCII punctuation with a meaning in (GitHub-flavoured) inline Markdown, escaped with a backslash.
        private static let backslashed: Set<Unicode.Scalar> = ["\\", "`", "*", "_", "[", "]", "|", "~", "$", "!", "#"]

        /// Escapes text for inline Markdown (a list item, a paragraph): every Markdown-significant character
        /// is backslash-escaped, `&`, `<`, `>` become entities (no raw HTML, no autolinks), line breaks become
        /// spaces and other control characters U+FFFD.
        static func inline(_ s: String) -> String {
            escape(s, lineBreak: " ")
        }

        /// Escapes text for one GitHub-flavoured Markdown table cell: as `inline`, plus pipes escaped, line
        /// breaks as `<br>`, and leading/trailing whitespace kept as non-breaking-space entities (cells are trimmed).
        static func cell(_ s: String) -> String {
            let scalars = Array(s.unicodeScalars)
            var start = 0, end = scalars.count
            while start < end, isTrimmed(scalars[start]) { start += 1 }
            while end > start, isTrimmed(scalars[end - 1]) { end -= 1 }
            var body = String.UnicodeScalarView()
            body.append(contentsOf: scalars[start..<end])
            let lead = String(repeating: "&#160;", count: start)
            let trail = String(repeating: "&#160;", count: scalars.count - end)
            return lead + escape(String(body), lineBreak: "<br>") + trail
        }

        private static func isTrimmed(_ u: Unicode.Scalar) -> Bool {
            u == " " || u == "\t" || u == "\n" || u == "\r" || u == "\u{0B}" || u == "\u{0C}"
        }

        private static func escape(_ s: String, lineBreak: String) -> String {
            var out = ""
            out.reserveCapacity(s.utf8.count)
            var previousWasCR = false
            for u in s.unicodeScalars {
                defer { previousWasCR = (u == "\r") }
                switch u {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\n":
                    if !previousWasCR { out += lineBreak }   // \r\n is one break
                case "\r", "\u{2028}", "\u{2029}", "\u{85}", "\u{0B}", "\u{0C}": out += lineBreak
                case "\t": out += " "
                default:
                    if backslashed.contains(u) {
                        out += "\\"
                        out.unicodeScalars.append(u)
                    } else if isControl(u) {
                        out += "\u{FFFD}"
                    } else {
                        out.unicodeScalars.append(u)
                    }
                }
            }
            return out
        }
    }

    /// C0 and C1 control characters (and DEL).
    static func isControl(_ u: Unicode.Scalar) -> Bool {
        (u.value < 0x20) || (u.value >= 0x7F && u.value < 0xA0)
    }

    // MARK: - Numbers

    enum Numbers {
        /// A fraction (0...1) as a percentage with one decimal place, as given: `12.3%`, `-4.0%`, `130.0%`, `NaN`.
        static func percent(_ fraction: Double) -> String {
            percentValue(fraction * 100)
        }

        /// A value already in percent with one decimal place.
        static func percentValue(_ value: Double) -> String {
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value < 0 ? "-∞%" : "∞%" }
            var text = String(format: "%.1f", value)
            if text == "-0.0" { text = "0.0" }
            return text + "%"
        }

        /// A bar width in percent for a fraction: clamped to 0...100, 0 for NaN.
        static func width(_ fraction: Double) -> String {
            guard !fraction.isNaN else { return "0" }
            let w = min(max(fraction, 0), 1) * 100
            var text = String(format: "%.2f", w)
            // Trim trailing zeros: 12.50 -> 12.5, 100.00 -> 100.
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
            return text
        }

        static func isOutOfRange(_ fraction: Double) -> Bool {
            fraction.isNaN || fraction < 0 || fraction > 1
        }

        /// A general magnitude (total variance): four significant digits.
        static func general(_ value: Double) -> String {
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value < 0 ? "-∞" : "∞" }
            return String(format: "%.4g", value)
        }
    }
}
