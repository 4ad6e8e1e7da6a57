import Foundation

/// Python's `html.unescape` (CPython 3.11 `html/__init__.py`, HTML5 rules): named references from the HTML5
/// table, with or without `;` for the legacy names, the longest known prefix of an unknown name, decimal and
/// hexadecimal references with the HTML5 replacements for invalid code points.
public enum PythonHTML {
    /// The HTML5 named character references (`html.entities.html5`), keyed without the leading `&`,
    /// e.g. `"amp;"` and `"amp"`.
    public static var entities: [String: String] { data }

    /// The bundled table, or why it could not be read (checked when an open_clip tokenizer is created).
    static let loaded = Result { () throws -> [String: String] in
        let name = "html5_entities.json"
        guard let url = Bundle.module.url(forResource: "html5_entities", withExtension: "json") else {
            throw TokenizerError.missingResource(name: name, reason: "not found in the RefractTokenizer bundle")
        }
        guard let bytes = try? Data(contentsOf: url),
              let table = try? JSONSerialization.jsonObject(with: bytes) as? [String: String] else {
            throw TokenizerError.missingResource(name: name, reason: "unreadable or not a JSON object of strings")
        }
        return table
    }

    static var data: [String: String] {
        switch loaded {
        case let .success(data): return data
        case let .failure(error): fatalError("\(error)")
        }
    }

    /// Replacements for numeric references to C1 controls and NUL/CR (HTML5 "invalid charrefs").
    static let invalidCharrefs: [UInt32: Unicode.Scalar] = [
        0x00: "\u{FFFD}", 0x0D: "\r", 0x80: "\u{20AC}", 0x81: "\u{81}", 0x82: "\u{201A}", 0x83: "\u{192}",
        0x84: "\u{201E}", 0x85: "\u{2026}", 0x86: "\u{2020}", 0x87: "\u{2021}", 0x88: "\u{2C6}", 0x89: "\u{2030}",
        0x8A: "\u{160}", 0x8B: "\u{2039}", 0x8C: "\u{152}", 0x8D: "\u{8D}", 0x8E: "\u{17D}", 0x8F: "\u{8F}",
        0x90: "\u{90}", 0x91: "\u{2018}", 0x92: "\u{2019}", 0x93: "\u{201C}", 0x94: "\u{201D}", 0x95: "\u{2022}",
        0x96: "\u{2013}", 0x97: "\u{2014}", 0x98: "\u{2DC}", 0x99: "\u{2122}", 0x9A: "\u{161}", 0x9B: "\u{203A}",
        0x9C: "\u{153}", 0x9D: "\u{9D}", 0x9E: "\u{17E}", 0x9F: "\u{178}",
    ]

    /// Code points that a numeric reference turns into nothing.
    static func isInvalidCodePoint(_ v: UInt64) -> Bool {
        if (0x1...0x8).contains(v) || (0xE...0x1F).contains(v) || (0x7F...0x9F).contains(v) || (0xFDD0...0xFDEF).contains(v) { return true }
        if v == 0xB { return true }
        return v <= 0x10FFFF && (v & 0xFFFE) == 0xFFFE
    }

    public static func unescape(_ text: String) -> String {
        guard text.utf8.contains(UInt8(ascii: "&")) else { return text }
        return UnicodeSupport.string(unescape(Array(text.unicodeScalars)))
    }

    @inline(__always)
    private static func isASCIIDigit(_ s: Unicode.Scalar) -> Bool { s.value >= 0x30 && s.value <= 0x39 }

    @inline(__always)
    private static func hexValue(_ s: Unicode.Scalar) -> UInt64? {
        switch s.value {
        case 0x30...0x39: return UInt64(s.value - 0x30)
        case 0x41...0x46: return UInt64(s.value - 0x41 + 10)
        case 0x61...0x66: return UInt64(s.value - 0x61 + 10)
        default: return nil
        }
    }

    /// A numeric reference's replacement (CPython `_replace_charref`, numeric branch).
    static func numericReplacement(_ value: UInt64, into out: inout [Unicode.Scalar]) {
        if value <= 0x9F, let r = invalidCharrefs[UInt32(value)] {
            out.append(r)
        } else if (0xD800...0xDFFF).contains(value) || value > 0x10FFFF {
            out.append("\u{FFFD}")
        } else if isInvalidCodePoint(value) {
            return
        } else {
            out.append(Unicode.Scalar(UInt32(value))!)
        }
    }

    static func unescape(_ s: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard s.contains("&") else { return s }
        let table = data
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        let n = s.count
        var i = 0
        while i < n {
            let c = s[i]
            guard c == "&", i + 1 < n else { out.append(c); i += 1; continue }
            let j = i + 1
            if s[j] == "#" {
                // #[0-9]+;?  |  #[xX][0-9a-fA-F]+;?
                var k = j + 1
                var value: UInt64 = 0
                let saturate: UInt64 = 0x7FFF_FFFF
                if k < n && isASCIIDigit(s[k]) {
                    while k < n && isASCIIDigit(s[k]) {
                        value = min(saturate, value * 10 + UInt64(s[k].value - 0x30))
                        k += 1
                    }
                } else if k + 1 < n && (s[k] == "x" || s[k] == "X") && hexValue(s[k + 1]) != nil {
                    k += 1
                    while k < n, let h = hexValue(s[k]) {
                        value = min(saturate, value * 16 + h)
                        k += 1
                    }
                } else {
                    out.append(c)  // "&#" followed by neither: no match here (the name branch cannot start with '#')
                    i += 1
                    continue
                }
                if k < n && s[k] == ";" { k += 1 }
                numericReplacement(value, into: &out)
                i = k
                continue
            }
            // [^\t\n\f <&#;]{1,32};?
            var k = j
            while k < n && k - j < 32 && !isNameStop(s[k]) { k += 1 }
            guard k > j else { out.append(c); i += 1; continue }
            if k < n && s[k] == ";" { k += 1 }
            let name = s[j..<k]
            if let value = table[UnicodeSupport.string(name)] {
                out.append(contentsOf: value.unicodeScalars)
            } else {
                var replaced = false
                var x = name.count - 1
                while x > 1 {
                    if let value = table[UnicodeSupport.string(name.prefix(x))] {
                        out.append(contentsOf: value.unicodeScalars)
                        out.append(contentsOf: name.dropFirst(x))
                        replaced = true
                        break
                    }
                    x -= 1
                }
                if !replaced {
                    out.append("&")
                    out.append(contentsOf: name)
                }
            }
            i = k
        }
        return out
    }

    @inline(__always)
    private static func isNameStop(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case "\t", "\n", "\u{0C}", " ", "<", "&", "#", ";": return true
        default: return false
        }
    }
}
