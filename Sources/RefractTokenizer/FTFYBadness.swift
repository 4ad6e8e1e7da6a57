/// ftfy's `BADNESS_RE` (ftfy/badness.py): sequences of characters that are far more likely to be mojibake than
/// intended text. `isBad` answers `BADNESS_RE.search(text) is not None`.
extension FTFY {
    /// Characters written literally in the rules below (marked in `FTFYData.classes` for a fast pre-check).
    static let badnessLiterals = "ŒœÂÃÎÐ€ŠšŸž\u{A0}\u{AD}®©°·»–—´×²³ØÙµà¹¼½¾√±∂†≠™≤≥¥ø≈¢‚ÄìîïòôúùûπâóäêвЂВГРСўβΆΒΓΞΟā¡£"

    struct CharClass {
        var mask: UInt32 = 0
        var scalars: [UInt32] = []
        var asciiLower = false
        var asciiUpper = false
        var pythonSpace = false
        var word = false
        var anyButNewline = false
        var notASCIILetter = false

        @inline(__always)
        func matches(_ s: Unicode.Scalar, _ bits: UInt32) -> Bool {
            if bits & mask != 0 { return true }
            let v = s.value
            if asciiLower && v >= 0x61 && v <= 0x7A { return true }
            if asciiUpper && v >= 0x41 && v <= 0x5A { return true }
            if notASCIILetter && !((v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A)) { return true }
            if anyButNewline && v != 0x0A { return true }
            if pythonSpace && UnicodeSupport.isPythonSpace(s) { return true }
            if word && UnicodeSupport.isPythonWordCharacter(s) { return true }
            return scalars.contains(v)
        }
    }

    struct Rule {
        var elements: [(CharClass, optional: Bool)]
        var anchored = false
    }

    static let badnessRules: [Rule] = {
        typealias D = FTFYData
        func c(_ mask: UInt32, _ chars: String = "") -> CharClass {
            CharClass(mask: mask, scalars: chars.unicodeScalars.map(\.value))
        }
        func lit(_ chars: String) -> CharClass { c(0, chars) }
        func rule(_ elements: CharClass...) -> Rule { Rule(elements: elements.map { ($0, false) }) }
        var asciiLetter = CharClass(); asciiLetter.asciiLower = true; asciiLetter.asciiUpper = true
        var lowerASCII = CharClass(); lowerASCII.asciiLower = true
        var space = CharClass(); space.pythonSpace = true
        var word = CharClass(); word.word = true
        var any = CharClass(); any.anyButNewline = true
        var notLetter = CharClass(); notLetter.notASCIILetter = true

        let accented = D.lowerAccented | D.upperAccented
        var lowerASCIIPunct = c(D.endPunctuation, ".,?!"); lowerASCIIPunct.asciiLower = true
        var lettersOrSpace = lit(" "); lettersOrSpace.asciiLower = true; lettersOrSpace.asciiUpper = true
        let arabic = c(D.common | D.currency | D.bad | D.numeric | D.startPunctuation, "ŸŠ®°µ»")

        return [
            rule(c(D.c1)),
            rule(c(D.bad | accented | D.box | D.startPunctuation | D.endPunctuation | D.currency | D.numeric | D.law), c(D.bad)),
            rule(asciiLetter, c(D.lowerCommon | D.upperCommon), c(D.bad)),
            rule(c(D.bad), c(accented | D.box | D.startPunctuation | D.endPunctuation | D.currency | D.numeric | D.law)),
            rule(c(D.lowerAccented | D.lowerCommon | D.box | D.endPunctuation | D.currency | D.numeric), c(D.upperAccented)),
            rule(c(D.box | D.endPunctuation | D.currency | D.numeric), c(D.lowerAccented)),
            rule(c(D.lowerAccented | D.box | D.endPunctuation), c(D.currency)),
            rule(space, c(D.upperAccented), c(D.currency)),
            rule(c(D.upperAccented | D.box), c(D.numeric | D.law)),
            rule(c(accented | D.box | D.currency | D.endPunctuation), c(D.startPunctuation), c(D.numeric)),
            rule(c(accented | D.currency | D.numeric | D.box | D.law), c(D.endPunctuation), c(D.startPunctuation)),
            rule(c(D.currency | D.numeric | D.box), c(D.startPunctuation)),
            rule(lowerASCII, c(D.upperAccented), c(D.startPunctuation | D.currency)),
            rule(c(D.box), c(D.kaomoji)),
            rule(c(accented | D.currency | D.numeric | D.startPunctuation | D.endPunctuation | D.law), c(D.box)),
            rule(c(D.box), c(D.endPunctuation)),
            rule(c(accented), c(D.startPunctuation | D.endPunctuation), word),
            rule(lit("Œœ"), notLetter),
            rule(c(D.upperAccented), lit("°")),
            rule(lit("ÂÃÎÐ"), c(D.startPunctuation | D.endPunctuation, "€œŠš¢£Ÿž\u{A0}\u{AD}®©°·»–—´")),
            rule(lit("×"), lit("²³")),
            rule(lit("ØÙ"), arabic, lit("ØÙ"), arabic),
            rule(lit("à"), lit("²µ¹¼½¾")),
            rule(lit("√"), lit("±∂†≠®™´≤≥¥µø")),
            rule(lit("≈"), lit("°¢")),
            rule(lit("‚"), lit("Ä"), lit("ìîïòôúùû†°¢π")),
            rule(lit("‚"), lit("âó"), lit("àä°ê")),
            rule(lit("в"), lit("Ђ")),
            rule(lit("ВГРС"), c(D.c1 | D.bad | D.startPunctuation | D.endPunctuation | D.currency, "°µ"), lit("ВГРС")),
            rule(lit("Г"), lit("ў"), lit("В"), lit("Ђ"), lit("В"), any, lettersOrSpace),
            rule(lit("Ã"), lit("\u{A0}¡")),
            Rule(elements: [(lowerASCII, false), (space, true), (lit("ÃÂ"), false), (lit(" "), false)]),
            Rule(elements: [(lit("ÃÂ"), false), (lit(" "), false)], anchored: true),
            rule(lowerASCIIPunct, lit("Â"), c(D.startPunctuation | D.endPunctuation, " ")),
            rule(lit("β"), lit("€"), lit("™\u{A0}Ά\u{AD}®°")),
            rule(lit("ΒΓΞΟ"), c(D.c1 | D.bad | D.startPunctuation | D.endPunctuation | D.currency, "°"), lit("ΒΓΞΟ")),
            rule(lit("ā"), lit("€")),
        ]
    }()

    private static func matchRule(_ elements: ArraySlice<(CharClass, optional: Bool)>, _ text: ArraySlice<Unicode.Scalar>, at i: Int, _ data: FTFYData) -> Bool {
        guard let (cls, optional) = elements.first else { return true }
        let rest = elements.dropFirst()
        if i < text.endIndex && cls.matches(text[i], data.bits(text[i])) && matchRule(rest, text, at: i + 1, data) {
            return true
        }
        return optional && matchRule(rest, text, at: i, data)
    }

    static func isBad(_ text: ArraySlice<Unicode.Scalar>) -> Bool {
        let data = FTFYData.shared
        // Every rule needs at least one character from ftfy's classes or the literal set.
        guard text.contains(where: { data.bits($0) & FTFYData.badnessBits != 0 }) else { return false }
        let rules = badnessRules
        for i in text.indices {
            for rule in rules {
                if rule.anchored && i != text.startIndex { continue }
                if matchRule(rule.elements[...], text, at: i, data) { return true }
            }
        }
        return false
    }
}
