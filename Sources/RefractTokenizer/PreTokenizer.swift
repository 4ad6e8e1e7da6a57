/// The CLIP pre-tokenizer: a hand-written scanner equivalent to
///
///     <special>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
///
/// applied with `findall` (leftmost match, alternatives in order, unmatched characters skipped).
///
/// - open_clip (`regex` module, `re.IGNORECASE`): the specials are `<start_of_text>` and `<end_of_text>` and become
///   their token ids; matching ignores case, so `'ſ` (long s) is a contraction and U+0345 (which case-folds to ι)
///   falls in no class and is skipped like whitespace.
/// - transformers (tokenizers `Split` on Oniguruma, then the `ByteLevel` GPT-2 split): the specials are
///   `<|startoftext|>` and `<|endoftext|>` but are *not* special here; the GPT-2 split cuts each into
///   `<|`, the letters, and `|>`, which then go through BPE like any other piece.
struct PreTokenizer: Sendable {
    enum Piece: Equatable {
        /// A word for BPE: the half-open range in the scalar array.
        case word(Range<Int>)
        /// A special token recognised by the pattern (open_clip only).
        case special(Int32)
    }

    let caseInsensitive: Bool
    let skipsYpogegrammeni: Bool
    /// (literal, id) for open_clip; ids are nil for transformers (the literal is split and BPE-encoded).
    let specials: [([Unicode.Scalar], Int32?)]

    static func openCLIP(start: Int32, end: Int32) -> PreTokenizer {
        PreTokenizer(caseInsensitive: true, skipsYpogegrammeni: true,
                     specials: [(Array("<start_of_text>".unicodeScalars), start), (Array("<end_of_text>".unicodeScalars), end)])
    }

    static let transformers = PreTokenizer(caseInsensitive: false, skipsYpogegrammeni: false,
                                           specials: [(Array("<|startoftext|>".unicodeScalars), nil), (Array("<|endoftext|>".unicodeScalars), nil)])

    @inline(__always)
    private func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 {
            return !UnicodeSupport.isRegexSpace(s) && !UnicodeSupport.isLetter(s) && !UnicodeSupport.isNumber(s)
        }
        if skipsYpogegrammeni && s.value == 0x345 { return false }
        return !UnicodeSupport.isRegexSpace(s) && !UnicodeSupport.isLetter(s) && !UnicodeSupport.isNumber(s)
    }

    /// Does `s` match the pattern's ASCII letter `c` (case-insensitively for open_clip)?
    @inline(__always)
    private func matches(_ s: Unicode.Scalar, _ c: Unicode.Scalar) -> Bool {
        if s == c { return true }
        guard caseInsensitive else { return false }
        if s.value >= 0x41 && s.value <= 0x5A && s.value + 32 == c.value { return true }
        // The only non-ASCII character whose simple case folding is an ASCII letter used in the pattern
        // (k, whose Kelvin sign would fold to it, does not occur in the pattern).
        return c == "s" && s.value == 0x17F
    }

    private func matchesLiteral(_ text: [Unicode.Scalar], at i: Int, _ literal: [Unicode.Scalar]) -> Bool {
        guard i + literal.count <= text.count else { return false }
        for (k, c) in literal.enumerated() where !matches(text[i + k], c) { return false }
        return true
    }

    func split(_ text: [Unicode.Scalar], into pieces: inout [Piece]) {
        let n = text.count
        var i = 0
        scan: while i < n {
            let s = text[i]
            if s == "<" {
                for (literal, id) in specials where matchesLiteral(text, at: i, literal) {
                    let range = i..<(i + literal.count)
                    if let id {
                        // Only the exact (lower-case) spelling is in open_clip's cache of special tokens;
                        // a case-insensitive match such as "<ſtart_of_text>" is one piece for BPE.
                        pieces.append(text[range].elementsEqual(literal) ? .special(id) : .word(range))
                    } else {
                        // GPT-2 regex inside ByteLevel: "<|", letters, "|>".
                        let m = literal.count
                        pieces.append(.word(i..<(i + 2)))
                        pieces.append(.word((i + 2)..<(i + m - 2)))
                        pieces.append(.word((i + m - 2)..<(i + m)))
                    }
                    i += literal.count
                    continue scan
                }
            }
            if s == "'" && i + 1 < n {
                let a = text[i + 1]
                if matches(a, "s") || matches(a, "t") || matches(a, "m") || matches(a, "d") {
                    // 's 't come before 're 've 'm 'll 'd in the pattern, but no two alternatives share a prefix
                    // beyond the apostrophe except through their first letter, so order does not matter here.
                    pieces.append(.word(i..<(i + 2)))
                    i += 2
                    continue
                }
                if i + 2 < n {
                    let b = text[i + 2]
                    if (matches(a, "r") && matches(b, "e")) || (matches(a, "v") && matches(b, "e")) || (matches(a, "l") && matches(b, "l")) {
                        pieces.append(.word(i..<(i + 3)))
                        i += 3
                        continue
                    }
                }
            }
            if UnicodeSupport.isLetter(s) {
                var j = i + 1
                while j < n && UnicodeSupport.isLetter(text[j]) { j += 1 }
                pieces.append(.word(i..<j))
                i = j
            } else if UnicodeSupport.isNumber(s) {
                pieces.append(.word(i..<(i + 1)))
                i += 1
            } else if isPunctuation(s) {
                var j = i + 1
                while j < n && isPunctuation(text[j]) { j += 1 }
                pieces.append(.word(i..<j))
                i = j
            } else {
                i += 1  // whitespace (and, for open_clip, U+0345)
            }
        }
    }
}
