import Foundation
import XCTest
@testable import RefractTokenizer

final class ErrorTests: XCTestCase {
    private var tmp: URL!

    override func setUpWithError() throws { tmp = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    private func write(_ text: String, _ name: String) throws -> URL {
        let url = tmp.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    private func expectError(_ source: CLIPVocabularySource, flavour: CLIPTokenizerFlavour = .transformers,
                             file: StaticString = #filePath, line: UInt = #line, _ check: (TokenizerError) -> Bool) {
        do {
            _ = try CLIPTokenizer(flavour: flavour, vocabulary: source)
            XCTFail("expected an error", file: file, line: line)
        } catch let error as TokenizerError {
            XCTAssertTrue(check(error), "unexpected error: \(error)", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix("TokenizerError: "), file: file, line: line)
        } catch {
            XCTFail("not a TokenizerError: \(error)", file: file, line: line)
        }
    }

    func testMissingFiles() throws {
        let missing = tmp.appendingPathComponent("nope.json")
        expectError(.vocabAndMerges(vocab: missing, merges: missing)) { $0 == .fileNotFound(path: missing.path) }
        expectError(.tokenizerJSON(missing)) { $0 == .fileNotFound(path: missing.path) }
        expectError(.openCLIPBPE(missing), flavour: .openCLIP) { $0 == .fileNotFound(path: missing.path) }
        expectError(.directory(tmp)) {
            if case let .missingFiles(dir, _) = $0 { return dir == self.tmp.path }
            return false
        }
        XCTAssertTrue(TokenizerError.fileNotFound(path: "/x/vocab.json").description.contains("/x/vocab.json"))
        // A named pipe or a device where the vocabulary belongs: refused by type, never read (a FIFO would block).
        let fifo = tmp.appendingPathComponent("vocab-fifo.json")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        expectError(.tokenizerJSON(fifo)) { $0 == .unreadable(path: fifo.path, reason: "is a named pipe (FIFO), not a regular file") }
        let device = URL(fileURLWithPath: "/dev/zero")
        expectError(.openCLIPBPE(device), flavour: .openCLIP) { $0 == .unreadable(path: "/dev/zero", reason: "is a character device, not a regular file") }
    }

    func testMalformedVocabJSON() throws {
        let merges = try write("#version: 0.2\na b\n", "merges.txt")
        let bad = try write("{\"a\": 1,", "vocab.json")
        expectError(.vocabAndMerges(vocab: bad, merges: merges)) {
            if case let .malformedJSON(path, _) = $0 { return path == bad.path }
            return false
        }
        let array = try write("[1, 2]", "array.json")
        expectError(.vocabAndMerges(vocab: array, merges: merges)) {
            if case let .malformedJSON(path, reason) = $0 { return path == array.path && reason.contains("not an object") }
            return false
        }
        let wrongID = try write("{\"a\": \"one\"}", "wrongid.json")
        expectError(.vocabAndMerges(vocab: wrongID, merges: merges)) {
            if case let .malformedJSON(path, reason) = $0 { return path == wrongID.path && reason.contains("\"a\"") }
            return false
        }
    }

    func testMalformedMerges() throws {
        let dir = try Fixtures.makeTransformersDirectory(in: tmp, name: "m")
        let vocab = dir.appendingPathComponent("vocab.json")
        let merges = try write("#version: 0.2\ni n\nthree parts here\n", "bad_merges.txt")
        expectError(.vocabAndMerges(vocab: vocab, merges: merges)) {
            $0 == .malformedMerges(path: merges.path, line: 3, text: "three parts here")
        }
        let unknown = try write("#version: 0.2\ni n\n\u{2603}\u{2603} zz\n", "unknown_merges.txt")
        expectError(.vocabAndMerges(vocab: vocab, merges: unknown)) {
            if case let .missingToken(path, token, _) = $0 { return path == unknown.path && token == "\u{2603}\u{2603}" }
            return false
        }
        let bpe = try write("header\ni n\nonlyone\n", "bpe.txt")
        expectError(.openCLIPBPE(bpe), flavour: .openCLIP) { $0 == .malformedMerges(path: bpe.path, line: 3, text: "onlyone") }
    }

    func testVocabularyWithoutByteSymbols() throws {
        let dir = try Fixtures.makeTransformersDirectory(in: tmp, name: "v")
        let merges = dir.appendingPathComponent("merges.txt")
        let vocab = try write("{\"a\": 0, \"b\": 1}", "small_vocab.json")
        expectError(.vocabAndMerges(vocab: vocab, merges: merges)) {
            if case let .missingToken(path, _, reason) = $0 { return path == vocab.path && reason.contains("byte") }
            return false
        }
    }

    func testTokenizerJSONProblems() throws {
        let notBPE = try write("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "wp.json")
        expectError(.tokenizerJSON(notBPE)) {
            if case let .unsupported(path, reason) = $0 { return path == notBPE.path && reason.contains("WordPiece") }
            return false
        }
        let noModel = try write("{}", "nomodel.json")
        expectError(.tokenizerJSON(noModel)) {
            if case let .malformedJSON(path, reason) = $0 { return path == noModel.path && reason.contains("model") }
            return false
        }
        let badMerges = try write("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}", "badmerges.json")
        expectError(.tokenizerJSON(badMerges)) {
            if case let .malformedJSON(path, reason) = $0 { return path == badMerges.path && reason.contains("merges[0]") }
            return false
        }
    }

    func testCompressedFile() throws {
        let url = tmp.appendingPathComponent("bpe_simple_vocab_16e6.txt.gz")
        try Data([0x1F, 0x8B, 0x08, 0x00]).write(to: url)
        expectError(.openCLIPBPE(url), flavour: .openCLIP) { $0 == .compressed(path: url.path) }
    }

    func testMissingSpecialToken() throws {
        let dir = try Fixtures.makeTransformersDirectory(in: tmp, name: "s")
        let config = #"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "added_tokens_decoder": {"5": {"content": "x"}}, "pad_token": {"content": "<|endoftext|>"}}"#
        try config.write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try CLIPTokenizer(flavour: .transformers, vocabulary: .directory(dir)))
        try "{\"added_tokens_decoder\": {\"x\": {}}}".write(to: dir.appendingPathComponent("tokenizer_config.json"), atomically: true, encoding: .utf8)
        expectError(.directory(dir)) {
            if case let .malformedJSON(path, reason) = $0 { return path.hasSuffix("tokenizer_config.json") && reason.contains("added_tokens_decoder") }
            return false
        }
    }
}
