// MARK: - timm hub configuration
//
// A timm directory on the Hugging Face hub is `config.json` plus `model.safetensors`:
//
//   { "architecture": "vit_base_patch14_dinov2", "num_classes": 0, "global_pool": "token",
//     "model_args": { ...overrides of the architecture's defaults... },
//     "pretrained_cfg": { "input_size": [3, 518, 518], "interpolation": "bicubic", "crop_pct": 1.0,
//                         "crop_mode": "center", "mean": [...], "std": [...], ... },
//     "label_names": [...optional class names...] }
//
// The model is what `timm.create_model(architecture, pretrained_cfg=..., **model_args)` builds:
// the architecture's registered defaults (TimmRegistry.swift), overridden by `model_args`. Every
// value is checked against ConfigLimits; an unknown or unsupported argument is refused by name.

import Foundation
import RefractCheckpoint
import RefractCLIP
import RefractImage
import RefractTensor

/// A JSON object read from a config file, with typed, checked accessors that name the file and key.
struct ConfigObject: @unchecked Sendable {  // immutable JSON values
    let file: String
    /// Where this object sits, for messages ("model_args.").
    let prefix: String
    let values: [String: Any]

    init(file: String, prefix: String = "", values: [String: Any]) {
        self.file = file
        self.prefix = prefix
        self.values = values
    }

    static func read(_ url: URL) throws -> ConfigObject {
        let data: Data
        do { data = try InputFile.read(url.path, maxBytes: 16 << 20) } catch {
            throw ConfigError(file: url.path, message: "cannot read the model configuration: \(error)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigError(file: url.path, message: "not a JSON object")
        }
        return ConfigObject(file: url.path, values: object)
    }

    func wrong(_ key: String, _ value: Any, _ expected: String) -> ConfigValueError {
        ConfigValueError(file: file, key: prefix + key, value: Self.show(value), allowed: expected)
    }

    static func show(_ value: Any) -> String {
        if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]),
           let text = String(data: data, encoding: .utf8) {
            return text.count > 120 ? String(text.prefix(117)) + "..." : text
        }
        return "\(value)"
    }

    /// JSON true/false (NSNumber of type char on Linux and Darwin), as opposed to 0 and 1.
    static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    func has(_ key: String) -> Bool { values[key] != nil && !(values[key] is NSNull) }

    func string(_ key: String) throws -> String? {
        guard has(key) else { return nil }
        guard let s = values[key] as? String else { throw wrong(key, values[key]!, "a string") }
        return s
    }

    func bool(_ key: String) throws -> Bool? {
        guard has(key) else { return nil }
        guard let n = values[key] as? NSNumber, Self.isBool(n) else {
            throw wrong(key, values[key]!, "true or false")
        }
        return n.boolValue
    }

    private static func integer(_ value: Any) -> Int? {
        guard let n = value as? NSNumber, !Self.isBool(n) else { return nil }
        let d = n.doubleValue
        guard d.isFinite, d == d.rounded(), abs(d) < 1e15 else { return nil }
        return Int(d)
    }

    func int(_ key: String) throws -> Int? {
        guard has(key) else { return nil }
        guard let v = Self.integer(values[key]!) else { throw wrong(key, values[key]!, "an integer") }
        return v
    }

    func double(_ key: String) throws -> Double? {
        guard has(key) else { return nil }
        guard let n = values[key] as? NSNumber, !Self.isBool(n), n.doubleValue.isFinite else {
            throw wrong(key, values[key]!, "a number")
        }
        return n.doubleValue
    }

    func ints(_ key: String) throws -> [Int]? {
        guard has(key) else { return nil }
        guard let list = values[key] as? [Any], list.count <= 64 else { throw wrong(key, values[key]!, "a list of integers") }
        return try list.map { guard let v = Self.integer($0) else { throw wrong(key, values[key]!, "a list of integers") }; return v }
    }

    func doubles(_ key: String) throws -> [Double]? {
        guard has(key) else { return nil }
        guard let list = values[key] as? [Any], list.count <= 64 else { throw wrong(key, values[key]!, "a list of numbers") }
        return try list.map {
            guard let n = $0 as? NSNumber, !Self.isBool(n), n.doubleValue.isFinite else {
                throw wrong(key, values[key]!, "a list of numbers")
            }
            return n.doubleValue
        }
    }

    /// An integer or a square pair `[n, n]` (timm's `img_size`, `window_size`).
    func square(_ key: String) throws -> Int? {
        guard has(key) else { return nil }
        if let v = Self.integer(values[key]!) { return v }
        if let pair = try? ints(key), pair.count == 2 {
            guard pair[0] == pair[1] else { throw wrong(key, values[key]!, "a square size (non-square inputs are not supported)") }
            return pair[0]
        }
        throw wrong(key, values[key]!, "an integer or a pair [n, n]")
    }

    func strings(_ key: String) throws -> [String]? {
        guard has(key) else { return nil }
        guard let list = values[key] as? [String] else { throw wrong(key, values[key]!, "a list of strings") }
        return list
    }

    /// Refuses any key outside `known`, naming the constructor (`what`) and listing the known ones.
    func requireKnown(_ known: Set<String>, of what: String) throws {
        for key in values.keys.sorted() where !known.contains(key) {
            throw ConfigValueError(file: file, key: prefix + key, value: Self.show(values[key]!),
                                   allowed: "an argument of timm's \(what) that Refract builds (\(known.sorted().joined(separator: ", ")))")
        }
    }

    /// Refuses `key` unless `ok`, saying what is allowed.
    func require(_ key: String, _ ok: Bool, _ allowed: String) throws {
        if !ok { throw wrong(key, values[key] ?? NSNull(), allowed) }
    }

    /// The arguments every timm model shares: three input channels, no custom layer classes.
    func requireCommon(customLayers: [String]) throws {
        if let chans = try int("in_chans") { try require("in_chans", chans == 3, "3") }
        for k in customLayers where has(k) {
            throw wrong(k, values[k]!, "the default (custom layers are not supported)")
        }
    }

    func object(_ key: String) throws -> ConfigObject? {
        guard has(key) else { return nil }
        guard let o = values[key] as? [String: Any] else { throw wrong(key, values[key]!, "a JSON object") }
        return ConfigObject(file: file, prefix: prefix + key + ".", values: o)
    }
}

// MARK: config.json

/// The parts of a timm `config.json` that decide the model and its preprocessing.
public struct TimmConfigFile: Sendable {
    public var file: String
    public var architecture: String
    public var numClasses: Int?
    public var globalPool: String?
    /// Class names shipped with the checkpoint (`label_names`), if any.
    public var labelNames: [String]?
    /// The `pretrained_cfg` entries used for preprocessing.
    public var inputSize: [Int]
    public var interpolation: String
    public var cropPct: Double
    public var cropMode: String
    public var mean: [Double]
    public var std: [Double]
    /// `model_args`, kept as read (checked when the architecture is resolved).
    let modelArgs: ConfigObject

    public init(url: URL) throws {
        let root = try ConfigObject.read(url)
        file = url.path
        guard let arch = try root.string("architecture") else {
            throw ConfigError(file: file, message: "no \"architecture\": not a timm config.json")
        }
        architecture = arch
        numClasses = try root.int("num_classes")
        globalPool = try root.string("global_pool")
        labelNames = try root.strings("label_names")
        modelArgs = try root.object("model_args") ?? ConfigObject(file: file, prefix: "model_args.", values: [:])
        guard let cfg = try root.object("pretrained_cfg") else {
            throw ConfigError(file: file, message: "no \"pretrained_cfg\": the preprocessing (input_size, interpolation, crop_pct, mean, std) "
                              + "is not stated; timm hub configs carry it (timm.models.push_to_hf / save_for_hf write it)")
        }
        let bounds = ConfigBounds(file: file)
        guard let size = try cfg.ints("input_size"), size.count == 3 else {
            throw ConfigValueError(file: file, key: "pretrained_cfg.input_size", value: ConfigObject.show(cfg.values["input_size"] ?? NSNull()),
                                   allowed: "[3, height, width]")
        }
        guard size[0] == 3, size[1] == size[2] else {
            throw ConfigValueError(file: file, key: "pretrained_cfg.input_size", value: "\(size)",
                                   allowed: "[3, n, n] (three channels, square inputs)")
        }
        _ = try bounds.int("pretrained_cfg.input_size[1]", size[1], in: ConfigLimits.imageSize)
        inputSize = size
        interpolation = try cfg.string("interpolation") ?? "bilinear"
        guard ["bicubic", "bilinear"].contains(interpolation) else {
            throw ConfigValueError(file: file, key: "pretrained_cfg.interpolation", value: interpolation, allowed: "bicubic or bilinear")
        }
        cropPct = try bounds.double("pretrained_cfg.crop_pct", try cfg.double("crop_pct"), default: 0.875, in: 0.05...1)
        cropMode = try cfg.string("crop_mode") ?? "center"
        guard cropMode == "center" else {
            throw ConfigValueError(file: file, key: "pretrained_cfg.crop_mode", value: cropMode, allowed: "center (squash and border are not supported)")
        }
        mean = try bounds.doubles("pretrained_cfg.mean", try cfg.doubles("mean"), default: [0.485, 0.456, 0.406], count: 3, in: ConfigLimits.pixelMean)
        std = try bounds.doubles("pretrained_cfg.std", try cfg.doubles("std"), default: [0.229, 0.224, 0.225], count: 3, in: ConfigLimits.pixelStd)
    }

    /// timm's eval transform (`transforms_imagenet_eval`, crop mode "center"): the shortest side
    /// resized to floor(size / crop_pct) with Pillow's filter, a centre crop of `size`, mean/std.
    public var preprocessing: ImagePreprocessing {
        let size = inputSize[1]
        let scale = Int((Double(size) / cropPct).rounded(.down))
        let filter: ImagePreprocessing.Interpolation = interpolation == "bicubic" ? .bicubic : .bilinear
        return ImagePreprocessing(imageSize: size, resizeMode: .shortest, shortestEdge: scale, interpolation: filter,
                                  mean: mean, std: std, cropRounding: .torchvision)
    }
}
