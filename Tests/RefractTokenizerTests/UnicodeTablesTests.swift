import Foundation
import XCTest
@testable import RefractTokenizer

/// The Swift runtime's Unicode data against the reference libraries' (dumped by the fixture generator), over
/// every code point assigned in Python's Unicode version (14.0). Newer characters are out of scope
/// (docs/Tokenizer.md).
final class UnicodeTablesTests: XCTestCase {
    private var tables: [String: Any] = [:]

    override func setUpWithError() throws {
        tables = try Fixtures.json("unicode_tables.json") as! [String: Any]
    }

    private func codePoints(_ key: String) -> Set<UInt32> {
        var out = Set<UInt32>()
        for r in tables[key] as! [[NSNumber]] {
            for v in r[0].uint32Value...r[1].uint32Value { out.insert(v) }
        }
        return out
    }

    private var assigned: [Unicode.Scalar] {
        codePoints("assigned").sorted().compactMap(Unicode.Scalar.init)
    }

    private func check(_ key: String, _ predicate: (Unicode.Scalar) -> Bool) {
        let reference = codePoints(key)
        let differing = assigned.filter { predicate($0) != reference.contains($0.value) }
        XCTAssertTrue(differing.isEmpty, "\(key): \(differing.count) code points differ, e.g. \(differing.prefix(8).map { String($0.value, radix: 16) })")
    }

    func testCharacterClasses() {
        check("regex_L", UnicodeSupport.isLetter)
        check("onig_L", UnicodeSupport.isLetter)
        check("regex_N", UnicodeSupport.isNumber)
        check("onig_N", UnicodeSupport.isNumber)
        check("regex_s", UnicodeSupport.isRegexSpace)
        check("onig_s", UnicodeSupport.isRegexSpace)
        check("python_isspace", UnicodeSupport.isPythonSpace)
    }

    private func checkMap(_ key: String, _ transform: ([Unicode.Scalar]) -> [Unicode.Scalar]) {
        var reference: [UInt32: [UInt32]] = [:]
        for entry in tables[key] as! [[Any]] {
            reference[(entry[0] as! NSNumber).uint32Value] = (entry[1] as! [NSNumber]).map(\.uint32Value)
        }
        var differing: [String] = []
        for s in assigned {
            let expected = reference[s.value] ?? [s.value]
            let got = transform([s]).map(\.value)
            if got != expected { differing.append(String(s.value, radix: 16)) }
        }
        XCTAssertTrue(differing.isEmpty, "\(key): \(differing.count) code points differ, e.g. \(differing.prefix(8))")
    }

    func testCaseMappings() {
        // Python's lower() of a lone capital sigma is σ (no cased letter before it).
        checkMap("python_lower", UnicodeSupport.pythonLower)
        checkMap("rust_lowercase", UnicodeSupport.rustLowercase)
    }

    func testNFCOfSingleCodePoints() {
        checkMap("nfc", UnicodeSupport.nfc)
    }

    func testFinalSigma() {
        func lower(_ s: String) -> String { UnicodeSupport.string(UnicodeSupport.pythonLower(Array(s.unicodeScalars))) }
        XCTAssertEqual(lower("ΟΔΟΣ"), "οδος")
        XCTAssertEqual(lower("ΣΑΣ Σ"), "σας σ")
        XCTAssertEqual(lower("ΑΣ'Σ"), "ασ'ς")  // the apostrophe is case-ignorable, so the first Σ is not final
        XCTAssertEqual(lower("İ"), "i\u{307}")
        XCTAssertEqual(UnicodeSupport.string(UnicodeSupport.rustLowercase(Array("ΟΔΟΣ".unicodeScalars))), "οδοσ")
    }
}
