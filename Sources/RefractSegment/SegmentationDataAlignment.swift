// MARK: - Masks on the model's input grid
//
// A ground-truth mask is compared with a prediction made on the model's S x S input, so it is
// brought onto that grid first:
//
//   .exact           the image's own geometry (ImagePreprocessing.resizedSize, then the crop
//                    window at cropOffset on each axis; padding, where the picture is smaller
//                    than the window, is background), sampled with nearest neighbour.
//                    = torchvision Resize(S, NEAREST) + CenterCrop(S) for open_clip "shortest".
//   .gandelsman2024  the whole mask resized to S x S with nearest neighbour, no crop: the official
//                    segmentation code's `Resize((S, S), NEAREST)` target transform. For a
//                    non-square image it does not line up with the centre-cropped input.
//
// Nearest neighbour is Pillow's `Image.resize(size, NEAREST)` (torchvision's NEAREST on PIL
// images), bit for bit: Pillow walks the output with an accumulated float64 source coordinate,
// `x_in = trunc(scale / 2 + scale + scale + ...)` with `scale = in / out` (libImaging/Geometry.c,
// ImagingScaleAffine), which differs from the closed form `floor((x + 0.5) * in / out)` when the
// exact value is an integer (e.g. 2 -> 7 pixels: output 3 takes source 0, not 1).

import RefractImage

/// Pillow's nearest-neighbour source indices.
enum PillowNearest {
    /// For each of `destination` output positions along an axis of `source` input pixels, the
    /// input index Pillow's NEAREST resize samples (-1 where it samples nothing, which does not
    /// happen for plain resizes but is kept as Pillow's "leave the fill" case).
    static func sourceIndices(source: Int, destination: Int) -> [Int] {
        precondition(source > 0 && destination > 0, "nearest resize needs positive sizes, got \(source) -> \(destination)")
        let scale = Double(source) / Double(destination)
        var coordinate = 0.0 + scale * 0.5
        var out = [Int](repeating: -1, count: destination)
        for x in 0..<destination {
            let index = coordinate < 0 ? -1 : Int(coordinate)  // COORD(): truncation, -1 below zero
            if index >= 0 && index < source { out[x] = index }
            coordinate += scale
        }
        return out
    }
}

extension BinaryMask {
    /// This mask on the `preprocessing.imageSize`² input grid of an image of the same size as the mask.
    public func aligned(to preprocessing: ImagePreprocessing, alignment: MaskAlignment) -> BinaryMask {
        precondition(width > 0 && height > 0, "cannot align an empty \(width)x\(height) mask")
        let s = preprocessing.imageSize
        switch alignment {
        case .gandelsman2024:
            return resizedNearest(width: s, height: s)
        case .exact:
            let (rw, rh) = preprocessing.resizedSize(width: width, height: height)
            return sampled(resizedWidth: rw, resizedHeight: rh,
                           window: (preprocessing.cropOffset(resized: rw), preprocessing.cropOffset(resized: rh)),
                           size: (s, s))
        }
    }

    /// The mask resized with Pillow's NEAREST to `width` x `height` (no crop).
    public func resizedNearest(width outWidth: Int, height outHeight: Int) -> BinaryMask {
        precondition(width > 0 && height > 0, "cannot resize an empty \(width)x\(height) mask")
        return sampled(resizedWidth: outWidth, resizedHeight: outHeight, window: (0, 0), size: (outWidth, outHeight))
    }

    /// The `size` window at `window` (may be negative: padding) of this mask nearest-resized to
    /// `resizedWidth` x `resizedHeight`; outside the resized picture is background (0).
    private func sampled(resizedWidth rw: Int, resizedHeight rh: Int, window: (x: Int, y: Int),
                         size: (width: Int, height: Int)) -> BinaryMask {
        let xs = PillowNearest.sourceIndices(source: width, destination: rw)
        let ys = PillowNearest.sourceIndices(source: height, destination: rh)
        var out = [UInt8](repeating: 0, count: size.width * size.height)
        values.withUnsafeBufferPointer { src in
            for y in 0..<size.height {
                let ry = y + window.y
                guard ry >= 0 && ry < rh, ys[ry] >= 0 else { continue }
                let row = ys[ry] * width
                for x in 0..<size.width {
                    let rx = x + window.x
                    guard rx >= 0 && rx < rw, xs[rx] >= 0 else { continue }
                    out[y * size.width + x] = src[row + xs[rx]]
                }
            }
        }
        return BinaryMask(width: size.width, height: size.height, values: out)
    }
}
