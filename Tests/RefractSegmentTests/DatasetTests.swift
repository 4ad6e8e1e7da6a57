import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractTensor
import RefractTestSupport
import XCTest
@testable import RefractSegment

/// Tests/Fixtures/segment/data, written by scripts/fixtures/segmentation_data.py (see its README).
enum DatasetFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/segment/data", isDirectory: true)
    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    struct Alignment: Decodable { let tag: String; let preprocessing: ImagePreprocessing; let alignment: MaskAlignment }
    struct Sample: Decodable { let name: String; let width: Int; let height: Int; let image: String; let mask: String; let aligned: [String: String] }
    struct MatSet: Decodable { let file: String; let count: Int; let samples: [Sample] }
    struct FolderSet: Decodable { let directory: String; let count: Int; let samples: [Sample] }
    struct BadMat: Decodable { let file: String; let when: String; let index: Int?; let expect: [String] }
    struct BadFolder: Decodable { let directory: String; let when: String; let index: Int?; let expect: [String] }
    struct Manifest: Decodable {
        let alignments: [Alignment]
        let mat: MatSet
        let badMat: [BadMat]
        let folder: FolderSet
        let badFolder: [BadFolder]
        let versions: [String: String]
    }

    static let manifest: Manifest = {
        do {
            return try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: url("manifest.json")))
        } catch {
            fatalError("cannot load \(url("manifest.json").path): \(error)")
        }
    }()

    static func alignment(_ tag: String) -> Alignment { manifest.alignments.first { $0.tag == tag }! }

    /// A uint8 .npy fixture: shape and values.
    static func bytes(_ name: String) throws -> (shape: [Int], values: [UInt8]) {
        guard case .uint8(let shape, let values) = try NPY.read(url(name)) else {
            throw SegmentationDataError(path: name, message: "expected a uint8 .npy")
        }
        return (shape, values)
    }

    /// The SegmentationDataError `body` throws (fails the test otherwise).
    static func error<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> SegmentationDataError? {
        do {
            _ = try body()
            XCTFail("expected a SegmentationDataError", file: file, line: line)
        } catch let error as SegmentationDataError {
            return error
        } catch {
            XCTFail("expected a SegmentationDataError, got \(error)", file: file, line: line)
        }
        return nil
    }

    static func mask(_ rows: [[UInt8]]) -> BinaryMask {
        BinaryMask(width: rows[0].count, height: rows.count, values: rows.flatMap { $0 })
    }

    static func preprocessing(_ size: Int, _ mode: ImagePreprocessing.ResizeMode = .shortest,
                              rounding: ImagePreprocessing.CropRounding = .torchvision, shortest: Int? = nil) -> ImagePreprocessing {
        ImagePreprocessing(imageSize: size, resizeMode: mode, shortestEdge: shortest, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5],
                           cropRounding: rounding)
    }
}

final class DatasetTests: XCTestCase {
    typealias F = DatasetFixtures

    // MARK: gtsegs_ijcv.mat

    func checkSamples(_ dataset: any SegmentationDataset, _ expected: [F.Sample], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(dataset.count, expected.count, file: file, line: line)
        for (i, e) in expected.enumerated() {
            let s = try dataset.sample(at: i)
            XCTAssertEqual(s.name, e.name, file: file, line: line)
            XCTAssertEqual(s.image.width, e.width, e.name, file: file, line: line)
            XCTAssertEqual(s.image.height, e.height, e.name, file: file, line: line)
            let image = try F.bytes(e.image), mask = try F.bytes(e.mask)
            XCTAssertEqual(image.shape, [e.height, e.width, 3], file: file, line: line)
            XCTAssertEqual(s.image.pixels, image.values, "\(e.name): image differs from the official loader's", file: file, line: line)
            XCTAssertEqual(mask.shape, [e.height, e.width], file: file, line: line)
            XCTAssertEqual(s.mask.width, e.width, file: file, line: line)
            XCTAssertEqual(s.mask.height, e.height, file: file, line: line)
            XCTAssertEqual(s.mask.values, mask.values, "\(e.name): mask differs from the official loader's", file: file, line: line)
        }
    }

    func testMatSamplesEqualTheOfficialLoader() throws {
        let m = F.manifest.mat
        let dataset = try SegmentationDatasets.open(F.url(m.file))
        XCTAssertTrue(dataset is ImageNetSegmentationMat)
        XCTAssertEqual(dataset.source, F.url(m.file).path)
        XCTAssertEqual(m.samples.map(\.name), (0..<4).map { "gtsegs_ijcv.mat#\($0)" })
        try checkSamples(dataset, m.samples)
        // Any order, any number of times: samples are read on demand.
        let again = try dataset.sample(at: 2)
        XCTAssertEqual(again.mask.values, try F.bytes(m.samples[2].mask).values)
        let range = F.error { try dataset.sample(at: 4) }
        XCTAssertTrue(range?.message.contains("out of range") ?? false)
        XCTAssertNotNil(F.error { try dataset.sample(at: -1) })
    }

    func testMatConcurrentReads() throws {
        let dataset = try ImageNetSegmentationMat(url: F.url(F.manifest.mat.file))
        let serial = try (0..<dataset.count).map { try dataset.sample(at: $0) }
        let mismatches = Mismatches()
        DispatchQueue.concurrentPerform(iterations: 32) { i in
            let k = i % dataset.count
            guard let s = try? dataset.sample(at: k), s.image == serial[k].image, s.mask == serial[k].mask else {
                mismatches.add(); return
            }
        }
        XCTAssertEqual(mismatches.value, 0)
        dataset.close()
        XCTAssertNotNil(F.error { try dataset.sample(at: 0) })
    }

    func testBadMatFiles() throws {
        for bad in F.manifest.badMat {
            let url = F.url(bad.file)
            let error: SegmentationDataError?
            if bad.when == "open" {
                error = F.error { try SegmentationDatasets.open(url) }
            } else {
                let dataset = try SegmentationDatasets.open(url)
                error = F.error { try dataset.sample(at: bad.index!) }
            }
            guard let error else { continue }
            XCTAssertEqual(error.path, url.path, bad.file)
            for word in bad.expect {
                XCTAssertTrue(error.description.contains(word), "\(bad.file): '\(word)' not in: \(error)")
            }
        }
    }

    func testMatErrorMessages() throws {
        let missing = F.error { try SegmentationDatasets.open(F.url("bad_missing_gt.mat")) }
        XCTAssertTrue(missing?.message.contains("/value/gt") ?? false, "\(String(describing: missing))")
        XCTAssertTrue(missing?.message.contains("/value holds /value/img") ?? false, "\(String(describing: missing))")

        let v5 = F.error { try SegmentationDatasets.open(F.url("bad_v5.mat")) }
        XCTAssertEqual(v5?.message, "MATLAB 5.0 MAT-file, not MATLAB v7.3: only v7.3 MAT-files (HDF5) can be read; re-save it in MATLAB with save(..., '-v7.3')")

        let values = try SegmentationDatasets.open(F.url("bad_mask_values.mat"))
        let e = F.error { try values.sample(at: 0) }
        // The file, the sample, the object path through both references, the value.
        XCTAssertTrue(e?.message.hasPrefix("sample 0 (bad_mask_values.mat#0): /value/gt[0,0] -> /#refs#/") ?? false, "\(String(describing: e))")
        XCTAssertTrue(e?.message.hasSuffix("mask values must be 0 or 1, found 2 at column 0, row 0 (8 such values)") ?? false, "\(String(describing: e))")

        let size = try SegmentationDatasets.open(F.url("bad_size_mismatch.mat"))
        XCTAssertNoThrow(try size.sample(at: 0))
        let e2 = F.error { try size.sample(at: 1) }
        XCTAssertTrue(e2?.message.contains("the mask is 3x4 (WxH) but the image is 4x3") ?? false, "\(String(describing: e2))")

        // Not a file that exists; a directory without images/; a file that is neither.
        let nowhere = F.url("nothing_here.mat")
        XCTAssertTrue(F.error { try SegmentationDatasets.open(nowhere) }?.message.contains("no such file") ?? false)
        XCTAssertTrue(F.error { try ImageNetSegmentationMat(url: nowhere) }?.message.contains("no such file") ?? false)
        XCTAssertTrue(F.error { try SegmentationDatasets.open(F.url("expected")) }?.message.contains("images/") ?? false)
        let readme = F.error { try SegmentationDatasets.open(F.url("README.md")) }
        XCTAssertTrue(readme?.message.contains("not a segmentation dataset") ?? false, "\(String(describing: readme))")
        // An HDF5 file that is not a .mat is not taken for one by open(), but the reader says what is missing.
        let h5 = F.error { try ImageNetSegmentationMat(url: F.url("hdf5_types.h5")) }
        XCTAssertTrue(h5?.message.contains("/value/img") ?? false, "\(String(describing: h5))")
    }

    /// A 7 KB MAT-file declaring one 60000 x 60000 image (scripts/fixtures/huge_image_mat.c; chunks
    /// never written): refused by the image decoder's pixel limit before the mask or any pixel is
    /// read, naming the sample, the declared size and the limit.
    func testMatImageOverThePixelLimitIsRefusedBeforeReading() throws {
        let url = F.url("bad_huge_image.mat")
        XCTAssertLessThan(try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int), 16_384)
        let dataset = try SegmentationDatasets.open(url)
        XCTAssertEqual(dataset.count, 1)
        let start = Date()
        let error = F.error { try dataset.sample(at: 0) }
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
        XCTAssertEqual(error?.path, url.path)
        for word in ["sample 0 (bad_huge_image.mat#0)", "too large", "60000x60000",
                     "\(ImageDecoder.defaultMaxPixels) pixels", "same limit as for image files"] {
            XCTAssertTrue(error?.description.contains(word) ?? false, "'\(word)' not in: \(String(describing: error))")
        }
        XCTAssertEqual(ImageNetSegmentationMat.maxPixels, ImageDecoder.defaultMaxPixels)
    }

    /// A damaged file (found by fuzzing) whose gt cell declares ~285 million references is refused
    /// from the declared size, before anything is read (it used to read and zero-fill 2.2 GB).
    func testMatDeclaringHugeReferenceArraysIsRefusedBeforeReading() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/fuzz/hdf5_reference_array_2GB.mat")
        let start = Date()
        var messages = [String]()
        do {
            let dataset = try SegmentationDatasets.open(url)
            for i in 0..<dataset.count {
                do { _ = try dataset.sample(at: i) } catch { messages.append("\(error)") }
            }
        } catch { messages.append("\(error)") }
        XCTAssertTrue(messages.contains { $0.contains(url.path) && $0.contains("declaring") || $0.contains("declares") }, "\(messages)")
        XCTAssertLessThan(Date().timeIntervalSince(start), 2)
    }

    /// A named pipe or a directory given as the .mat is refused by type before HDF5 opens (and
    /// would block on) it.
    func testNonRegularMatPathsAreRefusedByType() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refract-seg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("pipe.mat")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        let e = returnsPromptly(within: 10, unblocking: fifo.path) { F.error { try ImageNetSegmentationMat(url: fifo) } } ?? nil
        XCTAssertTrue(e?.description.contains("named pipe (FIFO)") ?? false, "\(String(describing: e))")
        XCTAssertTrue(e?.description.contains(fifo.path) ?? false, "\(String(describing: e))")
        let folder = dir.appendingPathComponent("folder.mat")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let d = F.error { try ImageNetSegmentationMat(url: folder) }
        XCTAssertTrue(d?.description.contains("is a directory") ?? false, "\(String(describing: d))")
    }

    // MARK: Folder datasets

    func testFolderSamples() throws {
        let m = F.manifest.folder
        let dataset = try SegmentationDatasets.open(F.url(m.directory))
        XCTAssertTrue(dataset is SegmentationFolder)
        // Code-point order: "Cat" (C = U+0043) before "bird".
        XCTAssertEqual(m.samples.map(\.name), ["Cat", "bird", "dog"])
        XCTAssertEqual((dataset as! SegmentationFolder).stems, ["Cat", "bird", "dog"])
        try checkSamples(dataset, m.samples)
    }

    func testBadFolders() throws {
        for bad in F.manifest.badFolder {
            let url = F.url(bad.directory)
            let error: SegmentationDataError?
            if bad.when == "open" {
                error = F.error { try SegmentationDatasets.open(url) }
            } else {
                let dataset = try SegmentationDatasets.open(url)
                error = F.error { try dataset.sample(at: bad.index!) }
            }
            guard let error else { continue }
            XCTAssertTrue(error.path.hasPrefix(url.path), "\(bad.directory): \(error)")
            for word in bad.expect {
                XCTAssertTrue(error.description.contains(word), "\(bad.directory): '\(word)' not in: \(error)")
            }
        }
        let mismatch = try SegmentationDatasets.open(F.url("folder_size_mismatch"))
        XCTAssertEqual(F.error { try mismatch.sample(at: 0) }?.message,
                       "the mask masks/x.png is 8x10 but the image images/x.png is 10x8 (WxH)")
        XCTAssertEqual(F.error { try SegmentationDatasets.open(F.url("folder_missing_mask")) }?.message,
                       "no mask for images/b.png (expected masks/b.png)")
    }

    func testFolderWithDuplicateStemsAndNoImages() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("refract-seg-folder-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        let images = root.appendingPathComponent("images"), masks = root.appendingPathComponent("masks")
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: masks, withIntermediateDirectories: true)
        XCTAssertTrue(F.error { try SegmentationFolder(directory: root) }?.message.contains("no images") ?? false)
        let png = F.url("folder/images/Cat.png")
        try FileManager.default.copyItem(at: png, to: images.appendingPathComponent("a.png"))
        try FileManager.default.copyItem(at: F.url("folder/images/dog.jpg"), to: images.appendingPathComponent("a.JPG"))
        let dup = F.error { try SegmentationFolder(directory: root) }
        XCTAssertTrue(dup?.message.contains("images/a.JPG and images/a.png have the same name") ?? false, "\(String(describing: dup))")
        try FileManager.default.removeItem(at: images.appendingPathComponent("a.JPG"))
        try FileManager.default.copyItem(at: F.url("folder/masks/Cat.png"), to: masks.appendingPathComponent("a.png"))
        let one = try SegmentationFolder(directory: root)
        XCTAssertEqual(one.count, 1)
        XCTAssertEqual(try one.sample(at: 0).mask.values, try F.bytes("expected/folder_Cat_mask.npy").values)
    }

    // MARK: Alignment

    func testAlignmentsMatchTorchvisionAndPillow() throws {
        var checked = 0
        for sample in F.manifest.mat.samples + F.manifest.folder.samples {
            let truth = try F.bytes(sample.mask)
            let mask = BinaryMask(width: sample.width, height: sample.height, values: truth.values)
            for (tag, file) in sample.aligned.sorted(by: { $0.key < $1.key }) {
                let a = F.alignment(tag)
                let expected = try F.bytes(file)
                let got = mask.aligned(to: a.preprocessing, alignment: a.alignment)
                XCTAssertEqual(expected.shape, [a.preprocessing.imageSize, a.preprocessing.imageSize])
                XCTAssertEqual(got.width, a.preprocessing.imageSize)
                XCTAssertEqual(got.height, a.preprocessing.imageSize)
                let wrong = zip(got.values, expected.values).filter { $0 != $1 }.count
                XCTAssertEqual(wrong, 0, "\(sample.name) \(tag): \(wrong) pixels differ")
                checked += 1
            }
        }
        XCTAssertEqual(checked, 4 * 7 + 3 * 2)
    }

    func testExact32IsOpenCLIPTinysPreprocessing() throws {
        // The exact32 / gandelsman32 references use the geometry of the openclip-tiny fixture model.
        let dir = F.directory.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/openclip-tiny")
        let model = try CLIP(location: ModelLocation(directory: dir, layout: try ModelLocation.detectLayout(in: dir), modelId: "openclip-tiny"))
        let p = model.preprocessing, ref = F.alignment("exact32").preprocessing
        XCTAssertEqual(p.imageSize, ref.imageSize)
        XCTAssertEqual(p.resizeMode, ref.resizeMode)
        XCTAssertEqual(p.shortestEdge, ref.shortestEdge)
        XCTAssertEqual(p.cropRounding, ref.cropRounding)
    }

    func testHandCheckedAlignment() {
        // 4 x 2 mask; S = 2, shortest side 2: resized 4 x 2 (unchanged), crop columns 1...2.
        let m = F.mask([[0, 1, 1, 0],
                        [1, 0, 0, 1]])
        let p = F.preprocessing(2)
        XCTAssertEqual(m.aligned(to: p, alignment: .exact), F.mask([[1, 1], [0, 0]]))
        // The official transform squeezes the width instead: columns at 1.0 and 3.0 -> 1 and 3.
        XCTAssertEqual(m.aligned(to: p, alignment: .gandelsman2024), F.mask([[1, 0], [0, 1]]))
        // transformers rounding: (4 - 2) // 2 = 1 as well.
        XCTAssertEqual(m.aligned(to: F.preprocessing(2, rounding: .transformers), alignment: .exact), F.mask([[1, 1], [0, 0]]))

        // Pillow's accumulated coordinate: 2 -> 7 columns, scale 2/7. Output 3 sits exactly on
        // 1.0 but the running sum 1/7 + 2/7 + 2/7 + 2/7 falls just short, so it takes column 0.
        let row = F.mask([[0, 1]])
        XCTAssertEqual(row.resizedNearest(width: 7, height: 1), F.mask([[0, 0, 0, 0, 1, 1, 1]]))
        XCTAssertEqual(PillowNearest.sourceIndices(source: 2, destination: 7), [0, 0, 0, 0, 1, 1, 1])
        XCTAssertEqual(PillowNearest.sourceIndices(source: 5, destination: 2), [1, 3])
        XCTAssertEqual(PillowNearest.sourceIndices(source: 3, destination: 3), [0, 1, 2])

        // 3 x 2 mask shrunk to S = 1 (shortest): resized int(1 * 3 / 2) = 1 x 1, the centre pixel (1, 1).
        let small = F.mask([[0, 0, 0], [0, 1, 0]])
        XCTAssertEqual(small.aligned(to: F.preprocessing(1), alignment: .exact), F.mask([[1]]))

        // "longest": 4 x 2 all foreground on a 4 x 4 grid: resized 4 x 2, padded one row above and below.
        let full = F.mask([[1, 1, 1, 1], [1, 1, 1, 1]])
        XCTAssertEqual(full.aligned(to: F.preprocessing(4, .longest), alignment: .exact),
                       F.mask([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]))
        // "squash" is the official transform's geometry.
        XCTAssertEqual(m.aligned(to: F.preprocessing(2, .squash), alignment: .exact),
                       m.aligned(to: p, alignment: .gandelsman2024))
        // A square mask already at S: both alignments are the identity.
        let square = F.mask([[1, 0], [0, 1]])
        XCTAssertEqual(square.aligned(to: p, alignment: .exact), square)
        XCTAssertEqual(square.aligned(to: p, alignment: .gandelsman2024), square)
    }

    func testRealFileIfAvailable() throws {
        // Set REFRACT_GTSEGS=/path/to/gtsegs_ijcv.mat to check the reader on the real dataset.
        guard let path = ProcessInfo.processInfo.environment["REFRACT_GTSEGS"] else {
            throw XCTSkip("REFRACT_GTSEGS not set")
        }
        let dataset = try SegmentationDatasets.open(URL(fileURLWithPath: path))
        XCTAssertEqual(dataset.count, 4276)
        for i in [0, 1, dataset.count - 1] {
            let s = try dataset.sample(at: i)
            XCTAssertEqual(s.mask.width, s.image.width)
            XCTAssertTrue(s.mask.values.contains(1))
        }
    }
}

private final class Mismatches: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

