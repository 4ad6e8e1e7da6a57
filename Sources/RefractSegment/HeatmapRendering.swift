// MARK: - Figures: heatmap panels and segmentation overlays
//
// Heatmap figure: one panel per text, side by side. Each panel shows the preprocessed picture (the
// resized and cropped S×S input, recovered from the normalised tensor, in light grey) with the upsampled map laid
// over it in a diverging scale centred at 0 (blue negative, red positive, opacity growing with
// |value|), the text as title and a colour bar with its range (±max|map|) below. Small inputs are
// enlarged by a whole factor (nearest neighbour) so the text fits.
//
// Segmentation overlay: the picture with the predicted foreground tinted red and the ground-truth
// outline drawn in yellow, with the image name and the predicted class as title.

import Foundation
import RefractImage
import RefractPlot
import RefractTensor

public enum SegmentFigures {
    static let negative = PlotColor(hex: 0x2166AC)
    static let positive = PlotColor(hex: 0xB2182B)
    static let outline = PlotColor(hex: 0xFFD700)
    static let maxOpacity: Float = 0.8
    static let textScale = 1
    static let margin = 6

    // MARK: Picture

    /// The picture the model saw: a preprocessed tensor [3, S, S] mapped back to bytes with the
    /// preprocessing's mean and std (exact for every byte value; padding comes back black).
    public static func picture(_ pixels: Tensor, preprocessing: ImagePreprocessing) -> RGBImage {
        let s = pixels.shape[2], plane = s * s
        precondition(pixels.shape == [3, s, s], "expected [3, S, S], got \(pixels.shape)")
        var out = [UInt8](repeating: 0, count: 3 * plane)
        for c in 0..<3 {
            let m = preprocessing.mean[c], sd = preprocessing.std[c]
            for i in 0..<plane {
                let v = (Double(pixels.data[c * plane + i]) * sd + m) * 255
                out[3 * i + c] = UInt8(max(0, min(255, v.rounded())))
            }
        }
        return RGBImage(width: s, height: s, pixels: out)
    }

    /// Whole enlargement factor so a panel is at least 160 pixels wide.
    static func zoom(_ size: Int) -> Int { max(1, (160 + size - 1) / size) }

    static func enlarged(_ image: RGBImage, by f: Int) -> RGBImage {
        guard f > 1 else { return image }
        let w = image.width * f, h = image.height * f
        var out = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                let src = ((y / f) * image.width + x / f) * 3, dst = (y * w + x) * 3
                out[dst] = image.pixels[src]; out[dst + 1] = image.pixels[src + 1]; out[dst + 2] = image.pixels[src + 2]
            }
        }
        return RGBImage(width: w, height: h, pixels: out)
    }

    static func blend(_ base: (UInt8, UInt8, UInt8), _ c: PlotColor, _ alpha: Float) -> (UInt8, UInt8, UInt8) {
        func mix(_ a: UInt8, _ b: UInt8) -> UInt8 { UInt8((Float(a) + (Float(b) - Float(a)) * alpha).rounded()) }
        return (mix(base.0, c.r), mix(base.1, c.g), mix(base.2, c.b))
    }

    /// Diverging colour and opacity of `v` for a scale ±`range`.
    static func diverging(_ v: Float, range: Float) -> (PlotColor, Float) {
        guard range > 0 else { return (.white, 0) }
        let a = min(1, abs(v) / range) * maxOpacity
        return (v < 0 ? negative : positive, a)
    }

    static func paste(_ src: RGBImage, into dst: inout RGBImage, x: Int, y: Int) {
        for r in 0..<src.height where y + r >= 0 && y + r < dst.height {
            for c in 0..<src.width where x + c >= 0 && x + c < dst.width {
                let s = (r * src.width + c) * 3, d = ((y + r) * dst.width + x + c) * 3
                dst.pixels[d] = src.pixels[s]; dst.pixels[d + 1] = src.pixels[s + 1]; dst.pixels[d + 2] = src.pixels[s + 2]
            }
        }
    }

    /// Luma (BT.601) lightened to 96...255, as RGB.
    static func grey(_ image: RGBImage) -> RGBImage {
        var out = image
        for i in 0..<(image.width * image.height) {
            let p = image.pixels
            let y = 0.299 * Double(p[3 * i]) + 0.587 * Double(p[3 * i + 1]) + 0.114 * Double(p[3 * i + 2])
            let v = UInt8((96 + y * 159 / 255).rounded())
            out.pixels[3 * i] = v; out.pixels[3 * i + 1] = v; out.pixels[3 * i + 2] = v
        }
        return out
    }

    static func blank(width: Int, height: Int) -> RGBImage {
        RGBImage(width: width, height: height, pixels: [UInt8](repeating: 255, count: width * height * 3))
    }

    /// Short decimal label of a colour-bar end.
    static func label(_ v: Float) -> String {
        let a = abs(v)
        if a == 0 { return "0" }
        if a >= 0.01 && a < 1000 { return String(format: "%.3g", v) }
        return String(format: "%.2e", v)
    }

    // MARK: Heatmap figure

    /// One panel per map. `picture` S×S; each map [S·S] on the same grid (already upsampled).
    public static func heatmapFigure(picture: RGBImage, maps: [[Float]], titles: [String]) -> RGBImage {
        precondition(maps.count == titles.count && !maps.isEmpty)
        let s = picture.width, f = zoom(s), side = s * f
        let lineH = PlotText.height(scale: textScale)
        let barH = 8
        let panelW = side, panelH = lineH + 4 + side + 4 + barH + 3 + lineH
        let width = margin + maps.count * (panelW + margin), height = margin + panelH + margin
        var figure = blank(width: width, height: height)
        for (k, map) in maps.enumerated() {
            precondition(map.count == s * s, "map \(k) has \(map.count) values for a \(s)x\(s) picture")
            let x0 = margin + k * (panelW + margin), y0 = margin
            let range = map.reduce(Float(0)) { max($0, abs($1)) }
            // Overlay on the picture, shown in light grey so the map's colours read clearly.
            var panel = enlarged(grey(picture), by: f)
            for y in 0..<side {
                for x in 0..<side {
                    let (c, a) = diverging(map[(y / f) * s + x / f], range: range)
                    let i = (y * side + x) * 3
                    let m = blend((panel.pixels[i], panel.pixels[i + 1], panel.pixels[i + 2]), c, a)
                    panel.pixels[i] = m.0; panel.pixels[i + 1] = m.1; panel.pixels[i + 2] = m.2
                }
            }
            let title = PlotText.truncated(titles[k], maxWidth: panelW, scale: textScale)
            PlotText.draw(title, into: &figure, x: x0, y: y0, scale: textScale, color: .black)
            paste(panel, into: &figure, x: x0, y: y0 + lineH + 4)
            // Colour bar: −range … 0 … +range over white, with its ends labelled.
            let barY = y0 + lineH + 4 + side + 4
            for x in 0..<panelW {
                let v = (Float(x) + 0.5) / Float(panelW) * 2 - 1
                let (c, a) = diverging(v * range, range: range)
                let m = blend((255, 255, 255), c, a)
                for y in barY..<(barY + barH) {
                    let i = (y * width + x0 + x) * 3
                    figure.pixels[i] = m.0; figure.pixels[i + 1] = m.1; figure.pixels[i + 2] = m.2
                }
            }
            let labelY = barY + barH + 3
            let lo = label(-range), hi = label(range)
            PlotText.draw(lo, into: &figure, x: x0, y: labelY, scale: textScale, color: .black)
            PlotText.draw("0", into: &figure, x: x0 + panelW / 2 - PlotText.width(of: "0", scale: textScale) / 2,
                          y: labelY, scale: textScale, color: .black)
            PlotText.draw(hi, into: &figure, x: x0 + panelW - PlotText.width(of: hi, scale: textScale),
                          y: labelY, scale: textScale, color: .black)
        }
        return figure
    }

    // MARK: Segmentation overlay

    /// The picture (S×S) with `prediction` (S·S, 1 = foreground) tinted and the outline of `truth`
    /// (S·S) drawn, titled.
    public static func segmentationOverlay(picture: RGBImage, prediction: [UInt8], truth: [UInt8], title: String) -> RGBImage {
        let s = picture.width, f = zoom(s), side = s * f
        precondition(prediction.count == s * s && truth.count == s * s)
        let lineH = PlotText.height(scale: textScale)
        var panel = enlarged(picture, by: f)
        func truthAt(_ x: Int, _ y: Int) -> UInt8 { x < 0 || y < 0 || x >= s || y >= s ? 0 : (truth[y * s + x] != 0 ? 1 : 0) }
        for y in 0..<side {
            for x in 0..<side {
                let sx = x / f, sy = y / f, i = (y * side + x) * 3
                var px = (panel.pixels[i], panel.pixels[i + 1], panel.pixels[i + 2])
                if prediction[sy * s + sx] != 0 { px = blend(px, positive, 0.5) }
                // Outline: a foreground pixel of the truth with a background 4-neighbour (image edge counts).
                let t = truthAt(sx, sy)
                if t == 1 && (truthAt(sx - 1, sy) == 0 || truthAt(sx + 1, sy) == 0 || truthAt(sx, sy - 1) == 0 || truthAt(sx, sy + 1) == 0) {
                    px = (outline.r, outline.g, outline.b)
                }
                panel.pixels[i] = px.0; panel.pixels[i + 1] = px.1; panel.pixels[i + 2] = px.2
            }
        }
        var figure = blank(width: side + 2 * margin, height: margin + lineH + 4 + side + margin)
        PlotText.draw(PlotText.truncated(title, maxWidth: side, scale: textScale), into: &figure, x: margin, y: margin,
                      scale: textScale, color: .black)
        paste(panel, into: &figure, x: margin, y: margin + lineH + 4)
        return figure
    }
}
