import Foundation
import XCTest
@testable import RefractCheckpoint

final class HalfPrecisionTests: XCTestCase {
    /// binary16 decoded from first principles, in Double (exact), as float32 bits.
    static func referenceFloat16(_ h: UInt16) -> UInt32 {
        let sign: UInt32 = h & 0x8000 != 0 ? 0x8000_0000 : 0
        let e = Int(h >> 10) & 0x1F
        let m = Int(h & 0x3FF)
        if e == 31 { return sign | 0x7F80_0000 | UInt32(m) << 13 }  // inf, NaN (payload kept)
        let magnitude = e == 0 ? Double(m) * pow(2, -24) : Double(1024 + m) * pow(2, Double(e - 25))
        return sign | Float(magnitude).bitPattern
    }

    func testFloat16WideningIsExactForAll65536Values() {
        var src = (0...0xFFFF).map { UInt16($0) }
        var dst = [Float](repeating: 0, count: src.count)
        src.withUnsafeMutableBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                HalfPrecision.convertFloat16ToFloat32(s.baseAddress!, d.baseAddress!, count: s.count)
            }
        }
        for h in 0...0xFFFF {
            XCTAssertEqual(dst[h].bitPattern, Self.referenceFloat16(UInt16(h)), "0x\(String(h, radix: 16))")
            XCTAssertEqual(HalfPrecision.float32Bits(fromFloat16: UInt16(h)), dst[h].bitPattern)
        }
        // Spot checks of named values.
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x0001), 0x1p-24)        // smallest subnormal
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x03FF), 1023 * 0x1p-24)  // largest subnormal
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x0400), 0x1p-14)         // smallest normal
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x7BFF), 65504)
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x7C00), .infinity)
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0xFC00), -.infinity)
        XCTAssertTrue(HalfPrecision.float(fromFloat16: 0x7E00).isNaN)
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x8000).bitPattern, (-Float(0)).bitPattern)
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0x3C00), 1)
        XCTAssertEqual(HalfPrecision.float(fromFloat16: 0xC000), -2)
    }

    #if !(os(macOS) && arch(x86_64))
    func testFloat16WideningMatchesSwiftFloat16() {
        for h in 0...0xFFFF {
            let mine = HalfPrecision.float(fromFloat16: UInt16(h))
            let swift = Float(Float16(bitPattern: UInt16(h)))
            if swift.isNaN { XCTAssertTrue(mine.isNaN) } else { XCTAssertEqual(mine.bitPattern, swift.bitPattern) }
        }
    }
    #endif

    func testBFloat16WideningIsExactForAll65536Values() {
        let src = (0...0xFFFF).map { UInt16($0) }
        var dst = [Float](repeating: 0, count: src.count)
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                HalfPrecision.convertBFloat16ToFloat32(s.baseAddress!, d.baseAddress!, count: s.count)
            }
        }
        for b in 0...0xFFFF { XCTAssertEqual(dst[b].bitPattern, UInt32(b) << 16) }
    }

    func testFloat16NarrowingRoundTripsAndRoundsToNearestEven() {
        for h in 0...0xFFFF {
            let f = HalfPrecision.float(fromFloat16: UInt16(h))
            XCTAssertEqual(HalfPrecision.float16Bits(from: f), UInt16(h), "round trip 0x\(String(h, radix: 16))")
        }
        // Midpoints between neighbours (exact in float32): ties go to the even code, anything
        // above or below goes to the nearer neighbour.
        for h in 0..<0x7BFF {
            let lo = HalfPrecision.float(fromFloat16: UInt16(h))
            let hi = HalfPrecision.float(fromFloat16: UInt16(h + 1))
            let mid = (lo + hi) / 2
            let even = UInt16(h) & 1 == 0 ? UInt16(h) : UInt16(h + 1)
            XCTAssertEqual(HalfPrecision.float16Bits(from: mid), even, "tie at 0x\(String(h, radix: 16))")
            XCTAssertEqual(HalfPrecision.float16Bits(from: mid.nextUp), UInt16(h + 1))
            XCTAssertEqual(HalfPrecision.float16Bits(from: mid.nextDown), UInt16(h))
            XCTAssertEqual(HalfPrecision.float16Bits(from: -mid), 0x8000 | even)
        }
        XCTAssertEqual(HalfPrecision.float16Bits(from: 65519.996), 0x7BFF)
        XCTAssertEqual(HalfPrecision.float16Bits(from: 65520), 0x7C00)  // tie with 65504 (odd) -> inf
        XCTAssertEqual(HalfPrecision.float16Bits(from: 1e10), 0x7C00)
        XCTAssertEqual(HalfPrecision.float16Bits(from: -.infinity), 0xFC00)
        XCTAssertEqual(HalfPrecision.float16Bits(from: 0x1p-25), 0x0000)   // tie with 0 -> even
        XCTAssertEqual(HalfPrecision.float16Bits(from: Float(0x1p-25).nextUp), 0x0001)
        XCTAssertEqual(HalfPrecision.float16Bits(from: 1e-30), 0)
        XCTAssertEqual(HalfPrecision.float16Bits(from: Float(bitPattern: 0x7F80_0001)) & 0x7C00, 0x7C00)
        XCTAssertNotEqual(HalfPrecision.float16Bits(from: Float(bitPattern: 0x7F80_0001)) & 0x3FF, 0)  // still NaN
    }

    func testBFloat16NarrowingRoundsToNearestEven() {
        for b in 0..<0x7F7F {
            let lo = HalfPrecision.float(fromBFloat16: UInt16(b))
            XCTAssertEqual(HalfPrecision.bfloat16Bits(from: lo), UInt16(b))
            let mid = Float(bitPattern: UInt32(b) << 16 | 0x8000)
            let even = UInt16(b) & 1 == 0 ? UInt16(b) : UInt16(b + 1)
            XCTAssertEqual(HalfPrecision.bfloat16Bits(from: mid), even)
            XCTAssertEqual(HalfPrecision.bfloat16Bits(from: mid.nextUp), UInt16(b + 1))
        }
        XCTAssertEqual(HalfPrecision.bfloat16Bits(from: .greatestFiniteMagnitude), 0x7F80)  // rounds to inf
        XCTAssertEqual(HalfPrecision.bfloat16Bits(from: Float(bitPattern: 0x7F80_0001)) & 0x7F, 0x40)  // NaN stays NaN
    }

    func testFloat16ConversionSpeed() {
        #if DEBUG
        let n = 5_000_000  // unoptimised builds: just exercise the loop
        #else
        let n = 50_000_000
        #endif
        let src = [UInt16](unsafeUninitializedCapacity: n) { buf, count in
            for i in 0..<n { buf[i] = UInt16(truncatingIfNeeded: i &* 40503) }
            count = n
        }
        var dst = [Float](repeating: 0, count: n)
        let start = threadCPUSeconds()
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                HalfPrecision.convertFloat16ToFloat32(s.baseAddress!, d.baseAddress!, count: n)
            }
        }
        let seconds = threadCPUSeconds() - start
        print("f16 -> f32, \(n) elements: \(String(format: "%.3f", seconds)) CPU s")
        XCTAssertEqual(dst[12345].bitPattern, HalfPrecision.float32Bits(fromFloat16: src[12345]))
        #if !DEBUG
        XCTAssertLessThan(seconds, 1.0)
        #endif
    }
}
