import Foundation

// MARK: - JSONValue
//
// The free-form parts of a manifest (preprocessing, options) are plain JSON. Numbers are held as
// Double; integral values that fit in Int64 are written without a fraction, so `256` stays `256`
// through a round trip and `0.48145466` keeps its shortest decimal form.

/// A JSON value: null, boolean, number, string, array or object.
public enum JSONValue: Codable, Equatable, Hashable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .number(Double(i))
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else if let o = try? c.decode([String: JSONValue].self) {
            self = .object(o)
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(d):
            // Integral values are written as integers (JSONEncoder would otherwise be free to add ".0").
            if d.isFinite, d == d.rounded(), abs(d) < 9.0e15 {
                try c.encode(Int64(d))
            } else {
                try c.encode(d)
            }
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    /// The member `key` of an object (nil for other values or a missing key).
    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    /// The value as a string, when it is one.
    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// The value as a number, when it is one.
    public var doubleValue: Double? {
        if case let .number(d) = self { return d }
        return nil
    }

    /// The value as an integer, when it is an integral number.
    public var intValue: Int? {
        if case let .number(d) = self, d.isFinite, d == d.rounded(), abs(d) < 9.0e15 { return Int(d) }
        return nil
    }

    /// The value as a boolean, when it is one.
    public var boolValue: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    /// Compact JSON text (sorted keys), for messages.
    public var compactText: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "?" }
        return String(decoding: data, as: UTF8.self)
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        var o: [String: JSONValue] = [:]
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
}
