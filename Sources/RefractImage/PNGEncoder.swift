// MARK: - PNGEncoder
//
// `RGBImage` / `RGBAImage` to PNG: 8 bits per sample, non-interlaced, no ancillary chunks, so
// the same pixels always give the same bytes. Encoding goes through libpng (CRefractCodecs);
// files are written atomically: the bytes go to a temporary file in the target directory, which
// is flushed and then renamed over the target, so a reader sees either the old file or the
// complete new one, and a failure leaves nothing behind.

import CRefractCodecs
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An 8-bit RGBA picture, straight (not premultiplied) alpha, interleaved, rows top to bottom.
public struct RGBAImage: Sendable, Equatable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// `height * width * 4` bytes: row `y`, column `x`, channel `c` at `(y * width + x) * 4 + c`.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0, "image size must be positive, got \(width)x\(height)")
        precondition(pixels.count == width * height * 4,
                     "a \(width)x\(height) RGBA image needs \(width * height * 4) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// An RGB image with every pixel given the same `alpha` (opaque by default).
    public init(_ rgb: RGBImage, alpha: UInt8 = 255) {
        var out = [UInt8](repeating: alpha, count: rgb.width * rgb.height * 4)
        rgb.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<(rgb.width * rgb.height) {
                    dst[4 * i] = src[3 * i]
                    dst[4 * i + 1] = src[3 * i + 1]
                    dst[4 * i + 2] = src[3 * i + 2]
                }
            }
        }
        self.init(width: rgb.width, height: rgb.height, pixels: out)
    }

    /// The (r, g, b, a) quadruple at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8, a: UInt8) {
        let i = (y * width + x) * 4
        return (pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3])
    }
}

public enum PNGEncoder {
    /// zlib's default level: a good size/speed balance for charts and photos alike.
    public static let defaultCompressionLevel = 6

    /// The `ImageError` kind used when the file system refuses the write (missing directory,
    /// no permission, full disk).
    static let writeFailureKind: ImageError.Kind = .unwritable

    /// PNG bytes of an RGB image (colour type 2). `compressionLevel` is zlib's 0...9.
    public static func encode(_ image: RGBImage, compressionLevel: Int = defaultCompressionLevel) throws -> [UInt8] {
        try encode(pixels: image.pixels, width: image.width, height: image.height, channels: 3,
                   compressionLevel: compressionLevel, source: "PNG in memory")
    }

    /// PNG bytes of an RGBA image (colour type 6). `compressionLevel` is zlib's 0...9.
    public static func encode(_ image: RGBAImage, compressionLevel: Int = defaultCompressionLevel) throws -> [UInt8] {
        try encode(pixels: image.pixels, width: image.width, height: image.height, channels: 4,
                   compressionLevel: compressionLevel, source: "PNG in memory")
    }

    /// Writes an RGB image as a PNG file, atomically. Errors are `ImageError`s naming `url.path`.
    public static func write(_ image: RGBImage, to url: URL, compressionLevel: Int = defaultCompressionLevel) throws {
        let bytes = try encode(pixels: image.pixels, width: image.width, height: image.height, channels: 3,
                               compressionLevel: compressionLevel, source: url.path)
        try writeAtomically(bytes, to: url)
    }

    /// Writes an RGBA image as a PNG file, atomically. Errors are `ImageError`s naming `url.path`.
    public static func write(_ image: RGBAImage, to url: URL, compressionLevel: Int = defaultCompressionLevel) throws {
        let bytes = try encode(pixels: image.pixels, width: image.width, height: image.height, channels: 4,
                               compressionLevel: compressionLevel, source: url.path)
        try writeAtomically(bytes, to: url)
    }

    // MARK: Internals

    static func encode(pixels: [UInt8], width: Int, height: Int, channels: Int, compressionLevel: Int,
                       source: String) throws -> [UInt8] {
        guard (0...9).contains(compressionLevel) else {
            throw ImageError(source: source, kind: .unsupported,
                             detail: "PNG compression level must be 0...9, got \(compressionLevel)")
        }
        guard width > 0, height > 0, width <= Int(Int32.max), height <= Int(Int32.max) else {
            throw ImageError(source: source, kind: .tooLarge, detail: "PNG cannot hold a \(width)x\(height) image")
        }
        var error = refract_codec_error()
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size = 0
        let status = pixels.withUnsafeBufferPointer { p in
            refract_png_encode(p.baseAddress, p.count, UInt32(width), UInt32(height), Int32(channels),
                               Int32(compressionLevel), &out, &size, &error)
        }
        defer { refract_png_free(out) }
        if status != 0 {
            let message = withUnsafeBytes(of: &error.message) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let end = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: bytes[..<end], as: UTF8.self)
            }
            let kind: ImageError.Kind = Int(status) == Int(REFRACT_CODEC_NOMEM) ? .tooLarge : .unsupported
            throw ImageError(source: source, kind: kind, detail: "PNG encoding failed: \(message)")
        }
        guard let out else { return [] }
        return Array(UnsafeBufferPointer(start: out, count: size))
    }

    /// Writes `bytes` through a temporary sibling of `url` (created exclusively), fsyncs it and
    /// renames it into place. On any failure the temporary file is removed and the target is
    /// untouched.
    static func writeAtomically(_ bytes: [UInt8], to url: URL) throws {
        let path = url.path
        func failure(_ what: String) -> ImageError {
            let reason = String(cString: strerror(errno))
            return ImageError(source: path, kind: writeFailureKind, detail: "\(what): \(reason)")
        }
        let directory = url.deletingLastPathComponent().path
        let temporary = "\(directory)/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd < 0 { throw failure("cannot create a temporary file in \(directory)") }
        var closed = false
        var renamed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(temporary) }
        }
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = posixWrite(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("write to \(temporary) failed")
                }
                done += n
            }
        }
        if fsync(fd) != 0 { throw failure("fsync of \(temporary) failed") }
        closed = true
        if close(fd) != 0 { throw failure("close of \(temporary) failed") }
        if rename(temporary, path) != 0 { throw failure("cannot rename the temporary file into place") }
        renamed = true
    }
}

/// `write(2)`, named apart from `PNGEncoder.write`.
@inline(__always)
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    write(fd, p, n)
}
