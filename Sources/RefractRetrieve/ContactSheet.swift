// MARK: - Outputs: retrieval.json and a self-contained HTML contact sheet
//
// The contact sheet shows the query on top (its thumbnail, or the text), then the results as a grid
// of cards: thumbnail, rank, score, file name, label, row. Thumbnails are decoded from the source
// images, downscaled (Pillow-compatible bicubic, never enlarged) to `thumbnailSize` pixels on the
// long side and embedded as PNG data URIs, so the page needs no other file. An image that cannot be
// read gets a placeholder card naming its path and the problem. Everything that comes from users
// (paths, labels, texts, model ids) is escaped. Light and dark themes follow the TextSpan page.
// Both files are rendered completely before either is written; each is written atomically.

import Foundation
import RefractPlot
import RefractImage
import RefractTextSpan
import RefractTensor

public enum RetrievalOutput {
    public static let jsonName = "retrieval.json"
    public static let htmlName = "retrieval.html"
    /// Long side of the thumbnails, in pixels.
    public static let thumbnailSize = 160

    /// A thumbnail as a `data:image/png;base64,…` URI, or why there is none.
    public typealias Thumbnail = Result<String, ThumbnailError>

    public struct ThumbnailError: Error, CustomStringConvertible, Sendable {
        public var message: String
        public var description: String { message }
    }

    /// The report as pretty-printed JSON with sorted keys.
    public static func json(_ report: RetrievalReport) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(report), as: UTF8.self) + "\n"
    }

    /// Writes `retrieval.json` and `retrieval.html` into `directory` (created when missing). Returns
    /// the two file URLs.
    @discardableResult
    public static func write(_ report: RetrievalReport, to directory: URL) throws -> (json: URL, html: URL) {
        let json = try json(report)
        let page = html(report, thumbnails: thumbnails(for: report))
        try FileOutput.createDirectory(directory, action: "creating the output folder")
        let jsonURL = directory.appendingPathComponent(jsonName), htmlURL = directory.appendingPathComponent(htmlName)
        try FileOutput.writeAtomically(Data(json.utf8), to: jsonURL, what: "the retrieval report")
        try FileOutput.writeAtomically(Data(page.utf8), to: htmlURL, what: "the contact sheet")
        return (jsonURL, htmlURL)
    }

    // MARK: Thumbnails

    /// Thumbnails of the query image (when it has a path) and of every result, by path, made in parallel.
    public static func thumbnails(for report: RetrievalReport, size: Int = thumbnailSize) -> [String: Thumbnail] {
        var paths = report.results.map(\.path)
        if let q = report.query.path { paths.insert(q, at: 0) }
        var seen = Set<String>()
        let unique = paths.filter { seen.insert($0).inserted }
        let slots = ThumbnailSlots(count: unique.count)
        Parallel.forEach(unique.count) { i in slots.set(i, thumbnail(of: unique[i], size: size)) }
        return Dictionary(uniqueKeysWithValues: zip(unique, slots.values))
    }

    /// One image decoded, downscaled to `size` on its long side (not enlarged), as a PNG data URI.
    public static func thumbnail(of path: String, size: Int = thumbnailSize) -> Thumbnail {
        do {
            let image = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: path))
            let scale = min(1, Double(size) / Double(max(image.width, image.height)))
            let w = max(1, Int((Double(image.width) * scale).rounded())), h = max(1, Int((Double(image.height) * scale).rounded()))
            let small = (w, h) == (image.width, image.height) ? image : PILResampler.resize(image, width: w, height: h, filter: .bicubic)
            let png = try PNGEncoder.encode(small)
            return .success("data:image/png;base64," + Data(png).base64EncodedString())
        } catch {
            return .failure(ThumbnailError(message: "\(error)"))
        }
    }

    // MARK: HTML

    /// The contact sheet: one self-contained page (inline CSS, no script, no external resources).
    /// `thumbnails` maps image paths to their thumbnails; a path without one gets a placeholder.
    public static func html(_ report: RetrievalReport, thumbnails: [String: Thumbnail]) -> String {
        let h = HTMLPage.escape
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        func picture(_ path: String) -> String {
            switch thumbnails[path] {
            case .success(let uri)?:
                return "<img src=\"\(uri)\" alt=\"\(h(fileName(path)))\" title=\"\(h(path))\">"
            case .failure(let e)?:
                // The decoder's message starts with the path, shown just above it.
                let why = e.message.hasPrefix(path + ": ") ? String(e.message.dropFirst(path.count + 2)) : e.message
                return "<div class=\"placeholder\" title=\"\(h(e.message))\"><span>image not available</span>"
                    + "<span class=\"mono\">\(h(path))</span><span class=\"why\">\(h(why))</span></div>"
            case nil:
                return "<div class=\"placeholder\" title=\"\(h(path))\"><span>no thumbnail</span>"
                    + "<span class=\"mono\">\(h(path))</span></div>"
            }
        }
        let q = report.query
        let title = q.text.map { "“\($0)”" } ?? q.path.map(fileName) ?? "query"

        out += HTMLPage.opening(title: "Retrieval: \(title) by \(report.heads.joined(separator: ", "))", stylesheet: stylesheet)

        // Header.
        line("<header>")
        line("<h1>Retrieval by heads \(h(report.heads.joined(separator: ", ")))</h1>")
        line("<dl class=\"meta\">")
        func meta(_ key: String, _ valueHTML: String) { line("<dt>\(key)</dt><dd>\(valueHTML)</dd>") }
        meta("Run", "<span class=\"mono\">\(h(report.run))</span>")
        meta("Model", "<span class=\"mono\">\(h(report.model))</span>")
        meta("Weights SHA-256", "<span class=\"mono\">\(h(report.weightsSHA256))</span>")
        meta("Convention", h(report.convention))
        meta("Heads", h(report.heads.joined(separator: ", ")) + " <span class=\"muted\">(contributions summed)</span>")
        meta("Metric", h(report.metric) + " <span class=\"muted\">(" + (report.metric == RetrievalMetric.dot.rawValue
            ? "dot product of the head-set vectors" : "cosine similarity of the head-set vectors") + ")</span>")
        meta("Images compared", "\(report.candidates)")
        line("</dl>")
        line("</header>")

        // Query.
        line("<section class=\"query\">")
        line("<h2>Query</h2>")
        line("<div class=\"querycard\">")
        if let text = q.text {
            line("<div class=\"textquery\">“\(h(text))”</div>")
        } else if let path = q.path {
            line("<figure class=\"card\">\(picture(path))<figcaption>")
            line("<div class=\"name mono\" title=\"\(h(path))\">\(h(fileName(path)))</div>")
            if let label = q.label { line("<div class=\"label\">\(h(label))</div>") }
            if let row = q.row { line("<div class=\"muted\">row \(row)</div>") }
            line("</figcaption></figure>")
        }
        line("<p class=\"note\">\(h(q.note)). Vector norm \(h(number(q.norm))).</p>")
        line("</div>")
        line("</section>")

        // Results.
        line("<main>")
        line("<h2>Top \(report.results.count)</h2>")
        if report.results.isEmpty { line("<p class=\"empty\">No other images in the run.</p>") }
        line("<div class=\"grid\">")
        for hit in report.results {
            line("<figure class=\"card\">")
            line("<div class=\"rank\">#\(hit.rank)</div>")
            line(picture(hit.path))
            line("<figcaption>")
            line("<div class=\"score\">\(h(number(hit.score)))</div>")
            line("<div class=\"name mono\" title=\"\(h(hit.path))\">\(h(fileName(hit.path)))</div>")
            if let label = hit.label { line("<div class=\"label\">\(h(label))</div>") }
            line("<div class=\"muted\">row \(hit.row)</div>")
            line("</figcaption>")
            line("</figure>")
        }
        line("</div>")
        line("</main>")
        line("<footer class=\"muted\">Each image's vector is the sum of the chosen heads' direct contributions to its "
             + "representation; scores compare it with the query's. Rendered by Refract.</footer>")
        line("</body>")
        line("</html>")
        return out
    }

    /// A score with 4 significant decimals, printed as given for non-finite values.
    static func number(_ x: Double) -> String {
        guard x.isFinite else { return "\(x)" }
        return abs(x) >= 1e-3 || x == 0 ? String(format: "%.4f", x) : String(format: "%.4g", x)
    }

    static func fileName(_ path: String) -> String {
        let name = (path as NSString).lastPathComponent
        return name.isEmpty ? path : name
    }

    // MARK: Style (no user data)

    static let stylesheet = HTMLPage.baseStylesheet + """
    .querycard { display: flex; align-items: center; gap: 1.2rem; flex-wrap: wrap; }
    .textquery { font-size: 1.3rem; background: var(--card); border: 1px solid var(--border); border-radius: 6px;
      padding: 0.8rem 1.1rem; overflow-wrap: anywhere; white-space: pre-wrap; max-width: 40rem; }
    .note { color: var(--muted); max-width: 40rem; margin: 0; }
    .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(11.5rem, 1fr)); gap: 0.9rem; align-items: start; }
    figure.card { position: relative; margin: 0; background: var(--card); border: 1px solid var(--border); border-radius: 6px;
      padding: 0.6rem; min-width: 0; break-inside: avoid; page-break-inside: avoid; }
    .query figure.card { width: 12rem; }
    figure.card img { display: block; margin: 0 auto; max-width: 100%; height: 160px; object-fit: contain;
      image-rendering: auto; }
    .placeholder { height: 160px; display: flex; flex-direction: column; justify-content: center; gap: 0.3rem;
      padding: 1.6rem 0.5rem 0.5rem; text-align: center; background: var(--track); border-radius: 4px; color: var(--odd);
      font-size: 0.8rem; overflow: hidden; }
    .placeholder .mono { color: var(--fg); font-size: 0.72rem; }
    .placeholder .why { color: var(--muted); font-size: 0.7rem; overflow-wrap: anywhere; }
    figcaption { margin-top: 0.45rem; font-size: 0.85rem; display: grid; gap: 0.1rem; }
    figcaption .name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    figcaption .label { font-weight: 600; overflow-wrap: anywhere; }
    .score { font-variant-numeric: tabular-nums; font-weight: 600; color: var(--accent); }
    .rank { position: absolute; top: 0.35rem; left: 0.35rem; background: var(--bg); color: var(--fg); border: 1px solid var(--border);
      border-radius: 4px; padding: 0 0.35rem; font-size: 0.78rem; font-variant-numeric: tabular-nums; opacity: 0.92; }
    .empty { color: var(--muted); font-style: italic; }
    footer { margin-top: 2rem; font-size: 0.85rem; }
    @media print {
      :root { --bg: #fff; --fg: #000; --muted: #555; --card: #fff; --border: #bbb; --track: #e6e6e6; --accent: #000; }
      body { max-width: none; padding: 0; font-size: 11px; }
      .grid { grid-template-columns: repeat(5, 1fr); gap: 0.5rem; }
    }

    """
}

/// Per-index thumbnails written from parallel tasks.
private final class ThumbnailSlots: @unchecked Sendable {
    private var slots: [RetrievalOutput.Thumbnail?]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ t: RetrievalOutput.Thumbnail) { lock.lock(); slots[i] = t; lock.unlock() }
    var values: [RetrievalOutput.Thumbnail] {
        slots.map { $0 ?? .failure(RetrievalOutput.ThumbnailError(message: "not made")) }
    }
}
