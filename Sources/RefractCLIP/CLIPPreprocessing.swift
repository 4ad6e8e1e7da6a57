// MARK: - Preprocessing from the checkpoint
//
// Preprocessing belongs to the checkpoint, not the architecture: OpenCLIP keeps it in
// `open_clip_config.json` (`preprocess_cfg`, image size from `model_cfg.vision_cfg`), transformers
// in `preprocessor_config.json`. Each library's own rounding conventions are kept.

import Foundation
import RefractCheckpoint
import RefractImage

/// transformers `preprocessor_config.json` (CLIPImageProcessor), with the processor's own keys.
public struct HFPreprocessorConfigFile: Codable, Sendable {
    public enum SizeSpec: Codable, Sendable {
        case int(Int)
        case dict([String: Int])
        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let v = try? c.decode(Int.self) { self = .int(v) } else { self = .dict(try c.decode([String: Int].self)) }
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .int(let v): try c.encode(v)
            case .dict(let d): try c.encode(d)
            }
        }
    }
    public var image_processor_type: String?
    public var do_resize: Bool?
    public var size: SizeSpec?
    public var resample: Int?
    public var do_center_crop: Bool?
    public var crop_size: SizeSpec?
    public var do_rescale: Bool?
    public var rescale_factor: Double?
    public var do_normalize: Bool?
    public var image_mean: [Double]?
    public var image_std: [Double]?
    public var do_convert_rgb: Bool?
}

public enum CLIPPreprocessing {
    /// OpenAI CLIP's normalisation constants, the default of both libraries.
    public static let openAIMean: [Double] = [0.48145466, 0.4578275, 0.40821073]
    public static let openAIStd: [Double] = [0.26862954, 0.26130258, 0.27577711]

    static func openCLIP(_ cfg: OpenCLIPConfigFile, architecture: CLIPArchitecture, file: String) throws
        -> ImagePreprocessing {
        let p = cfg.preprocess_cfg
        let interpolation: ResampleFilter
        switch p?.interpolation ?? "bicubic" {
        case "bicubic": interpolation = .bicubic
        case "bilinear": interpolation = .bilinear
        case let other:
            throw ConfigError(file: file, message: "unsupported preprocess_cfg.interpolation '\(other)' (bicubic, bilinear)")
        }
        let mode: ImagePreprocessing.ResizeMode
        switch p?.resize_mode ?? "shortest" {
        case "shortest": mode = .shortest
        case "squash": mode = .squash
        case let other:
            throw ConfigError(file: file, message: "unsupported preprocess_cfg.resize_mode '\(other)' (shortest, squash)")
        }
        let b = ConfigBounds(file: file)
        let mean = try b.doubles("preprocess_cfg.mean", p?.mean, default: openAIMean, count: 3, in: ConfigLimits.pixelMean)
        let std = try b.doubles("preprocess_cfg.std", p?.std, default: openAIStd, count: 3, in: ConfigLimits.pixelStd)
        return ImagePreprocessing(imageSize: architecture.imageSize, resizeMode: mode,
                                  shortestEdge: architecture.imageSize, interpolation: interpolation,
                                  mean: mean, std: std, cropRounding: .torchvision)
    }

    static func transformers(directory: URL, architecture: CLIPArchitecture) throws -> ImagePreprocessing {
        let url = directory.appendingPathComponent("preprocessor_config.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw ConfigError(file: url.path, message: "missing: a transformers CLIP directory needs preprocessor_config.json")
        }
        let cfg = try decodeConfig(HFPreprocessorConfigFile.self, from: url)
        let b = ConfigBounds(file: url.path)
        func side(_ spec: HFPreprocessorConfigFile.SizeSpec?, key: String) throws -> Int {
            switch spec {
            case .none: return architecture.imageSize
            case .int(let v): return try b.int(key, v, in: ConfigLimits.imageSize)
            case .dict(let d):
                if let s = d["shortest_edge"] { return try b.int(key + ".shortest_edge", s, in: ConfigLimits.imageSize) }
                if let h = d["height"], let w = d["width"], h == w { return try b.int(key + ".height", h, in: ConfigLimits.imageSize) }
                throw ConfigError(file: url.path, message: "unsupported \(key) \(d) (need shortest_edge or a square height/width)")
            }
        }
        let shortest = try side(cfg.size, key: "size")
        let crop = try side(cfg.crop_size, key: "crop_size")
        if cfg.do_resize == false || cfg.do_center_crop == false || cfg.do_normalize == false || cfg.do_rescale == false {
            throw ConfigError(file: url.path, message: "do_resize/do_center_crop/do_rescale/do_normalize set to false is not supported")
        }
        if let f = cfg.rescale_factor, !(abs(f - 1.0 / 255.0) <= 1e-9) {
            throw ConfigError(file: url.path, message: "rescale_factor \(f) (only 1/255 is supported)")
        }
        guard crop == architecture.imageSize else {
            throw ConfigError(file: url.path, message: "crop_size \(crop) differs from the model's image_size \(architecture.imageSize)")
        }
        let interpolation: ResampleFilter
        switch cfg.resample ?? 3 {
        case 3: interpolation = .bicubic
        case 2: interpolation = .bilinear
        case let other: throw ConfigError(file: url.path, message: "unsupported resample \(other) (2 bilinear, 3 bicubic)")
        }
        let mean = try b.doubles("image_mean", cfg.image_mean, default: openAIMean, count: 3, in: ConfigLimits.pixelMean)
        let std = try b.doubles("image_std", cfg.image_std, default: openAIStd, count: 3, in: ConfigLimits.pixelStd)
        return ImagePreprocessing(imageSize: crop, resizeMode: .shortest, shortestEdge: shortest,
                                  interpolation: interpolation, mean: mean, std: std, cropRounding: .transformers)
    }
}
