// MARK: - HalfPrecision
//
// Exact float16 / bfloat16 -> float32 widening (every 16-bit value is exactly representable in
// float32, including subnormals, infinities and NaN payloads) and round-to-nearest-even narrowing
// for the writer. Plain integer arithmetic, so it behaves the same on every platform (Swift's
// Float16 is unavailable on macOS/x86_64); the bulk loops are branch-free so they vectorise.

#if !_endian(little)
#error("RefractCheckpoint assumes a little-endian host (safetensors data is little-endian)")
#endif

/// Conversions between float32 and the 16-bit float formats stored in checkpoints.
public enum HalfPrecision {
    /// Widens IEEE binary16 bits to float32 bits, exactly.
    @inline(__always)
    public static func float32Bits(fromFloat16 h: UInt16) -> UInt32 {
        let x = UInt32(h)
        let sign = (x & 0x8000) << 16
        let em = x & 0x7FFF                     // exponent and mantissa
        let normal = (em << 13) &+ 0x3800_0000  // rebias exponent 15 -> 127
        let special = (em << 13) | 0x7F80_0000  // inf / NaN, payload kept
        // Subnormal (and zero): value = em * 2^-24, exact in float32.
        let subnormal = (Float(Int32(bitPattern: em)) * 0x1p-24).bitPattern
        let magnitude = em >= 0x7C00 ? special : (em < 0x0400 ? subnormal : normal)
        return sign | magnitude
    }

    /// Widens IEEE binary16 bits to a Float, exactly.
    @inline(__always)
    public static func float(fromFloat16 h: UInt16) -> Float { Float(bitPattern: float32Bits(fromFloat16: h)) }

    /// Widens bfloat16 bits to a Float, exactly (bfloat16 is the top half of a float32).
    @inline(__always)
    public static func float(fromBFloat16 b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// Narrows a Float to IEEE binary16 bits, rounding to nearest-even; overflow gives infinity,
    /// NaN stays NaN (payload truncated, kept non-zero).
    public static func float16Bits(from f: Float) -> UInt16 {
        let x = f.bitPattern
        let sign = UInt16(truncatingIfNeeded: (x >> 16) & 0x8000)
        let a = x & 0x7FFF_FFFF
        if a >= 0x7F80_0000 {  // inf or NaN
            if a == 0x7F80_0000 { return sign | 0x7C00 }
            let payload = UInt16(truncatingIfNeeded: (a >> 13) & 0x3FF)
            return sign | 0x7C00 | (payload == 0 ? 0x200 : payload)
        }
        if a >= 0x4780_0000 { return sign | 0x7C00 }  // >= 65536: overflow
        if a < 0x3880_0000 {  // below 2^-14: subnormal or zero in binary16
            // Scaling by 2^24 is exact; rounding the result to an integer is the RNE mantissa.
            let m = (Float(bitPattern: a) * 0x1p24).rounded(.toNearestOrEven)
            return sign | UInt16(m)  // may be 0x400, the smallest normal: correct
        }
        var h = (a &- 0x3800_0000) >> 13
        let rest = a & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) { h += 1 }  // carry may reach inf: correct
        return sign | UInt16(truncatingIfNeeded: h)
    }

    /// Narrows a Float to bfloat16 bits, rounding to nearest-even; NaN stays NaN.
    public static func bfloat16Bits(from f: Float) -> UInt16 {
        let x = f.bitPattern
        if x & 0x7FFF_FFFF > 0x7F80_0000 {
            let top = UInt16(truncatingIfNeeded: x >> 16)
            return top & 0x7F == 0 ? top | 0x40 : top
        }
        let rounding = 0x7FFF &+ ((x >> 16) & 1)
        return UInt16(truncatingIfNeeded: (x &+ rounding) >> 16)
    }

    /// Widens `count` binary16 values at `src` into `dst`.
    public static func convertFloat16ToFloat32(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>,
                                               count: Int) {
        let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { out[i] = float32Bits(fromFloat16: src[i]) }
    }

    /// Widens `count` bfloat16 values at `src` into `dst`.
    public static func convertBFloat16ToFloat32(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>,
                                                count: Int) {
        let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
        for i in 0..<count { out[i] = UInt32(src[i]) << 16 }
    }

    /// Widens 16-bit values at a possibly unaligned address (as in a mapped file) into `dst`.
    static func convert16(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int, bfloat: Bool) {
        if Int(bitPattern: src) & 1 == 0 {
            let p = src.assumingMemoryBound(to: UInt16.self)
            if bfloat { convertBFloat16ToFloat32(p, dst, count: count) } else { convertFloat16ToFloat32(p, dst, count: count) }
            return
        }
        // Unaligned: stage through an aligned buffer in chunks.
        let chunk = 16_384
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: chunk) { tmp in
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                UnsafeMutableRawPointer(tmp.baseAddress!).copyMemory(from: src + 2 * done, byteCount: 2 * n)
                if bfloat {
                    convertBFloat16ToFloat32(tmp.baseAddress!, dst + done, count: n)
                } else {
                    convertFloat16ToFloat32(tmp.baseAddress!, dst + done, count: n)
                }
                done += n
            }
        }
    }
}
