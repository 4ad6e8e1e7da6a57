import Foundation
import XCTest
@testable import RefractTokenizer

/// Row-by-row comparison with the reference libraries' output for the corpus in scripts/fixtures/tokenizer.py.
final class GoldenTests: XCTestCase {
    private func compare(_ rows: [Fixtures.Row], tokenizer: CLIPTokenizer, name: String,
                         detail: (Fixtures.Row) -> String = { _ in "" }) {
        let produced = tokenizer.tokenize(rows.map(\.text))
        var mismatches = 0
        var first: String?
        for (row, got) in zip(rows, produced) where got != row.expected {
            mismatches += 1
            if first == nil {
                let at = zip(got, row.expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
                first = """
                first mismatch [\(row.label)] \(Fixtures.show(row.text)) at position \(at)
                  expected \(row.expected.prefix(while: { $0 != Int32(tokenizer.padToken) || row.expected.first == $0 }))
                  got      \(got.prefix(while: { $0 != Int32(tokenizer.padToken) || got.first == $0 }))
                \(detail(row))
                """
            }
        }
        XCTAssertEqual(mismatches, 0, "\(name): \(mismatches) of \(rows.count) rows differ; \(first ?? "")")
    }

    func testOpenCLIPRows() throws {
        let golden = try Fixtures.json("golden_openclip.json") as! [String: Any]
        let rows = Fixtures.rows(golden, padID: 0)
        XCTAssertGreaterThan(rows.count, 800)
        let tokenizer = try CLIPTokenizer.openCLIPDefault()
        compare(rows, tokenizer: tokenizer, name: "open_clip") { row in
            "  reference clean \(Fixtures.show(row.fields["clean"] as! String))\n  ours      clean \(Fixtures.show(tokenizer.normalize(row.text)))"
        }
    }

    func testOpenCLIPCleanText() throws {
        let golden = try Fixtures.json("golden_openclip.json") as! [String: Any]
        let tokenizer = try CLIPTokenizer.openCLIPDefault()
        var failures: [String] = []
        for row in Fixtures.rows(golden, padID: 0) {
            let expected = row.fields["clean"] as! String
            let got = tokenizer.normalize(row.text)
            if got != expected { failures.append("[\(row.label)] \(Fixtures.show(row.text)): expected \(Fixtures.show(expected)), got \(Fixtures.show(got))") }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) cleaned texts differ; first: \(failures.first ?? "")")
    }

    func testFTFYFixText() throws {
        let golden = try Fixtures.json("golden_openclip.json") as! [String: Any]
        var failures: [String] = []
        for row in Fixtures.rows(golden, padID: 0) {
            let expected = row.fields["ftfy"] as! String
            let got = FTFY.fixText(row.text)
            if got != expected { failures.append("[\(row.label)] \(Fixtures.show(row.text)): expected \(Fixtures.show(expected)), got \(Fixtures.show(got))") }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) ftfy.fix_text results differ; first: \(failures.first ?? "")\n\(failures.prefix(10).joined(separator: "\n"))")
    }

    func testTransformersRows() throws {
        let golden = try Fixtures.json("golden_transformers.json") as! [String: Any]
        let padID = (golden["pad_id"] as! NSNumber).intValue
        XCTAssertEqual(padID, 49407)
        let rows = Fixtures.rows(golden, padID: padID)
        let tokenizer = try CLIPTokenizer.transformersDefault()
        XCTAssertEqual(tokenizer.padToken, padID)
        compare(rows, tokenizer: tokenizer, name: "transformers") { row in
            "  ours normalized \(Fixtures.show(tokenizer.normalize(row.text)))"
        }
    }

    func testTransformersRowsFromVocabAndMergesFiles() throws {
        let golden = try Fixtures.json("golden_transformers.json") as! [String: Any]
        let rows = Fixtures.rows(golden, padID: 49407)
        let tmp = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: tmp) }
        let dir = try Fixtures.makeTransformersDirectory(in: tmp, name: "plain")
        let tokenizer = try CLIPTokenizer(flavour: .transformers, vocabulary: .directory(dir))
        compare(rows, tokenizer: tokenizer, name: "transformers (vocab.json + merges.txt)")
    }

    func testTransformersVariants() throws {
        let golden = try Fixtures.json("golden_hf_variants.json") as! [String: Any]
        let variants = golden["variants"] as! [String: [String: Any]]
        XCTAssertGreaterThanOrEqual(variants.count, 10)
        let tmp = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: tmp) }
        for (name, variant) in variants.sorted(by: { $0.key < $1.key }) {
            let dir = try Fixtures.makeTransformersDirectory(in: tmp, name: name)
            let source = Fixtures.directory.appendingPathComponent("hf_variants").appendingPathComponent(name)
            for file in try FileManager.default.contentsOfDirectory(atPath: source.path) {
                let from = source.appendingPathComponent(file)
                if file == "tokenizer_json_added_tokens.json" {
                    let added = try JSONSerialization.jsonObject(with: Data(contentsOf: from))
                    try Fixtures.writeTokenizerJSON(to: dir.appendingPathComponent("tokenizer.json"), addedTokens: added)
                } else {
                    try FileManager.default.copyItem(at: from, to: dir.appendingPathComponent(file))
                }
            }
            let tokenizer = try CLIPTokenizer(flavour: .transformers, vocabulary: .directory(dir))
            let padID = (variant["pad_id"] as! NSNumber).intValue
            XCTAssertEqual(tokenizer.padToken, padID, name)
            let expectedAdded = (variant["added_tokens"] as! [[String: Any]]).map {
                CLIPAddedToken(id: ($0["id"] as! NSNumber).intValue, content: $0["content"] as! String,
                               normalized: $0["normalized"] as! Bool, lstrip: $0["lstrip"] as! Bool, rstrip: $0["rstrip"] as! Bool)
            }
            XCTAssertEqual(tokenizer.addedTokens.sorted { $0.id < $1.id }, expectedAdded, name)
            compare(Fixtures.rows(variant, padID: padID), tokenizer: tokenizer, name: "variant \(name)")
        }
    }

    func testEOTIndicesMatchGoldenRows() throws {
        let golden = try Fixtures.json("golden_openclip.json") as! [String: Any]
        let rows = Fixtures.rows(golden, padID: 0)
        let tokenizer = try CLIPTokenizer.openCLIPDefault()
        let batch = tokenizer.tokenizeBatch(rows.map(\.text))
        for (row, eot) in zip(rows, batch.eotIndices) {
            // open_clip pools at argmax(ids); 49407 is the largest id, so argmax is its first occurrence.
            let argmax = row.expected.indices.max { row.expected[$0] < row.expected[$1] || (row.expected[$0] == row.expected[$1] && $0 > $1) }!
            XCTAssertEqual(eot, argmax, Fixtures.show(row.text))
        }
    }
}
