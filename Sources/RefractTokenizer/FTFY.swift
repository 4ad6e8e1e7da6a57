/// A Swift implementation of `ftfy.fix_text` with ftfy 6.3.1's default configuration, as open_clip calls it.
///
/// Reproduced: line-by-line segmentation (and the "a literal `<` turns HTML unescaping off from this line on"
/// rule), ftfy's HTML entity unescaping (HTML5 names ending in `;`, upper-case variants, numeric references),
/// mojibake repair (`fix_encoding`: the badness heuristic, the ten single-byte encodings, `restore_byte_a0`,
/// `replace_lossy_sequences`, the utf-8-variants decoder for CESU-8 and Java NUL, `decode_inconsistent_utf8`,
/// Latin-1 to Windows-1252, C1 controls), Latin ligatures, full/half-width characters, curly quotes, line
/// breaks, ANSI terminal escapes, control characters and NFC, repeated until nothing changes.
/// Not reproduced (see docs/Tokenizer.md): surrogate repair (a Swift String cannot hold lone surrogates) and
/// one regex corner case of the utf-8-variants decoder (a CESU-8 pair cut short by a segment's final newline).
public enum FTFY {
    /// `ftfy.fix_text(text)` with the default configuration.
    public static func fixText(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        let fixed = fixText(scalars)
        return fixed == scalars ? text : UnicodeSupport.string(fixed)
    }

    /// `ftfy.badness.is_bad(text)`: does the text contain a sequence that is very likely mojibake?
    public static func isBad(_ text: String) -> Bool {
        isBad(Array(text.unicodeScalars)[...])
    }

    /// `ftfy.fix_encoding(text)`: only the mojibake repair.
    public static func fixEncoding(_ text: String) -> String {
        UnicodeSupport.string(fixEncoding(Array(text.unicodeScalars)))
    }

    static let maxDecodeLength = 1_000_000

    static func fixText(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        // Fast path: printable ASCII without '&' is left exactly as it is by every fixer.
        if text.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7F && $0 != "&" }) { return text }
        var unescapeHTML = true  // "auto" until a segment contains '<'; then off for the rest of the text
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var pos = 0
        while pos < text.count {
            var end = text[pos...].firstIndex(of: "\n").map { $0 + 1 } ?? text.count
            if end - pos > maxDecodeLength { end = pos + maxDecodeLength }
            let segment = Array(text[pos..<end])
            if unescapeHTML && segment.contains("<") { unescapeHTML = false }
            out.append(contentsOf: fixSegment(segment, unescapeHTML: unescapeHTML))
            pos = end
        }
        return out
    }

    /// `fix_and_explain` without the explanation: apply every fixer until the text stops changing.
    static func fixSegment(_ input: [Unicode.Scalar], unescapeHTML: Bool) -> [Unicode.Scalar] {
        let data = FTFYData.shared
        var text = input
        while true {
            let original = text
            if unescapeHTML { text = self.unescapeHTML(text) }
            text = fixEncoding(text)
            text = fixC1Controls(text, data)
            text = map(text) { data.ligatures[$0.value] }
            text = map(text) { data.widthMap[$0.value] }
            text = uncurlQuotes(text)
            text = fixLineBreaks(text)
            text = removeTerminalEscapes(text)
            if text.contains(where: { data.controlCharacters.contains($0.value) }) {
                text = text.filter { !data.controlCharacters.contains($0.value) }
            }
            text = UnicodeSupport.nfc(text)
            if text == original { return text }
        }
    }

    // MARK: simple fixers

    private static func map(_ text: [Unicode.Scalar], _ replacement: (Unicode.Scalar) -> [Unicode.Scalar]?) -> [Unicode.Scalar] {
        guard text.contains(where: { $0.value >= 0x80 && replacement($0) != nil }) else { return text }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        for s in text {
            if s.value >= 0x80, let r = replacement(s) { out.append(contentsOf: r) } else { out.append(s) }
        }
        return out
    }

    static func uncurlQuotes(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard text.contains(where: { $0.value == 0x2BC || (0x2018...0x201F).contains($0.value) }) else { return text }
        return text.map { s in
            switch s.value {
            case 0x2BC, 0x2018...0x201B: return "'"
            case 0x201C...0x201F: return "\""
            default: return s
            }
        }
    }

    static func fixLineBreaks(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard text.contains(where: { $0 == "\r" || $0.value == 0x2028 || $0.value == 0x2029 || $0.value == 0x85 }) else { return text }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            let s = text[i]
            if s == "\r" {
                out.append("\n")
                if i + 1 < text.count && text[i + 1] == "\n" { i += 1 }
            } else if s.value == 0x2028 || s.value == 0x2029 || s.value == 0x85 {
                out.append("\n")
            } else {
                out.append(s)
            }
            i += 1
        }
        return out
    }

    /// `\033\[((?:\d|;)*)([a-zA-Z])` removed (`\d` is any Unicode decimal digit).
    static func removeTerminalEscapes(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard text.contains("\u{1B}") else { return text }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if text[i] == "\u{1B}" && i + 1 < text.count && text[i + 1] == "[" {
                var j = i + 2
                while j < text.count && (text[j] == ";" || UnicodeSupport.isDecimalDigit(text[j])) { j += 1 }
                if j < text.count && text[j].isASCII && UnicodeSupport.isLetter(text[j]) {
                    i = j + 1
                    continue
                }
            }
            out.append(text[i])
            i += 1
        }
        return out
    }

    static func fixC1Controls(_ text: [Unicode.Scalar], _ data: FTFYData) -> [Unicode.Scalar] {
        guard text.contains(where: { (0x80...0x9F).contains($0.value) }) else { return text }
        return text.map { s in
            (0x80...0x9F).contains(s.value) ? Unicode.Scalar(data.sloppy1252[Int(s.value)])! : s
        }
    }

    // MARK: HTML

    /// ftfy's `HTML_ENTITIES`: `&name;` for every HTML5 name ending in `;`, plus the upper-cased form of the
    /// all-lower-case names when Python's `html.unescape` leaves that form alone.
    static let entities: [String: [Unicode.Scalar]] = {
        var table: [String: [Unicode.Scalar]] = [:]
        for (name, value) in PythonHTML.entities where name.hasSuffix(";") {
            table["&" + name] = Array(value.unicodeScalars)
        }
        for (name, value) in PythonHTML.entities where name.hasSuffix(";") && name == name.lowercased() {
            let upper = "&" + name.uppercased()
            if PythonHTML.unescape(upper) == upper {
                table[upper] = Array(value.uppercased().unicodeScalars)
            }
        }
        return table
    }()

    @inline(__always)
    private static func isASCIIAlphanumeric(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        return (v >= 0x30 && v <= 0x39) || (v >= 0x41 && v <= 0x5A) || (v >= 0x61 && v <= 0x7A)
    }

    /// `ftfy.fixes.unescape_html`: replaces matches of `&#?[0-9A-Za-z]{1,24};`.
    static func unescapeHTML(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard text.contains("&") else { return text }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        let n = text.count
        var i = 0
        while i < n {
            guard text[i] == "&" else { out.append(text[i]); i += 1; continue }
            // With '#': the alphanumeric run starts after it; without: at i + 1 (a '#' is not alphanumeric).
            let runStart = (i + 1 < n && text[i + 1] == "#") ? i + 2 : i + 1
            var j = runStart
            while j < n && j - runStart < 25 && isASCIIAlphanumeric(text[j]) { j += 1 }
            let length = j - runStart
            guard length >= 1, length <= 24, j < n, text[j] == ";" else { out.append("&"); i += 1; continue }
            let match = Array(text[i...j])
            let key = UnicodeSupport.string(match)
            if let value = entities[key] {
                out.append(contentsOf: value)
            } else if runStart == i + 2 {
                let unescaped = PythonHTML.unescape(match)
                out.append(contentsOf: unescaped.contains(";") ? match : unescaped)
            } else {
                out.append(contentsOf: match)
            }
            i = j + 1
        }
        return out
    }

    // MARK: fix_encoding

    static func fixEncoding(_ input: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var text = input
        while true {
            let previous = text
            text = fixEncodingOneStep(text)
            if text == previous { return text }
        }
    }

    static func fixEncodingOneStep(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        if text.isEmpty || text.allSatisfy({ $0.isASCII }) || !isBad(text[...]) { return text }
        let data = FTFYData.shared
        var latin1Possible = false
        for page in data.codepages {
            guard var bytes = encode(text, page) else { continue }
            if page.name == "latin-1" { latin1Possible = true }
            if page.name != "macroman" && containsAlteredUTF8(bytes) {
                bytes = restoreByteA0(bytes)
            }
            if page.isSloppy {
                bytes = replaceLossySequences(bytes)
            }
            let variants = bytes.contains(0xED) || bytes.contains(0xC0)
            if let decoded = UTF8Decoding.decode(bytes, variants: variants) {
                return decoded
            }
        }
        if findUTF8Mojibake(text[...], from: 0) != nil {
            let fixed = decodeInconsistentUTF8(text)
            if fixed != text { return fixed }
        }
        if latin1Possible {
            // ftfy checks for "windows-1252" among the possible encodings, which only ever lists
            // "sloppy-windows-1252", so this branch always tries Latin-1 -> strict Windows-1252.
            var decoded: [Unicode.Scalar] = []
            decoded.reserveCapacity(text.count)
            var ok = true
            for s in text {
                guard let v = data.windows1252[Int(s.value)] else { ok = false; break }
                decoded.append(Unicode.Scalar(v)!)
            }
            if ok && decoded != text { return decoded }
        }
        if text.contains(where: { (0x80...0x9F).contains($0.value) }) {
            return fixC1Controls(text, data)
        }
        return text
    }

    static func encode(_ text: [Unicode.Scalar], _ page: FTFYData.Codepage) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        for s in text {
            guard let b = page.encode[s.value] else { return nil }
            bytes.append(b)
        }
        return bytes
    }

    @inline(__always)
    private static func isContinuationNoA0(_ b: UInt8) -> Bool {
        // [\x80-\x84\x86-\x9f\xa1-\xbf]
        (b >= 0x80 && b <= 0x84) || (b >= 0x86 && b <= 0x9F) || (b >= 0xA1 && b <= 0xBF)
    }

    @inline(__always)
    private static func isContinuation(_ b: UInt8) -> Bool { b >= 0x80 && b <= 0xBF }

    /// Length of an `ALTERED_UTF8_RE` match at `i`, or 0.
    private static func alteredUTF8Match(_ b: [UInt8], at i: Int) -> Int {
        let n = b.count
        let c = b[i]
        if [0xC2, 0xC3, 0xC5, 0xCE, 0xD0, 0xD9].contains(c) && i + 1 < n && b[i + 1] == 0x20 { return 2 }
        if (c == 0xE2 || c == 0xE3) && i + 2 < n && b[i + 1] == 0x20 && isContinuationNoA0(b[i + 2]) { return 3 }
        if (0xE0...0xE3).contains(c) && i + 2 < n && isContinuationNoA0(b[i + 1]) && b[i + 2] == 0x20 { return 3 }
        if c == 0xF0 && i + 3 < n {
            let (x, y, z) = (b[i + 1], b[i + 2], b[i + 3])
            if x == 0x20 && isContinuation(y) && isContinuation(z) { return 4 }
            if isContinuation(x) && y == 0x20 && isContinuation(z) { return 4 }
            if isContinuation(x) && isContinuation(y) && z == 0x20 { return 4 }
        }
        return 0
    }

    static func containsAlteredUTF8(_ b: [UInt8]) -> Bool {
        for i in b.indices where alteredUTF8Match(b, at: i) > 0 { return true }
        return false
    }

    /// `ftfy.fixes.restore_byte_a0`.
    static func restoreByteA0(_ input: [UInt8]) -> [UInt8] {
        // A_GRAVE_WORD_RE: b"\xc3 (?! |quele|quela|quilo|s )" -> b"\xc3\xa0 "
        var b: [UInt8] = []
        b.reserveCapacity(input.count + 4)
        var i = 0
        let exceptions: [[UInt8]] = [[0x20], Array("quele".utf8), Array("quela".utf8), Array("quilo".utf8), Array("s ".utf8)]
        while i < input.count {
            if input[i] == 0xC3 && i + 1 < input.count && input[i + 1] == 0x20 {
                let rest = input[(i + 2)...]
                if !exceptions.contains(where: { rest.starts(with: $0) }) {
                    b.append(contentsOf: [0xC3, 0xA0, 0x20])
                    i += 2
                    continue
                }
            }
            b.append(input[i])
            i += 1
        }
        // ALTERED_UTF8_RE: spaces inside the match become 0xA0.
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        i = 0
        while i < b.count {
            let length = alteredUTF8Match(b, at: i)
            if length > 0 {
                for k in i..<(i + length) { out.append(b[k] == 0x20 ? 0xA0 : b[k]) }
                i += length
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }

    /// Length of a `LOSSY_UTF8_RE` match at `i`, or 0.
    private static func lossyMatch(_ b: [UInt8], at i: Int) -> Int {
        let n = b.count
        func at(_ k: Int) -> UInt8? { i + k < n ? b[i + k] : nil }
        func isSubQ(_ x: UInt8?) -> Bool { x == 0x1A || x == 0x3F }                          // [\x1a?]
        func isSubCont(_ x: UInt8?) -> Bool { x.map { $0 == 0x1A || isContinuation($0) } ?? false }  // [\x1a\x80-\xbf]
        func isSubQCont(_ x: UInt8?) -> Bool { isSubQ(x) || isSubCont(x) }                   // [\x1a?\x80-\xbf]
        let c = b[i]
        if (0xC2...0xDF).contains(c) && at(1) == 0x1A { return 2 }
        if (c == 0xC2 || c == 0xC3) && at(1) == 0x3F { return 2 }
        if c == 0xED, let x = at(1), (0xA0...0xAF).contains(x), at(3) == 0xED, let y = at(4), (0xB0...0xBF).contains(y) {
            if isSubQ(at(2)) && isSubQCont(at(5)) { return 6 }
            if isSubQCont(at(2)) && isSubQ(at(5)) { return 6 }
        }
        if (0xE0...0xEF).contains(c) {
            if isSubQ(at(1)) && isSubCont(at(2)) { return 3 }
            if isSubCont(at(1)) && isSubQ(at(2)) { return 3 }
        }
        if (0xF0...0xF4).contains(c) {
            if isSubQ(at(1)) && isSubCont(at(2)) && isSubCont(at(3)) { return 4 }
            if isSubCont(at(1)) && isSubQ(at(2)) && isSubCont(at(3)) { return 4 }
            if isSubCont(at(1)) && isSubCont(at(2)) && isSubQ(at(3)) { return 4 }
        }
        if c == 0x1A { return 1 }
        return 0
    }

    /// `ftfy.fixes.replace_lossy_sequences`: UTF-8 sequences damaged by a lossy decoder become U+FFFD.
    static func replaceLossySequences(_ b: [UInt8]) -> [UInt8] {
        guard b.contains(0x1A) || b.contains(0x3F) else { return b }
        var out: [UInt8] = []
        out.reserveCapacity(b.count)
        var i = 0
        while i < b.count {
            let length = lossyMatch(b, at: i)
            if length > 0 {
                out.append(contentsOf: [0xEF, 0xBF, 0xBD])
                i += length
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return out
    }

    /// `UTF8_DETECTOR_RE` searched from `from`: the range of the first match, or nil.
    static func findUTF8Mojibake(_ text: ArraySlice<Unicode.Scalar>, from: Int) -> Range<Int>? {
        let data = FTFYData.shared
        let start = text.startIndex, end = text.endIndex
        var i = max(from, start)
        while i < end {
            let bits = data.bits(text[i])
            if bits & (FTFYData.firstOf2 | FTFYData.firstOf3 | FTFYData.firstOf4) != 0,
               i == start || data.bits(text[i - 1]) & FTFYData.continuationStrict == 0 {
                var p = i
                while p < end {
                    let lead = data.bits(text[p])
                    func cont(_ k: Int) -> Bool { p + k < end && data.bits(text[p + k]) & FTFYData.continuation != 0 }
                    if lead & FTFYData.firstOf2 != 0 && cont(1) {
                        p += 2
                    } else if lead & FTFYData.firstOf3 != 0 && cont(1) && cont(2) {
                        p += 3
                    } else if lead & FTFYData.firstOf4 != 0 && cont(1) && cont(2) && cont(3) {
                        p += 4
                    } else {
                        break
                    }
                }
                if p > i { return i..<p }
            }
            i += 1
        }
        return nil
    }

    /// `ftfy.fixes.decode_inconsistent_utf8`: fix each UTF-8-looking run on its own.
    static func decodeInconsistentUTF8(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(text.count)
        var pos = 0
        while let match = findUTF8Mojibake(text[...], from: pos) {
            out.append(contentsOf: text[pos..<match.lowerBound])
            let substring = text[match]
            if substring.count < text.count && isBad(substring) {
                out.append(contentsOf: fixEncoding(Array(substring)))
            } else {
                out.append(contentsOf: substring)
            }
            pos = match.upperBound
        }
        out.append(contentsOf: text[pos...])
        return out
    }
}
