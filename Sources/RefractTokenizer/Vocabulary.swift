import Foundation
import RefractTensor
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a tokenizer's vocabulary comes from.
public enum CLIPVocabularySource: Sendable, Equatable {
    /// open_clip's `bpe_simple_vocab_16e6` merges, bundled with this package (the vocabulary of every OpenAI and
    /// LAION CLIP checkpoint).
    case bundled
    /// A decompressed open_clip BPE file (`bpe_simple_vocab_16e6.txt`: a header line, then one merge per line).
    /// As open_clip does, only the first 48,894 merges are used.
    case openCLIPBPE(URL)
    /// A transformers-layout `vocab.json` and `merges.txt`.
    case vocabAndMerges(vocab: URL, merges: URL)
    /// A tokenizers `tokenizer.json` (BPE model; its `added_tokens` are honoured).
    case tokenizerJSON(URL)
    /// A model directory: `tokenizer.json`, or `vocab.json` + `merges.txt`, plus the optional
    /// `tokenizer_config.json` and `special_tokens_map.json` (special tokens, pad token) that transformers reads.
    case directory(URL)
}

/// A token matched in the text before BPE (transformers' "added tokens", e.g. `<|endoftext|>`).
public struct CLIPAddedToken: Sendable, Equatable, CustomStringConvertible {
    public var id: Int
    public var content: String
    /// Matched in the normalised (NFC, lower-cased) text rather than in the raw text.
    public var normalized: Bool
    /// Whitespace before / after a match is swallowed with it.
    public var lstrip: Bool
    public var rstrip: Bool
    /// Only matched as a whole word.
    public var singleWord: Bool

    public init(id: Int, content: String, normalized: Bool = false, lstrip: Bool = false, rstrip: Bool = false, singleWord: Bool = false) {
        self.id = id
        self.content = content
        self.normalized = normalized
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.singleWord = singleWord
    }

    public var description: String {
        "\(content)=\(id)\(normalized ? " normalized" : "")\(lstrip ? " lstrip" : "")\(rstrip ? " rstrip" : "")\(singleWord ? " single_word" : "")"
    }
}

/// Number of merges open_clip's SimpleTokenizer reads from its BPE file (`49152 - 256 - 2`).
let openCLIPMergeCount = 48_894

/// Everything read from disk, before the flavour-specific assembly.
struct RawVocabulary {
    var vocabulary: [String: Int32]
    var merges: [(String, String)]
    var vocabularyPath: String
    var mergesPath: String
    /// True when the vocabulary was derived from an open_clip merges file (ids in open_clip's order).
    var derivedFromMerges: Bool
    /// `added_tokens` of a tokenizer.json, if one was read.
    var tokenizerJSONAddedTokens: [CLIPAddedToken]?
    /// tokenizer_config.json and special_tokens_map.json contents, if present.
    var tokenizerConfig: [String: Any]?
    var tokenizerConfigPath: String?
    var specialTokensMap: [String: Any]?
}

enum VocabularyReader {
    // MARK: files

    static func readData(_ url: URL) throws -> Data {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw TokenizerError.fileNotFound(path: path)
        }
        // Refused by type before it is opened: a named pipe would block the read forever.
        var st = stat()
        if stat(path, &st) == 0, let problem = InputFile.typeProblem(mode: st.st_mode) {
            throw TokenizerError.unreadable(path: path, reason: problem)
        }
        do {
            return try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadable(path: path, reason: "\(error.localizedDescription)")
        }
    }

    static func readText(_ url: URL) throws -> String {
        let data = try readData(url)
        if data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B {
            throw TokenizerError.compressed(path: url.path)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError.unreadable(path: url.path, reason: "not valid UTF-8")
        }
        return text
    }

    static func readJSONObject(_ url: URL) throws -> [String: Any] {
        let data = try readData(url)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw TokenizerError.malformedJSON(path: url.path, reason: jsonErrorReason(error))
        }
        guard let dict = object as? [String: Any] else {
            throw TokenizerError.malformedJSON(path: url.path, reason: "the top level is not an object")
        }
        return dict
    }

    private static func jsonErrorReason(_ error: Error) -> String {
        let ns = error as NSError
        if let detail = ns.userInfo["NSDebugDescription"] as? String { return detail }
        return ns.localizedDescription
    }

    /// Splits text into lines on "\n" (a trailing "\r" is removed, as Python's text mode would).
    static func lines(_ text: String) -> [Substring] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? line.dropLast() : line
        }
    }

    // MARK: open_clip merges file

    /// Reads an open_clip BPE file: line 0 is a header, lines 1...48,894 are merges.
    static func openCLIPMerges(text: String, path: String) throws -> [(String, String)] {
        let all = lines(text)
        guard all.count > 1 else {
            throw TokenizerError.malformedMerges(path: path, line: 1, text: all.first.map(String.init) ?? "")
        }
        let used = all[1..<min(all.count, openCLIPMergeCount + 1)]
        var merges: [(String, String)] = []
        merges.reserveCapacity(used.count)
        for (offset, line) in used.enumerated() {
            // Python's str.split(): runs of whitespace, no empty parts.
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.isEmpty && offset == used.count - 1 { break }  // a file that ends early with a newline
            guard parts.count == 2 else {
                throw TokenizerError.malformedMerges(path: path, line: offset + 2, text: String(line))
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        return merges
    }

    /// open_clip's vocabulary: the 256 byte symbols (in `bytes_to_unicode` order), the same with `</w>`,
    /// one token per merge, then the two special tokens.
    static func vocabulary(fromMerges merges: [(String, String)], specials: [String]) -> [String: Int32] {
        var order: [String] = []
        order.reserveCapacity(512 + merges.count + specials.count)
        var printable: [Int] = []
        var other: [Int] = []
        for b in 0..<256 {
            if ByteLevel.table[b].value == UInt32(b) { printable.append(b) } else { other.append(b) }
        }
        let byteOrder = printable + other
        for b in byteOrder { order.append(String(Character(ByteLevel.table[b]))) }
        for b in byteOrder { order.append(String(Character(ByteLevel.table[b])) + "</w>") }
        for (a, b) in merges { order.append(a + b) }
        order.append(contentsOf: specials)
        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(order.count)
        for (i, token) in order.enumerated() { vocabulary[token] = Int32(i) }  // later duplicates win, as in Python
        return vocabulary
    }

    // MARK: transformers files

    static func vocabJSON(_ url: URL) throws -> [String: Int32] {
        let object = try readJSONObject(url)
        return try vocabulary(from: object, path: url.path, what: "vocab.json")
    }

    static func vocabulary(from object: [String: Any], path: String, what: String) throws -> [String: Int32] {
        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(object.count)
        for (token, value) in object {
            guard let number = value as? NSNumber, // (Linux bridges ids 0 and 1 to Bool, so no Bool check)
                  let id = Int32(exactly: number.doubleValue), id >= 0 else {
                throw TokenizerError.malformedJSON(path: path, reason: "\(what): the id of \"\(token)\" is not a non-negative integer")
            }
            vocabulary[token] = id
        }
        if vocabulary.isEmpty {
            throw TokenizerError.malformedJSON(path: path, reason: "\(what) is empty")
        }
        return vocabulary
    }

    /// A transformers merges.txt: an optional "#version" header, then "left right" per line.
    static func mergesTXT(_ url: URL) throws -> [(String, String)] {
        let text = try readText(url)
        var merges: [(String, String)] = []
        let all = lines(text)
        for (index, line) in all.enumerated() {
            if line.hasPrefix("#version") { continue }
            if line.isEmpty && index == all.count - 1 { continue }  // final newline
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.malformedMerges(path: url.path, line: index + 1, text: String(line))
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        if merges.isEmpty {
            throw TokenizerError.malformedMerges(path: url.path, line: 1, text: all.first.map(String.init) ?? "")
        }
        return merges
    }

    /// A tokenizers tokenizer.json with a BPE model.
    static func tokenizerJSON(_ url: URL) throws -> (vocabulary: [String: Int32], merges: [(String, String)], added: [CLIPAddedToken]) {
        let path = url.path
        let root = try readJSONObject(url)
        guard let model = root["model"] as? [String: Any] else {
            throw TokenizerError.malformedJSON(path: path, reason: "no \"model\" object")
        }
        if let type = model["type"] as? String, type != "BPE" {
            throw TokenizerError.unsupported(path: path, reason: "model type \(type), CLIP uses BPE")
        }
        if let suffix = model["end_of_word_suffix"] as? String, suffix != "</w>" {
            throw TokenizerError.unsupported(path: path, reason: "end_of_word_suffix \"\(suffix)\", CLIP uses \"</w>\"")
        }
        guard let vocabObject = model["vocab"] as? [String: Any] else {
            throw TokenizerError.malformedJSON(path: path, reason: "model.vocab is not an object")
        }
        let vocabulary = try self.vocabulary(from: vocabObject, path: path, what: "model.vocab")
        guard let mergeList = model["merges"] as? [Any] else {
            throw TokenizerError.malformedJSON(path: path, reason: "model.merges is not an array")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(mergeList.count)
        for (i, item) in mergeList.enumerated() {
            if let s = item as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw TokenizerError.malformedMerges(path: path, line: i + 1, text: s)
                }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = item as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                merges.append((a, b))
            } else {
                throw TokenizerError.malformedJSON(path: path, reason: "model.merges[\(i)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
        var added: [CLIPAddedToken] = []
        if let list = root["added_tokens"] as? [Any] {
            for (i, item) in list.enumerated() {
                guard let d = item as? [String: Any], let content = d["content"] as? String,
                      let idNumber = d["id"] as? NSNumber, let id = Int(exactly: idNumber.doubleValue) else {
                    throw TokenizerError.malformedJSON(path: path, reason: "added_tokens[\(i)] lacks a content or id")
                }
                added.append(addedToken(d, content: content, id: id, defaultNormalized: !(d["special"] as? Bool ?? false)))
            }
        }
        return (vocabulary, merges, added)
    }

    static func addedToken(_ d: [String: Any], content: String, id: Int, defaultNormalized: Bool) -> CLIPAddedToken {
        CLIPAddedToken(id: id, content: content,
                       normalized: d["normalized"] as? Bool ?? defaultNormalized,
                       lstrip: d["lstrip"] as? Bool ?? false,
                       rstrip: d["rstrip"] as? Bool ?? false,
                       singleWord: d["single_word"] as? Bool ?? false)
    }

    // MARK: sources

    static func bundledMergesURL() throws -> URL {
        guard let url = Bundle.module.url(forResource: "bpe_simple_vocab_16e6", withExtension: "txt") else {
            throw TokenizerError.missingResource(name: "bpe_simple_vocab_16e6.txt", reason: "not found in the RefractTokenizer bundle")
        }
        return url
    }

    /// Reads a source. `specials` are the names given to the start and end tokens when the vocabulary is
    /// derived from an open_clip merges file.
    static func read(_ source: CLIPVocabularySource, specials: [String]) throws -> RawVocabulary {
        switch source {
        case .bundled:
            let url = try bundledMergesURL()
            let merges = try openCLIPMerges(text: try readText(url), path: url.path)
            return RawVocabulary(vocabulary: vocabulary(fromMerges: merges, specials: specials), merges: merges,
                                 vocabularyPath: url.path, mergesPath: url.path, derivedFromMerges: true)
        case let .openCLIPBPE(url):
            let merges = try openCLIPMerges(text: try readText(url), path: url.path)
            return RawVocabulary(vocabulary: vocabulary(fromMerges: merges, specials: specials), merges: merges,
                                 vocabularyPath: url.path, mergesPath: url.path, derivedFromMerges: true)
        case let .vocabAndMerges(vocabURL, mergesURL):
            return RawVocabulary(vocabulary: try vocabJSON(vocabURL), merges: try mergesTXT(mergesURL),
                                 vocabularyPath: vocabURL.path, mergesPath: mergesURL.path, derivedFromMerges: false)
        case let .tokenizerJSON(url):
            let parsed = try tokenizerJSON(url)
            return RawVocabulary(vocabulary: parsed.vocabulary, merges: parsed.merges, vocabularyPath: url.path,
                                 mergesPath: url.path, derivedFromMerges: false, tokenizerJSONAddedTokens: parsed.added)
        case let .directory(dir):
            let fm = FileManager.default
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: dir.path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw TokenizerError.fileNotFound(path: dir.path)
            }
            let tj = dir.appendingPathComponent("tokenizer.json")
            let vocab = dir.appendingPathComponent("vocab.json")
            let merges = dir.appendingPathComponent("merges.txt")
            let bpe = dir.appendingPathComponent("bpe_simple_vocab_16e6.txt")
            var raw: RawVocabulary
            if fm.fileExists(atPath: tj.path) {
                raw = try read(.tokenizerJSON(tj), specials: specials)
            } else if fm.fileExists(atPath: vocab.path) || fm.fileExists(atPath: merges.path) {
                raw = try read(.vocabAndMerges(vocab: vocab, merges: merges), specials: specials)
            } else if fm.fileExists(atPath: bpe.path) {
                raw = try read(.openCLIPBPE(bpe), specials: specials)
            } else {
                throw TokenizerError.missingFiles(directory: dir.path, expected: ["tokenizer.json", "vocab.json + merges.txt", "bpe_simple_vocab_16e6.txt"])
            }
            let config = dir.appendingPathComponent("tokenizer_config.json")
            if fm.fileExists(atPath: config.path) {
                raw.tokenizerConfig = try readJSONObject(config)
                raw.tokenizerConfigPath = config.path
            }
            let map = dir.appendingPathComponent("special_tokens_map.json")
            if fm.fileExists(atPath: map.path) {
                raw.specialTokensMap = try readJSONObject(map)
            }
            return raw
        }
    }
}
