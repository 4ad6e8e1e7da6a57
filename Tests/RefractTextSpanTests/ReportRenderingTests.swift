import Foundation
import RefractPlot
import XCTest
@testable import RefractTextSpan

final class ReportRenderingTests: XCTestCase {

    // MARK: Sample reports

    static let long300 = String(String(repeating: "a very long description of a scene with many words ", count: 7).prefix(299)) + "."

    /// Descriptions a user could put in a pool, the nasty ones included.
    static let nasty: [String] = [
        "<script>alert(1)</script>",
        "a | b",
        "cats 🐈‍⬛ and dogs 🐕 — naïve café (e\u{301})",
        long300,
        "back\\slash \\| and trailing backslash\\",
        "  leading and trailing spaces  ",
        "two\nlines",
        "quotes \"double\" and 'single' & ampersand &amp; <b>bold</b>",
        "*stars* _under_ `code` [link](http://x) ~~strike~~ $x$ # hash !",
        "日本語の説明 | with a pipe",
    ]

    static func sampleReport(heads: [HeadReport]? = nil, accuracy: AccuracyCheck?? = .none) -> TextSpanReport {
        let fractions = [0.123, 0.0812, 0.05, 0.031, 0.02, 0.0155, 0.011, 0.009, 0.004, 0.001]
        func steps(_ texts: [String], _ fr: [Double]) -> [DescriptionStep] {
            var cum = 0.0
            return zip(texts, fr).enumerated().map { i, pair in
                cum += pair.1
                return DescriptionStep(step: i + 1, text: pair.0, line: 10 * i + 3, varianceExplained: pair.1, cumulative: cum)
            }
        }
        let defaultHeads = [
            // Deliberately out of order: the renderings order by layer, then head.
            HeadReport(layer: 11, head: 4, totalVariance: 2.5, descriptions: steps(nasty, fractions)),
            HeadReport(layer: 10, head: 7, totalVariance: 0.00123,
                       descriptions: steps(["Photo taken in Paris", "Image with a sunset", "Picture of a beach"], [0.2, 0.1, 0.05])),
            HeadReport(layer: 10, head: 2, totalVariance: 13.75, descriptions: []),
            HeadReport(layer: 11, head: 0, totalVariance: 1,
                       descriptions: [
                           DescriptionStep(step: 1, text: "not a number", line: 0, varianceExplained: .nan, cumulative: .nan),
                           DescriptionStep(step: 2, text: "negative", line: 1, varianceExplained: -0.05, cumulative: -0.05),
                           DescriptionStep(step: 3, text: "more than all", line: 2, varianceExplained: 1.3, cumulative: 1.25),
                           DescriptionStep(step: 4, text: "exactly one", line: 3, varianceExplained: 1, cumulative: 2.25),
                       ]),
        ]
        let defaultAccuracy = AccuracyCheck(
            classesFile: "data/<classes> | \"imagenet\".txt", classes: 1000,
            templates: ["a photo of a {}.", "a <bad> photo of the {} | x"], meanAblatedLayersBelow: 10,
            rows: [AccuracyRow(id: "baseline", description: "nothing replaced", top1: 68.34, top5: 91.0),
                   AccuracyRow(id: "heads_raw", description: "heads kept | raw", top1: 60.25, top5: 88.05),
                   AccuracyRow(id: "textspan", description: "reconstructions <from> descriptions", top1: 55.5, top5: 80.449),
                   AccuracyRow(id: "random_directions", description: "random text directions", top1: 12.0, top5: 30.0)],
            distinctDescriptions: 42)
        let acc: AccuracyCheck?
        switch accuracy {
        case .none: acc = defaultAccuracy
        case .some(let a): acc = a
        }
        return TextSpanReport(
            run: "/runs/my run|<x>/imagenet", model: "ViT-B-16 <script>alert('m')</script> | laion2b",
            weightsSHA256: "ab12cd34", convention: "open_clip",
            images: 5000,
            pool: PoolSummary(path: "pools/image_descriptions_general.txt", sha256: "ff00", lines: 3504, blank: 3,
                              duplicates: 2, truncated: 1, used: 3498),
            perHead: 10, rank: 80, heads: heads ?? defaultHeads, accuracy: acc)
    }

    // MARK: Markdown

    func testMarkdownHeaderHasPoolCountsAndEscapedFields() {
        let md = TextSpanRendering.markdown(Self.sampleReport())
        XCTAssertTrue(md.contains("3504 lines: 3 blank, 2 duplicates dropped, 1 truncated, 3498 used"), md)
        XCTAssertTrue(md.contains("**Descriptions per head (m):** 10"))
        XCTAssertTrue(md.contains("**Text span rank:** 80"))
        XCTAssertTrue(md.contains("**Images:** 5000"))
        XCTAssertTrue(md.contains("ViT-B-16 &lt;script&gt;alert('m')&lt;/script&gt; \\| laion2b"))
        XCTAssertTrue(md.contains("pools/image\\_descriptions\\_general.txt"))
        XCTAssertFalse(md.contains("<script"), "raw HTML from user data in Markdown")
        // The only raw HTML is <br> inside cells.
        XCTAssertEqual(md.replacingOccurrences(of: "<br>", with: "").filter { $0 == "<" }.count, 0)
    }

    func testMarkdownTablesHaveRectangularRows() {
        for report in [Self.sampleReport(), Self.sampleReport(heads: [], accuracy: .some(nil))] {
            let md = TextSpanRendering.markdown(report)
            let tables = markdownTables(md)
            XCTAssertEqual(tables.count, report.heads.filter { !$0.descriptions.isEmpty }.count
                           + (report.accuracy == nil ? 0 : 1))
            for table in tables {
                let counts = table.map { splitMarkdownRow($0).count }
                XCTAssertEqual(Set(counts).count, 1, "ragged table:\n\(table.joined(separator: "\n"))")
                XCTAssertEqual(counts.first, 4)
                XCTAssertTrue(table[1].allSatisfy { "|-: ".contains($0) }, "second row is the delimiter row")
            }
        }
    }

    func testMarkdownHeadsInOrderWithEveryDescriptionOnceAndRoundTripping() {
        let report = Self.sampleReport()
        let md = TextSpanRendering.markdown(report)
        let sections = md.components(separatedBy: "\n### ").dropFirst()
        let expected = TextSpanRendering.orderedHeads(report.heads)
        XCTAssertEqual(sections.map { String($0.prefix { $0 != "\n" }) }, ["L10.H2", "L10.H7", "L11.H0", "L11.H4"])
        XCTAssertEqual(sections.count, expected.count)
        for (section, head) in zip(sections, expected) {
            XCTAssertTrue(section.contains("Total variance: \(String(format: "%.4g", head.totalVariance))"))
            let rows = section.split(separator: "\n").map(String.init).filter { $0.hasPrefix("|") }
            if head.descriptions.isEmpty {
                XCTAssertTrue(rows.isEmpty)
                XCTAssertTrue(section.contains("No descriptions chosen."))
                continue
            }
            let body = Array(rows.dropFirst(2))
            XCTAssertEqual(body.count, head.descriptions.count)
            for (row, d) in zip(body, head.descriptions) {
                let cells = splitMarkdownRow(row)
                XCTAssertEqual(cells[0], "\(d.step)")
                XCTAssertEqual(unescapeMarkdownCell(cells[1]), d.text, "cell: \(cells[1])")
                XCTAssertEqual(cells[2], TextSpanRendering.Numbers.percent(d.varianceExplained))
                XCTAssertEqual(cells[3], TextSpanRendering.Numbers.percent(d.cumulative))
            }
        }
        // Spot checks of formats.
        XCTAssertTrue(md.contains("| 1 | &lt;script&gt;alert(1)&lt;/script&gt; | 12.3% | 12.3% |"), md)
        XCTAssertTrue(md.contains("| 2 | a \\| b | 8.1% | 20.4% |"))
        XCTAssertTrue(md.contains("| 1 | not a number | NaN | NaN |"))
        XCTAssertTrue(md.contains("| 2 | negative | -5.0% | -5.0% |"))
        XCTAssertTrue(md.contains("| 3 | more than all | 130.0% | 125.0% |"))
        XCTAssertTrue(md.contains("&#160;&#160;leading and trailing spaces&#160;&#160;"))
        XCTAssertTrue(md.contains("two<br>lines"))
        XCTAssertTrue(md.contains(Self.long300.replacingOccurrences(of: "_", with: "\\_")), "long description kept whole")
    }

    func testMarkdownAccuracyTable() {
        let md = TextSpanRendering.markdown(Self.sampleReport())
        XCTAssertTrue(md.contains("## Zero-shot accuracy check"))
        XCTAssertTrue(md.contains("| baseline | nothing replaced | 68.3% | 91.0% |"), md)
        let raw = TextSpanRendering.Numbers.self
        XCTAssertTrue(md.contains("| heads\\_raw | heads kept \\| raw | \(raw.percentValue(60.25)) | \(raw.percentValue(88.05)) |"))
        XCTAssertTrue(md.contains("| textspan | reconstructions &lt;from&gt; descriptions | 55.5% | 80.4% |"))
        XCTAssertTrue(md.contains("**Distinct descriptions over all chosen heads:** 42"))
        XCTAssertTrue(md.contains("layers 0–9"))
        XCTAssertTrue(md.contains("1000 classes from data/&lt;classes&gt; \\| \"imagenet\".txt, 2 templates."))
    }

    func testMarkdownWithoutHeadsOrAccuracy() {
        let md = TextSpanRendering.markdown(Self.sampleReport(heads: [], accuracy: .some(nil)))
        XCTAssertFalse(md.contains("accuracy"))
        XCTAssertTrue(md.contains("No heads in this report."))
        XCTAssertTrue(md.contains("**Heads:** 0"))
        XCTAssertFalse(md.contains("###"))
    }

    func testMarkdownCellEscaping() {
        typealias E = TextSpanRendering.MarkdownEscaping
        XCTAssertEqual(E.cell("a | b"), "a \\| b")
        XCTAssertEqual(E.cell("x\\"), "x\\\\")
        XCTAssertEqual(E.cell(" a\r\nb "), "&#160;a<br>b&#160;")
        XCTAssertEqual(E.cell("bell\u{7}"), "bell\u{FFFD}")
        XCTAssertEqual(E.cell(""), "")
        XCTAssertEqual(E.inline("a\nb | c"), "a b \\| c")
        for s in Self.nasty where !s.contains("\r") {
            XCTAssertEqual(unescapeMarkdownCell(E.cell(s)), s)
            XCTAssertFalse(E.cell(s).contains("\n"))
        }
    }

    // MARK: HTML

    func testHTMLIsBalancedAndSelfContained() throws {
        for report in [Self.sampleReport(), Self.sampleReport(heads: [], accuracy: .some(nil))] {
            let html = TextSpanRendering.html(report)
            XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
            try checkBalanced(html)
            // One script, ours; no external resources.
            XCTAssertEqual(html.components(separatedBy: "<script").count - 1, 1)
            XCTAssertFalse(TextSpanRendering.filterScript.contains("alert"))
            for forbidden in ["src=", "<link", "@import", "url(", "href=\"http"] {
                XCTAssertFalse(html.contains(forbidden), forbidden)
            }
            XCTAssertTrue(html.contains("prefers-color-scheme: dark"))
            XCTAssertTrue(html.contains("@media print"))
        }
    }

    func testHTMLEscapesUserData() {
        let html = TextSpanRendering.html(Self.sampleReport())
        XCTAssertTrue(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        XCTAssertTrue(html.contains("ViT-B-16 &lt;script&gt;alert(&#39;m&#39;)&lt;/script&gt; | laion2b"))
        XCTAssertTrue(html.contains("/runs/my run|&lt;x&gt;/imagenet"))
        XCTAssertTrue(html.contains("data/&lt;classes&gt; | &quot;imagenet&quot;.txt"))
        XCTAssertTrue(html.contains("quotes &quot;double&quot; and &#39;single&#39; &amp; ampersand &amp;amp; &lt;b&gt;bold&lt;/b&gt;"))
        XCTAssertFalse(html.contains("<b>"))
        XCTAssertEqual(HTMLPage.escape("&<>\"'é🐕"), "&amp;&lt;&gt;&quot;&#39;é🐕")
    }

    func testHTMLHeaderAndAccuracy() {
        let html = TextSpanRendering.html(Self.sampleReport())
        XCTAssertTrue(html.contains("3504 lines: 3 blank, 2 duplicates dropped, 1 truncated, 3498 used"))
        XCTAssertTrue(html.contains("<dt>Descriptions per head (m)</dt><dd>10</dd>"))
        XCTAssertTrue(html.contains("<dt>Text span rank</dt><dd>80</dd>"))
        XCTAssertTrue(html.contains("<dt>Images</dt><dd>5000</dd>"))
        XCTAssertTrue(html.contains("<td class=\"num\">68.3%</td><td class=\"num\">91.0%</td>"))
        XCTAssertTrue(html.contains("<strong>42</strong>"))
        XCTAssertTrue(html.contains("layers 0–9"))
        XCTAssertTrue(html.contains("a &lt;bad&gt; photo of the {} | x"))

        let bare = TextSpanRendering.html(Self.sampleReport(heads: [], accuracy: .some(nil)))
        XCTAssertFalse(bare.contains("id=\"accuracy\""))
        XCTAssertFalse(bare.contains("<nav"))
        XCTAssertTrue(bare.contains("No heads in this report."))
    }

    func testHTMLHeadsOrderedWithDescriptionsOnceInOrderAndBarsMatchingFractions() throws {
        let report = Self.sampleReport()
        let html = TextSpanRendering.html(report)
        let articles = matches(#"<article class="head" id="([^"]+)">(.*?)</article>"#, in: html)
        let expected = TextSpanRendering.orderedHeads(report.heads)
        XCTAssertEqual(articles.map { $0[1] }, ["L10-H2", "L10-H7", "L11-H0", "L11-H4"])
        XCTAssertEqual(articles.count, expected.count)

        // Table of contents: one link per head, to an existing card, grouped by layer.
        let toc = try XCTUnwrap(matches(#"<nav class="toc" id="toc">(.*?)</nav>"#, in: html).first?[1])
        XCTAssertEqual(matches(##"href="#([^"]+)""##, in: toc).map { $0[1] }, articles.map { $0[1] })
        XCTAssertEqual(matches(#"<span class="layer">(L\d+)</span>"#, in: toc).map { $0[1] }, ["L10", "L11"])

        for (article, head) in zip(articles, expected) {
            let body = article[2]
            XCTAssertTrue(body.contains("<h3>\(head.name) "))
            let items = matches(#"<li value="(\d+)">(.*?)</li>"#, in: body)
            XCTAssertEqual(items.count, head.descriptions.count)
            let texts = matches(#"<div class="text"[^>]*>(.*?)</div>"#, in: body).map { unescapeHTML($0[1]) }
            XCTAssertEqual(texts, head.descriptions.map(\.text), "every description once, in order")
            for (item, d) in zip(items, head.descriptions) {
                XCTAssertEqual(item[1], "\(d.step)")
                let widths = matches(#"style="width: ([0-9.]+)%""#, in: item[2]).map { Double($0[1])! }
                XCTAssertEqual(widths.count, 2)
                XCTAssertEqual(widths[0], expectedWidth(d.varianceExplained), accuracy: 0.005, "\(d.text)")
                XCTAssertEqual(widths[1], expectedWidth(d.cumulative), accuracy: 0.005, "\(d.text)")
                XCTAssertTrue(widths.allSatisfy { (0...100).contains($0) })
                let pcts = matches(#"<span class="pct[^"]*">(?:Σ )?([^<]*)</span>"#, in: item[2]).map { $0[1] }
                XCTAssertEqual(pcts, [TextSpanRendering.Numbers.percent(d.varianceExplained),
                                      TextSpanRendering.Numbers.percent(d.cumulative)])
            }
            if head.descriptions.isEmpty { XCTAssertTrue(body.contains("No descriptions chosen.")) }
        }
        // Values outside 0...1 are printed as given and flagged; the bars are clamped.
        XCTAssertTrue(html.contains("<span class=\"pct odd\">NaN</span>"))
        XCTAssertTrue(html.contains("<span class=\"pct odd\">-5.0%</span>"))
        XCTAssertTrue(html.contains("<span class=\"pct odd\">130.0%</span>"))
        XCTAssertTrue(html.contains("<div class=\"fill\" style=\"width: 12.3%\"></div>"))
        XCTAssertTrue(html.contains(Self.long300), "long description kept whole")
    }

    func testHTMLIdsUniqueWhenAHeadRepeats() {
        let h = HeadReport(layer: 3, head: 1, totalVariance: 1,
                           descriptions: [DescriptionStep(step: 1, text: "x", line: 0, varianceExplained: 0.5, cumulative: 0.5)])
        let html = TextSpanRendering.html(Self.sampleReport(heads: [h, h, h], accuracy: .some(nil)))
        let ids = matches(#"<article class="head" id="([^"]+)">"#, in: html).map { $0[1] }
        XCTAssertEqual(ids, ["L3-H1", "L3-H1-2", "L3-H1-3"])
        XCTAssertEqual(matches(##"href="#([^"]+)""##, in: html).map { $0[1] }, ids)
    }

    func testNumberFormats() {
        typealias N = TextSpanRendering.Numbers
        XCTAssertEqual(N.percent(0.123), "12.3%")
        XCTAssertEqual(N.percent(0), "0.0%")
        XCTAssertEqual(N.percent(-1e-9), "0.0%")
        XCTAssertEqual(N.percent(1), "100.0%")
        XCTAssertEqual(N.percent(.nan), "NaN")
        XCTAssertEqual(N.percent(.infinity), "∞%")
        XCTAssertEqual(N.width(0.5), "50")
        XCTAssertEqual(N.width(0.12345), "12.35")
        XCTAssertEqual(N.width(-3), "0")
        XCTAssertEqual(N.width(7), "100")
        XCTAssertEqual(N.width(.nan), "0")
        XCTAssertEqual(N.width(.infinity), "100")
    }

    /// Writes a realistic example page where `REFRACT_TEXTSPAN_EXAMPLE` names a path (for looking at it).
    func testWriteExampleWhenAsked() throws {
        guard let path = ProcessInfo.processInfo.environment["REFRACT_TEXTSPAN_EXAMPLE"] else { return }
        let texts = ["Photo taken in Paris", "Image with a sunset", "Picture of a beach at dawn", "An urban street scene",
                     "A snowy mountain landscape", "Photograph of a desert", "Aerial view of a city", "A rainy night",
                     "Picture of a forest", "An image of the sea"]
        var heads: [HeadReport] = []
        for layer in 8...11 {
            for head in [0, 3, 6, 11] {
                var cum = 0.0
                let steps = (0..<10).map { i -> DescriptionStep in
                    let f = 0.18 * pow(0.72, Double(i)) * (1 + 0.1 * Double((layer + head) % 3))
                    cum += f
                    return DescriptionStep(step: i + 1, text: texts[(i + layer * 3 + head) % texts.count], line: i * 17,
                                           varianceExplained: f, cumulative: cum)
                }
                heads.append(HeadReport(layer: layer, head: head, totalVariance: 0.37 * Double(layer - 6) + 0.01 * Double(head),
                                        descriptions: steps))
            }
        }
        heads.append(Self.sampleReport().heads[0])
        heads.append(Self.sampleReport().heads[3])
        let report = Self.sampleReport(heads: heads)
        try TextSpanRendering.html(report).write(toFile: path, atomically: true, encoding: .utf8)
        try TextSpanRendering.markdown(report).write(toFile: path + ".md", atomically: true, encoding: .utf8)
    }

    // MARK: Helpers

    private func expectedWidth(_ f: Double) -> Double { f.isNaN ? 0 : min(max(f, 0), 1) * 100 }

    /// Groups of consecutive lines starting with `|`.
    private func markdownTables(_ md: String) -> [[String]] {
        var tables: [[String]] = [], current: [String] = []
        for line in md.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("|") { current.append(line) } else if !current.isEmpty { tables.append(current); current = [] }
        }
        if !current.isEmpty { tables.append(current) }
        return tables
    }

    /// Cells of a GFM table row, split at unescaped pipes and trimmed (a backslash escapes the next character).
    private func splitMarkdownRow(_ row: String) -> [String] {
        var cells: [String] = [], cell = ""
        var chars = row.makeIterator()
        while let c = chars.next() {
            if c == "\\" { cell.append(c); if let n = chars.next() { cell.append(n) } } else if c == "|" {
                cells.append(cell); cell = ""
            } else { cell.append(c) }
        }
        cells.append(cell)
        XCTAssertEqual(cells.first?.trimmingCharacters(in: .whitespaces), "", row)
        XCTAssertEqual(cells.last?.trimmingCharacters(in: .whitespaces), "", row)
        return cells.dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// What a Markdown renderer shows for an escaped cell (spaces for the non-breaking ones, newlines for `<br>`).
    private func unescapeMarkdownCell(_ cell: String) -> String {
        var out = "", rest = Substring(cell)
        let entities = ["&amp;": "&", "&lt;": "<", "&gt;": ">", "&#160;": " ", "<br>": "\n"]
        outer: while let c = rest.first {
            if c == "\\", rest.count > 1 {
                out.append(rest[rest.index(after: rest.startIndex)]); rest = rest.dropFirst(2); continue
            }
            for (k, v) in entities where rest.hasPrefix(k) { out += v; rest = rest.dropFirst(k.count); continue outer }
            out.append(c); rest = rest.dropFirst()
        }
        return out
    }

    private func unescapeHTML(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// Capture groups of every match (group 0 first); `.` matches newlines.
    private func matches(_ pattern: String, in text: String) -> [[String]] {
        let re = try! NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators])
        let ns = text as NSString
        return re.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { m in
            (0..<m.numberOfRanges).map { m.range(at: $0).location == NSNotFound ? "" : ns.substring(with: m.range(at: $0)) }
        }
    }

    /// A small well-formedness check: every `<` outside script/style starts a tag, comment or doctype; tags
    /// nest and close properly (void elements excepted); attribute values are double-quoted and contain no raw `<`,
    /// `>` or `"`; no stray `>` in text.
    private func checkBalanced(_ html: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let void: Set<String> = ["meta", "input", "br", "hr", "img", "link", "wbr"]
        let tag = try NSRegularExpression(pattern: #"^<(/?)([a-zA-Z][a-zA-Z0-9]*)((?:\s+[a-zA-Z-]+(?:="[^"<>]*")?)*)\s*>"#)
        var stack: [String] = []
        var i = html.startIndex
        var textRuns = ""
        while i < html.endIndex {
            let c = html[i]
            if c == "<" {
                let rest = String(html[i...])
                if rest.hasPrefix("<!DOCTYPE html>") { i = html.index(i, offsetBy: 15); continue }
                let ns = rest as NSString
                guard let m = tag.firstMatch(in: rest, range: NSRange(location: 0, length: min(ns.length, 2000))) else {
                    XCTFail("stray < at: \(rest.prefix(60))", file: file, line: line); return
                }
                let closing = !ns.substring(with: m.range(at: 1)).isEmpty
                let name = ns.substring(with: m.range(at: 2)).lowercased()
                let whole = ns.substring(with: m.range)
                i = html.index(i, offsetBy: whole.count)
                if closing {
                    guard stack.last == name else {
                        XCTFail("</\(name)> closes <\(stack.last ?? "nothing")>", file: file, line: line); return
                    }
                    stack.removeLast()
                } else if !void.contains(name) {
                    stack.append(name)
                    if name == "script" || name == "style" {
                        guard let end = html.range(of: "</\(name)>", range: i..<html.endIndex) else {
                            XCTFail("unclosed \(name)", file: file, line: line); return
                        }
                        i = end.lowerBound
                    }
                }
            } else {
                textRuns.append(c)
                i = html.index(after: i)
            }
        }
        XCTAssertEqual(stack, [], "unclosed elements", file: file, line: line)
        XCTAssertFalse(textRuns.contains(">"), "stray > in text", file: file, line: line)
        // Every & in text starts an entity we emit.
        let amp = try NSRegularExpression(pattern: #"&(?!(amp|lt|gt|quot|#39|#160);)"#)
        let t = textRuns as NSString
        XCTAssertNil(amp.firstMatch(in: textRuns, range: NSRange(location: 0, length: t.length)), "bare &", file: file, line: line)
    }
}
