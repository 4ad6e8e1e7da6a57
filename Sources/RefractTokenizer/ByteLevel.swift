/// CLIP's (and GPT-2's) reversible byte-to-character table: every UTF-8 byte is written as one printable
/// character, so BPE works on strings without whitespace or control characters.
///
/// Bytes `!`...`~`, `¡`...`¬` and `®`...`ÿ` stand for themselves; the 68 others are mapped, in byte order,
/// to U+0100, U+0101, ... (open_clip `bytes_to_unicode`, transformers/tokenizers `ByteLevel`).
public enum ByteLevel {
    /// `table[b]` is the character that stands for byte `b`.
    public static let table: [Unicode.Scalar] = {
        var result = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                result[b] = Unicode.Scalar(UInt32(b))!
            } else {
                result[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return result
    }()

    /// The byte a table character stands for, or nil.
    public static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        inverse[scalar]
    }

    private static let inverse: [Unicode.Scalar: UInt8] = {
        var d: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in table.enumerated() { d[s] = UInt8(b) }
        return d
    }()

    /// The byte-level spelling of a string: its UTF-8 bytes, each replaced by its table character.
    public static func encode(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for b in text.utf8 { out.append(table[Int(b)]) }
        return String(out)
    }
}
