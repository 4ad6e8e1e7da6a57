import Foundation
import RefractCheckpoint
import RefractImage
import RefractTensor
import RefractTestSupport
import RefractTimm
import XCTest

/// Tests/Fixtures/timm (scripts/fixtures/timm_models.py): tiny random-weight checkpoints made
/// with timm itself, and what timm computes for the four images of Tests/Fixtures/models/inputs.
enum TimmFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures", isDirectory: true)
    static let directory = root.appendingPathComponent("timm", isDirectory: true)
    static let images = ["img0_40x32.png", "img1_32x48.png", "img2_64x64.png", "img3_33x31.png"]
    static let vits = ["deit-tiny", "dino-tiny", "dinov2-tiny", "dinov2-reg-tiny", "dinov2-f16-tiny"]
    static let all = vits + ["swin-tiny", "maxvit-tiny", "maxvit-pico"]

    static func model(_ name: String) throws -> TimmModel {
        let dir = directory.appendingPathComponent(name)
        return try TimmModel(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: name))
    }

    static func expected(_ model: String, _ name: String) throws -> Tensor {
        try NPY.read(directory.appendingPathComponent("expected/\(model)/\(name).npy")).tensor
    }

    static func decodedImages() throws -> [RGBImage] {
        try images.map { try ImageDecoder.decode(contentsOf: root.appendingPathComponent("models/inputs/\($0)")) }
    }
}

final class TimmParityTests: XCTestCase {
    func testLayoutIsDetectedFromTheConfig() throws {
        for name in TimmFixtures.all {
            XCTAssertEqual(try ModelLocation.detectLayout(in: TimmFixtures.directory.appendingPathComponent(name)), .timm, name)
        }
        // A CLIP directory with config.json is still transformers.
        XCTAssertEqual(try ModelLocation.detectLayout(in: TimmFixtures.root.appendingPathComponent("models/hf-tiny")), .transformers)
    }

    /// timm's eval transform from pretrained_cfg (shortest side to floor(size / crop_pct), Pillow
    /// bicubic or bilinear, centre crop, mean/std) against timm's own, within 1/255 and exact in practice.
    func testPreprocessingMatchesTimm() throws {
        let images = try TimmFixtures.decodedImages()
        for name in TimmFixtures.all {
            let model = try TimmFixtures.model(name)
            let ref = try TimmFixtures.expected(name, "pixels")                       // [4, 3, S, S]
            let per = ref.count / 4
            for (i, image) in images.enumerated() {
                let got = model.preprocessing(image)
                XCTAssertEqual(got.count, per, name)
                let worst = maxPixelDifference(got, ref, offset: i * per, std: model.preprocessing.std)
                XCTAssertLessThanOrEqual(worst, 1e-5, "\(name) image \(i): max pixel difference \(worst * 255)/255")
            }
        }
    }

    /// Pre-logits features and logits from timm's own pixels, within 1e-5 of timm (float32).
    func testForwardMatchesTimm() throws {
        for name in TimmFixtures.all {
            let model = try TimmFixtures.model(name)
            let pixels = try TimmFixtures.expected(name, "pixels")                     // [4, 3, S, S]
            let s = pixels.shape[2]
            let images = (0..<4).map { Tensor(shape: [3, s, s], data: Array(pixels.data[($0 * 3 * s * s)..<(($0 + 1) * 3 * s * s)])) }
            let features = model.represent(pixels: images)
            assertParity(features, try TimmFixtures.expected(name, "features"), .embeddings, "\(name) features")
            if let logits = model.logits(features) {
                assertParity(logits, try TimmFixtures.expected(name, "logits"), .embeddings, "\(name) logits")
            } else {
                XCTAssertFalse(FileManager.default.fileExists(atPath: TimmFixtures.directory.appendingPathComponent("expected/\(name)/logits.npy").path))
            }
        }
    }
}
