/// Character classes and case/normalisation helpers shared by both flavours.
///
/// The Swift runtime's Unicode tables agree with the reference libraries' (Python's `regex` module and
/// `unicodedata`, Oniguruma and Rust inside `tokenizers`) on every code point assigned in Unicode 14;
/// `Tests/RefractTokenizerTests/UnicodeTablesTests.swift` checks this against tables dumped from them.
enum UnicodeSupport {
    @inline(__always)
    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 {
            let v = s.value | 0x20
            return v >= 0x61 && v <= 0x7A
        }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    @inline(__always)
    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `\s` of Python's `regex` module and of Oniguruma: the Unicode White_Space property.
    @inline(__always)
    static func isRegexSpace(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value == 0x20 || (s.value >= 0x09 && s.value <= 0x0D) }
        return s.properties.isWhitespace
    }

    /// Python's `str.isspace()` (used by `str.split()` and `str.strip()`): White_Space plus U+001C...U+001F,
    /// which Python counts as whitespace because of their bidirectional class.
    @inline(__always)
    static func isPythonSpace(_ s: Unicode.Scalar) -> Bool {
        if s.value >= 0x1C && s.value <= 0x1F { return true }
        return isRegexSpace(s)
    }

    /// `\d` of Python's `re` on str patterns: general category Nd.
    @inline(__always)
    static func isDecimalDigit(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return s.value >= 0x30 && s.value <= 0x39 }
        return s.properties.generalCategory == .decimalNumber
    }

    /// `\w` of Python's `re` on str patterns: `str.isalnum()` or `_`.
    @inline(__always)
    static func isPythonWordCharacter(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 {
            return isLetter(s) || isNumber(s) || s == "_"
        }
        return isLetter(s) || s.properties.numericType != nil
    }

    /// Python's `str.lower()`: full lower-case mappings, with the Final_Sigma rule for U+03A3.
    static func pythonLower(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count)
        for (i, s) in scalars.enumerated() {
            if s.value < 0x80 {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 32)! : s)
            } else if s.value == 0x3A3 {
                out.append(isFinalSigma(scalars, at: i) ? "\u{3C2}" : "\u{3C3}")
            } else {
                appendLowercase(s, to: &out)
            }
        }
        return out
    }

    /// Rust's `char::to_lowercase` applied per character (tokenizers' `Lowercase` normaliser): full mappings,
    /// no context (U+03A3 always becomes U+03C3).
    static func rustLowercase(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count)
        for s in scalars {
            if s.value < 0x80 {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 32)! : s)
            } else {
                appendLowercase(s, to: &out)
            }
        }
        return out
    }

    @inline(__always)
    private static func appendLowercase(_ s: Unicode.Scalar, to out: inout [Unicode.Scalar]) {
        let properties = s.properties
        if !properties.changesWhenLowercased {
            out.append(s)
        } else {
            out.append(contentsOf: properties.lowercaseMapping.unicodeScalars)
        }
    }

    /// CPython's Final_Sigma test: preceded by a cased letter (skipping case-ignorables) and not followed by one.
    private static func isFinalSigma(_ scalars: [Unicode.Scalar], at i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && scalars[j].properties.isCaseIgnorable { j -= 1 }
        guard j >= 0 && scalars[j].properties.isCased else { return false }
        var k = i + 1
        while k < scalars.count && scalars[k].properties.isCaseIgnorable { k += 1 }
        return k == scalars.count || !scalars[k].properties.isCased
    }

    /// Canonical composition (NFC), via the Swift runtime's normaliser.
    static func nfc(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        // Everything below U+0300 is NFC_Quick_Check=Yes and never combines with what follows it.
        if scalars.allSatisfy({ $0.value < 0x300 }) { return scalars }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        let bytes = String(view)._nfcCodeUnits
        return Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
    }

    static func string(_ scalars: [Unicode.Scalar]) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    static func string<C: Collection>(_ scalars: C) -> String where C.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }
}
