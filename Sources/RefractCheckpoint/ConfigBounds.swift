import Foundation

// MARK: - Config bounds
//
// Every number a model config file gives (layers, widths, heads, image and patch sizes, epsilons,
// normalisation constants) is checked here, against the named ranges of `ConfigLimits`, before any
// arithmetic or allocation uses it. A refusal names the file, the key (as a dotted path), the value
// and the allowed range. The ranges are generous enough for every real ViT (ViT-bigG/14: width
// 1664, 48 layers, 16 heads, MLP 8192; images up to 1024 px) and tight enough that no product of
// them overflows `Int`. The model families to come (timm configs: DeiT, DINO, Swin...) use the same
// limits and the same `ConfigBounds` checker. Then `ModelMemoryBudget` refuses a model whose weights
// would not fit in memory, before any tensor is read.

/// Allowed ranges of model config values. Every check of a config number uses one of these.
public enum ConfigLimits {
    /// Residual stream width of a tower (ViT-bigG/14: 1664; ViT-e: 1792).
    public static let width: ClosedRange<Int> = 1...16_384
    /// Transformer blocks of a tower (ViT-bigG/14: 48).
    public static let layers: ClosedRange<Int> = 1...256
    /// Attention heads of a block.
    public static let heads: ClosedRange<Int> = 1...512
    /// Width of one attention head (width / heads).
    public static let headWidth: ClosedRange<Int> = 1...4_096
    /// Hidden width of a block's MLP (ViT-bigG/14: 8192).
    public static let mlpWidth: ClosedRange<Int> = 1...131_072
    /// MLP width as a multiple of the width (OpenCLIP `mlp_ratio`; ViT-bigG/14: 4.92).
    public static let mlpRatio: ClosedRange<Double> = 0.0625...32
    /// Side of the (square) input image in pixels.
    public static let imageSize: ClosedRange<Int> = 1...4_096
    /// Side of a (square) patch in pixels.
    public static let patchSize: ClosedRange<Int> = 1...1_024
    /// Patches along one side (image size / patch size); 128 × 128 patches is 16 384 tokens.
    public static let gridSide: ClosedRange<Int> = 1...128
    /// Text context length (tokens), including start and end tokens.
    public static let contextLength: ClosedRange<Int> = 2...8_192
    /// Rows of the token embedding.
    public static let vocabSize: ClosedRange<Int> = 1...1_048_576
    /// Width of the joint embedding space.
    public static let embedDim: ClosedRange<Int> = 1...16_384
    /// LayerNorm epsilon: positive (0 divides by zero on a constant row, a negative one takes the
    /// square root of a negative number) and small.
    public static let layerNormEps: ClosedRange<Double> = 1e-12...1
    /// Per-channel mean subtracted from pixels in [0, 1].
    public static let pixelMean: ClosedRange<Double> = -1_000...1_000
    /// Per-channel standard deviation pixels are divided by (0 would divide by zero).
    public static let pixelStd: ClosedRange<Double> = 1e-3...1_000
    /// The stored logit scale (its exponent multiplies cosine similarities; OpenCLIP clamps it at
    /// ln 100 ≈ 4.6). Outside this range exp() overflows or underflows float32's useful range.
    public static let logitScale: ClosedRange<Double> = -50...50
}

/// A config value outside its allowed range, or two values that contradict each other.
public struct ConfigValueError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The config file.
    public var file: String
    /// Dotted path of the key, e.g. `model_cfg.vision_cfg.layers`.
    public var key: String
    /// The value as the file gives it (or as computed from it).
    public var value: String
    /// The allowed range or rule, e.g. `1...256` or `a multiple of num_attention_heads (12)`.
    public var allowed: String
    public var note: String

    public init(file: String, key: String, value: String, allowed: String, note: String = "") {
        self.file = file; self.key = key; self.value = value; self.allowed = allowed; self.note = note
    }

    public var description: String {
        "\(file): \(key) = \(value) is not allowed (allowed: \(allowed))" + (note.isEmpty ? "" : "; \(note)")
    }
}

/// Checks the numbers of one config file. Each method returns the checked value (the file's, or
/// `default` when the key is absent) or throws a `ConfigValueError` naming file, key, value and range.
public struct ConfigBounds: Sendable {
    public let file: String
    public init(file: String) { self.file = file }

    /// `value` (or `default` when absent), which must lie in `range`.
    public func int(_ key: String, _ value: Int?, default fallback: Int, in range: ClosedRange<Int>, note: String = "") throws -> Int {
        let v = value ?? fallback
        guard range.contains(v) else {
            throw ConfigValueError(file: file, key: key, value: String(v), allowed: Self.text(range), note: note)
        }
        return v
    }

    /// A required `value`, which must lie in `range`.
    public func int(_ key: String, _ value: Int, in range: ClosedRange<Int>, note: String = "") throws -> Int {
        try int(key, value, default: value, in: range, note: note)
    }

    /// `value` (or `default`), which must be a number (not NaN) in `range`.
    public func double(_ key: String, _ value: Double?, default fallback: Double, in range: ClosedRange<Double>,
                       note: String = "") throws -> Double {
        let v = value ?? fallback
        guard !v.isNaN, range.contains(v) else {
            throw ConfigValueError(file: file, key: key, value: "\(v)", allowed: Self.text(range), note: note)
        }
        return v
    }

    /// `values` (or `default`): exactly `count` numbers, each in `range`.
    public func doubles(_ key: String, _ values: [Double]?, default fallback: [Double], count: Int,
                        in range: ClosedRange<Double>) throws -> [Double] {
        let v = values ?? fallback
        guard v.count == count else {
            throw ConfigValueError(file: file, key: key, value: "\(v)", allowed: "\(count) numbers, each in \(Self.text(range))")
        }
        for (i, x) in v.enumerated() {
            _ = try double("\(key)[\(i)]", x, default: x, in: range)
        }
        return v
    }

    /// `value` must be a multiple of `divisor` (the value of `divisorKey`), e.g. a width of heads.
    public func multiple(_ key: String, _ value: Int, of divisorKey: String, _ divisor: Int) throws {
        guard divisor > 0, value % divisor == 0 else {
            throw ConfigValueError(file: file, key: key, value: String(value),
                                   allowed: "a multiple of \(divisorKey) (\(divisor))")
        }
    }

    /// A value computed from the file's (e.g. heads = width / head_width), which must lie in `range`;
    /// `key` says how it was computed.
    public func derived(_ key: String, _ value: Int, in range: ClosedRange<Int>) throws -> Int {
        try int(key, value, in: range)
    }

    static func text(_ r: ClosedRange<Int>) -> String { "\(r.lowerBound)...\(r.upperBound)" }
    static func text(_ r: ClosedRange<Double>) -> String { "\(r.lowerBound)...\(r.upperBound)" }
}

// MARK: - Memory budget

/// The memory a model's weights may take, checked from its configuration before any tensor is read.
public enum ModelMemoryBudget {
    /// Overrides the limit: a number of bytes, or with a K, M, G or T suffix (powers of 1024).
    public static let environmentVariable = "REFRACT_MAX_MODEL_BYTES"

    /// A model too large for the budget.
    public struct Refusal: Error, CustomStringConvertible, Equatable, Sendable {
        public var message: String
        public var description: String { message }
    }

    /// The limit in bytes and where it comes from: `REFRACT_MAX_MODEL_BYTES` when set, else the
    /// machine's physical memory.
    public static func limit(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> (bytes: Int, source: String) {
        if let text = environment[environmentVariable] {
            guard let bytes = parseBytes(text), bytes > 0 else {
                throw Refusal(message: "\(environmentVariable)='\(text)' is not a positive number of bytes "
                              + "(e.g. 8000000000, 512M, 16G)")
            }
            return (bytes, "\(environmentVariable)=\(text)")
        }
        let physical = ProcessInfo.processInfo.physicalMemory
        return (physical > UInt64(Int.max) ? Int.max : Int(physical), "the machine's physical memory")
    }

    /// Bytes from "123", "512K", "16G" (powers of 1024); nil when malformed or overflowing.
    static func parseBytes(_ text: String) -> Int? {
        var digits = text.trimmingCharacters(in: .whitespaces)
        var scale = 1
        if let last = digits.last?.uppercased(), let exponent = ["K": 1, "M": 2, "G": 3, "T": 4][last] {
            digits.removeLast()
            scale = 1 << (10 * exponent)
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 0 else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: scale)
        return overflow ? nil : bytes
    }

    /// Refuses `parameters` float32 weights that exceed the limit. `configFile` is named in the error.
    public static func check(parameters: Int, configFile: String,
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let (limit, source) = try limit(environment: environment)
        let (bytes, overflow) = parameters.multipliedReportingOverflow(by: 4)
        if overflow || bytes > limit {
            throw Refusal(message: "\(configFile): the configuration implies \(parameters) parameters, "
                          + "\(overflow ? "more than Int.max" : gib(bytes)) as float32, more than the \(gib(limit)) "
                          + "allowed by \(source); set \(environmentVariable) to raise the limit")
        }
    }

    /// "6.30 MiB", "2.00 GiB", "512 bytes".
    static func gib(_ bytes: Int) -> String {
        if bytes >= 1 << 30 { return String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }
        if bytes >= 1 << 20 { return String(format: "%.2f MiB", Double(bytes) / Double(1 << 20)) }
        return "\(bytes) bytes"
    }
}
