/// How transformers 5 (`CLIPTokenizer.from_pretrained`) decides the special and added tokens of a directory.
///
/// Observed behaviour, reproduced here (golden-tested on the variants in Tests/Fixtures/tokenizer/hf_variants):
/// 1. `added_tokens_decoder` in tokenizer_config.json, when present, fixes the added tokens it lists (ids and flags).
/// 2. Otherwise the `added_tokens` of tokenizer.json do.
/// 3. The named special tokens (bos, eos, unk, sep, pad, cls, mask; special_tokens_map.json overriding
///    tokenizer_config.json, CLIP's defaults `<|startoftext|>` / `<|endoftext|>` otherwise) whose text is not
///    covered by 1 or 2 are added too, in that order: a plain string is matched before normalisation, an
///    `AddedToken` dict uses its own flags, a string equal to an earlier *string* is skipped, and when several
///    entries share a text the last one's flags win.
/// The start and end ids are those of the bos and eos texts; padding uses the pad text's id.
struct TransformersSpecials {
    var start: Int32
    var end: Int32
    var pad: Int32
    var added: [CLIPAddedToken]

    private enum Named: Equatable {
        case plain(String)
        case token(String, normalized: Bool, lstrip: Bool, rstrip: Bool, singleWord: Bool)

        var content: String {
            switch self {
            case let .plain(s): return s
            case let .token(s, _, _, _, _): return s
            }
        }
    }

    private static func named(_ value: Any?) -> Named? {
        if let s = value as? String { return .plain(s) }
        if let d = value as? [String: Any], let content = d["content"] as? String {
            return .token(content, normalized: d["normalized"] as? Bool ?? !(d["special"] as? Bool ?? true),
                          lstrip: d["lstrip"] as? Bool ?? false, rstrip: d["rstrip"] as? Bool ?? false,
                          singleWord: d["single_word"] as? Bool ?? false)
        }
        return nil
    }

    static func resolve(_ raw: RawVocabulary) throws -> TransformersSpecials {
        let keys = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]
        let defaults: [String: String] = ["bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                          "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"]
        var values: [String: Named] = [:]
        for key in keys {
            if let v = named(raw.specialTokensMap?[key]) ?? named(raw.tokenizerConfig?[key]) {
                values[key] = v
            } else if let d = defaults[key] {
                values[key] = .plain(d)
            }
        }

        var added: [CLIPAddedToken] = []
        let configPath = raw.tokenizerConfigPath ?? raw.vocabularyPath
        if let decoder = raw.tokenizerConfig?["added_tokens_decoder"] as? [String: Any] {
            for (idText, value) in decoder {
                guard let id = Int(idText), let d = value as? [String: Any], let content = d["content"] as? String else {
                    throw TokenizerError.malformedJSON(path: configPath, reason: "added_tokens_decoder entry \"\(idText)\" lacks an integer id or a content")
                }
                added.append(VocabularyReader.addedToken(d, content: content, id: id, defaultNormalized: !(d["special"] as? Bool ?? false)))
            }
            added.sort { $0.id < $1.id }
        } else if let fromJSON = raw.tokenizerJSONAddedTokens {
            added = fromJSON
        }
        let fixed = Set(added.map(\.content))

        var list: [Named] = []
        for key in keys {
            guard let v = values[key] else { continue }
            if case .plain = v, list.contains(v) { continue }
            if case .token = v, list.contains(v) { continue }
            list.append(v)
        }
        var nextID = Int((raw.vocabulary.values.max() ?? -1)) + 1
        nextID = max(nextID, (added.map(\.id).max() ?? -1) + 1)
        var extra: [String: CLIPAddedToken] = [:]
        var extraOrder: [String] = []
        for v in list where !fixed.contains(v.content) && !v.content.isEmpty {
            let id: Int
            if let existing = extra[v.content] {
                id = existing.id
            } else if let inVocab = raw.vocabulary[v.content] {
                id = Int(inVocab)
                extraOrder.append(v.content)
            } else {
                id = nextID
                nextID += 1
                extraOrder.append(v.content)
            }
            switch v {
            case let .plain(s):
                extra[s] = CLIPAddedToken(id: id, content: s)
            case let .token(s, normalized, lstrip, rstrip, singleWord):
                extra[s] = CLIPAddedToken(id: id, content: s, normalized: normalized, lstrip: lstrip, rstrip: rstrip, singleWord: singleWord)
            }
        }
        added += extraOrder.compactMap { extra[$0] }

        func id(of key: String) throws -> Int32 {
            let content = values[key]!.content
            if let token = added.first(where: { $0.content == content }) { return Int32(token.id) }
            if let v = raw.vocabulary[content] { return v }
            throw TokenizerError.missingToken(path: configPath, token: content, reason: key)
        }
        return TransformersSpecials(start: try id(of: "bos_token"), end: try id(of: "eos_token"), pad: try id(of: "pad_token"), added: added)
    }
}
