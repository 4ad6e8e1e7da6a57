/// Strict UTF-8 decoding as Python's `bytes.decode("utf-8")`, and ftfy's "utf-8-variants" codec, which also
/// accepts CESU-8 surrogate pairs (`ED A0-AF xx ED B0-BF xx`) and Java's two-byte NUL (`C0 80`).
enum UTF8Decoding {
    /// The decoded scalars, or nil where Python would raise UnicodeDecodeError.
    static func decode(_ b: [UInt8], variants: Bool) -> [Unicode.Scalar]? {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(b.count)
        let n = b.count
        var i = 0
        @inline(__always) func cont(_ k: Int) -> UInt32? {
            k < n && b[k] & 0xC0 == 0x80 ? UInt32(b[k] & 0x3F) : nil
        }
        while i < n {
            let c = b[i]
            if c < 0x80 {
                out.append(Unicode.Scalar(c))
                i += 1
                continue
            }
            if variants {
                if c == 0xC0 && i + 1 < n && b[i + 1] == 0x80 {
                    out.append("\u{0}")
                    i += 2
                    continue
                }
                if c == 0xED && i + 5 < n && (0xA0...0xAF).contains(b[i + 1]) && (0x80...0xBF).contains(b[i + 2])
                    && b[i + 3] == 0xED && (0xB0...0xBF).contains(b[i + 4]) && (0x80...0xBF).contains(b[i + 5]) {
                    let v = (UInt32(b[i + 1] & 0x0F) << 16) + (UInt32(b[i + 2] & 0x3F) << 10)
                        + (UInt32(b[i + 4] & 0x0F) << 6) + UInt32(b[i + 5] & 0x3F) + 0x10000
                    out.append(Unicode.Scalar(v)!)
                    i += 6
                    continue
                }
            }
            switch c {
            case 0xC2...0xDF:
                guard let x = cont(i + 1) else { return nil }
                out.append(Unicode.Scalar((UInt32(c & 0x1F) << 6) | x)!)
                i += 2
            case 0xE0...0xEF:
                guard i + 1 < n else { return nil }
                let second = b[i + 1]
                let lower: UInt8 = c == 0xE0 ? 0xA0 : 0x80
                let upper: UInt8 = c == 0xED ? 0x9F : 0xBF
                guard second >= lower && second <= upper, let x = cont(i + 1), let y = cont(i + 2) else { return nil }
                out.append(Unicode.Scalar((UInt32(c & 0x0F) << 12) | (x << 6) | y)!)
                i += 3
            case 0xF0...0xF4:
                guard i + 1 < n else { return nil }
                let second = b[i + 1]
                let lower: UInt8 = c == 0xF0 ? 0x90 : 0x80
                let upper: UInt8 = c == 0xF4 ? 0x8F : 0xBF
                guard second >= lower && second <= upper, let x = cont(i + 1), let y = cont(i + 2), let z = cont(i + 3) else { return nil }
                out.append(Unicode.Scalar((UInt32(c & 0x07) << 18) | (x << 12) | (y << 6) | z)!)
                i += 4
            default:
                return nil
            }
        }
        return out
    }
}
