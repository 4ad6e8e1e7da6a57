// MARK: - Folder datasets: images/ + masks/
//
//   DIR/images/<stem>.jpg | .jpeg | .png     (extension in any case)
//   DIR/masks/<stem>.png                     (exactly this name)
//
// Samples are sorted by stem in code-point order (Python's `sorted`), named by stem. Files in
// images/ with other extensions and hidden files are ignored, as are masks without an image.
// A mask is decoded like any image (`ImageDecoder`, i.e. Pillow's `convert("RGB")`), and a
// pixel is foreground when any of its R, G, B values is non-zero. For palette PNGs that means
// the palette *colour*, not the index: an index whose colour is black is background. Alpha is
// dropped, so a mask drawn only in the alpha channel reads as all background.
// Listing and mask presence are checked when the folder is opened; decoding and sizes when a
// sample is read.

import Foundation
import RefractImage

/// A folder of images with PNG masks.
public struct SegmentationFolder: SegmentationDataset {
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    public let source: String
    public let directory: URL
    /// Sample names, sorted by code point.
    public let stems: [String]
    public let imageFiles: [URL]
    public let maskFiles: [URL]
    public var count: Int { stems.count }

    public init(directory: URL) throws {
        let path = directory.path
        self.directory = directory
        source = path
        let fm = FileManager.default
        let imagesDir = directory.appendingPathComponent("images", isDirectory: true)
        let masksDir = directory.appendingPathComponent("masks", isDirectory: true)
        func isDirectory(_ url: URL) -> Bool {
            var d: ObjCBool = false
            return fm.fileExists(atPath: url.path, isDirectory: &d) && d.boolValue
        }
        guard isDirectory(imagesDir) else {
            throw SegmentationDataError(path: path, message: "no images/ folder (a segmentation folder holds images/<name>.{jpg,jpeg,png} and masks/<name>.png)")
        }
        guard isDirectory(masksDir) else {
            throw SegmentationDataError(path: path, message: "no masks/ folder (a segmentation folder holds images/<name>.{jpg,jpeg,png} and masks/<name>.png)")
        }
        let entries: [URL]
        do {
            entries = try fm.contentsOfDirectory(at: imagesDir, includingPropertiesForKeys: [.isRegularFileKey],
                                                 options: [.skipsHiddenFiles])
        } catch {
            throw SegmentationDataError(path: imagesDir.path, message: "cannot list the folder: \(error.localizedDescription)")
        }
        var byStem: [String: URL] = [:]
        for url in entries where Self.imageExtensions.contains(url.pathExtension.lowercased()) {
            if (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == false { continue }
            let stem = url.deletingPathExtension().lastPathComponent
            if let other = byStem[stem] {
                let pair = [other.lastPathComponent, url.lastPathComponent].sorted()
                throw SegmentationDataError(path: imagesDir.path, message: "images/\(pair[0]) and images/\(pair[1]) have the same name; each sample needs a unique stem")
            }
            byStem[stem] = url
        }
        guard !byStem.isEmpty else {
            throw SegmentationDataError(path: imagesDir.path, message: "no images (.jpg, .jpeg or .png) in the folder")
        }
        let sorted = byStem.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        var missing: [String] = []
        var masks: [URL] = []
        for stem in sorted {
            let mask = masksDir.appendingPathComponent(stem + ".png")
            if fm.fileExists(atPath: mask.path) { masks.append(mask) } else {
                missing.append("images/\(byStem[stem]!.lastPathComponent) (expected masks/\(stem).png)")
            }
        }
        if !missing.isEmpty {
            let shown = missing.prefix(5).joined(separator: ", ") + (missing.count > 5 ? ", ..." : "")
            throw SegmentationDataError(path: path, message: missing.count == 1 ? "no mask for \(shown)"
                                            : "\(missing.count) images have no mask: \(shown)")
        }
        stems = sorted
        imageFiles = sorted.map { byStem[$0]! }
        maskFiles = masks
    }

    public func sample(at index: Int) throws -> SegmentationSample {
        guard index >= 0 && index < count else {
            throw SegmentationDataError(path: source, message: "sample index \(index) is out of range (0..<\(count))")
        }
        let imageURL = imageFiles[index], maskURL = maskFiles[index]
        let image: RGBImage, maskImage: RGBImage
        do { image = try ImageDecoder.decode(contentsOf: imageURL) } catch let error as ImageError {
            throw SegmentationDataError(path: imageURL.path, message: "image \(index) (\(stems[index])): \(Self.problem(error))")
        }
        do { maskImage = try ImageDecoder.decode(contentsOf: maskURL) } catch let error as ImageError {
            throw SegmentationDataError(path: maskURL.path, message: "mask \(index) (\(stems[index])): \(Self.problem(error))")
        }
        guard maskImage.width == image.width && maskImage.height == image.height else {
            throw SegmentationDataError(path: maskURL.path, message: "the mask masks/\(maskURL.lastPathComponent) is \(maskImage.width)x\(maskImage.height) but the image images/\(imageURL.lastPathComponent) is \(image.width)x\(image.height) (WxH)")
        }
        return SegmentationSample(name: stems[index], image: image, mask: Self.binary(maskImage))
    }

    /// Foreground wherever any channel is non-zero.
    static func binary(_ image: RGBImage) -> BinaryMask {
        let n = image.width * image.height
        var values = [UInt8](repeating: 0, count: n)
        image.pixels.withUnsafeBufferPointer { p in
            for i in 0..<n where (p[3 * i] | p[3 * i + 1] | p[3 * i + 2]) != 0 { values[i] = 1 }
        }
        return BinaryMask(width: image.width, height: image.height, values: values)
    }

    /// An image error without its source prefix (the dataset error names the file already).
    static func problem(_ error: ImageError) -> String {
        let text = error.description
        let prefix = error.source + ": "
        return text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
    }
}
