/// ftfy's `BADNESS_RE` (ftfy/badness.py): sequences of characters that are far more likely to be mojibake than
/// intended text. `isBad` answers `BADNESS_RE.search(text) is not None`.
extension FTFY {
    /// Characters written literally in the rules below (marked in `FTFYData.classes` for a fast pre-check).
    static let badnessLiterals = "ŒœÂÃÎÐ€ŠšŸž\u{A0}\u{AD}®©°·»–—´×²³ØÙµà¹¼½¾√±∂†≠™≤≥¥ø≈¢‚ÄìîïòôúùûπâóäêвЂВГРСўβΆΒΓΞΟā¡£"

    /// Literal characters in the rules are all below this code point.
    static let literalLimit: UInt32 = 0x2300

    struct CharClass {
        var mask: UInt32 = 0
        /// Bit per code point below `literalLimit` for the characters written out in the rule.
        var literals = [UInt64](repeating: 0, count: Int(FTFY.literalLimit) / 64)
        var asciiLower = false
        var asciiUpper = false
        var pythonSpace = false
        var word = false
        var anyButNewline = false
        var notASCIILetter = false

        init(mask: UInt32 = 0, scalars: String = "") {
            self.mask = mask
            for s in scalars.unicodeScalars {
                precondition(s.value < FTFY.literalLimit)
                literals[Int(s.value >> 6)] |= 1 << UInt64(s.value & 63)
            }
        }

        @inline(__always)
        func matches(_ s: Unicode.Scalar, _ bits: UInt32) -> Bool {
            if bits & mask != 0 { return true }
            let v = s.value
            if v < FTFY.literalLimit && literals[Int(v >> 6)] & (1 << UInt64(v & 63)) != 0 { return true }
            if asciiLower && v >= 0x61 && v <= 0x7A { return true }
            if asciiUpper && v >= 0x41 && v <= 0x5A { return true }
            if notASCIILetter && !((v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A)) { return true }
            if anyButNewline && v != 0x0A { return true }
            if pythonSpace && UnicodeSupport.isPythonSpace(s) { return true }
            if word && UnicodeSupport.isPythonWordCharacter(s) { return true }
            return false
        }
    }

    struct Rule {
        var elements: [CharClass]
        /// Index of the one optional element (`\s?`), or -1.
        var optional = -1
        var anchored = false

        init(elements: [CharClass], optional: Int = -1, anchored: Bool = false) {
            self.elements = elements
            self.optional = optional
            self.anchored = anchored
        }

        /// Does the rule match at `i`, with the optional element present or skipped?
        @inline(__always)
        func matches(_ text: ArraySlice<Unicode.Scalar>, at i: Int, _ data: FTFYData) -> Bool {
            if matches(text, at: i, data, skip: -1) { return true }
            return optional >= 0 && matches(text, at: i, data, skip: optional)
        }

        @inline(__always)
        private func matches(_ text: ArraySlice<Unicode.Scalar>, at i: Int, _ data: FTFYData, skip: Int) -> Bool {
            var p = i
            for (k, cls) in elements.enumerated() where k != skip {
                guard p < text.endIndex else { return false }
                let s = text[p]
                if !cls.matches(s, data.bits(s)) { return false }
                p += 1
            }
            return true
        }
    }

    static let badnessRules: [Rule] = {
        typealias D = FTFYData
        func c(_ mask: UInt32, _ chars: String = "") -> CharClass { CharClass(mask: mask, scalars: chars) }
        func lit(_ chars: String) -> CharClass { c(0, chars) }
        func rule(_ elements: CharClass...) -> Rule { Rule(elements: elements) }
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
            Rule(elements: [lowerASCII, space, lit("ÃÂ"), lit(" ")], optional: 1),
            Rule(elements: [lit("ÃÂ"), lit(" ")], anchored: true),
            rule(lowerASCIIPunct, lit("Â"), c(D.startPunctuation | D.endPunctuation, " ")),
            rule(lit("β"), lit("€"), lit("™\u{A0}Ά\u{AD}®°")),
            rule(lit("ΒΓΞΟ"), c(D.c1 | D.bad | D.startPunctuation | D.endPunctuation | D.currency, "°"), lit("ΒΓΞΟ")),
            rule(lit("ā"), lit("€")),
        ]
    }()

    static func isBad(_ text: ArraySlice<Unicode.Scalar>) -> Bool {
        let data = FTFYData.shared
        // Every rule needs at least one character from ftfy's classes or the literal set.
        guard text.contains(where: { data.bits($0) & FTFYData.badnessBits != 0 }) else { return false }
        let rules = badnessRules
        for i in text.indices {
            for rule in rules {
                if rule.anchored && i != text.startIndex { continue }
                if rule.matches(text, at: i, data) { return true }
            }
        }
        return false
    }
}
