// MARK: - Bitmap text on RGB images (public)
//
// The chart font (`BitmapFont`, 5x7 glyphs in a 6x11 cell, scaled by whole numbers) for other
// modules that draw their own figures (heatmap panels, segmentation overlays) into an `RGBImage`.

import RefractImage

public enum PlotText {
    /// Width in pixels of `text` at `scale` (no trailing gap after the last glyph).
    public static func width(of text: String, scale: Int) -> Int { BitmapFont.width(of: text, scale: scale) }

    /// Height in pixels of one line at `scale`, descender included.
    public static func height(scale: Int) -> Int { BitmapFont.height(scale: scale) }

    /// `text` cut to at most `maxWidth` pixels at `scale`, ending in "…" when cut.
    public static func truncated(_ text: String, maxWidth: Int, scale: Int) -> String {
        if width(of: text, scale: scale) <= maxWidth { return text }
        var chars = Array(text)
        while !chars.isEmpty && width(of: String(chars) + "…", scale: scale) > maxWidth { chars.removeLast() }
        return chars.isEmpty ? "" : String(chars) + "…"
    }

    /// Draws `text` into `image` with the top of its capitals at row `y` and its first column at
    /// `x`; pixels outside the image are skipped.
    public static func draw(_ text: String, into image: inout RGBImage, x: Int, y: Int, scale: Int, color: PlotColor) {
        var canvas = Canvas(width: image.width, height: image.height, background: .white)
        canvas.pixels = image.pixels
        canvas.drawText(text, x: x, y: y, scale: scale, color: color)
        image.pixels = canvas.pixels
    }
}
