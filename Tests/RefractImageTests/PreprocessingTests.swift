import Foundation
import XCTest
import RefractTensor
import RefractImage

final class PreprocessingTests: XCTestCase {
    /// open_clip's transform and transformers' CLIPImageProcessorPil, on decoded fixtures.
    /// Tolerance: 1/255 in pixel units, i.e. |a - b| * std <= 1/255 before normalisation; the
    /// test also records how many values are bit-identical (all of them, at the time of writing).
    func testPreprocessingMatchesOpenCLIPAndTransformers() throws {
        let cases = Fixtures.manifest.preprocess
        XCTAssertGreaterThanOrEqual(cases.count, 25)
        var worst = 0.0, inexact = 0, total = 0
        for c in cases {
            let image = try ImageDecoder.decode(contentsOf: Fixtures.url(c.file))
            let tensor = c.config(image)
            let reference = try NPYArray(contentsOf: Fixtures.url(c.reference))
            XCTAssertEqual(tensor.shape, [3, c.config.imageSize, c.config.imageSize])
            XCTAssertEqual(reference.shape, tensor.shape, c.reference)
            let ref = reference.floats
            let plane = c.config.imageSize * c.config.imageSize
            var caseWorst = 0.0
            for i in 0..<ref.count {
                let std = c.config.std[i / plane]
                let d = abs(Double(tensor.data[i]) - Double(ref[i])) * std
                caseWorst = max(caseWorst, d)
                if tensor.data[i].bitPattern != ref[i].bitPattern { inexact += 1 }
            }
            total += ref.count
            worst = max(worst, caseWorst)
            XCTAssertLessThanOrEqual(caseWorst, 1.0 / 255.0 + 1e-6,
                                     "\(c.reference): max difference \(caseWorst * 255) pixel levels")
        }
        print("preprocessing: \(cases.count) references, \(total) values, \(inexact) not bit-identical, worst \(worst * 255) pixel levels")
        XCTAssertEqual(inexact, 0, "expected bit-identical tensors")
    }

    /// 500x375 JPEG to 224 through both configurations, compared with the reference hashes.
    func testBench224MatchesReferenceHashes() throws {
        let bench = Fixtures.manifest.bench
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url(bench.file))
        for p in bench.preprocess {
            let t = p.config(image)
            XCTAssertEqual(t.shape, [3, 224, 224])
            let sum = t.data.reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(sum, p.sum, accuracy: 1e-3, p.library)
            XCTAssertEqual(fnv1a64(floats: t.data), p.tensorFNV1a64, "\(p.library): tensor differs from the reference")
        }
    }

    func testShortestSideSizesFollowTorchvisionAndTransformers() {
        let p = ImagePreprocessing(imageSize: 224, mean: [0, 0, 0], std: [1, 1, 1])
        // int(224 * long / short)
        XCTAssertTrue(p.resizedSize(width: 500, height: 375) == (298, 224))
        XCTAssertTrue(p.resizedSize(width: 375, height: 500) == (224, 298))
        XCTAssertTrue(p.resizedSize(width: 640, height: 480) == (298, 224))   // 298.67 truncated
        XCTAssertTrue(p.resizedSize(width: 224, height: 224) == (224, 224))
        XCTAssertTrue(p.resizedSize(width: 1, height: 1000) == (224, 224_000))
        XCTAssertTrue(p.resizedSize(width: 333, height: 1000) == (224, 672))   // 672.67
        var q = p
        q.shortestEdge = 256
        XCTAssertTrue(q.resizedSize(width: 500, height: 375) == (341, 256))
        q.resizeMode = .squash
        XCTAssertTrue(q.resizedSize(width: 500, height: 375) == (224, 224))
        q.resizeMode = .longest
        XCTAssertTrue(q.resizedSize(width: 500, height: 375) == (224, 168))
        XCTAssertTrue(q.resizedSize(width: 375, height: 500) == (168, 224))
        XCTAssertTrue(q.resizedSize(width: 1000, height: 1) == (224, 1))       // never zero
    }

    func testCropOffsetsRoundLikeEachLibrary() {
        let tv = ImagePreprocessing(imageSize: 32, mean: [0, 0, 0], std: [1, 1, 1], cropRounding: .torchvision)
        let hf = ImagePreprocessing(imageSize: 32, mean: [0, 0, 0], std: [1, 1, 1], cropRounding: .transformers)
        // n - c odd: torchvision rounds half to even, transformers floors.
        XCTAssertEqual(tv.cropOffset(resized: 33), 0)   // round(0.5) = 0
        XCTAssertEqual(hf.cropOffset(resized: 33), 0)
        XCTAssertEqual(tv.cropOffset(resized: 35), 2)   // round(1.5) = 2
        XCTAssertEqual(hf.cropOffset(resized: 35), 1)
        XCTAssertEqual(tv.cropOffset(resized: 63), 16)  // round(15.5) = 16
        XCTAssertEqual(hf.cropOffset(resized: 63), 15)
        XCTAssertEqual(tv.cropOffset(resized: 37), 2)   // round(2.5) = 2
        XCTAssertEqual(tv.cropOffset(resized: 32), 0)
        // smaller than the crop: padding before the picture
        XCTAssertEqual(tv.cropOffset(resized: 27), -2)  // pad (32-27)//2 = 2 before
        XCTAssertEqual(hf.cropOffset(resized: 27), -3)  // (27-32)//2 = -3
        XCTAssertEqual(tv.cropOffset(resized: 28), -2)
        XCTAssertEqual(hf.cropOffset(resized: 28), -2)
    }

    /// The normalisation table is torch's: float32 x / 255, minus mean, divided by std.
    func testLookupTableIsFloat32Arithmetic() {
        let p = ImagePreprocessing(imageSize: 8, mean: [0.48145466, 0.4578275, 0.40821073],
                                   std: [0.26862954, 0.26130258, 0.27577711])
        let lut = p.lookupTable
        for c in 0..<3 {
            for v in [0, 1, 127, 128, 254, 255] {
                let x: Float = Float(v) / 255
                XCTAssertEqual(lut[c][v].bitPattern, ((x - Float(p.mean[c])) / Float(p.std[c])).bitPattern)
            }
        }
    }

    func testPaddingIsBlackAndBatchMatchesSingles() throws {
        // 20x27 picture, longest side to 32: 24x32 and 4 columns of padding each side.
        let image = try ImageDecoder.decode(contentsOf: Fixtures.url("png_small_20x27.png"))
        let p = ImagePreprocessing(imageSize: 32, resizeMode: .longest, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        XCTAssertTrue(p.resizedSize(width: 20, height: 27) == (24, 32))
        let t = p(image)
        for c in 0..<3 {
            for y in 0..<32 {
                for x in [0, 1, 2, 3, 28, 29, 30, 31] { XCTAssertEqual(t.data[c * 1024 + y * 32 + x], -1) }
            }
        }
        let other = try ImageDecoder.decode(contentsOf: Fixtures.url("jpeg_large_97x61.jpg"))
        let batch = p.batch([image, other, image])
        XCTAssertEqual(batch.shape, [3, 3, 32, 32])
        XCTAssertEqual(Array(batch.data[0..<3072]), t.data)
        XCTAssertEqual(Array(batch.data[3072..<6144]), p(other).data)
        XCTAssertEqual(Array(batch.data[6144..<9216]), t.data)
        XCTAssertEqual(p([other]).shape, [1, 3, 32, 32])
        XCTAssertEqual(p.batch([]).shape, [0, 3, 32, 32])
    }

    func testCodableRoundTripDefaultsAndValidation() throws {
        let p = ImagePreprocessing(imageSize: 336, resizeMode: .squash, shortestEdge: 350, interpolation: .bilinear,
                                   mean: [0.5, 0.4, 0.3], std: [0.2, 0.3, 0.4], cropRounding: .transformers)
        let data = try JSONEncoder().encode(p)
        XCTAssertEqual(try JSONDecoder().decode(ImagePreprocessing.self, from: data), p)
        let minimal = #"{"imageSize": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#
        let m = try JSONDecoder().decode(ImagePreprocessing.self, from: Data(minimal.utf8))
        XCTAssertEqual(m, ImagePreprocessing(imageSize: 224, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]))
        XCTAssertEqual(m.shortestEdge, 224)
        XCTAssertEqual(m.resizeMode, .shortest)
        XCTAssertEqual(m.interpolation, .bicubic)
        XCTAssertEqual(m.cropRounding, .torchvision)
        let bad = #"{"imageSize": 224, "mean": [0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(ImagePreprocessing.self, from: Data(bad.utf8)))
        let zero = #"{"imageSize": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0, 0.5]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(ImagePreprocessing.self, from: Data(zero.utf8)))
    }

    /// Timing of the whole path at realistic size (informational in debug builds; run
    /// `swift test -c release --filter RefractImageTests.PreprocessingTests/testTiming` for numbers).
    func testTiming() throws {
        let url = Fixtures.url(Fixtures.manifest.bench.file)
        let data = try Data(contentsOf: url)
        let p = Fixtures.manifest.bench.preprocess[0].config
        var decodeBest = Double.infinity, preBest = Double.infinity
        for _ in 0..<10 {
            let t0 = Date()
            let image = try ImageDecoder.decode(data: data, source: url.lastPathComponent)
            let t1 = Date()
            let tensor = p(image)
            let t2 = Date()
            XCTAssertEqual(tensor.shape, [3, 224, 224])
            decodeBest = min(decodeBest, t1.timeIntervalSince(t0))
            preBest = min(preBest, t2.timeIntervalSince(t1))
        }
        print(String(format: "timing 500x375 JPEG -> 224: decode %.2f ms, preprocess %.2f ms (best of 10)",
                     decodeBest * 1000, preBest * 1000))
    }
}
