// MARK: - ImageDecoder
//
// JPEG and PNG to `RGBImage`, pixel for pixel what Pillow's `Image.open(f).convert("RGB")`
// gives (docs/Images.md lists the conventions). The format is sniffed from the first bytes,
// never from the file extension. The header is read first and the declared size checked
// against a pixel limit before any pixel memory is allocated.

import CRefractCodecs
import Foundation
import RefractTensor

/// The container formats Refract decodes.
public enum ImageFormat: String, Sendable, Equatable {
    case jpeg
    case png
}

/// What the header says, read without decoding pixels.
public struct ImageInfo: Sendable, Equatable {
    public var format: ImageFormat
    public var width: Int
    public var height: Int
    /// Components as stored: JPEG 1 (gray), 3 (YCbCr/RGB), 4 (CMYK/YCCK); PNG 1 gray, 2 gray+alpha,
    /// 3 RGB or palette, 4 RGBA.
    public var channels: Int
    /// Bits per sample as stored (JPEG 8; PNG 1, 2, 4, 8 or 16).
    public var bitDepth: Int
    /// JPEG: progressive; PNG: Adam7 interlaced.
    public var progressive: Bool
    public var pixelCount: Int { width * height }

    public init(format: ImageFormat, width: Int, height: Int, channels: Int, bitDepth: Int, progressive: Bool) {
        self.format = format
        self.width = width
        self.height = height
        self.channels = channels
        self.bitDepth = bitDepth
        self.progressive = progressive
    }
}

public enum ImageDecoder {
    /// Pillow's decompression-bomb error threshold: `2 * Image.MAX_IMAGE_PIXELS`
    /// (2 * 89,478,485). Pillow warns above half of this and refuses above it; Refract refuses
    /// above it. At this size the RGB buffer alone is about 512 MiB.
    public static let defaultMaxPixels = 178_956_970

    /// Reads and decodes a JPEG or PNG file.
    public static func decode(contentsOf url: URL, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> RGBImage {
        let data = try readFile(url)
        return try decode(data: data, source: url.path, maxPixels: maxPixels)
    }

    /// Decodes JPEG or PNG bytes. `source` names the data in error messages.
    public static func decode(data: Data, source: String, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> RGBImage {
        let info = try probe(data: data, source: source)
        if info.pixelCount > maxPixels {
            throw ImageError(source: source, kind: .tooLarge,
                             detail: "declared size \(info.width)x\(info.height) (\(info.pixelCount) pixels) exceeds the limit of \(maxPixels) pixels")
        }
        let count = info.pixelCount * 3
        var error = refract_codec_error()
        var status: Int32 = 0
        let pixels = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            status = data.withUnsafeBytes { raw -> Int32 in
                let bytes = raw.bindMemory(to: UInt8.self)
                switch info.format {
                case .jpeg:
                    return refract_jpeg_decode(bytes.baseAddress, bytes.count, buffer.baseAddress, count,
                                               UInt32(info.width), UInt32(info.height), &error)
                case .png:
                    return refract_png_decode(bytes.baseAddress, bytes.count, buffer.baseAddress, count,
                                              UInt32(info.width), UInt32(info.height), &error)
                }
            }
            if status != 0 { buffer.initialize(repeating: 0) }  // never hand out uninitialised bytes
            initialized = count
        }
        if status != 0 { throw codecError(status, error, info.format, source) }
        return RGBImage(width: info.width, height: info.height, pixels: pixels)
    }

    /// Reads the header only: format, declared size and layout. Nothing proportional to the
    /// image size is allocated.
    public static func probe(data: Data, source: String) throws -> ImageInfo {
        if data.isEmpty { throw ImageError(source: source, kind: .empty, detail: "") }
        let format = try sniff(data, source: source)
        var info = refract_image_info()
        var error = refract_codec_error()
        let status = data.withUnsafeBytes { raw -> Int32 in
            let bytes = raw.bindMemory(to: UInt8.self)
            switch format {
            case .jpeg: return refract_jpeg_probe(bytes.baseAddress, bytes.count, &info, &error)
            case .png: return refract_png_probe(bytes.baseAddress, bytes.count, &info, &error)
            }
        }
        if status != 0 { throw codecError(status, error, format, source) }
        if info.width == 0 || info.height == 0 {
            throw ImageError(source: source, kind: .corrupt, detail: "header declares a zero size (\(info.width)x\(info.height))")
        }
        return ImageInfo(format: format, width: Int(info.width), height: Int(info.height),
                         channels: Int(info.channels), bitDepth: Int(info.bit_depth),
                         progressive: info.progressive != 0)
    }

    /// Reads the header of a file. Only the file's bytes are loaded, no pixels are decoded.
    public static func probe(contentsOf url: URL) throws -> ImageInfo {
        try probe(data: readFile(url), source: url.path)
    }

    /// Versions of the codec libraries this build links, e.g. "libjpeg-turbo 2.1.5, libpng 1.6.39".
    public static var codecVersions: String {
        let j = Int(refract_jpeg_library_version())
        let jpeg = j > 1_000_000 ? "libjpeg-turbo \(j / 1_000_000).\(j / 1000 % 1000).\(j % 1000)" : "libjpeg \(j)"
        let png = String(cString: refract_png_library_version())
        return "\(jpeg), libpng \(png)"
    }

    // MARK: Internals

    /// The file's bytes; a directory, FIFO, device or socket is refused by its type before it is
    /// opened (`InputFile`), so nothing can block on it and the message says what it is.
    private static func readFile(_ url: URL) throws -> Data {
        do {
            return try InputFile.read(url.path)
        } catch let error as InputFileError {
            throw ImageError(source: url.path, kind: .unreadable, detail: error.reason)
        }
    }

    /// Format by magic bytes; other well-known formats are named in the error.
    static func sniff(_ data: Data, source: String) throws -> ImageFormat {
        let head = [UInt8](data.prefix(16))
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            head.count >= offset + magic.count && Array(head[offset..<(offset + magic.count)]) == magic
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        let ascii = { (s: String) in Array(s.utf8) }
        let other: String?
        if starts(ascii("GIF87a")) || starts(ascii("GIF89a")) { other = "GIF" }
        else if starts(ascii("RIFF")) && starts(ascii("WEBP"), at: 8) { other = "WebP" }
        else if starts(ascii("BM")) { other = "BMP" }
        else if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { other = "TIFF" }
        else if starts(ascii("ftyp"), at: 4) {
            let brand = head.count >= 12 ? String(decoding: head[8..<12], as: UTF8.self) : ""
            other = brand.hasPrefix("avi") ? "AVIF" : "HEIF/ISO media (\(brand))"
        }
        else if starts([0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20]) || starts([0xFF, 0x4F, 0xFF, 0x51]) { other = "JPEG 2000" }
        else if starts([0xFF, 0x0A]) || starts([0x00, 0x00, 0x00, 0x0C, 0x4A, 0x58, 0x4C, 0x20]) { other = "JPEG XL" }
        else if starts(ascii("8BPS")) { other = "Photoshop PSD" }
        else if starts(ascii("%PDF")) { other = "PDF" }
        else if starts([0x00, 0x00, 0x01, 0x00]) { other = "ICO" }
        else { other = nil }
        if let other {
            throw ImageError(source: source, kind: .unsupported, detail: "\(other) data; only JPEG and PNG are decoded")
        }
        let hex = head.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
        throw ImageError(source: source, kind: .unsupported,
                         detail: "not a JPEG or PNG file (unrecognised content, first bytes \(hex))")
    }

    private static func codecError(_ status: Int32, _ error: refract_codec_error, _ format: ImageFormat,
                                   _ source: String) -> ImageError {
        var copy = error
        let message = withUnsafeBytes(of: &copy.message) { raw -> String in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
        let name = format == .jpeg ? "JPEG" : "PNG"
        let kind: ImageError.Kind
        switch Int(status) {
        case Int(REFRACT_CODEC_TRUNCATED): kind = .truncated
        case Int(REFRACT_CODEC_UNSUPPORTED): kind = .unsupported
        case Int(REFRACT_CODEC_NOMEM): kind = .tooLarge
        default: kind = .corrupt
        }
        return ImageError(source: source, kind: kind, detail: "\(name): \(message)")
    }
}
