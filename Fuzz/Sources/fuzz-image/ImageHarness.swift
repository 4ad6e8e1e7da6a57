// MARK: - Fuzz: image decoders
//
// The bytes are an image file, decoded as the CLI decodes one (ImageDecoder.decode(contentsOf:):
// read the file, sniff JPEG/PNG by magic bytes, read the header, check the declared size against
// the pixel limit, decode with libjpeg-turbo/libpng through the C shims). The pixel limit is
// lowered to 4 Mpx here (the CLI's is 179 Mpx), so that a 30-byte header declaring a huge image
// is refused in microseconds instead of decoding hundreds of MB of nothing; the limit check is
// the same code.

import Foundation
import FuzzSupport
import RefractImage

private let file = Scratch.subdirectory("image").appendingPathComponent("image")
private let maxPixels = 4 << 20

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    Scratch.write(UnsafeRawBufferPointer(start: data, count: size), to: file)
    do {
        let image = try ImageDecoder.decode(contentsOf: file, maxPixels: maxPixels)
        precondition(image.pixels.count == image.width * image.height * 3)
    } catch {
        FuzzInput.refused(error)
    }
    return 0
}
