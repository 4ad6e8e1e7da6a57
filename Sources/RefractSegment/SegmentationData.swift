// MARK: - Segmentation datasets: the interface shared by the dataset readers and the segmentation code
//
// Readers: `ImageNetSegmentationMat` (gtsegs_ijcv.mat, SegmentationDataMat.swift) and
// `SegmentationFolder` (images/ + masks/, SegmentationDataFolder.swift). Mask alignment onto the
// model's input grid: SegmentationDataAlignment.swift. Formats and choices: docs/Datasets.md.

import Foundation
import RefractImage

/// A binary mask, row-major [height, width]: 1 = foreground, 0 = background.
public struct BinaryMask: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var values: [UInt8]
    public init(width: Int, height: Int, values: [UInt8]) {
        precondition(values.count == width * height, "mask values \(values.count) != \(width)x\(height)")
        self.width = width; self.height = height; self.values = values
    }
}

/// One image with its ground-truth mask of the same size.
public struct SegmentationSample: Sendable {
    /// A stable name for reports and overlay files (file stem, or `gtsegs_ijcv.mat#17`).
    public var name: String
    public var image: RGBImage
    public var mask: BinaryMask
    public init(name: String, image: RGBImage, mask: BinaryMask) { self.name = name; self.image = image; self.mask = mask }
}

/// Random access to a segmentation dataset's samples.
public protocol SegmentationDataset: Sendable {
    /// What was opened (the path), for messages.
    var source: String { get }
    var count: Int { get }
    func sample(at index: Int) throws -> SegmentationSample
}

extension SegmentationDataset {
    /// Reads the first `limit` samples (all when nil) and throws the first problem, so that a run
    /// refuses a damaged dataset by name before it writes anything (about 8 ms a sample: ~35 s
    /// for ImageNet-Segmentation's 4,276, against ~20 minutes of segmentation).
    public func checkSamples(limit: Int? = nil) throws {
        for index in 0..<min(count, max(0, limit ?? count)) { _ = try sample(at: index) }
    }
}

/// A dataset file or folder that cannot be used: names the file and what is wrong.
public struct SegmentationDataError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public init(path: String, message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

/// How a mask is brought onto the model's input grid.
public enum MaskAlignment: String, Sendable, CaseIterable, Codable {
    /// The image's own transform (shortest-side resize, centre crop) with nearest-neighbour sampling.
    case exact
    /// The official code's: resize to the square input size with nearest neighbour, no crop.
    case gandelsman2024
}

public enum SegmentationDatasets {
    /// Opens `gtsegs_ijcv.mat` (ImageNet-Segmentation, MATLAB v7.3) or a folder of images with PNG masks.
    ///
    /// A directory is read as a `SegmentationFolder` (`images/` + `masks/`); a file ending in
    /// `.mat` (any case) as an `ImageNetSegmentationMat`. Anything else is refused.
    public static func open(_ url: URL) throws -> any SegmentationDataset {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw SegmentationDataError(path: path, message: "no such file or directory (expected gtsegs_ijcv.mat or a folder with images/ and masks/)")
        }
        if isDirectory.boolValue { return try SegmentationFolder(directory: url) }
        if url.pathExtension.lowercased() == "mat" { return try ImageNetSegmentationMat(url: url) }
        throw SegmentationDataError(path: path, message: "not a segmentation dataset: expected a .mat file (ImageNet-Segmentation gtsegs_ijcv.mat, MATLAB v7.3) or a folder with images/ and masks/")
    }
}
