import XCTest
@testable import RefractTensor

/// Deterministic pseudo-random numbers (SplitMix64) so failures reproduce.
struct SeededRandom {
    var core: SplitMix64
    init(state: UInt64) { core = SplitMix64(seed: state) }
    mutating func next() -> UInt64 { core.next() }
    mutating func uniform(_ lo: Float, _ hi: Float) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func tensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in uniform(-scale, scale) })
    }
}

/// |a − r| <= abs + rel·|r| elementwise; reports the worst element.
func assertClose(_ a: [Float], _ r: [Float], abs: Float, rel: Float, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, r.count, "\(what): count", file: file, line: line)
    var worst = (index: -1, excess: Float(0))
    for i in 0..<min(a.count, r.count) {
        let excess = Swift.abs(a[i] - r[i]) - (abs + rel * Swift.abs(r[i]))
        if !(excess <= 0) && (worst.index < 0 || excess > worst.excess || excess.isNaN) { worst = (i, excess) }
    }
    if worst.index >= 0 {
        XCTFail("\(what): element \(worst.index) is \(a[worst.index]), reference \(r[worst.index]) (tolerance abs \(abs) + rel \(rel))",
                file: file, line: line)
    }
}

final class KernelTests: XCTestCase {
    override func setUp() { XCTAssertNoThrow(try BLAS.load()) }

    func testExpMatchesFoundationOverItsRange() {
        var x: Float = -87
        while x < 88 {
            let ref = Foundation.exp(Double(x))
            XCTAssertEqual(Double(Kernels.exp(x)), ref, accuracy: ref * 4e-7, "exp(\(x))")
            x += 0.0137
        }
        XCTAssertEqual(Kernels.exp(0), 1)
    }

    func testErfMatchesFoundation() {
        var x: Float = -6
        while x < 6 {
            XCTAssertEqual(Double(Kernels.erf(x)), Foundation.erf(Double(x)), accuracy: 2.5e-7, "erf(\(x))")
            x += 0.00731
        }
    }

    func testLinearMatchesReference() {
        var rng = SeededRandom(state: 1)
        let x = rng.tensor([7, 33]), w = rng.tensor([19, 33]), b = rng.tensor([19])
        assertClose(Ops.linear(x, weight: w, bias: b).data, Reference.linear(x, weight: w, bias: b).data,
                    abs: 1e-5, rel: 1e-5, "linear")
        assertClose(Ops.linear(x, weight: w, bias: nil).data, Reference.linear(x, weight: w, bias: nil).data,
                    abs: 1e-5, rel: 1e-5, "linear without bias")
    }

    func testMatmulAndTranspose() {
        var rng = SeededRandom(state: 2)
        let a = rng.tensor([5, 8]), b = rng.tensor([8, 3])
        // a · b == linear(a, bᵀ)
        assertClose(Ops.matmul(a, b).data, Reference.linear(a, weight: Ops.transposed(b), bias: nil).data,
                    abs: 1e-5, rel: 1e-5, "matmul")
        XCTAssertEqual(Ops.transposed(Ops.transposed(a)), a)
    }

    func testLayerNormMatchesReference() {
        var rng = SeededRandom(state: 3)
        var x = rng.tensor([6, 48], scale: 3)
        for j in 0..<48 { x.data[j] += 100 }  // a row with a large offset (cancellation)
        let g = rng.tensor([48]), b = rng.tensor([48])
        assertClose(Ops.layerNorm(x, weight: g, bias: b, eps: 1e-5).data,
                    Reference.layerNorm(x, weight: g, bias: b, eps: 1e-5).data, abs: 2e-5, rel: 1e-5, "layerNorm")
    }

    func testActivationsMatchReference() {
        var rng = SeededRandom(state: 4)
        let x = rng.tensor([4096], scale: 8)
        for act in [Ops.Activation.gelu, .quickGELU] {
            var y = x
            Ops.activate(&y, act)
            assertClose(y.data, Reference.activate(x, act).data, abs: 1e-6, rel: 1e-6, "\(act)")
        }
    }

    func testSoftmaxMatchesReference() {
        var rng = SeededRandom(state: 5)
        let rows = 5, cols = 9
        for causal in [false, true] {
            var x = rng.tensor([rows, cols], scale: 10)
            let ref = Reference.softmax((0..<rows).map { r in x.data[(r * cols)..<((r + 1) * cols)].map(Double.init) },
                                        scale: 0.7, causal: causal, rowOffset: 2)
            x.data.withUnsafeMutableBufferPointer {
                Kernels.softmaxRows($0.baseAddress!, rows: rows, cols: cols, ld: cols, scale: 0.7, causal: causal, rowOffset: 2)
            }
            assertClose(x.data, ref.flatMap { $0.map(Float.init) }, abs: 1e-6, rel: 1e-5, "softmax causal=\(causal)")
        }
    }

    func testPackedAttentionMatchesReferencePerSequence() {
        var rng = SeededRandom(state: 6)
        let d = 24, heads = 3
        let lengths = [5, 1, 9]
        let total = lengths.reduce(0, +)
        let qkv = rng.tensor([total, 3 * d], scale: 2)
        var segments = [Segment]()
        var start = 0
        for l in lengths { segments.append(Segment(start: start, length: l)); start += l }
        for causal in [false, true] {
            let all = Ops.multiHeadAttention(qkv: qkv, segments: segments, heads: heads, causal: causal)
            let first = Ops.multiHeadAttention(qkv: qkv, segments: segments, heads: heads, causal: causal, queries: .first)
            let last = Ops.multiHeadAttention(qkv: qkv, segments: segments, heads: heads, causal: causal, queries: .last)
            for (i, s) in segments.enumerated() {
                let part = Ops.gatherRows(qkv, Array(s.start..<(s.start + s.length)))
                let ref = Reference.multiHeadAttention(qkv: part, heads: heads, causal: causal)
                let got = Ops.gatherRows(all, Array(s.start..<(s.start + s.length)))
                assertClose(got.data, ref.data, abs: 1e-5, rel: 1e-5, "segment \(i) causal=\(causal)")
                assertClose(first.row(i), ref.row(0), abs: 1e-5, rel: 1e-5, "first row, segment \(i)")
                assertClose(last.row(i), ref.row(s.length - 1), abs: 1e-5, rel: 1e-5, "last row, segment \(i)")
            }
        }
    }

    // /proc/cpuinfo first entries (abridged to the identity and flag lines) of real CPUs.
    static func cpuinfo(_ vendor: String, family: Int, model: Int, name: String, flags: String) -> String {
        "processor\t: 0\nvendor_id\t: \(vendor)\ncpu family\t: \(family)\nmodel\t\t: \(model)\n"
            + "model name\t: \(name)\nflags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 \(flags)\n\n"
            + "processor\t: 1\nvendor_id\t: \(vendor)\nflags\t\t: fpu sse\n"
    }
    static let avx512 = "avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"

    func testOpenBLASCoreRuleFollowsFlagsNotVendor() {
        let cases: [(String, String, Int, Int, String, String?)] = [
            // Emerald Rapids: unknown to OpenBLAS 0.3.21, which falls back to Prescott.
            ("GenuineIntel", "INTEL(R) XEON(R) PLATINUM 8581C", 6, 207, Self.avx512 + " avx512_bf16 avx512_vnni avx512_fp16", "SkylakeX"),
            ("AuthenticAMD", "AMD EPYC 9B45 (Zen 5)", 26, 2, Self.avx512 + " avx512_bf16 avx512_vp2intersect", "SkylakeX"),
            ("AuthenticAMD", "AMD EPYC 9R14 (Zen 4)", 25, 17, Self.avx512 + " avx512_bf16", "SkylakeX"),
            ("GenuineIntel", "Intel Xeon Gold 6148 (Skylake-SP)", 6, 85, Self.avx512, "SkylakeX"),
            ("AuthenticAMD", "AMD EPYC 7B13 (Zen 3)", 25, 1, "avx avx2 fma", "Haswell"),
            ("GenuineIntel", "Intel Core i7-12700 (Alder Lake, AVX-512 fused off)", 6, 151, "avx avx2 fma avx_vnni", "Haswell"),
            ("HygonGenuine", "Hygon C86 7185", 24, 0, "avx avx2 fma", "Haswell"),
            ("CentaurHauls", "Zhaoxin KX-6000", 7, 59, "avx avx2", nil),        // no FMA: Haswell kernels would fault
            ("GenuineIntel", "Intel Xeon E5-2670 (Sandy Bridge)", 6, 45, "avx", nil),
            ("GenuineIntel", "Intel Xeon Phi 7250 (Knights Landing)", 6, 87, "avx avx2 fma avx512f avx512cd avx512er avx512pf", "Haswell"),
            ("AuthenticAMD", "AMD Opteron 6274", 21, 1, "", nil),
        ]
        for (vendor, name, family, model, flags, want) in cases {
            let cpu = CPUFeatures.parse(cpuinfo: Self.cpuinfo(vendor, family: family, model: model, name: name, flags: flags))
            XCTAssertEqual(cpu.modelName, name)
            XCTAssertEqual(cpu.family, family)
            XCTAssertEqual(cpu.model, model)
            let choice = OpenBLASCoreRule.choose(cpu: cpu, environment: [:])
            XCTAssertEqual(choice.core, want, name)
            XCTAssertEqual(choice.source, want == nil ? .openblas : .refract, name)
            // Never a kernel set whose instructions the CPU lacks.
            if let core = choice.core, let needs = OpenBLASCoreRule.table.first(where: { $0.core == core })?.needs {
                XCTAssertTrue(needs.allSatisfy(cpu.flags.contains), name)
                XCTAssertEqual(choice.decidingFlags, needs, name)
            }
        }
    }

    func testOpenBLASCoreRuleRespectsTheUser() {
        let cpu = CPUFeatures.parse(cpuinfo: Self.cpuinfo("AuthenticAMD", family: 25, model: 1, name: "Zen 3", flags: "avx avx2 fma"))
        let user = OpenBLASCoreRule.choose(cpu: cpu, environment: ["OPENBLAS_CORETYPE": "Zen"])
        XCTAssertEqual(user.core, "Zen")
        XCTAssertEqual(user.source, .user)
        let unsafe = OpenBLASCoreRule.choose(cpu: cpu, environment: ["OPENBLAS_CORETYPE": "SkylakeX"])
        XCTAssertEqual(unsafe.core, "SkylakeX", "the user's choice stands")
        XCTAssertTrue(unsafe.reason.contains("lacks avx512f"), unsafe.reason)
        let keep = OpenBLASCoreRule.choose(cpu: cpu, environment: ["REFRACT_KEEP_BLAS_CORETYPE": "1"])
        XCTAssertNil(keep.core)
        XCTAssertEqual(keep.source, .openblas)
        XCTAssertEqual(OpenBLASCoreRule.choose(cpu: cpu, environment: ["OPENBLAS_CORETYPE": ""]).core, "Haswell")
    }

    func testCPUFeaturesOfThisMachineAgreeWithCPUID() {
        // The rule's flags in `current` are those both /proc/cpuinfo and CPUID + XGETBV report.
        let current = CPUFeatures.current
        #if arch(x86_64)
        let cpuid = CPUFeatures.cpuidFlags()
        for flag in CPUFeatures.ruleFlags where current.flags.contains(flag) {
            XCTAssertTrue(cpuid.contains(flag), flag)
        }
        XCTAssertTrue(cpuid.isSubset(of: Set(CPUFeatures.ruleFlags)))
        #endif
        #if os(Linux)
        let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let parsed = CPUFeatures.parse(cpuinfo: text)
        XCTAssertEqual(current.modelName, parsed.modelName)
        XCTAssertTrue(current.flags.isSubset(of: parsed.flags))
        #endif
    }

    func testL2NormalisationKeepsZeroAndNeverHidesNaN() {
        let x = Tensor(shape: [4, 3], data: [3, 4, 0,  0, 0, 0,  1, .nan, 2,  .infinity, 1, 1])
        let y = Ops.l2Normalized(x)
        XCTAssertEqual(Array(y.data[0..<3]), [0.6, 0.8, 0])
        XCTAssertEqual(Array(y.data[3..<6]), [0, 0, 0], "a zero row stays zero")
        XCTAssertTrue(y.data[6..<12].allSatisfy(\.isNaN), "a row with NaN or infinity is NaN, not zero: \(y.data)")
    }

    func testBLASInfoIsReported() throws {
        let info = try BLAS.load()
        XCTAssertFalse(info.library.isEmpty)
        XCTAssertGreaterThanOrEqual(info.threads, 1)
        let labels = info.reportLines.map(\.label)
        XCTAssertEqual(labels, ["CPU", "CPU flags (rule)", "CPU allocation", "BLAS library", "BLAS core", "BLAS threads"])
        // BLAS threads never exceed the process's CPU allocation unless the user chose them.
        let env = ProcessInfo.processInfo.environment
        if env["OPENBLAS_NUM_THREADS"] == nil && env["OMP_NUM_THREADS"] == nil {
            XCTAssertLessThanOrEqual(info.threads, CPUAllocation.current.cpus)
        }
        // The choice matches the environment this process started with.
        let expected = OpenBLASCoreRule.choose(cpu: info.cpu, environment: ProcessInfo.processInfo.environment)
        if info.coreChoice.source == .refract {
            XCTAssertNil(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], "Refract's setting is removed after loading")
        } else {
            XCTAssertEqual(info.coreChoice, expected)
        }
    }
}

final class NPYTests: XCTestCase {
    func testRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("npy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let arrays: [NPYArray] = [
            .float32(shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5]),
            .int64(shape: [3], values: [1, -2, 49407]),
            .float32(shape: [], values: [42]),
            .uint8(shape: [1, 2, 2], values: [0, 1, 254, 255]),
        ]
        for (i, a) in arrays.enumerated() {
            let url = dir.appendingPathComponent("\(i).npy")
            try NPY.write(a, to: url)
            XCTAssertEqual(try NPY.read(url), a)
        }
        // header + data alignment: data starts at a multiple of 64 (6 floats = 24 bytes of data)
        let enc = NPY.encode(arrays[0])
        XCTAssertEqual((enc.count - 24) % 64, 0)
        XCTAssertEqual([UInt8](enc)[enc.count - 25], UInt8(ascii: "\n"))
    }

    func testBadFilesNameTheFile() {
        XCTAssertThrowsError(try NPY.parse(Data("hello".utf8), file: "x.npy")) { e in
            XCTAssertTrue("\(e)".contains("x.npy"))
        }
        var bad = NPY.encode(.float32(shape: [4], values: [1, 2, 3, 4]))
        bad.removeLast(3)
        XCTAssertThrowsError(try NPY.parse(bad, file: "short.npy")) { e in
            XCTAssertTrue("\(e)".contains("short.npy") && "\(e)".contains("data bytes"), "\(e)")
        }
    }
}
