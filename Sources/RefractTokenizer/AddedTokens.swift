/// tokenizers' added-token extraction: tokens are cut out of the text before the model sees it, first the
/// non-normalised ones from the raw text, then the normalised ones from each normalised remainder.
/// Matches are leftmost-longest and do not overlap (Aho-Corasick `LeftmostLongest` in tokenizers).
struct AddedTokenMatcher: Sendable {
    struct Token: Sendable {
        let scalars: [Unicode.Scalar]
        let id: Int32
        let lstrip: Bool
        let rstrip: Bool
        let singleWord: Bool
    }

    enum Segment {
        case text(ArraySlice<Unicode.Scalar>)
        case token(Int32)
    }

    let tokens: [Token]
    let firstScalars: Set<Unicode.Scalar>

    init(_ added: [CLIPAddedToken]) {
        tokens = added.filter { !$0.content.isEmpty }.map {
            Token(scalars: Array($0.content.unicodeScalars), id: Int32($0.id), lstrip: $0.lstrip, rstrip: $0.rstrip, singleWord: $0.singleWord)
        }
        firstScalars = Set(tokens.map { $0.scalars[0] })
    }

    var isEmpty: Bool { tokens.isEmpty }

    /// Rust `char::is_alphanumeric` (tokenizers' word test for `single_word`).
    private static func isWordCharacter(_ s: Unicode.Scalar) -> Bool {
        s.properties.isAlphabetic || UnicodeSupport.isNumber(s)
    }

    func split(_ text: ArraySlice<Unicode.Scalar>) -> [Segment] {
        guard !tokens.isEmpty, text.contains(where: { firstScalars.contains($0) }) else { return [.text(text)] }
        var segments: [Segment] = []
        let start = text.startIndex, end = text.endIndex
        var offset = start  // end of the previous token (start of pending text)
        var i = start
        while i < end {
            guard firstScalars.contains(text[i]) else { i += 1; continue }
            var best: Token?
            for token in tokens where token.scalars.count <= end - i && (best == nil || token.scalars.count > best!.scalars.count) {
                if text[i..<(i + token.scalars.count)].elementsEqual(token.scalars) { best = token }
            }
            guard let token = best else { i += 1; continue }
            var matchStart = i
            var matchEnd = i + token.scalars.count
            if token.singleWord {
                let before = matchStart > start && Self.isWordCharacter(text[matchStart - 1])
                let after = matchEnd < end && Self.isWordCharacter(text[matchEnd])
                if before || after { i = matchEnd; continue }  // the rejected match is still consumed
            }
            if token.lstrip {
                var k = matchStart
                while k > offset && text[k - 1].properties.isWhitespace { k -= 1 }
                matchStart = k
            }
            if token.rstrip {
                while matchEnd < end && text[matchEnd].properties.isWhitespace { matchEnd += 1 }
            }
            if offset < matchStart { segments.append(.text(text[offset..<matchStart])) }
            segments.append(.token(token.id))
            offset = matchEnd
            i = matchEnd
        }
        if offset < end { segments.append(.text(text[offset..<end])) }
        return segments
    }
}
