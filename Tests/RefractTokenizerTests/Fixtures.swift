import Foundation
import XCTest
@testable import RefractTokenizer

/// Access to Tests/Fixtures/tokenizer (written by scripts/fixtures/tokenizer.py).
enum Fixtures {
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("tokenizer")

    static func json(_ name: String) throws -> Any {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return try JSONSerialization.jsonObject(with: data)
    }

    struct Row {
        let label: String
        let text: String
        let expected: [Int32]
        let fields: [String: Any]
    }

    /// Rows of a golden file, with each row's padding restored to the full context length.
    static func rows(_ object: [String: Any], padID: Int) -> [Row] {
        let list = object["rows"] as! [[String: Any]]
        return list.map { r in
            let ids = (r["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let pad = (r["pad"] as! NSNumber).intValue
            return Row(label: r["label"] as! String, text: r["text"] as! String,
                       expected: ids + Array(repeating: Int32(padID), count: pad), fields: r)
        }
    }

    /// A text with control and non-ASCII characters escaped, for failure messages.
    static func show(_ text: String) -> String {
        var out = "\""
        for s in text.unicodeScalars {
            switch s.value {
            case 0x20..<0x7F where s != "\"" && s != "\\": out.unicodeScalars.append(s)
            default: out += String(format: "\\u{%X}", s.value)
            }
        }
        return out + "\""
    }

    /// A transformers-layout directory (vocab.json + merges.txt) derived from the bundled open_clip BPE file,
    /// as the fixture generator derives it.
    static func makeTransformersDirectory(in parent: URL, name: String) throws -> URL {
        let dir = parent.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let files = try standardFiles.get()
        try files.vocab.write(to: dir.appendingPathComponent("vocab.json"))
        try files.merges.write(to: dir.appendingPathComponent("merges.txt"))
        return dir
    }

    /// vocab.json and merges.txt contents, built once.
    private static let standardFiles = Result { () throws -> (vocab: Data, merges: Data) in
        let (vocab, merges) = try standardVocabulary()
        let vocabData = try JSONSerialization.data(withJSONObject: vocab.mapValues { Int($0) }, options: [.sortedKeys])
        let text = "#version: 0.2\n" + merges.map { "\($0.0) \($0.1)" }.joined(separator: "\n") + "\n"
        return (vocabData, Data(text.utf8))
    }

    static func standardVocabulary() throws -> ([String: Int32], [(String, String)]) {
        let raw = try VocabularyReader.read(.bundled, specials: ["<|startoftext|>", "<|endoftext|>"])
        return (raw.vocabulary, raw.merges)
    }

    /// A tokenizer.json around the standard vocabulary with the given added tokens.
    static func writeTokenizerJSON(to url: URL, addedTokens: Any) throws {
        let (vocab, merges) = try standardVocabulary()
        let root: [String: Any] = [
            "version": "1.0",
            "added_tokens": addedTokens,
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab.mapValues { Int($0) }, "merges": merges.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
        try JSONSerialization.data(withJSONObject: root).write(to: url)
    }

    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-tokenizer-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}
