// MARK: - ImagePreprocessing
//
// The checkpoint-tied image pipeline of CLIP: resize (Pillow resampling), centre crop (or pad),
// scale to [0, 1], normalise per channel, lay out as CHW float32. The values come from the
// checkpoint's configuration (open_clip `preprocess_cfg` / transformers `preprocessor_config.json`);
// there are deliberately no built-in presets.
//
// Equivalences (checked against the fixtures in Tests/Fixtures/images):
//   open_clip `image_transform(S, is_train=False, resize_mode=..., interpolation=...)`
//     shortest: Resize(S) + CenterCrop(S)          -> .shortest, shortestEdge S, .torchvision
//     squash:   Resize((S, S))                     -> .squash
//     longest:  ResizeKeepRatio(S, longest=1) + CenterCropOrPad(S, fill=0) -> .longest, .torchvision
//   transformers CLIPImageProcessor (PIL backend) with size {"shortest_edge": E}, crop {S, S}
//                                                  -> .shortest, shortestEdge E, .transformers
// applied to `Image.open(f).convert("RGB")`.

import RefractTensor
import Foundation

public struct ImagePreprocessing: Codable, Sendable, Equatable {
    public typealias Interpolation = ResampleFilter

    /// How the picture is brought to the model's size before cropping.
    public enum ResizeMode: String, Codable, Sendable, Equatable, CaseIterable {
        /// Shortest side to `shortestEdge`, aspect kept: long side `int(E * long / short)`
        /// (torchvision `Resize(int)` and transformers `get_resize_output_image_size` agree).
        case shortest
        /// Both sides to `imageSize`, aspect ignored (open_clip "squash").
        case squash
        /// Longest side to `imageSize`, aspect kept: each side `round(side / max(h/S, w/S))`
        /// (Python round, half to even), then padded with black to a square (open_clip "longest").
        case longest
    }

    /// Where the centre crop starts when the resized side `n` exceeds the crop `c` (and where the
    /// picture lands when it is smaller and must be padded).
    public enum CropRounding: String, Codable, Sendable, Equatable, CaseIterable {
        /// torchvision `CenterCrop`: `int(round((n - c) / 2.0))`, Python round (half to even);
        /// padding `(c - n) // 2` before.
        case torchvision
        /// transformers `center_crop`: `(n - c) // 2` (floor division, also when negative).
        case transformers
    }

    /// Side of the square crop fed to the model (S).
    public var imageSize: Int
    public var resizeMode: ResizeMode
    /// Target of the shortest side in `.shortest` mode; usually equal to `imageSize`.
    public var shortestEdge: Int
    public var interpolation: Interpolation
    /// Per-channel mean and standard deviation (RGB) applied to pixel / 255. Stored as Double
    /// and narrowed to Float at use, exactly as torch/numpy narrow the Python floats.
    public var mean: [Double]
    public var std: [Double]
    public var cropRounding: CropRounding
    /// Pass order of the resampler: `.pillow13` (default) matches Pillow 13+, `.horizontalFirst`
    /// matches Pillow 12 and earlier (they differ by a level on some pixels of tall pictures
    /// shrunk more than 2:1 vertically; see docs/Images.md).
    public var passOrder: PILResampler.PassOrder

    public init(imageSize: Int, resizeMode: ResizeMode = .shortest, shortestEdge: Int? = nil,
                interpolation: Interpolation = .bicubic, mean: [Double], std: [Double],
                cropRounding: CropRounding = .torchvision, passOrder: PILResampler.PassOrder = .pillow13) {
        self.imageSize = imageSize
        self.resizeMode = resizeMode
        self.shortestEdge = shortestEdge ?? imageSize
        self.interpolation = interpolation
        self.mean = mean
        self.std = std
        self.cropRounding = cropRounding
        self.passOrder = passOrder
        if let problem = validationProblem { preconditionFailure("invalid ImagePreprocessing: \(problem)") }
    }

    private enum CodingKeys: String, CodingKey {
        case imageSize, resizeMode, shortestEdge, interpolation, mean, std, cropRounding, passOrder
    }

    /// Decodes and validates; `shortestEdge` defaults to `imageSize`, `resizeMode` to `.shortest`,
    /// `interpolation` to `.bicubic`, `cropRounding` to `.torchvision`, `passOrder` to `.pillow13`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        imageSize = try c.decode(Int.self, forKey: .imageSize)
        resizeMode = try c.decodeIfPresent(ResizeMode.self, forKey: .resizeMode) ?? .shortest
        shortestEdge = try c.decodeIfPresent(Int.self, forKey: .shortestEdge) ?? imageSize
        interpolation = try c.decodeIfPresent(Interpolation.self, forKey: .interpolation) ?? .bicubic
        mean = try c.decode([Double].self, forKey: .mean)
        std = try c.decode([Double].self, forKey: .std)
        cropRounding = try c.decodeIfPresent(CropRounding.self, forKey: .cropRounding) ?? .torchvision
        passOrder = try c.decodeIfPresent(PILResampler.PassOrder.self, forKey: .passOrder) ?? .pillow13
        if let problem = validationProblem {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "invalid ImagePreprocessing: \(problem)"))
        }
    }

    /// nil when the configuration is usable, otherwise what is wrong with it.
    public var validationProblem: String? {
        if imageSize <= 0 { return "imageSize must be positive, got \(imageSize)" }
        if shortestEdge <= 0 { return "shortestEdge must be positive, got \(shortestEdge)" }
        if mean.count != 3 { return "mean needs 3 values, got \(mean.count)" }
        if std.count != 3 { return "std needs 3 values, got \(std.count)" }
        if !mean.allSatisfy(\.isFinite) { return "mean must be finite" }
        if !std.allSatisfy({ $0.isFinite && $0 != 0 }) { return "std must be finite and non-zero" }
        return nil
    }

    // MARK: Geometry

    /// Size after the resize step, before cropping.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        precondition(width > 0 && height > 0, "image size must be positive")
        switch resizeMode {
        case .shortest:
            let e = shortestEdge
            // Python: int(requested_new_short * long / short), true division then truncation.
            if width <= height {
                return (e, max(1, Int(Double(e * height) / Double(width))))
            } else {
                return (max(1, Int(Double(e * width) / Double(height))), e)
            }
        case .squash:
            return (imageSize, imageSize)
        case .longest:
            // open_clip ResizeKeepRatio(longest=1): ratio = max(h / S, w / S); round(x / ratio).
            let s = Double(imageSize)
            let ratio = max(Double(height) / s, Double(width) / s)
            let h = (Double(height) / ratio).rounded(.toNearestOrEven)
            let w = (Double(width) / ratio).rounded(.toNearestOrEven)
            return (max(1, Int(w)), max(1, Int(h)))
        }
    }

    /// Offset of the crop window's first row/column in the resized image, for a resized side `n`.
    /// Negative when the side is shorter than the crop (padding before the picture).
    public func cropOffset(resized n: Int) -> Int {
        let c = imageSize
        switch cropRounding {
        case .torchvision:
            if c > n { return -((c - n) / 2) }
            return Int((Double(n - c) / 2.0).rounded(.toNearestOrEven))
        case .transformers:
            let d = n - c
            return d >= 0 ? d / 2 : -((-d + 1) / 2)  // Python floor division by 2
        }
    }

    // MARK: Apply

    /// `[3, S, S]` float32, normalised, CHW.
    public func callAsFunction(_ image: RGBImage) -> Tensor {
        let s = imageSize
        var data = [Float](repeating: 0, count: 3 * s * s)
        data.withUnsafeMutableBufferPointer { render(image, into: $0.baseAddress!) }
        return Tensor(shape: [3, s, s], data: data)
    }

    /// `[N, 3, S, S]` for a batch (work spread over the available cores).
    public func callAsFunction(_ images: [RGBImage]) -> Tensor {
        batch(images)
    }

    /// `[N, 3, S, S]` for a batch (work spread over the available cores).
    public func batch(_ images: [RGBImage]) -> Tensor {
        let s = imageSize
        let per = 3 * s * s
        var data = [Float](repeating: 0, count: images.count * per)
        data.withUnsafeMutableBufferPointer { buffer in
            let base = SendablePointer(pointer: buffer.baseAddress)
            if images.count <= 1 {
                if let first = images.first { render(first, into: base.pointer!) }
            } else {
                DispatchQueue.concurrentPerform(iterations: images.count) { i in
                    render(images[i], into: base.pointer! + i * per)
                }
            }
        }
        return Tensor(shape: [images.count, 3, s, s], data: data)
    }

    /// Per channel: the float each byte value maps to, computed as torch does it
    /// (`x.float().div(255)`, then `sub_(mean).div_(std)`, all in float32).
    public var lookupTable: [[Float]] {
        (0..<3).map { c in
            let m = Float(mean[c]), sd = Float(std[c])
            return (0..<256).map { v in (Float(v) / Float(255) - m) / sd }
        }
    }

    private func render(_ image: RGBImage, into out: UnsafeMutablePointer<Float>) {
        if let problem = validationProblem { preconditionFailure("invalid ImagePreprocessing: \(problem)") }
        let s = imageSize
        let plane = s * s
        let lut = lookupTable
        let (rw, rh) = resizedSize(width: image.width, height: image.height)
        let ox = cropOffset(resized: rw), oy = cropOffset(resized: rh)
        // Part of the crop window covered by the resized picture; the rest is black padding.
        let cols = max(0, ox)..<min(rw, ox + s)
        let rows = max(0, oy)..<min(rh, oy + s)
        for c in 0..<3 { (out + c * plane).initialize(repeating: lut[c][0], count: plane) }
        if cols.isEmpty || rows.isEmpty { return }
        let window = PILResampler.resizeWindow(image, width: rw, height: rh, columns: cols, rows: rows,
                                               filter: interpolation, passOrder: passOrder)
        let ww = cols.count
        let x0 = cols.lowerBound - ox, y0 = rows.lowerBound - oy
        window.withUnsafeBufferPointer { wb in
            let l0 = lut[0], l1 = lut[1], l2 = lut[2]
            l0.withUnsafeBufferPointer { t0 in
                l1.withUnsafeBufferPointer { t1 in
                    l2.withUnsafeBufferPointer { t2 in
                        for r in 0..<rows.count {
                            var p = wb.baseAddress! + r * ww * 3
                            let o = (y0 + r) * s + x0
                            let r0 = out + o, r1 = out + plane + o, r2 = out + 2 * plane + o
                            for x in 0..<ww {
                                r0[x] = t0[Int(p[0])]
                                r1[x] = t1[Int(p[1])]
                                r2[x] = t2[Int(p[2])]
                                p += 3
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Lets disjoint slices of one output buffer be filled from `concurrentPerform`.
private struct SendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>?
}
