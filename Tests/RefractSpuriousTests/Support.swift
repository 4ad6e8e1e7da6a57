import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractDecompose
import RefractImage
import RefractStore
import RefractTensor
import XCTest

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

/// A small synthetic Waterbirds layout: `count` generated PNGs under bird folders, a metadata.csv
/// with their (y, split, place) and a few rows for images that are not in the run, and a list of
/// the run's images for `decompose`.
struct SyntheticWaterbirds {
    let root: URL
    let count: Int
    /// Rows of the run: img_filename, y, split, place.
    var images: [(name: String, y: Int, split: Int, place: Int)] = []
    /// Metadata rows that are not in the run (their files do not exist).
    static let extraRows = [("999.Ghost_Bird/ghost_1.png", 1, 2, 0), ("999.Ghost_Bird/ghost_2.png", 0, 2, 1),
                            ("999.Ghost_Bird/ghost_3.png", 1, 0, 1)]

    var metadata: URL { root.appendingPathComponent("metadata.csv") }
    var list: URL { root.appendingPathComponent("list.csv") }

    /// Image k: y = k % 2, place = (k / 2) % 2 (every group every 4 images), split test for
    /// k < count - 4, val for the last 4.
    init(root: URL, count: Int = 24, seed: UInt64 = 7) throws {
        self.root = root
        self.count = count
        var rng = SplitMix64(seed: seed)
        for k in 0..<count {
            let y = k % 2, place = (k / 2) % 2
            let folder = y == 0 ? "014.Indigo_Bunting" : "059.California_Gull"
            let name = "\(folder)/bird_\(String(format: "%03d", k)).png"
            try FileManager.default.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
            // Blocks of random colours over a gradient: every image distinct.
            let w = 36 + k % 5, h = 32 + k % 3
            var pixels = [UInt8](repeating: 0, count: w * h * 3)
            let colours = (0..<16 * 3).map { _ in UInt8(truncatingIfNeeded: rng.next() >> 56) }
            for yy in 0..<h {
                for xx in 0..<w {
                    let b = (yy * 4 / h) * 4 + xx * 4 / w
                    for c in 0..<3 {
                        pixels[(yy * w + xx) * 3 + c] = UInt8((Int(colours[b * 3 + c]) * 3 + (xx + yy + 40 * c) % 64) / 4)
                    }
                }
            }
            try PNGEncoder.write(RGBImage(width: w, height: h, pixels: pixels), to: root.appendingPathComponent(name))
            images.append((name, y, k < count - 4 ? 2 : 1, place))
        }
        var csv = "img_filename,y,split,place,place_filename\n"
        for i in images { csv += "\(i.name),\(i.y),\(i.split),\(i.place),/b/bamboo_forest/x.jpg\n" }
        for e in Self.extraRows { csv += "\(e.0),\(e.1),\(e.2),\(e.3),/o/ocean/y.jpg\n" }
        try csv.write(to: metadata, atomically: true, encoding: .utf8)
        try ("img_filename\n" + images.map(\.name).joined(separator: "\n") + "\n").write(to: list, atomically: true, encoding: .utf8)
    }

    func model() throws -> CLIP {
        let dir = fixtures.appendingPathComponent("openclip-tiny")
        return try CLIP(location: ModelLocation(directory: dir, layout: .openCLIP, modelId: dir.path))
    }

    /// Decomposes the run's images with the tiny model (2 layers, 4 heads, D' = 24).
    func decompose(_ clip: CLIP, into run: URL, convention: DecompositionConvention = .faithful) throws -> StoreReader {
        var options = DecomposeRunOptions()
        options.shardSize = 7                      // several shards, the last one partial
        options.convention = convention
        _ = try DecomposeRun.run(model: clip, dataset: try ImageDataset.load([list.path]), output: run, options: options)
        return try StoreReader(run: run)
    }
}
