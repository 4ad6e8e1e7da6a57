import Foundation

/// The character tables ftfy's `fix_text` relies on, bundled as `ftfy_data.json` (generated from ftfy 6.3.1 and
/// Python's codecs by `scripts/fixtures/tokenizer.py`; ftfy is Apache-2.0, by Robyn Speer).
final class FTFYData: Sendable {
    struct Codepage: Sendable {
        let name: String
        /// Byte -> code point.
        let decode: [UInt32]
        /// Code point -> byte for every character the encoding can produce (ftfy's `possible_encoding` set).
        let encode: [UInt32: UInt8]
        var isSloppy: Bool { name.hasPrefix("sloppy") }
    }

    // Category bits in `classes`.
    static let common: UInt32 = 1 << 0, c1: UInt32 = 1 << 1, bad: UInt32 = 1 << 2, law: UInt32 = 1 << 3
    static let currency: UInt32 = 1 << 4, startPunctuation: UInt32 = 1 << 5, endPunctuation: UInt32 = 1 << 6
    static let numeric: UInt32 = 1 << 7, kaomoji: UInt32 = 1 << 8, upperAccented: UInt32 = 1 << 9
    static let lowerAccented: UInt32 = 1 << 10, upperCommon: UInt32 = 1 << 11, lowerCommon: UInt32 = 1 << 12
    static let box: UInt32 = 1 << 13
    static let firstOf2: UInt32 = 1 << 16, firstOf3: UInt32 = 1 << 17, firstOf4: UInt32 = 1 << 18
    static let continuation: UInt32 = 1 << 19, continuationStrict: UInt32 = 1 << 20
    /// A character written literally in one of the badness rules.
    static let literal: UInt32 = 1 << 24
    static let badnessBits: UInt32 = 0x3FFF | literal

    /// Class bits for every BMP code point (all of ftfy's classes lie in the BMP).
    let classes: [UInt32]
    /// In ftfy's order: latin-1, sloppy-windows-1252, -1251, -1250, -1253, -1254, -1257, iso-8859-2, macroman, cp437.
    let codepages: [Codepage]
    /// Strict windows-1252 decoding (nil for the five unassigned bytes).
    let windows1252: [UInt32?]
    let sloppy1252: [UInt32]
    let ligatures: [UInt32: [Unicode.Scalar]]
    let widthMap: [UInt32: [Unicode.Scalar]]
    let controlCharacters: Set<UInt32>

    init(classes: [UInt32], codepages: [Codepage], windows1252: [UInt32?], sloppy1252: [UInt32],
         ligatures: [UInt32: [Unicode.Scalar]], widthMap: [UInt32: [Unicode.Scalar]], controlCharacters: Set<UInt32>) {
        self.classes = classes
        self.codepages = codepages
        self.windows1252 = windows1252
        self.sloppy1252 = sloppy1252
        self.ligatures = ligatures
        self.widthMap = widthMap
        self.controlCharacters = controlCharacters
    }

    @inline(__always)
    func bits(_ s: Unicode.Scalar) -> UInt32 {
        s.value < 0x10000 ? classes[Int(s.value)] : 0
    }

    /// The bundled tables, or why they could not be read (checked when an open_clip tokenizer is created).
    static let loaded = Result { try load() }

    static var shared: FTFYData {
        switch loaded {
        case let .success(data): return data
        case let .failure(error): fatalError("\(error)")
        }
    }

    private static func load() throws -> FTFYData {
        let name = "ftfy_data.json"
        guard let url = Bundle.module.url(forResource: "ftfy_data", withExtension: "json") else {
            throw TokenizerError.missingResource(name: name, reason: "not found in the RefractTokenizer bundle")
        }
        guard let data = try? Data(contentsOf: url),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let charmaps = root["charmaps"] as? [String: [Int]],
              let categories = root["mojibake_categories"] as? [String: [Int]],
              let clues = root["utf8_clues"] as? [String: [Int]],
              let ligatures = root["ligatures"] as? [String: String],
              let width = root["width_map"] as? [String: String],
              let controls = root["control_chars"] as? [Int] else {
            throw TokenizerError.missingResource(name: name, reason: "unreadable or not in the expected shape")
        }
        var classes = [UInt32](repeating: 0, count: 0x10000)
        let categoryBits: [String: UInt32] = [
            "common": common, "c1": c1, "bad": bad, "law": law, "currency": currency,
            "start_punctuation": startPunctuation, "end_punctuation": endPunctuation, "numeric": numeric,
            "kaomoji": kaomoji, "upper_accented": upperAccented, "lower_accented": lowerAccented,
            "upper_common": upperCommon, "lower_common": lowerCommon, "box": box,
            "utf8_first_of_2": firstOf2, "utf8_first_of_3": firstOf3, "utf8_first_of_4": firstOf4,
            "utf8_continuation": continuation, "utf8_continuation_strict": continuationStrict,
        ]
        for (key, bit) in categoryBits {
            guard let members = categories[key] ?? clues[key] else {
                throw TokenizerError.missingResource(name: name, reason: "class \(key) missing")
            }
            for m in members where m >= 0 && m < 0x10000 { classes[m] |= bit }
        }
        for s in FTFY.badnessLiterals.unicodeScalars { classes[Int(s.value)] |= literal }

        let order = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250", "sloppy-windows-1253",
                     "sloppy-windows-1254", "sloppy-windows-1257", "iso-8859-2", "macroman", "cp437"]
        var pages: [Codepage] = []
        for enc in order {
            guard let table = charmaps[enc], table.count == 256 else {
                throw TokenizerError.missingResource(name: name, reason: "code page \(enc) missing")
            }
            let decode = table.map { UInt32($0) }
            var encode: [UInt32: UInt8] = [:]
            for b in 0..<0x80 where b != 0x1A { encode[UInt32(b)] = UInt8(b) }
            for b in Array(0x80..<0x100) + [0x1A] where encode[decode[b]] == nil { encode[decode[b]] = UInt8(b) }
            pages.append(Codepage(name: enc, decode: decode, encode: encode))
        }
        guard let strict = charmaps["windows-1252"], strict.count == 256 else {
            throw TokenizerError.missingResource(name: name, reason: "code page windows-1252 missing")
        }
        func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }
        return FTFYData(
            classes: classes,
            codepages: pages,
            windows1252: strict.map { $0 < 0 ? nil : UInt32($0) },
            sloppy1252: pages[1].decode,
            ligatures: Dictionary(uniqueKeysWithValues: ligatures.map { (UInt32($0.key)!, scalars($0.value)) }),
            widthMap: Dictionary(uniqueKeysWithValues: width.map { (UInt32($0.key)!, scalars($0.value)) }),
            controlCharacters: Set(controls.map { UInt32($0) }))
    }
}
