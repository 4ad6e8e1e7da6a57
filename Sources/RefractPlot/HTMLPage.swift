import Foundation

// MARK: - HTML pages

/// What Refract's self-contained HTML pages share (the TextSpan report, the retrieval contact
/// sheet): escaping of user text, and the theme (light, and dark through prefers-color-scheme)
/// with the base typography. Each page appends its own rules.
public enum HTMLPage {
    /// Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`, `"`, `'`).
    /// Control characters other than tab, newline and carriage return (not allowed in HTML text) become U+FFFD.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n", "\r": out.unicodeScalars.append(u)
            default:
                if isControl(u) { out += "\u{FFFD}" } else { out.unicodeScalars.append(u) }
            }
        }
        return out
    }

    /// A page's opening, through `<body>`: doctype, language, charset, viewport, both colour
    /// schemes, the title (escaped here) and the stylesheet (trusted: no user data).
    public static func opening(title: String, stylesheet: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="color-scheme" content="light dark">
        <title>\(escape(title))</title>
        <style>
        \(stylesheet)</style>
        </head>
        <body>

        """
    }

    /// C0 and C1 control characters (and DEL).
    public static func isControl(_ u: Unicode.Scalar) -> Bool {
        (u.value < 0x20) || (u.value >= 0x7F && u.value < 0xA0)
    }

    /// Theme variables (--bg, --fg, --muted, --card, --border, --track, --bar, --cum, --accent, --odd) and
    /// base rules (page, headings, links, .mono, .muted, dl.meta). No user data.
    public static let baseStylesheet = """
    :root { --bg: #ffffff; --fg: #1d2129; --muted: #5f6b7a; --card: #f6f8fa; --border: #d7dde4;
      --track: #e3e8ee; --bar: #2f6fd0; --cum: #8fa8c8; --accent: #2f6fd0; --odd: #b3261e; }
    @media (prefers-color-scheme: dark) {
      :root { --bg: #0f1216; --fg: #e4e8ee; --muted: #98a3b1; --card: #181c22; --border: #2c333d;
        --track: #2a3038; --bar: #5b9bf0; --cum: #5d6f88; --accent: #7fb0f5; --odd: #f28b82; }
    }
    * { box-sizing: border-box; }
    [hidden] { display: none !important; }
    html { background: var(--bg); color: var(--fg); }
    body { margin: 0 auto; max-width: 90rem; padding: 1.5rem; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
      Roboto, "Helvetica Neue", Arial, sans-serif; }
    h1 { font-size: 1.6rem; margin: 0 0 0.8rem; }
    h2 { font-size: 1.2rem; margin: 1.6rem 0 0.6rem; }
    a { color: var(--accent); }
    .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.92em;
      overflow-wrap: anywhere; }
    .muted { color: var(--muted); }
    dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0; }
    dl.meta dt { color: var(--muted); }
    dl.meta dd { margin: 0; overflow-wrap: anywhere; }

    """
}
