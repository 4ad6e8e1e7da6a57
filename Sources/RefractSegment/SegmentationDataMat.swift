// MARK: - ImageNet-Segmentation (gtsegs_ijcv.mat)
//
// MATLAB v7.3 (HDF5) file, read exactly as the official loader does:
//   image i = np.array(f[f['value/img'][i, 0]]).transpose((2, 1, 0))        uint8 H x W x 3
//   mask i  = np.array(f[f[f['value/gt'][i, 0]][0, 0]]).transpose((1, 0))   0/1     H x W
// `/value/img` and `/value/gt` are [N, 1] object references; each image is stored transposed
// ([3, W, H], MATLAB is column-major); each gt reference points to a cell (a dataset of
// references) whose [0, 0] is the mask, stored [W, H]. The two reference arrays are read when
// the file is opened; images and masks are read one sample at a time.
//
// Masks must hold only 0 and 1 (the file's documented encoding, and what the official metrics
// assume); any other value is refused with the sample and the value rather than guessed at.

import Foundation
import RefractHDF5
import RefractImage
import RefractTensor

/// `gtsegs_ijcv.mat`, the ImageNet-Segmentation dataset (Guillaumin et al.; 4,276 images).
public final class ImageNetSegmentationMat: SegmentationDataset {
    public static let imagesPath = "/value/img"
    public static let masksPath = "/value/gt"
    /// Largest image (width x height) read, as for image files: `ImageDecoder.defaultMaxPixels`.
    public static let maxPixels = ImageDecoder.defaultMaxPixels
    /// The most entries `/value/img` and `/value/gt` may declare (checked before they are read).
    public static let maxSamples = 10_000_000
    /// The most entries a gt cell may declare (the official file's are 1x1).
    public static let maxCellEntries = 64

    public let source: String
    public let count: Int
    /// The file name, the prefix of sample names (`gtsegs_ijcv.mat#17`).
    public let fileName: String
    private let file: HDF5File
    private let images: [HDF5ObjectReference]
    private let masks: [HDF5ObjectReference]

    /// Opens the file and reads the two reference arrays; samples are read on demand.
    public init(url: URL) throws {
        let path = url.path
        source = path
        fileName = url.lastPathComponent
        // A FIFO, device or socket is refused by type before the HDF5 reader opens it.
        if FileManager.default.fileExists(atPath: path) {
            do { try InputFile.requireRegular(path) } catch let e as InputFileError {
                throw SegmentationDataError(path: path, message: "cannot open the MAT-file: \(e.reason)")
            }
        }
        let hdf: HDF5File
        do {
            hdf = try HDF5File(path: path)
        } catch let error as HDF5Error {
            throw Self.openError(error, path: path)
        }
        func references(_ objectPath: String) throws -> [HDF5ObjectReference] {
            let dataset: HDF5Dataset
            do { dataset = try hdf.dataset(objectPath) } catch let error as HDF5Error {
                // Missing or of the wrong kind: not this dataset's layout. Anything else: a damaged file.
                let layout = error.kind == .noSuchObject || error.kind == .wrongKind
                throw SegmentationDataError(path: path, message: "\(error.object ?? objectPath): \(error.message)"
                                                + (layout ? "; not an ImageNet-Segmentation file (gtsegs_ijcv.mat needs /value/img and /value/gt)"
                                                          : "; the file is damaged"))
            }
            defer { dataset.close() }
            guard dataset.elementType == .objectReference else {
                throw SegmentationDataError(path: path, message: "\(objectPath): expected object references (a MATLAB cell array), found \(dataset.elementType) elements")
            }
            let shape = dataset.shape
            let isColumn = shape.count == 1 || (shape.count == 2 && (shape[1] == 1 || shape[0] == 1))
            guard isColumn else {
                throw SegmentationDataError(path: path, message: "\(objectPath): expected shape [N, 1], found \(shape)")
            }
            // The declared size is checked before the references are read: a damaged 31 KB file
            // declared 285 million of them (2.2 GB, found by fuzzing).
            guard dataset.count <= Self.maxSamples else {
                throw SegmentationDataError(path: path, message: "\(objectPath): declares \(dataset.count) entries, more than the "
                                            + "\(Self.maxSamples) a segmentation dataset may hold (ImageNet-Segmentation has 4,276); the file is damaged")
            }
            do { return try dataset.readObjectReferences() } catch let error as HDF5Error {
                throw SegmentationDataError(path: path, message: "\(error.object ?? objectPath): \(error.message)")
            }
        }
        let imageRefs = try references(Self.imagesPath)
        let maskRefs = try references(Self.masksPath)
        guard imageRefs.count == maskRefs.count else {
            throw SegmentationDataError(path: path, message: "\(Self.imagesPath) has \(imageRefs.count) entries but \(Self.masksPath) has \(maskRefs.count)")
        }
        guard !imageRefs.isEmpty else {
            throw SegmentationDataError(path: path, message: "\(Self.imagesPath) and \(Self.masksPath) are empty")
        }
        file = hdf
        images = imageRefs
        masks = maskRefs
        count = imageRefs.count
    }

    /// Closes the file now (it is also closed when the reader is released).
    public func close() { file.close() }

    public func name(at index: Int) -> String { "\(fileName)#\(index)" }

    public func sample(at index: Int) throws -> SegmentationSample {
        guard index >= 0 && index < count else {
            throw SegmentationDataError(path: source, message: "sample index \(index) is out of range (0..<\(count))")
        }
        let name = name(at: index)
        func fail(_ object: String?, _ message: String) -> SegmentationDataError {
            SegmentationDataError(path: source, message: "sample \(index) (\(name)): " + (object.map { "\($0): " } ?? "") + message)
        }
        do {
            // Image: uint8 [3, W, H].
            let imageSet = try file.dataset(referencedBy: images[index])
            defer { imageSet.close() }
            guard imageSet.elementType == .integer(signed: false, bytes: 1) else {
                throw fail(imageSet.name, "the image must be uint8, found \(imageSet.elementType)")
            }
            let shape = imageSet.shape
            guard shape.count == 3, shape[0] == 3, shape[1] > 0, shape[2] > 0 else {
                throw fail(imageSet.name, "expected an RGB image stored as [3, W, H] (rank 3), found rank \(shape.count) shape \(shape)")
            }
            let (w, h) = (shape[1], shape[2])
            // The image decoder's decompression-bomb limit, checked before the mask or the pixels
            // are read (a few KB of HDF5 can declare a 60000 x 60000 image).
            let (pixels, overflow) = w.multipliedReportingOverflow(by: h)
            if overflow || pixels > Self.maxPixels {
                throw fail(imageSet.name, "the image is too large: declared size \(w)x\(h) (WxH) exceeds the limit of "
                    + "\(Self.maxPixels) pixels, the same limit as for image files")
            }

            // Mask: the gt entry is a cell whose [0, 0] references the mask, [W, H].
            let cell = try file.dataset(referencedBy: masks[index])
            defer { cell.close() }
            guard cell.elementType == .objectReference else {
                throw fail(cell.name, "expected a cell (object references) whose [0,0] is the mask, found \(cell.elementType) \(cell.shape)")
            }
            guard cell.count >= 1 else { throw fail(cell.name, "the cell is empty") }
            // The official file's gt cells are 1x1; a cell declaring millions of references would be
            // read whole to dereference its first one (a damaged file did, found by fuzzing).
            guard cell.count <= Self.maxCellEntries else {
                throw fail(cell.name, "expected a 1x1 cell holding the mask, found one declaring \(cell.count) entries \(cell.shape)")
            }
            let maskSet = try cell.dereference(at: 0)
            defer { maskSet.close() }
            let mshape = maskSet.shape
            guard mshape.count == 2 else {
                throw fail(maskSet.name, "expected a mask stored as [W, H] (rank 2), found rank \(mshape.count) shape \(mshape)")
            }
            guard mshape[0] == w && mshape[1] == h else {
                throw fail(maskSet.name, "the mask is \(mshape[0])x\(mshape[1]) (WxH) but the image is \(w)x\(h)")
            }
            let stored: [UInt8]
            do { stored = try maskSet.read(as: UInt8.self) } catch let error as HDF5Error where error.kind == .conversion {
                throw fail(maskSet.name, "mask values must be 0 or 1: \(error.message)")
            }
            if let bad = stored.firstIndex(where: { $0 > 1 }) {
                let n = stored.reduce(0) { $0 + ($1 > 1 ? 1 : 0) }
                throw fail(maskSet.name, "mask values must be 0 or 1, found \(stored[bad]) at column \(bad / h), row \(bad % h) (\(n) such values)")
            }
            let raw = try imageSet.read(as: UInt8.self)
            return SegmentationSample(name: name, image: RGBImage(width: w, height: h, pixels: Self.imageHWC(raw, width: w, height: h)),
                                      mask: BinaryMask(width: w, height: h, values: Self.transposed(stored, width: w, height: h)))
        } catch let error as HDF5Error {
            throw fail(error.object, error.message)
        }
    }

    /// [3, W, H] (c, x, y) -> H x W x 3 interleaved: `out[(y*W + x)*3 + c] = in[(c*W + x)*H + y]`.
    static func imageHWC(_ stored: [UInt8], width w: Int, height h: Int) -> [UInt8] {
        precondition(stored.count == 3 * w * h)
        var out = [UInt8](repeating: 0, count: stored.count)
        stored.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<3 {
                    for x in 0..<w {
                        let column = (c * w + x) * h
                        for y in 0..<h { dst[(y * w + x) * 3 + c] = src[column + y] }
                    }
                }
            }
        }
        return out
    }

    /// [W, H] (x, y) -> H x W: `out[y*W + x] = in[x*H + y]`.
    static func transposed(_ stored: [UInt8], width w: Int, height h: Int) -> [UInt8] {
        precondition(stored.count == w * h)
        var out = [UInt8](repeating: 0, count: stored.count)
        stored.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for x in 0..<w {
                    for y in 0..<h { dst[y * w + x] = src[x * h + y] }
                }
            }
        }
        return out
    }

    /// Turns a failure to open the file into a dataset error; a MAT-file that is not HDF5 says so.
    static func openError(_ error: HDF5Error, path: String) -> SegmentationDataError {
        switch error.kind {
        case .fileNotFound:
            return SegmentationDataError(path: path, message: error.message)
        case .notHDF5:
            var header = ""
            if let handle = FileHandle(forReadingAtPath: path) {
                let bytes = (try? handle.read(upToCount: 116)) ?? Data()
                try? handle.close()
                header = String(decoding: bytes.prefix(while: { $0 >= 0x20 && $0 < 0x7F }), as: UTF8.self)
                    .trimmingCharacters(in: .whitespaces)
            }
            if header.hasPrefix("MATLAB") {
                let version = header.split(separator: ",").first.map(String.init) ?? header
                return SegmentationDataError(path: path, message: "\(version), not MATLAB v7.3: only v7.3 MAT-files (HDF5) can be read; re-save it in MATLAB with save(..., '-v7.3')")
            }
            return SegmentationDataError(path: path, message: "not an HDF5 file: gtsegs_ijcv.mat must be a MATLAB v7.3 MAT-file (HDF5)")
        default:
            return SegmentationDataError(path: path, message: error.message)
        }
    }
}
