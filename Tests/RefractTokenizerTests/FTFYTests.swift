import Foundation
import XCTest
@testable import RefractTokenizer

final class FTFYTests: XCTestCase {
    func testDocumentedExamples() {
        XCTAssertEqual(FTFY.fixText("âœ” No problems"), "✔ No problems")
        XCTAssertEqual(FTFY.fixText("&macr;\\_(ã\u{83}\u{84})_/&macr;"), "¯\\_(ツ)_/¯")
        XCTAssertEqual(FTFY.fixText("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"), "Broken text… it's flubberific!")
        XCTAssertEqual(FTFY.fixText("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES")
        XCTAssertEqual(FTFY.fixText("sÃ³"), "só")
        XCTAssertEqual(FTFY.fixText("voilÃ le travail"), "voilà le travail")
        XCTAssertEqual(FTFY.fixText("â€œ like this â€\u{FFFD}"), "\" like this \u{FFFD}")
        XCTAssertEqual(FTFY.fixText("\u{1B}[36;44mI'm blue\u{1B}[0m"), "I'm blue")
        XCTAssertEqual(FTFY.fixText("P&EACUTE;REZ"), "PÉREZ")
        XCTAssertEqual(FTFY.fixText("&ntilde; &Ntilde; &NTILDE; &nTILDE;"), "ñ Ñ Ñ &nTILDE;")
        XCTAssertEqual(FTFY.fixText("this&not that"), "this&not that")
        XCTAssertEqual(FTFY.fixText("<b>&amp;</b>"), "<b>&amp;</b>", "a literal < turns HTML unescaping off")
        XCTAssertEqual(FTFY.fixText("a &amp; b\n<i>&amp;</i>\nc &amp; d"), "a & b\n<i>&amp;</i>\nc &amp; d")
        XCTAssertEqual(FTFY.fixText("cafe\u{301}"), "café")
        XCTAssertEqual(FTFY.fixText("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd")
        XCTAssertEqual(FTFY.fixText("\u{FEFF}x\u{0}\u{7F}"), "x")
    }

    func testBadness() {
        XCTAssertTrue(FTFY.isBad("cafÃ©"))
        XCTAssertTrue(FTFY.isBad("â€œ"))
        XCTAssertFalse(FTFY.isBad("café"))
        XCTAssertFalse(FTFY.isBad("a photo of a cat"))
        XCTAssertFalse(FTFY.isBad("猫の写真"))
    }

    func testPythonHTMLUnescape() {
        XCTAssertEqual(PythonHTML.unescape("&amp;amp;"), "&amp;")
        XCTAssertEqual(PythonHTML.unescape("&ampx &notit; &copy2020"), "&x ¬it; ©2020")
        XCTAssertEqual(PythonHTML.unescape("&#65;&#x42;&#X43"), "ABC")
        XCTAssertEqual(PythonHTML.unescape("&#0;&#128;&#1;&#xD800;&#x110000;"), "\u{FFFD}€\u{FFFD}\u{FFFD}")
        XCTAssertEqual(PythonHTML.unescape("&#99999999999999999999999;"), "\u{FFFD}")
        XCTAssertEqual(PythonHTML.unescape("& &; &#; &#x;"), "& &; &#; &#x;")
        XCTAssertEqual(PythonHTML.unescape("&unknownentity;"), "&unknownentity;")
    }

    func testUpperCaseEntitiesMatchFTFY() throws {
        let expected = try Fixtures.json("ftfy_entities_upper.json") as! [String: String]
        XCTAssertGreaterThan(expected.count, 500)
        let html5Keys = Set(PythonHTML.entities.keys.map { "&" + $0 })
        let ours = FTFY.entities.filter { !html5Keys.contains($0.key) }.mapValues { UnicodeSupport.string($0) }
        XCTAssertEqual(ours.count, expected.count)
        for (key, value) in expected { XCTAssertEqual(ours[key], value, key) }
    }

    func testUTF8Variants() {
        // CESU-8 for U+1F600 and Java's NUL.
        let cesu: [UInt8] = [0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80]
        XCTAssertEqual(UTF8Decoding.decode(cesu, variants: true), ["\u{1F600}"])
        XCTAssertNil(UTF8Decoding.decode(cesu, variants: false))
        XCTAssertEqual(UTF8Decoding.decode([0x61, 0xC0, 0x80], variants: true), ["a", "\u{0}"])
        XCTAssertNil(UTF8Decoding.decode([0xC0, 0x80], variants: false))
        XCTAssertNil(UTF8Decoding.decode([0xE0, 0x80, 0x80], variants: false), "overlong")
        XCTAssertNil(UTF8Decoding.decode([0xF4, 0x90, 0x80, 0x80], variants: false), "above U+10FFFF")
        XCTAssertNil(UTF8Decoding.decode([0xC3], variants: false), "truncated")
        XCTAssertEqual(UTF8Decoding.decode([0xED, 0x9F, 0xBF], variants: false), ["\u{D7FF}"])
    }
}
