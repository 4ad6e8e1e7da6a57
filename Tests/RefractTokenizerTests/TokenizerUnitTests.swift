import Foundation
import XCTest
@testable import RefractTokenizer

final class TokenizerUnitTests: XCTestCase {
    func testByteTable() {
        let table = ByteLevel.table
        XCTAssertEqual(table.count, 256)
        XCTAssertEqual(Set(table).count, 256, "the table is a bijection")
        XCTAssertEqual(table[0x21], "!")
        XCTAssertEqual(table[0x7E], "~")
        XCTAssertEqual(table[0xA1], "¡")
        XCTAssertEqual(table[0xAC], "¬")
        XCTAssertEqual(table[0xAE], "®")
        XCTAssertEqual(table[0xFF], "ÿ")
        // The 68 other bytes go to U+0100... in byte order: 0x00 first, space is the 33rd, 0xAD the last.
        XCTAssertEqual(table[0x00].value, 0x100)
        XCTAssertEqual(table[0x20].value, 0x120)  // "Ġ"
        XCTAssertEqual(table[0x7F].value, 0x121)
        XCTAssertEqual(table[0x80].value, 0x122)
        XCTAssertEqual(table[0xA0].value, 0x142)
        XCTAssertEqual(table[0xAD].value, 0x143)
        for b in 0..<256 { XCTAssertEqual(ByteLevel.byte(for: table[b]), UInt8(b)) }
        XCTAssertEqual(ByteLevel.encode("é "), "Ã©Ġ")
    }

    func testVocabularyLayout() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        XCTAssertEqual(t.vocabularySize, 49408)
        XCTAssertEqual(t.startToken, 49406)
        XCTAssertEqual(t.endToken, 49407)
        XCTAssertEqual(t.padToken, 0)
        XCTAssertEqual(t.model.tokenToID["!"], 0)
        XCTAssertEqual(t.model.tokenToID["!</w>"], 256)
        XCTAssertEqual(t.model.tokenToID["<start_of_text>"], 49406)
        let h = try CLIPTokenizer.transformersDefault()
        XCTAssertEqual(h.startToken, 49406)
        XCTAssertEqual(h.endToken, 49407)
        XCTAssertEqual(h.padToken, 49407)
        XCTAssertEqual(h.model.tokenToID["<|endoftext|>"], 49407)
    }

    /// Words checked by hand against the merges file: "t h" is merge 1 (id 512+1), "th e</w>" merge 6
    /// (id 518), "i n</w>" merge 18 (id 530); a single character is its `</w>` symbol.
    func testBPEOfWords() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        XCTAssertEqual(t.model.tokenToID["th"], 513)
        XCTAssertEqual(t.encode("the"), [518])
        XCTAssertEqual(t.encode("in"), [530])
        XCTAssertEqual(t.encode("a"), [320])
        XCTAssertEqual(t.encode("x"), [343])
        XCTAssertEqual(t.encode("!"), [256])
        XCTAssertEqual(t.encode("hello"), [3306])
        XCTAssertEqual(t.encode("tokenization"), [32634, 10847])  // "token" + "ization</w>"
        XCTAssertEqual(t.encode("é"), [4166])  // "Ã©</w>"
        XCTAssertEqual(t.encode("猫"), [163, 234, 360])  // three bytes, no merges across them
        XCTAssertEqual(t.encode("a photo of a cat"), [320, 1125, 539, 320, 2368])
        XCTAssertEqual(t.decode(t.encode("a photo of a cat")), "a photo of a cat ")
        XCTAssertEqual(t.decode(t.tokenize("Hello, world! 猫")), "hello , world ! 猫 ")
        let h = try CLIPTokenizer.transformersDefault()
        XCTAssertEqual(h.decode(h.tokenize("Hello, world! 猫")), "hello , world ! 猫 ")
    }

    func testPaddingAndEOT() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        let row = t.tokenize("a cat")
        XCTAssertEqual(row.count, 77)
        XCTAssertEqual(Array(row.prefix(4)), [49406, 320, 2368, 49407])
        XCTAssertTrue(row.dropFirst(4).allSatisfy { $0 == 0 })
        XCTAssertEqual(t.eotIndex(of: row), 3)
        let h = try CLIPTokenizer.transformersDefault()
        let hrow = h.tokenize("a cat")
        XCTAssertEqual(Array(hrow.prefix(4)), [49406, 320, 2368, 49407])
        XCTAssertTrue(hrow.dropFirst(4).allSatisfy { $0 == 49407 })
        XCTAssertEqual(h.eotIndex(of: hrow), 3)
        XCTAssertEqual(t.tokenize(""), [49406, 49407] + Array(repeating: 0, count: 75))
        let batch = t.tokenizeBatch(["a", "a cat", ""], contextLength: 5)
        XCTAssertEqual(batch.rows, [[49406, 320, 49407, 0, 0], [49406, 320, 2368, 49407, 0], [49406, 49407, 0, 0, 0]])
        XCTAssertEqual(batch.eotIndices, [2, 3, 1])
        XCTAssertEqual(batch.flattened.count, 15)
    }

    func testTruncationKeepsEndTokenLast() throws {
        for t in [try CLIPTokenizer.openCLIPDefault(), try CLIPTokenizer.transformersDefault()] {
            for n in [74, 75, 76, 77, 200] {
                let text = Array(repeating: "a", count: n).joined(separator: " ")
                let row = t.tokenize(text)
                XCTAssertEqual(row.count, 77)
                XCTAssertEqual(row[0], 49406)
                let kept = min(n, 75)
                XCTAssertEqual(Array(row[1...kept]), Array(repeating: 320, count: kept))
                XCTAssertEqual(row[kept + 1], 49407)
                XCTAssertEqual(t.eotIndex(of: row), kept + 1)
            }
            let short = t.tokenize("a photo of a cat", contextLength: 4)
            XCTAssertEqual(short, [49406, 320, 1125, 49407])
            XCTAssertEqual(t.tokenize("a photo", contextLength: 2), [49406, 49407])
        }
    }

    func testLiteralSpecialTokens() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        XCTAssertEqual(t.encode("x <END_OF_TEXT> y"), [343, 49407, 344])
        XCTAssertEqual(t.tokenizeBatch(["a<end_of_text>b"]).eotIndices, [2])
        let h = try CLIPTokenizer.transformersDefault()
        XCTAssertEqual(h.encode("x<|endoftext|>y"), [343, 49407, 344])
        XCTAssertEqual(h.encode("<|ENDOFTEXT|>"), [27, 347, 40786, 4160, 91, 285])
    }

    func testParallelBatchMatchesSequential() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        let texts = (0..<300).map { "a photo of thing number \($0) with café and ÃŸ \($0 % 7)" }
        let batch = t.tokenize(texts)
        XCTAssertEqual(batch, texts.map { t.tokenize($0) })
    }

    func testNormalizeFlavours() throws {
        let t = try CLIPTokenizer.openCLIPDefault()
        XCTAssertEqual(t.normalize("  Caf&eacute;\tÃ©  “Quoted”  ΟΔΟΣ "), "café é \"quoted\" οδος")
        let h = try CLIPTokenizer.transformersDefault()
        XCTAssertEqual(h.normalize("  Caf&eacute;\tÃ©  “Quoted”  ΟΔΟΣ "), " caf&eacute; ã© “quoted” οδοσ ")
    }
}
