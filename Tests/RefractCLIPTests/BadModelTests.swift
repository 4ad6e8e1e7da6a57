import Foundation
import RefractCheckpoint
import RefractTensor
import XCTest
@testable import RefractCLIP

/// Broken model directories: every failure names the file and the problem.
final class BadModelTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("refract-badmodel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// A copy of a fixture model that the test may damage.
    func copyOf(_ name: String) throws -> URL {
        let dst = scratch.appendingPathComponent(name)
        try FileManager.default.copyItem(at: fixtures.appendingPathComponent(name), to: dst)
        return dst
    }

    func load(_ dir: URL) throws -> CLIP {
        try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: "test"))
    }

    func assertFails(_ dir: URL, mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(dir), file: file, line: line) { error in
            let text = "\(error)"
            for part in parts {
                XCTAssertTrue(text.contains(part), "error should mention '\(part)': \(text)", file: file, line: line)
            }
        }
    }

    func testMalformedConfigJSON() throws {
        for (name, config) in [("openclip-tiny", "open_clip_config.json"), ("hf-tiny", "config.json")] {
            let dir = try copyOf(name)
            try Data("{\"model_cfg\": {".utf8).write(to: dir.appendingPathComponent(config))
            assertFails(dir, mentions: [config, "malformed JSON"])
        }
    }

    func testConfigWithWrongTypeNamesTheKey() throws {
        let dir = try copyOf("hf-tiny")
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var vision = json["vision_config"] as! [String: Any]
        vision["hidden_size"] = "forty-eight"
        json["vision_config"] = vision
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        assertFails(dir, mentions: ["config.json", "vision_config.hidden_size"])
    }

    func testShapeThatContradictsTheConfig() throws {
        let dir = try copyOf("openclip-tiny")
        let url = dir.appendingPathComponent("open_clip_config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var model = json["model_cfg"] as! [String: Any]
        var vision = model["vision_cfg"] as! [String: Any]
        vision["width"] = 80                      // checkpoint has 64
        model["vision_cfg"] = vision
        json["model_cfg"] = model
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        assertFails(dir, mentions: ["open_clip_model.safetensors", "visual.conv1.weight", "80", "64"])
    }

    func testMissingTensorIsNamed() throws {
        let dir = try copyOf("openclip-tiny")
        let weights = dir.appendingPathComponent("open_clip_model.safetensors")
        let source = try SafetensorsFile(url: weights)
        var writer = SafetensorsWriter()
        for key in source.keys where key != "visual.ln_post.bias" {
            try writer.add(key, try source.floatTensor(key))
        }
        try writer.write(to: weights)
        assertFails(dir, mentions: ["visual.ln_post.bias", "open_clip_model.safetensors"])
    }

    func testUnusedTensorIsRefused() throws {
        let dir = try copyOf("openclip-tiny")
        let weights = dir.appendingPathComponent("open_clip_model.safetensors")
        let source = try SafetensorsFile(url: weights)
        var writer = SafetensorsWriter()
        for key in source.keys { try writer.add(key, try source.floatTensor(key)) }
        try writer.add("visual.extra_head.weight", Tensor(zeros: [2, 2]))
        try writer.write(to: weights)
        assertFails(dir, mentions: ["visual.extra_head.weight"])
    }

    func testUnsupportedOpenCLIPVariantIsNamed() throws {
        let dir = try copyOf("openclip-tiny")
        let url = dir.appendingPathComponent("open_clip_config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var model = json["model_cfg"] as! [String: Any]
        var vision = model["vision_cfg"] as! [String: Any]
        vision["timm_model_name"] = "convnext_base"
        model["vision_cfg"] = vision
        json["model_cfg"] = model
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        assertFails(dir, mentions: ["open_clip_config.json", "timm", "convnext_base"])
    }

    func testVocabularySmallerThanTheTokenizerIsRefused() throws {
        let dir = try copyOf("hf-tiny")
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var text = json["text_config"] as! [String: Any]
        text["vocab_size"] = 1000
        json["text_config"] = text
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        assertFails(dir, mentions: ["config.json", "1000"])
    }

    func testMissingPreprocessorConfig() throws {
        let dir = try copyOf("hf-tiny")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("preprocessor_config.json"))
        assertFails(dir, mentions: ["preprocessor_config.json"])
    }
}

final class TextListTests: XCTestCase {
    func testEmptyAndBlankFilesAreRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-texts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        XCTAssertThrowsError(try TextLists.readLines(empty)) { XCTAssertTrue("\($0)".contains("empty.txt") && "\($0)".contains("empty file")) }
        let blank = dir.appendingPathComponent("blank.txt")
        try Data("cat\n\ndog\n".utf8).write(to: blank)
        XCTAssertThrowsError(try TextLists.readLines(blank)) { XCTAssertTrue("\($0)".contains("line 2")) }
        let crlf = dir.appendingPathComponent("crlf.txt")
        try Data("cat\r\ndog".utf8).write(to: crlf)
        XCTAssertEqual(try TextLists.readLines(crlf), ["cat", "dog"])
        let templates = dir.appendingPathComponent("templates.txt")
        try Data("a photo of a {}.\na picture\n".utf8).write(to: templates)
        XCTAssertThrowsError(try TextLists.readTemplates(templates)) { XCTAssertTrue("\($0)".contains("line 2")) }
        let latin1 = dir.appendingPathComponent("latin1.txt")
        try Data([0x63, 0x61, 0x66, 0xE9]).write(to: latin1)
        XCTAssertThrowsError(try TextLists.readLines(latin1)) { XCTAssertTrue("\($0)".contains("UTF-8")) }
    }

    func testImageListingOrderIsStable() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-list-\(UUID().uuidString)")
        let fm = FileManager.default
        for sub in ["b", "a/z", "a/Y", ".hidden"] { try fm.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true) }
        defer { try? fm.removeItem(at: dir) }
        for f in ["b/1.jpg", "a/z/2.PNG", "a/Y/3.jpeg", "a/10.png", "a/9.png", ".hidden/x.jpg", "b/notes.txt", "a/.x.png"] {
            try Data().write(to: dir.appendingPathComponent(f))
        }
        let listed = try ImageListing.expand([dir.path]).map { String($0.path.dropFirst(dir.path.count + 1)) }
        XCTAssertEqual(listed, ["a/10.png", "a/9.png", "a/Y/3.jpeg", "a/z/2.PNG", "b/1.jpg"])
        XCTAssertThrowsError(try ImageListing.expand([dir.appendingPathComponent("nope").path])) {
            XCTAssertTrue("\($0)".contains("nope"))
        }
    }
}
