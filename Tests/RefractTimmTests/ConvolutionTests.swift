import Foundation
import RefractCLIP
import RefractTensor
@testable import RefractTimm
import XCTest

/// MaxViT's fast convolutions (im2col + GEMM on channels-last rows; direct depthwise) against plain
/// NCHW loops written from the definition, with TensorFlow "same" padding (the extra pixel after).
final class ConvolutionTests: XCTestCase {
    /// Plain convolution: x [C, N, N] (NCHW, one image), w [O, C/groups, k, k], stride, TF same padding.
    static func reference(_ x: [Float], channels c: Int, size n: Int, weight w: [Float], outputs o: Int, kernel k: Int,
                          stride s: Int, groups: Int, bias: [Float]?) -> (values: [Float], size: Int) {
        let out = (n + s - 1) / s
        let before = max((out - 1) * s + k - n, 0) / 2
        let perGroupIn = c / groups, perGroupOut = o / groups
        var y = [Float](repeating: 0, count: o * out * out)
        for oc in 0..<o {
            let g = oc / perGroupOut
            for oy in 0..<out {
                for ox in 0..<out {
                    var sum = Double(bias?[oc] ?? 0)
                    for ic in 0..<perGroupIn {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let iy = oy * s + ky - before, ix = ox * s + kx - before
                                if iy < 0 || iy >= n || ix < 0 || ix >= n { continue }
                                sum += Double(w[((oc * perGroupIn + ic) * k + ky) * k + kx]) * Double(x[((g * perGroupIn + ic) * n + iy) * n + ix])
                            }
                        }
                    }
                    y[(oc * out + oy) * out + ox] = Float(sum)
                }
            }
        }
        return (y, out)
    }

    /// NCHW [C, N, N] → channels-last rows [N·N, C], and back.
    static func rows(_ x: [Float], channels c: Int, size n: Int) -> Tensor {
        Tensor(shape: [n * n, c], data: (0..<(n * n * c)).map { x[($0 % c) * n * n + $0 / c] })
    }

    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float(rng.next() >> 40) / Float(1 << 24) - 0.5 }
    }

    func testConvolutionMatchesThePlainLoop() throws {
        let source = RandomWeights(seed: 11)
        for (n, stride, c, o) in [(9, 1, 3, 5), (8, 2, 3, 4), (7, 2, 6, 6), (16, 2, 3, 8)] {
            let conv = try Conv2d(source: source, key: "conv\(n)\(stride)", input: c, output: o, kernel: 3, stride: stride, bias: true)
            let w = try source.take("conv\(n)\(stride).weight", shape: [o, c, 3, 3]).data
            let b = try source.take("conv\(n)\(stride).bias", shape: [o]).data
            let x = Self.random(c * n * n, seed: UInt64(n * 10 + stride))
            let (fast, size) = conv(Self.rows(x, channels: c, size: n), images: 1, size: n)
            let (slow, slowSize) = Self.reference(x, channels: c, size: n, weight: w, outputs: o, kernel: 3, stride: stride, groups: 1, bias: b)
            XCTAssertEqual(size, slowSize)
            let expected = Self.rows(slow, channels: o, size: size)
            for i in 0..<expected.count { XCTAssertEqual(fast.data[i], expected.data[i], accuracy: 1e-5, "n \(n) stride \(stride) element \(i)") }
        }
    }

    func testDepthwiseMatchesThePlainLoop() throws {
        let source = RandomWeights(seed: 12)
        for (n, stride, c) in [(8, 1, 5), (8, 2, 5), (9, 2, 4), (14, 1, 16)] {
            let dw = try DepthwiseConv(source: source, key: "dw\(n)\(stride)", channels: c, stride: stride)
            let w = try source.take("dw\(n)\(stride).weight", shape: [c, 1, 3, 3]).data
            let x = Self.random(c * n * n, seed: UInt64(n * 7 + stride))
            let (fast, size) = dw(Self.rows(x, channels: c, size: n), images: 1, size: n)
            let (slow, _) = Self.reference(x, channels: c, size: n, weight: w, outputs: c, kernel: 3, stride: stride, groups: c, bias: nil)
            let expected = Self.rows(slow, channels: c, size: size)
            for i in 0..<expected.count { XCTAssertEqual(fast.data[i], expected.data[i], accuracy: 1e-5, "n \(n) stride \(stride) element \(i)") }
        }
    }

    func testAveragePoolAndPartitions() {
        let n = 4, c = 2
        let x = Tensor(shape: [n * n, c], data: (0..<(n * n * c)).map(Float.init))
        let pooled = averagePool2(x, images: 1, size: n)
        // Output (0, 0) averages rows (0,0), (0,1), (1,0), (1,1): rows 0, 1, 4, 5.
        XCTAssertEqual(pooled.data[0], (0 + 2 + 8 + 10) / 4)
        // Block partition of a 4×4 grid with windows of 2: window 1 holds (0,2), (0,3), (1,2), (1,3);
        // grid partition: window (a, c) holds (a + 2i, c + 2j).
        let table = Tensor(zeros: [1, 3, 3])
        XCTAssertEqual(Array(MaxViTPartition(resolution: 4, side: 2, grid: false, heads: 1, table: table).source[4..<8]), [2, 3, 6, 7])
        XCTAssertEqual(Array(MaxViTPartition(resolution: 4, side: 2, grid: true, heads: 1, table: table).source[0..<4]), [0, 2, 8, 10])
    }
}
