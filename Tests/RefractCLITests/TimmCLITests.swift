import Foundation
import RefractTensor
import XCTest

/// `refract embed-images` and `classify` on the timm fixtures (Tests/Fixtures/timm), against what
/// timm computed for the same images.
extension CLITests {
    static var timm: URL { root.appendingPathComponent("Tests/Fixtures/timm") }

    func testTimmEmbedImagesWritesTheFeaturesTimmComputes() throws {
        for name in ["deit-tiny", "dinov2-reg-tiny", "swin-tiny"] {
            let out = path(scratch, "\(name).npy")
            let r = try refract(["embed-images", "--model", path(Self.timm, name), "--output", out, path(Self.models, "inputs")])
            XCTAssertEqual(r.status, 0, r.stderr)
            let got = try NPY.read(URL(fileURLWithPath: out)).tensor
            let ref = try NPY.read(Self.timm.appendingPathComponent("expected/\(name)/features.npy")).tensor
            XCTAssertEqual(got.shape, ref.shape)
            // Raw features (no L2 normalisation by default for timm models), from Refract's own preprocessing.
            let worst = zip(got.data, ref.data).map { abs($0 - $1) }.max() ?? 1
            let scale = ref.data.map(abs).max() ?? 1
            XCTAssertLessThanOrEqual(worst, 1e-5 * scale + 1e-6, "\(name): max difference \(worst)")
            let normalised = try refract(["embed-images", "--model", path(Self.timm, name), "--output", out, "--normalize",
                                          path(Self.models, "inputs/img0_40x32.png")])
            XCTAssertEqual(normalised.status, 0, normalised.stderr)
            let row = try NPY.read(URL(fileURLWithPath: out)).tensor.data
            XCTAssertEqual(Double(row.map { $0 * $0 }.reduce(0, +)).squareRoot(), 1, accuracy: 1e-5)
        }
    }

    func testTimmClassifyUsesTheHead() throws {
        let r = try refract(["classify", "--model", path(Self.timm, "deit-tiny"), "--json", "--top-k", "10", path(Self.models, "inputs")])
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Report: Decodable {
            struct Item: Decodable { var path: String; var predictions: [Prediction] }
            struct Prediction: Decodable { var `class`: String; var index: Int; var logit: Float; var probability: Float }
            var model: String
            var results: [Item]
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(r.stdout.utf8))
        let logits = try NPY.read(Self.timm.appendingPathComponent("expected/deit-tiny/logits.npy")).tensor   // [4, 10]
        XCTAssertEqual(report.results.count, 4)
        for (n, item) in report.results.enumerated() {
            XCTAssertEqual(item.predictions.count, 10)
            XCTAssertEqual(item.predictions.map(\.probability).reduce(0, +), 1, accuracy: 1e-4)
            for p in item.predictions {
                XCTAssertEqual(p.logit, logits.data[n * 10 + p.index], accuracy: 1e-4, "\(item.path) class \(p.index)")
                XCTAssertEqual(p.class, "class \(p.index)")
            }
        }
        // Names for the head's outputs, checked against its width.
        let names = path(scratch, "names.txt")
        try (0..<10).map { "n\($0)" }.joined(separator: "\n").write(toFile: names, atomically: true, encoding: .utf8)
        let named = try refract(["classify", "--model", path(Self.timm, "deit-tiny"), "--classes", names, path(Self.models, "inputs/img0_40x32.png")])
        XCTAssertEqual(named.status, 0, named.stderr)
        XCTAssertTrue(named.stdout.contains("  n"), named.stdout)
        try "a\nb".write(toFile: names, atomically: true, encoding: .utf8)
        assertFailure(try refract(["classify", "--model", path(Self.timm, "deit-tiny"), "--classes", names, path(Self.models, "inputs")]),
                      mentions: [names, "2 class names", "10 outputs"])
        // No head: said so; CLIP-only commands refuse timm models.
        assertFailure(try refract(["classify", "--model", path(Self.timm, "dino-tiny"), path(Self.models, "inputs")]),
                      mentions: ["no classifier head"])
        let texts = path(scratch, "texts.txt")
        try "a dog".write(toFile: texts, atomically: true, encoding: .utf8)
        assertFailure(try refract(["embed-texts", "--model", path(Self.timm, "dino-tiny"), "--texts", texts, "--output", path(scratch, "t.npy")]),
                      mentions: ["timm model, not CLIP"])
    }
}
