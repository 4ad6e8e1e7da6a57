import Foundation
import RefractImage
import XCTest
@testable import RefractRetrieve

/// retrieval.json and the HTML contact sheet: thumbnails, placeholders, escaping, atomic writing.
final class ContactSheetTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-sheet-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// A PNG of `width` × `height` with a gradient, written under scratch.
    func png(_ name: String, _ width: Int, _ height: Int) throws -> String {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height { for x in 0..<width {
            let o = (y * width + x) * 3
            pixels[o] = UInt8(x * 255 / max(1, width - 1)); pixels[o + 1] = UInt8(y * 255 / max(1, height - 1)); pixels[o + 2] = 90
        } }
        let url = scratch.appendingPathComponent(name)
        try PNGEncoder.write(RGBImage(width: width, height: height, pixels: pixels), to: url)
        return url.path
    }

    func report(query: RetrievalQueryInfo, paths: [String]) -> RetrievalReport {
        RetrievalReport(formatVersion: 1, run: "/runs/<val>", model: "tiny & co", weightsSHA256: "ab12", convention: "faithful",
                        heads: ["1.2", "0.3"], metric: "cosine", candidates: 9, top: paths.count, query: query,
                        results: paths.enumerated().map { i, p in
                            RetrievalHit(rank: i + 1, row: 10 + i, imageIndex: 11 + i, path: p, label: i == 0 ? "<script>x</script>" : nil,
                                         score: 0.9 - Double(i) * 0.1, norm: 2)
                        })
    }

    func testThumbnailsAreDownscaledPNGsAndNeverEnlarged() throws {
        let big = try png("big.png", 400, 100), small = try png("small.png", 30, 50)
        for (path, size) in [(big, (160, 40)), (small, (30, 50))] {
            guard case .success(let uri) = RetrievalOutput.thumbnail(of: path) else { return XCTFail("no thumbnail for \(path)") }
            XCTAssertTrue(uri.hasPrefix("data:image/png;base64,"))
            let data = try XCTUnwrap(Data(base64Encoded: String(uri.dropFirst("data:image/png;base64,".count))))
            let image = try ImageDecoder.decode(data: data, source: "thumbnail")
            XCTAssertEqual(image.width, size.0, path)
            XCTAssertEqual(image.height, size.1, path)
        }
        guard case .failure(let e) = RetrievalOutput.thumbnail(of: scratch.appendingPathComponent("missing.png").path) else {
            return XCTFail("a missing file has no thumbnail")
        }
        XCTAssertTrue(e.message.contains("missing.png"), e.message)
    }

    func testContactSheetHasQueryThumbnailsAndPlaceholders() throws {
        let a = try png("a.png", 64, 48), b = try png("b.png", 20, 20)
        let missing = scratch.appendingPathComponent("gone/<missing>.png").path
        let query = RetrievalQueryInfo(kind: "image", source: "run", row: 3, imageIndex: 4, path: a, label: "cat", text: nil,
                                       note: "row 3", norm: 1.5)
        let r = report(query: query, paths: [b, missing, a])
        let dir = scratch.appendingPathComponent("out")
        let files = try RetrievalOutput.write(r, to: dir)
        let html = try String(contentsOf: files.html, encoding: .utf8)
        // Two distinct readable images: the query's (also result 3) and b.
        XCTAssertEqual(html.components(separatedBy: "src=\"data:image/png;base64,").count - 1, 3)
        XCTAssertTrue(html.contains("image not available"))
        XCTAssertTrue(html.contains("gone/&lt;missing&gt;.png"))
        XCTAssertFalse(html.contains("<script>"), "labels are escaped")
        XCTAssertTrue(html.contains("&lt;script&gt;x&lt;/script&gt;"))
        XCTAssertTrue(html.contains("tiny &amp; co"))
        XCTAssertTrue(html.contains("#1") && html.contains("#3"))
        XCTAssertTrue(html.contains("0.9000"))
        XCTAssertTrue(html.contains("prefers-color-scheme: dark"))
        XCTAssertFalse(html.contains("http://") || html.contains("https://"), "self-contained")
        let decoded = try JSONDecoder().decode(RetrievalReport.self, from: Data(contentsOf: files.json))
        XCTAssertEqual(decoded, r)
        // No temporary files left beside the outputs.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["retrieval.html", "retrieval.json"])
    }

    func testTextQuerySheetAndUnwritableOutput() throws {
        let query = RetrievalQueryInfo(kind: "text", source: "textEncoder", row: nil, imageIndex: nil, path: nil, label: nil,
                                       text: "a <red> car", note: "text", norm: 1)
        let page = RetrievalOutput.html(report(query: query, paths: []), thumbnails: [:])
        XCTAssertTrue(page.contains("“a &lt;red&gt; car”"))
        XCTAssertTrue(page.contains("No other images"))
        // The output path is a file: an error naming it, nothing written.
        let file = scratch.appendingPathComponent("taken")
        try Data().write(to: file)
        XCTAssertThrowsError(try RetrievalOutput.write(report(query: query, paths: []), to: file)) {
            XCTAssertTrue("\($0)".contains(file.path) && "\($0)".contains("is a file, not a folder"), "\($0)")
        }
    }
}
