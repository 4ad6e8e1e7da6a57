// MARK: - Pillow-compatible resampling
//
// Pillow's `Image.resize(size, BICUBIC | BILINEAR)` on 8-bit images, bit for bit
// (libImaging/Resample.c, read as documentation; this is an independent implementation):
//
//   * separable: two passes, each rounded and clipped to uint8. A pass whose size does not
//     change is skipped (it would be the identity anyway). Order: horizontal first, except that
//     Pillow 13 (python-pillow/Pillow#9549) filters vertically first when the height shrinks by
//     more than twice as many pixels as the width: `oh < ih && ih - oh > 2 * (iw - ow)`. The
//     order changes results by a level here and there, so it is selectable (`PassOrder`).
//   * per output index `xx`: scale = in/out, filterscale = max(scale, 1) (antialiasing when
//     shrinking), support = filter support * filterscale, center = (xx + 0.5) * scale,
//     taps xmin = trunc(center - support + 0.5) ... trunc(center + support + 0.5) clipped to the
//     image, weight(x) = filter((x - center + 0.5) / filterscale), normalised to sum 1;
//   * weights to fixed point with 22 fractional bits, rounding half away from zero;
//     accumulation in Int32 starting from 1 << 21, result `acc >> 22` clipped to 0...255.
//   * bicubic is the Keys kernel with a = -0.5 (support 2), bilinear the triangle (support 1).
//
// Everything is computed in the same order and precision as Pillow, so results are identical,
// not merely close. Callers may ask for a window of the output only (the centre crop); each
// output pixel depends only on its own taps, so a window is identical to cropping afterwards.

/// Resampling filters, with Pillow's definitions.
public enum ResampleFilter: String, Codable, Sendable, Equatable, CaseIterable {
    case bicubic
    case bilinear

    /// Half-width of the kernel at scale 1.
    public var support: Double {
        switch self {
        case .bicubic: return 2.0
        case .bilinear: return 1.0
        }
    }

    /// The kernel, evaluated exactly as Pillow does (same operation order, float64).
    @inline(__always)
    public func weight(_ value: Double) -> Double {
        var x = value
        if x < 0.0 { x = -x }
        switch self {
        case .bicubic:
            let a = -0.5
            if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
            if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0.0
        case .bilinear:
            return x < 1.0 ? 1.0 - x : 0.0
        }
    }
}

/// Fixed-point filter taps for a range of output indices along one axis.
struct PILKernel {
    static let precisionBits = 22  // 32 - 8 - 2, as in Pillow

    /// Maximum taps per output.
    let ksize: Int
    /// First input index for each covered output.
    var starts: [Int]
    /// Number of taps for each covered output.
    var counts: [Int]
    /// `ksize` weights per covered output (unused tail zero).
    var weights: [Int32]

    init(inSize: Int, outSize: Int, outputs: Range<Int>, filter: ResampleFilter) {
        // Pillow passes the box edges as C floats: (float)in1 - (float)in0, then widens.
        let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
        let filterscale = scale < 1.0 ? 1.0 : scale
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        self.ksize = ksize
        let n = outputs.count
        var starts = [Int](repeating: 0, count: n)
        var counts = [Int](repeating: 0, count: n)
        var weights = [Int32](repeating: 0, count: n * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let ss = 1.0 / filterscale
        let one = Double(1 << PILKernel.precisionBits)
        for (j, xx) in outputs.enumerated() {
            let center = 0.0 + (Double(xx) + 0.5) * scale
            var xmin = Int(center - support + 0.5)  // C (int) cast: truncation toward zero
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            var ww = 0.0
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<xmax where ww != 0.0 { k[x] /= ww }
            for x in 0..<xmax {
                let v = k[x]
                weights[j * ksize + x] = v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one)
            }
            starts[j] = xmin
            counts[j] = xmax
        }
        self.starts = starts
        self.counts = counts
        self.weights = weights
    }

    /// Input indices touched by the covered outputs.
    var inputRange: Range<Int> {
        guard !starts.isEmpty else { return 0..<0 }
        var hi = 0
        for j in starts.indices { hi = max(hi, starts[j] + counts[j]) }
        return starts.min()!..<hi
    }
}

@inline(__always)
private func clip8(_ acc: Int32) -> UInt8 {
    let v = acc >> Int32(PILKernel.precisionBits)
    return v < 0 ? 0 : (v > 255 ? 255 : UInt8(truncatingIfNeeded: v))
}

public enum PILResampler {
    /// Which pass runs first when both dimensions change.
    public enum PassOrder: String, Codable, Sendable, Equatable, CaseIterable {
        /// Pillow 13 and later: vertical first when `oh < ih && ih - oh > 2 * (iw - ow)`,
        /// horizontal first otherwise.
        case pillow13
        /// Pillow 12 and earlier: always horizontal first.
        case horizontalFirst

        /// Whether the vertical pass runs first for this resize.
        public func verticalFirst(inWidth iw: Int, inHeight ih: Int, outWidth ow: Int, outHeight oh: Int) -> Bool {
            switch self {
            case .pillow13: return oh < ih && (ih - oh) > 2 * (iw - ow)
            case .horizontalFirst: return false
            }
        }
    }

    /// `image.resize((width, height), filter)` as Pillow computes it on an RGB image.
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: ResampleFilter,
                              passOrder: PassOrder = .pillow13) -> RGBImage {
        precondition(width > 0 && height > 0, "target size must be positive, got \(width)x\(height)")
        let pixels = resizeWindow(image, width: width, height: height, columns: 0..<width, rows: 0..<height,
                                  filter: filter, passOrder: passOrder)
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// Columns `columns` and rows `rows` of `image.resize((width, height), filter)`, as HWC bytes
    /// (`rows.count * columns.count * 3`), computing nothing outside the window.
    public static func resizeWindow(_ image: RGBImage, width: Int, height: Int, columns: Range<Int>, rows: Range<Int>,
                                    filter: ResampleFilter, passOrder: PassOrder = .pillow13) -> [UInt8] {
        precondition(width > 0 && height > 0, "target size must be positive, got \(width)x\(height)")
        precondition(columns.lowerBound >= 0 && columns.upperBound <= width && rows.lowerBound >= 0
                     && rows.upperBound <= height, "window \(columns) x \(rows) outside \(width)x\(height)")
        let ww = columns.count, wh = rows.count
        if ww == 0 || wh == 0 { return [] }
        let needH = width != image.width
        let needV = height != image.height
        let rowBytes = ww * 3
        var out = [UInt8](repeating: 0, count: wh * rowBytes)
        image.pixels.withUnsafeBufferPointer { srcBuffer in
            let src = srcBuffer.baseAddress!
            let srcStride = image.width * 3
            out.withUnsafeMutableBufferPointer { dstBuffer in
                let dst = dstBuffer.baseAddress!
                switch (needH, needV) {
                case (true, true):
                    let vk = PILKernel(inSize: image.height, outSize: height, outputs: rows, filter: filter)
                    let hk = PILKernel(inSize: image.width, outSize: width, outputs: columns, filter: filter)
                    if passOrder.verticalFirst(inWidth: image.width, inHeight: image.height, outWidth: width,
                                               outHeight: height) {
                        // Vertical over the source columns the horizontal taps need, then horizontal.
                        let needed = hk.inputRange
                        let midBytes = needed.count * 3
                        var tmp = [UInt8](repeating: 0, count: wh * midBytes)
                        tmp.withUnsafeMutableBufferPointer { t in
                            verticalPass(src: src + needed.lowerBound * 3, srcStride: srcStride, firstRow: 0,
                                         kernel: vk, rowBytes: midBytes, dst: t.baseAddress!)
                            horizontalPass(src: t.baseAddress!, srcStride: midBytes, rows: 0..<wh,
                                           firstColumn: needed.lowerBound, kernel: hk, dst: dst)
                        }
                    } else {
                        // Horizontal over the source rows the vertical taps need, then vertical.
                        let needed = vk.inputRange
                        var tmp = [UInt8](repeating: 0, count: needed.count * rowBytes)
                        tmp.withUnsafeMutableBufferPointer { t in
                            horizontalPass(src: src, srcStride: srcStride, rows: needed, firstColumn: 0, kernel: hk,
                                           dst: t.baseAddress!)
                            verticalPass(src: t.baseAddress!, srcStride: rowBytes, firstRow: needed.lowerBound,
                                         kernel: vk, rowBytes: rowBytes, dst: dst)
                        }
                    }
                case (true, false):
                    let hk = PILKernel(inSize: image.width, outSize: width, outputs: columns, filter: filter)
                    horizontalPass(src: src, srcStride: srcStride, rows: rows, firstColumn: 0, kernel: hk, dst: dst)
                case (false, true):
                    let vk = PILKernel(inSize: image.height, outSize: height, outputs: rows, filter: filter)
                    verticalPass(src: src + columns.lowerBound * 3, srcStride: srcStride, firstRow: 0,
                                 kernel: vk, rowBytes: rowBytes, dst: dst)
                case (false, false):
                    for (r, y) in rows.enumerated() {
                        (dst + r * rowBytes).update(from: src + y * srcStride + columns.lowerBound * 3, count: rowBytes)
                    }
                }
            }
        }
        return out
    }

    /// Source rows `rows` filtered horizontally into consecutive rows of `dst`
    /// (`kernel.starts.count * 3` bytes each). Column `x` of a source row lives at
    /// `(x - firstColumn) * 3` bytes into it.
    private static func horizontalPass(src: UnsafePointer<UInt8>, srcStride: Int, rows: Range<Int>, firstColumn: Int,
                                       kernel: PILKernel, dst: UnsafeMutablePointer<UInt8>) {
        let outCount = kernel.starts.count
        let ksize = kernel.ksize
        let half: Int32 = 1 << Int32(PILKernel.precisionBits - 1)
        kernel.weights.withUnsafeBufferPointer { wb in
            kernel.starts.withUnsafeBufferPointer { sb in
                kernel.counts.withUnsafeBufferPointer { cb in
                    let weights = wb.baseAddress!
                    for (r, y) in rows.enumerated() {
                        let srcRow = src + y * srcStride
                        var o = dst + r * outCount * 3
                        for j in 0..<outCount {
                            let k = weights + j * ksize
                            var p = srcRow + (sb[j] - firstColumn) * 3
                            var s0 = half, s1 = half, s2 = half
                            for t in 0..<cb[j] {
                                let w = k[t]
                                s0 &+= Int32(p[0]) &* w
                                s1 &+= Int32(p[1]) &* w
                                s2 &+= Int32(p[2]) &* w
                                p += 3
                            }
                            o[0] = clip8(s0)
                            o[1] = clip8(s1)
                            o[2] = clip8(s2)
                            o += 3
                        }
                    }
                }
            }
        }
    }

    /// Vertical filtering of `rowBytes`-wide rows. Row `y` of the input lives at
    /// `src + (y - firstRow) * srcStride`.
    private static func verticalPass(src: UnsafePointer<UInt8>, srcStride: Int, firstRow: Int, kernel: PILKernel,
                                     rowBytes: Int, dst: UnsafeMutablePointer<UInt8>) {
        let ksize = kernel.ksize
        let half: Int32 = 1 << Int32(PILKernel.precisionBits - 1)
        let acc = UnsafeMutablePointer<Int32>.allocate(capacity: rowBytes)
        defer { acc.deallocate() }
        kernel.weights.withUnsafeBufferPointer { wb in
            for j in 0..<kernel.starts.count {
                acc.initialize(repeating: half, count: rowBytes)
                let k = wb.baseAddress! + j * ksize
                let first = kernel.starts[j] - firstRow
                for t in 0..<kernel.counts[j] {
                    let w = k[t]
                    let row = src + (first + t) * srcStride
                    for e in 0..<rowBytes {
                        acc[e] &+= Int32(row[e]) &* w
                    }
                }
                let o = dst + j * rowBytes
                for e in 0..<rowBytes { o[e] = clip8(acc[e]) }
            }
        }
    }
}
