import Foundation
import XCTest

/// `refract segment` with timm models: the head's (or a probe's) predicted class over the last blocks' tokens.
extension CLITests {
    static let segmentMat = root.appendingPathComponent("Tests/Fixtures/segment/data/gtsegs_ijcv.mat")

    func testSegmentTimmModels() throws {
        struct Metrics: Decodable {
            struct Published: Decodable { var model: String }
            var images: Int; var convention: String; var classes: String; var pixelAccuracy: Double; var published: Published?
        }
        for name in ["deit-tiny", "swin-tiny", "maxvit-tiny"] {
            let out = path(scratch, "seg-\(name)")
            let r = try refract(["segment", "--model", Self.timmFixtures.appendingPathComponent(name).path, "--dataset", Self.segmentMat.path,
                                 "--output", out, "--save-images", "1"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let m = try JSONDecoder().decode(Metrics.self, from: Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("metrics.json")))
            XCTAssertEqual(m.images, 4, name)
            XCTAssertEqual(m.convention, "faithful", name)
            XCTAssertTrue(m.classes.contains("head"), m.classes)
            XCTAssertNotNil(m.published, name)
            XCTAssertTrue((0...100).contains(m.pixelAccuracy), name)
            // Resuming a finished run redoes nothing and gives the same metrics.
            let again = try refract(["segment", "--model", Self.timmFixtures.appendingPathComponent(name).path, "--dataset", Self.segmentMat.path,
                                     "--output", out, "--resume"])
            XCTAssertEqual(again.status, 0, again.stderr)
            XCTAssertEqual(try JSONDecoder().decode(Metrics.self, from: Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("metrics.json"))).pixelAccuracy,
                           m.pixelAccuracy)
        }
        // DINO has no head: refused, then segmented through a probe.
        let dino = Self.timmFixtures.appendingPathComponent("dino-tiny").path
        let refused = try refract(["segment", "--model", dino, "--dataset", Self.segmentMat.path, "--output", path(scratch, "seg-dino0")])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("--probe"), refused.stderr)
        let data = try labelledImages("cat", "dog")
        let run = path(scratch, "dino-seg-run"), probe = path(scratch, "dino-seg-probe")
        XCTAssertEqual(try refract(["decompose", "--model", dino, "--output", run, data]).status, 0)
        XCTAssertEqual(try refract(["probe", "--run", run, "--output", probe, "--epochs", "3"]).status, 0)
        let viaProbe = try refract(["segment", "--model", dino, "--probe", probe, "--dataset", Self.segmentMat.path, "--output", path(scratch, "seg-dino")])
        XCTAssertEqual(viaProbe.status, 0, viaProbe.stderr)
        // Options of the other family, a probe of another model.
        let deit = Self.timmFixtures.appendingPathComponent("deit-tiny").path
        for (args, fragment) in [(["--convention", "gandelsman2024"], "faithful"), (["--templates", "t.txt"], "--templates"),
                                 (["--probe", probe], "not of")] {
            let r = try refract(["segment", "--model", deit, "--dataset", Self.segmentMat.path, "--output", path(scratch, "seg-x")] + args)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(fragment), "missing '\(fragment)': \(r.stderr)")
        }
        let clip = try refract(["segment", "--model", path(Self.models, "openclip-tiny"), "--dataset", Self.segmentMat.path,
                                "--output", path(scratch, "seg-y"), "--token-blocks", "last:1"])
        XCTAssertNotEqual(clip.status, 0)
        XCTAssertTrue(clip.stderr.contains("timm"), clip.stderr)
    }
}
