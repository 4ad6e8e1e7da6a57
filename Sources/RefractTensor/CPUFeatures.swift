// MARK: - CPU features and the OpenBLAS kernel choice
//
// OpenBLAS (a DYNAMIC_ARCH build, as Debian ships it) picks its kernel set from the CPU's vendor,
// family and model in a library constructor. A CPU newer than the library (Debian 12's 0.3.21 and
// AMD Zen 4/5 or Intel Sapphire/Emerald Rapids) falls back to old kernels: Prescott (SSE3) on an
// Emerald Rapids, a fifth of the speed. Refract decides from the instruction-set *flags* instead:
// the best kernel set whose instructions the CPU has and the operating system has enabled, named
// in `OPENBLAS_CORETYPE` before the library loads (`BLAS.swift`). Both sources must agree: the
// kernel's `/proc/cpuinfo` flags (which it clears where XSAVE does not enable a register state)
// and the compiler's CPUID + XGETBV check (`rf_cpu_features`). A flag missing from either vetoes.
//
// The rule, best first (`OpenBLASCoreRule.table`):
//   SkylakeX  needs avx512f avx512cd avx512bw avx512dq avx512vl avx2 fma avx
//   Haswell   needs avx2 fma avx
//   otherwise OpenBLAS decides (nothing faster can be named safely).
// On a CPU OpenBLAS knows these are the kernel sets it picks itself for sgemm (Skylake-X, Cascade
// Lake, Ice Lake, Cooper Lake and Sapphire Rapids use the SkylakeX sgemm kernels; Haswell to
// Alder Lake and Zen 1-3 the Haswell ones), so naming them never does worse than its own choice.
// Cooperlake adds only bfloat16 GEMM (sbgemm), which Refract does not call; its sgemm is
// SkylakeX's, measured equal (docs/Speed.md), so SkylakeX is named on bf16 parts too.

import CRefractKernels
import Foundation

/// What the CPU is and which instruction-set flags it has.
public struct CPUFeatures: Sendable, Codable, Equatable {
    /// "model name" from /proc/cpuinfo (or the brand string on macOS); "unknown" when absent.
    public var modelName: String
    public var vendor: String
    public var family: Int?
    public var model: Int?
    /// The flags the rule reads, present in every source consulted (lower case, /proc/cpuinfo names).
    public var flags: Set<String>

    public init(modelName: String, vendor: String, family: Int?, model: Int?, flags: Set<String>) {
        self.modelName = modelName; self.vendor = vendor; self.family = family; self.model = model; self.flags = flags
    }

    private enum CodingKeys: String, CodingKey { case modelName, vendor, family, model, flags }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelName = try c.decode(String.self, forKey: .modelName)
        vendor = try c.decode(String.self, forKey: .vendor)
        family = try c.decodeIfPresent(Int.self, forKey: .family)
        model = try c.decodeIfPresent(Int.self, forKey: .model)
        flags = Set(try c.decode([String].self, forKey: .flags))
    }

    /// Flags are written sorted, so the JSON of one machine is always the same.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelName, forKey: .modelName)
        try c.encode(vendor, forKey: .vendor)
        try c.encodeIfPresent(family, forKey: .family)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encode(flags.sorted(), forKey: .flags)
    }

    /// The flags the kernel-set rule looks at, in /proc/cpuinfo spelling.
    public static let ruleFlags = ["avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"]

    /// Parses /proc/cpuinfo text (the first processor's entry).
    public static func parse(cpuinfo: String) -> CPUFeatures {
        var name = "unknown", vendor = "unknown"
        var family: Int?, model: Int?
        var flags: Set<String>?
        for line in cpuinfo.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).isEmpty, flags != nil { break }  // end of the first entry
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "model name": name = value
            case "vendor_id": vendor = value
            case "cpu family": family = Int(value)
            case "model": model = Int(value)
            case "flags": flags = Set(value.split(separator: " ").map { String($0).lowercased() })
            default: break
            }
        }
        return CPUFeatures(modelName: name, vendor: vendor, family: family, model: model, flags: flags ?? [])
    }

    /// The rule's flags as CPUID + XGETBV report them (the compiler's run-time dispatch), in
    /// /proc/cpuinfo spelling; empty off x86-64.
    public static func cpuidFlags() -> Set<String> {
        let bits = rf_cpu_features()
        let names: [(UInt32, String)] = [
            (UInt32(RF_CPU_AVX), "avx"), (UInt32(RF_CPU_AVX2), "avx2"), (UInt32(RF_CPU_FMA), "fma"),
            (UInt32(RF_CPU_AVX512F), "avx512f"), (UInt32(RF_CPU_AVX512CD), "avx512cd"),
            (UInt32(RF_CPU_AVX512BW), "avx512bw"), (UInt32(RF_CPU_AVX512DQ), "avx512dq"),
            (UInt32(RF_CPU_AVX512VL), "avx512vl"), (UInt32(RF_CPU_AVX512BF16), "avx512_bf16"),
        ]
        return Set(names.filter { bits & $0.0 != 0 }.map(\.1))
    }

    /// This machine: /proc/cpuinfo's identity, with the rule's flags limited to those CPUID agrees on.
    public static let current: CPUFeatures = {
        #if os(Linux)
        var f = parse(cpuinfo: (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
        #else
        var f = CPUFeatures(modelName: sysctlString("machdep.cpu.brand_string") ?? "unknown", vendor: "unknown",
                            family: nil, model: nil, flags: [])
        #endif
        #if arch(x86_64)
        let cpuid = cpuidFlags()
        let rule = Set(ruleFlags)
        // Rule flags must be in both sources; other /proc/cpuinfo flags are kept for display.
        f.flags = f.flags.filter { !rule.contains($0) || cpuid.contains($0) }
        #endif
        return f
    }()

    #if !os(Linux)
    private static func sysctlString(_ name: String) -> String? {
        var size = 0
        guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: size)
        guard sysctlbyname(name, &buf, &size, nil, 0) == 0 else { return nil }
        return String(cString: buf)
    }
    #endif
}

/// How the OpenBLAS kernel set was chosen.
public struct BLASCoreChoice: Sendable, Codable, Equatable {
    public enum Source: String, Sendable, Codable {
        /// `OPENBLAS_CORETYPE` was set in the environment; Refract left it alone.
        case user
        /// Refract set `OPENBLAS_CORETYPE` from the CPU's flags.
        case refract
        /// OpenBLAS's own detection (no rule matched, `REFRACT_KEEP_BLAS_CORETYPE=1`, or not OpenBLAS).
        case openblas
    }
    /// The kernel set named in `OPENBLAS_CORETYPE` (nil: none named).
    public var core: String?
    public var source: Source
    /// One sentence: why.
    public var reason: String
    /// The flags that decided (those the chosen rule required), in /proc/cpuinfo spelling.
    public var decidingFlags: [String]

    public init(core: String?, source: Source, reason: String, decidingFlags: [String]) {
        self.core = core; self.source = source; self.reason = reason; self.decidingFlags = decidingFlags
    }
}

/// The kernel-set rule, a pure function of the CPU's flags and the environment (tested on
/// /proc/cpuinfo texts of many CPUs).
public enum OpenBLASCoreRule {
    /// Kernel sets Refract may name, best first, with the flags each needs.
    public static let table: [(core: String, needs: [String])] = [
        ("SkylakeX", ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "avx"]),
        ("Haswell", ["avx2", "fma", "avx"]),
    ]

    public static func choose(cpu: CPUFeatures, environment: [String: String]) -> BLASCoreChoice {
        if let user = environment["OPENBLAS_CORETYPE"], !user.isEmpty {
            // A kernel set the rule knows but whose instructions this CPU lacks would crash: say so.
            var reason = "OPENBLAS_CORETYPE=\(user) was set in the environment"
            if let needs = table.first(where: { $0.core.lowercased() == user.lowercased() })?.needs {
                let missing = needs.filter { !cpu.flags.contains($0) }
                if !missing.isEmpty { reason += " (warning: this CPU lacks \(missing.joined(separator: " ")), which \(user) kernels use)" }
            }
            return BLASCoreChoice(core: user, source: .user, reason: reason, decidingFlags: [])
        }
        if environment["REFRACT_KEEP_BLAS_CORETYPE"] == "1" {
            return BLASCoreChoice(core: nil, source: .openblas,
                                  reason: "REFRACT_KEEP_BLAS_CORETYPE=1: OpenBLAS's own detection", decidingFlags: [])
        }
        for (core, needs) in table where needs.allSatisfy(cpu.flags.contains) {
            return BLASCoreChoice(core: core, source: .refract,
                                  reason: "the CPU has \(needs.joined(separator: " ")); \(core) is the best kernel set these allow",
                                  decidingFlags: needs)
        }
        let missing = table.last!.needs.filter { !cpu.flags.contains($0) }
        return BLASCoreChoice(core: nil, source: .openblas,
                              reason: "no AVX2+FMA (missing: \(missing.joined(separator: " "))): OpenBLAS's own detection",
                              decidingFlags: missing)
    }
}
