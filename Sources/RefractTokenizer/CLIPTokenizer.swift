import Foundation

/// Which reference library's CLIP tokenizer to reproduce. Use the flavour of the library the checkpoint
/// comes from; docs/Tokenizer.md lists every difference.
public enum CLIPTokenizerFlavour: String, Sendable, CaseIterable, Codable {
    /// open_clip's `SimpleTokenizer` (`open_clip.tokenize`, `open_clip.get_tokenizer('ViT-B-16')`):
    /// ftfy.fix_text, html.unescape twice, whitespace clean-up, lower case; pads with 0.
    case openCLIP
    /// transformers' `CLIPTokenizer` / `CLIPTokenizerFast` (version 5, backed by tokenizers): NFC, whitespace
    /// runs to one space, lower case, added tokens such as `<|endoftext|>` cut out first; pads with the
    /// configured pad token (usually `<|endoftext|>`, 49407).
    case transformers
}

/// Token rows ready for a text encoder.
public struct CLIPTokenizedBatch: Sendable, Equatable {
    /// Tokens per row (the context length).
    public let contextLength: Int
    /// One row per text, each exactly `contextLength` long: start token, BPE ids, end token, padding.
    public let rows: [[Int32]]
    /// Per row, the index of the first end token: where both references' text encoders pool
    /// (open_clip `argmax` of the ids, transformers the first `eos_token_id`).
    public let eotIndices: [Int]

    /// The rows concatenated, row-major (`rows.count` x `contextLength`).
    public var flattened: [Int32] { rows.flatMap { $0 } }
}

/// The CLIP byte-level BPE tokenizer, reproducing open_clip or transformers exactly.
///
/// A value type over a shared, thread-safe model: copies are cheap and can be used from any thread.
public struct CLIPTokenizer: Sendable {
    public let flavour: CLIPTokenizerFlavour
    /// `<start_of_text>` / `<|startoftext|>` (49406 in CLIP's vocabulary).
    public let startToken: Int
    /// `<end_of_text>` / `<|endoftext|>` (49407).
    public let endToken: Int
    /// The padding id: 0 for open_clip, the pad token's id for transformers (usually 49407).
    public let padToken: Int
    /// Tokens cut out of the text before BPE (transformers only; empty for open_clip).
    public let addedTokens: [CLIPAddedToken]
    /// The default row length of CLIP text encoders.
    public static let defaultContextLength = 77

    let model: BPEModel
    let preTokenizer: PreTokenizer
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher

    /// Number of entries in the vocabulary (49,408 for CLIP), not counting added tokens outside it.
    public var vocabularySize: Int { model.vocabularySize }

    /// Builds a tokenizer of the given flavour from a vocabulary source.
    ///
    /// For `.openCLIP` the start and end tokens are `<start_of_text>` and `<end_of_text>` (or, in a
    /// transformers vocabulary, `<|startoftext|>` and `<|endoftext|>`) and padding is 0; configuration files in
    /// a directory are ignored. For `.transformers`, special and pad tokens follow the directory's
    /// tokenizer_config.json / special_tokens_map.json / tokenizer.json as transformers 5 reads them.
    public init(flavour: CLIPTokenizerFlavour, vocabulary source: CLIPVocabularySource = .bundled) throws {
        if source == .bundled, let shared = try Self.sharedBundled(flavour) {
            self = shared
            return
        }
        try self.init(uncachedFlavour: flavour, source: source)
    }

    private init(uncachedFlavour flavour: CLIPTokenizerFlavour, source: CLIPVocabularySource) throws {
        self.flavour = flavour
        switch flavour {
        case .openCLIP:
            // ftfy's tables and the HTML5 entities are needed by every open_clip encode: fail here, not later.
            _ = try FTFYData.loaded.get()
            _ = try PythonHTML.loaded.get()
            let raw = try VocabularyReader.read(source, specials: ["<start_of_text>", "<end_of_text>"])
            model = try BPEModel(vocabulary: raw.vocabulary, merges: raw.merges, path: raw.vocabularyPath, mergesPath: raw.mergesPath)
            func find(_ names: [String]) throws -> Int32 {
                for name in names { if let id = raw.vocabulary[name] { return id } }
                throw TokenizerError.missingToken(path: raw.vocabularyPath, token: names[0], reason: "open_clip special token")
            }
            let start = try find(["<start_of_text>", "<|startoftext|>"])
            let end = try find(["<end_of_text>", "<|endoftext|>"])
            startToken = Int(start)
            endToken = Int(end)
            padToken = 0
            addedTokens = []
            preTokenizer = .openCLIP(start: start, end: end)
            rawMatcher = AddedTokenMatcher([])
            normalizedMatcher = AddedTokenMatcher([])
        case .transformers:
            let raw = try VocabularyReader.read(source, specials: ["<|startoftext|>", "<|endoftext|>"])
            model = try BPEModel(vocabulary: raw.vocabulary, merges: raw.merges, path: raw.vocabularyPath, mergesPath: raw.mergesPath)
            let specials = try TransformersSpecials.resolve(raw)
            startToken = Int(specials.start)
            endToken = Int(specials.end)
            padToken = Int(specials.pad)
            addedTokens = specials.added
            preTokenizer = .transformers
            rawMatcher = AddedTokenMatcher(specials.added.filter { !$0.normalized })
            normalizedMatcher = AddedTokenMatcher(specials.added.filter { $0.normalized })
        }
    }

    private static let bundledOpenCLIP = Result { try CLIPTokenizer(uncachedFlavour: .openCLIP, source: .bundled) }
    private static let bundledTransformers = Result { try CLIPTokenizer(uncachedFlavour: .transformers, source: .bundled) }

    private static func sharedBundled(_ flavour: CLIPTokenizerFlavour) throws -> CLIPTokenizer? {
        switch flavour {
        case .openCLIP: return try bundledOpenCLIP.get()
        case .transformers: return try bundledTransformers.get()
        }
    }

    /// open_clip's default tokenizer (the bundled vocabulary; loaded once and shared).
    public static func openCLIPDefault() throws -> CLIPTokenizer {
        try CLIPTokenizer(flavour: .openCLIP)
    }

    /// transformers' CLIPTokenizer on the standard CLIP vocabulary (the bundled one; loaded once and shared).
    public static func transformersDefault() throws -> CLIPTokenizer {
        try CLIPTokenizer(flavour: .transformers)
    }

    // MARK: normalisation

    /// The text the pre-tokenizer sees. open_clip: `whitespace_clean(basic_clean(text)).lower()`.
    /// transformers: the backend normaliser (NFC, `\s+` -> " ", lower case) applied to the whole text
    /// (added tokens are cut out before normalising when encoding, so `encode` may differ around them).
    public func normalize(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        switch flavour {
        case .openCLIP: return UnicodeSupport.string(Self.openCLIPClean(scalars))
        case .transformers: return UnicodeSupport.string(Self.transformersNormalize(scalars[...]))
        }
    }

    /// open_clip `_clean_lower`: ftfy.fix_text, html.unescape twice, strip, split/join on whitespace, lower().
    static func openCLIPClean(_ input: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var text = FTFY.fixText(input)
        text = PythonHTML.unescape(PythonHTML.unescape(text))
        // " ".join(text.split()) (this also strips).
        var joined: [Unicode.Scalar] = []
        joined.reserveCapacity(text.count)
        var pendingSpace = false
        for s in text {
            if UnicodeSupport.isPythonSpace(s) {
                pendingSpace = !joined.isEmpty
            } else {
                if pendingSpace { joined.append(" "); pendingSpace = false }
                joined.append(s)
            }
        }
        return UnicodeSupport.pythonLower(joined)
    }

    /// tokenizers' normaliser for CLIP: NFC, then `\s+` -> " ", then per-character lower case.
    static func transformersNormalize(_ input: ArraySlice<Unicode.Scalar>) -> [Unicode.Scalar] {
        let composed = UnicodeSupport.nfc(Array(input))
        var collapsed: [Unicode.Scalar] = []
        collapsed.reserveCapacity(composed.count)
        var inSpace = false
        for s in composed {
            if UnicodeSupport.isRegexSpace(s) {
                if !inSpace { collapsed.append(" ") }
                inSpace = true
            } else {
                collapsed.append(s)
                inSpace = false
            }
        }
        return UnicodeSupport.rustLowercase(collapsed)
    }

    // MARK: encoding

    /// The BPE ids of a text, without start and end tokens (open_clip `SimpleTokenizer.encode`; transformers
    /// `encode(text, add_special_tokens=False)`).
    public func encode(_ text: String) -> [Int] {
        encodeIDs(text).map(Int.init)
    }

    func encodeIDs(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        var pieces: [PreTokenizer.Piece] = []
        let scalars = Array(text.unicodeScalars)
        switch flavour {
        case .openCLIP:
            encodeNormalized(Self.openCLIPClean(scalars), pieces: &pieces, into: &ids)
        case .transformers:
            for segment in rawMatcher.split(scalars[...]) {
                switch segment {
                case let .token(id):
                    ids.append(id)
                case let .text(raw):
                    let normalized = Self.transformersNormalize(raw)
                    for inner in normalizedMatcher.split(normalized[...]) {
                        switch inner {
                        case let .token(id): ids.append(id)
                        case let .text(t): encodeNormalized(Array(t), pieces: &pieces, into: &ids)
                        }
                    }
                }
            }
        }
        return ids
    }

    private func encodeNormalized(_ text: [Unicode.Scalar], pieces: inout [PreTokenizer.Piece], into ids: inout [Int32]) {
        pieces.removeAll(keepingCapacity: true)
        preTokenizer.split(text, into: &pieces)
        var bytes: [UInt8] = []
        for piece in pieces {
            switch piece {
            case let .special(id):
                ids.append(id)
            case let .word(range):
                bytes.removeAll(keepingCapacity: true)
                for s in text[range] { Self.appendUTF8(s, to: &bytes) }
                model.encodeWord(bytes, into: &ids)
            }
        }
    }

    @inline(__always)
    static func appendUTF8(_ s: Unicode.Scalar, to bytes: inout [UInt8]) {
        let v = s.value
        switch v {
        case 0..<0x80:
            bytes.append(UInt8(v))
        case 0x80..<0x800:
            bytes.append(UInt8(0xC0 | (v >> 6)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        case 0x800..<0x10000:
            bytes.append(UInt8(0xE0 | (v >> 12)))
            bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        default:
            bytes.append(UInt8(0xF0 | (v >> 18)))
            bytes.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        }
    }

    // MARK: rows

    /// One padded row: start token, ids, end token; longer texts are cut so that the end token stays last
    /// (both references keep the first `contextLength - 2` BPE ids).
    public func tokenize(_ text: String, contextLength: Int = CLIPTokenizer.defaultContextLength) -> [Int32] {
        precondition(contextLength >= 2, "contextLength must leave room for the start and end tokens")
        let ids = encodeIDs(text)
        var row = [Int32]()
        row.reserveCapacity(contextLength)
        row.append(Int32(startToken))
        row.append(contentsOf: ids.prefix(contextLength - 2))
        row.append(Int32(endToken))
        row.append(contentsOf: repeatElement(Int32(padToken), count: contextLength - row.count))
        return row
    }

    /// Padded rows, one per text (open_clip `tokenize(texts, context_length)`; transformers
    /// `tokenizer(texts, padding="max_length", max_length=contextLength, truncation=True)["input_ids"]`).
    public func tokenize(_ texts: [String], contextLength: Int = CLIPTokenizer.defaultContextLength) -> [[Int32]] {
        precondition(contextLength >= 2, "contextLength must leave room for the start and end tokens")
        var rows = [[Int32]](repeating: [], count: texts.count)
        let workers = texts.count >= 256 ? min(ProcessInfo.processInfo.activeProcessorCount, 8) : 1
        if workers <= 1 {
            for (i, text) in texts.enumerated() { rows[i] = tokenize(text, contextLength: contextLength) }
            return rows
        }
        let chunk = (texts.count + workers - 1) / workers
        rows.withUnsafeMutableBufferPointer { buffer in
            let base = UnsafeMutableSendableBuffer(buffer)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let lower = w * chunk
                let upper = min(texts.count, lower + chunk)
                guard lower < upper else { return }
                for i in lower..<upper { base.buffer[i] = tokenize(texts[i], contextLength: contextLength) }
            }
        }
        return rows
    }

    /// Padded rows plus the index of each row's end token.
    public func tokenizeBatch(_ texts: [String], contextLength: Int = CLIPTokenizer.defaultContextLength) -> CLIPTokenizedBatch {
        let rows = tokenize(texts, contextLength: contextLength)
        return CLIPTokenizedBatch(contextLength: contextLength, rows: rows,
                                  eotIndices: rows.map { Self.eotIndex(of: $0, endToken: endToken) })
    }

    /// Index of the first end token in a row (its last index if there is none).
    public static func eotIndex(of row: [Int32], endToken: Int) -> Int {
        row.firstIndex(of: Int32(endToken)) ?? max(0, row.count - 1)
    }

    /// Index of the first end token in a row of this tokenizer.
    public func eotIndex(of row: [Int32]) -> Int {
        Self.eotIndex(of: row, endToken: endToken)
    }

    // MARK: decoding

    /// The text of some ids (open_clip `decode`): byte-level symbols back to UTF-8 (invalid sequences become
    /// U+FFFD) with each `</w>` replaced by a space. Start tokens are skipped and decoding stops at the first end
    /// token, so a padded row decodes to its text.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            if id == endToken { break }
            if id == startToken { continue }
            guard let token = model.idToToken[Int32(truncatingIfNeeded: id)] ?? addedTokens.first(where: { $0.id == id })?.content else { continue }
            var rest = Substring(token)
            var endsWord = false
            if rest.hasSuffix("</w>") { rest = rest.dropLast(4); endsWord = true }
            for s in rest.unicodeScalars {
                if let b = ByteLevel.byte(for: s) { bytes.append(b) } else { Self.appendUTF8(s, to: &bytes) }
            }
            if endsWord { bytes.append(0x20) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Decodes a padded row (see `decode(_:)`).
    public func decode(_ row: [Int32]) -> String {
        decode(row.map(Int.init))
    }
}

/// A buffer pointer that the concurrent workers write disjoint elements of.
private struct UnsafeMutableSendableBuffer<T>: @unchecked Sendable {
    let buffer: UnsafeMutableBufferPointer<T>
    init(_ buffer: UnsafeMutableBufferPointer<T>) { self.buffer = buffer }
}
