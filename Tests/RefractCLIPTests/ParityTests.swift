import Foundation
import RefractCheckpoint
import RefractImage
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractCLIP

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

func expected(_ model: String, _ name: String) throws -> NPYArray {
    try NPY.read(fixtures.appendingPathComponent("expected/\(model)/\(name).npy"))
}

func loadFixtureModel(_ name: String) throws -> CLIP {
    let dir = fixtures.appendingPathComponent(name)
    let layout = try ModelLocation.detectLayout(in: dir)
    return try CLIP(location: ModelLocation(directory: dir, layout: layout, modelId: name))
}

let inputImages = ["img0_40x32.png", "img1_32x48.png", "img2_64x64.png", "img3_33x31.png"]

func inputLines(_ file: String) throws -> [String] {
    try TextLists.readLines(fixtures.appendingPathComponent("inputs/\(file)"))
}

final class ParityTests: XCTestCase {
    static let models = ["openclip-tiny", "hf-tiny"]

    func testLayoutsAreDetected() throws {
        XCTAssertEqual(try loadFixtureModel("openclip-tiny").layout, .openCLIP)
        XCTAssertEqual(try loadFixtureModel("hf-tiny").layout, .transformers)
    }

    func testPreprocessedPixelsMatchTheLibrary() throws {
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            let images = try inputImages.map { try ImageDecoder.decode(contentsOf: fixtures.appendingPathComponent("inputs/\($0)")) }
            let got = clip.preprocess(images)
            let ref = try expected(name, "pixels").tensor                       // [4, 3, S, S]
            let per = ref.count / 4
            for (i, g) in got.enumerated() {
                // Compare in 0..1 pixel units: un-normalise both, allow at most 1/255.
                let worst = maxPixelDifference(g, ref, offset: i * per, std: clip.preprocessing.std)
                XCTAssertLessThanOrEqual(worst, 1 / 255 + 1e-6, "\(name) image \(i): max pixel difference \(worst * 255)/255")
                XCTAssertLessThanOrEqual(worst, 1e-5, "\(name) image \(i): pixels are not exact (max \(worst * 255)/255)")
            }
        }
    }

    func testVisionEmbeddingAndFirstBlockMatch() throws {
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            let pixels = try expected(name, "pixels").tensor
            let per = pixels.count / 4
            let images = (0..<4).map { Tensor(shape: Array(pixels.shape.dropFirst()), data: Array(pixels.data[($0 * per)..<(($0 + 1) * per)])) }
            let (x0, segments) = clip.vision.embed(images)
            let refX0 = try expected(name, "vision_x0").tensor
            assertParity(x0.reshaped(refX0.shape), refX0, .activations, "\(name) vision x0")
            let x1 = clip.vision.blocks[0].forward(x0, segments: segments, arch: clip.architecture.vision, causal: false)
            let refX1 = try expected(name, "vision_block0").tensor
            assertParity(x1.reshaped(refX1.shape), refX1, .activations, "\(name) vision block 0")
        }
    }

    func testImageEmbeddingsMatch() throws {
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            let ref = try expected(name, "image_embeds").tensor
            // From the library's own pixels: isolates the tower.
            let pixels = try expected(name, "pixels").tensor
            let per = pixels.count / 4
            let images = (0..<4).map { Tensor(shape: Array(pixels.shape.dropFirst()), data: Array(pixels.data[($0 * per)..<(($0 + 1) * per)])) }
            assertParity(clip.encodeImages(pixels: images), ref, .embeddings, "\(name) image embeddings from reference pixels")
            // End to end from the PNG files, batched and one by one.
            let files = inputImages.map { fixtures.appendingPathComponent("inputs/\($0)") }
            assertParity(try clip.encodeImageFiles(files, batchSize: 3), ref, .embeddings, "\(name) image embeddings from files")
            let single = try clip.encodeImageFiles([files[2]], batchSize: 1)
            assertParity(single, Tensor(shape: [1, ref.shape[1]], data: ref.row(2)), .embeddings, "\(name) single image")
        }
    }

    func testTokenIdsMatchExactly() throws {
        let texts = try inputLines("texts.txt")
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            guard case let .int64(shape, ref) = try expected(name, "token_ids") else { return XCTFail("token_ids dtype") }
            let got = clip.tokenize(texts)
            XCTAssertEqual([got.count, got.first?.count ?? 0], shape)
            for (i, row) in got.enumerated() {
                XCTAssertEqual(row.map(Int64.init), Array(ref[(i * 77)..<((i + 1) * 77)]), "\(name) text \(i): \(texts[i])")
            }
        }
    }

    func testTextFirstBlockMatches() throws {
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            guard case let .int64(_, ids) = try expected(name, "token_ids") else { return XCTFail("token_ids dtype") }
            let row = ids[0..<77].map { Int32($0) }
            // Full 77 positions, as the reference computed them (causal mask only).
            let t = clip.text
            let w = clip.architecture.text.width
            var x = Tensor(zeros: [77, w])
            for i in 0..<77 { for j in 0..<w { x.data[i * w + j] = t.tokenEmbedding.data[Int(row[i]) * w + j] + t.positionalEmbedding.data[i * w + j] } }
            assertParity(x, try expected(name, "text_x0").tensor, .activations, "\(name) text x0")
            let y = t.blocks[0].forward(x, segments: [Segment(start: 0, length: 77)], arch: clip.architecture.text, causal: true)
            assertParity(y, try expected(name, "text_block0").tensor, .activations, "\(name) text block 0")
        }
    }

    func testTextEmbeddingsMatch() throws {
        let texts = try inputLines("texts.txt")
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            let ref = try expected(name, "text_embeds").tensor
            assertParity(clip.encodeTexts(texts), ref, .embeddings, "\(name) text embeddings")
            assertParity(clip.encodeTexts(texts, batchSize: 5), ref, .embeddings, "\(name) text embeddings, batches of 5")
        }
    }

    func testZeroShotClassifierAndScoresMatch() throws {
        let classes = try inputLines("classes.txt")
        let templates = try TextLists.readTemplates(fixtures.appendingPathComponent("inputs/templates.txt"))
        for name in Self.models {
            let clip = try loadFixtureModel(name)
            let classifier = try clip.zeroShotClassifier(classes: classes, templates: templates)
            assertParity(classifier.weights, try expected(name, "classifier").tensor, .embeddings, "\(name) classifier")
            let images = inputImages.map { fixtures.appendingPathComponent("inputs/\($0)") }
            let scores = classifier.scores(try clip.encodeImageFiles(images))
            assertParity(scores, try expected(name, "scores").tensor, Tolerance(abs: 2e-6, rel: 1e-5), "\(name) scores")
            XCTAssertEqual(clip.logitScale, try expected(name, "logit_scale").floats[0])
            let preds = classifier.predict(try clip.encodeImageFiles(images), logitScale: clip.logitScale, topK: 5)
            let probSum = preds[0].map(\.probability).reduce(0, +)
            XCTAssertEqual(probSum, 1, accuracy: 1e-5)
            XCTAssertEqual(preds[0].map(\.score), preds[0].map(\.score).sorted(by: >))
        }
    }
}
