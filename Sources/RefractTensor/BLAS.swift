// MARK: - BLAS
//
// Matrix products go through `cblas_sgemm`. On macOS that is Accelerate. On Linux Refract loads
// OpenBLAS with dlopen at first use instead of linking it, for one reason: OpenBLAS picks its
// kernels from `OPENBLAS_CORETYPE` in a library constructor, i.e. when the library is loaded, and
// Debian's OpenBLAS 0.3.21 does not recognise recent CPUs (AMD Zen 4/5, Intel Sapphire/Emerald
// Rapids) and silently falls back to slow kernels (Prescott, SSE3, on an Emerald Rapids). Loading it
// ourselves lets Refract name the best kernel set the CPU's flags allow before the constructor runs
// (`OpenBLASCoreRule`, CPUFeatures.swift) — for the CLI, the tests, the benchmark and library users
// alike. A user-set `OPENBLAS_CORETYPE` is always respected; `REFRACT_KEEP_BLAS_CORETYPE=1` leaves
// the choice to OpenBLAS. The variable is removed again after loading when Refract set it, so child
// processes (a Python reference, say) see the environment they were given.

import Foundation
#if canImport(Accelerate)
import Accelerate
#elseif canImport(Glibc)
import Glibc
#endif

public enum BLASError: Error, CustomStringConvertible {
    case libraryNotFound(tried: [String], lastError: String)
    case symbolMissing(library: String, symbol: String)

    public var description: String {
        switch self {
        case let .libraryNotFound(tried, lastError):
            return "OpenBLAS could not be loaded (tried \(tried.joined(separator: ", ")); last error: \(lastError)). "
                + "Install it with `apt-get install libopenblas0-pthread` (scripts/setup.sh does this), "
                + "or point REFRACT_BLAS_LIBRARY at a CBLAS shared library."
        case let .symbolMissing(library, symbol):
            return "\(library) has no symbol \(symbol); it is not a CBLAS library."
        }
    }
}

/// What BLAS Refract is using, for `refract env` and benchmark output.
public struct BLASInfo: Sendable, Codable {
    public var library: String
    public var coreName: String
    public var threads: Int
    public var config: String
    /// The CPU and how the kernel set was chosen (set by Refract, by the user, or OpenBLAS's own).
    public var cpu: CPUFeatures
    public var coreChoice: BLASCoreChoice
}

public enum BLAS {
    public enum Transpose: Sendable { case none, transpose }

    typealias SgemmFn = @convention(c) (Int32, Int32, Int32, Int32, Int32, Int32, Float,
                                        UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32,
                                        Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    typealias GetStringFn = @convention(c) () -> UnsafePointer<CChar>?
    typealias GetIntFn = @convention(c) () -> Int32
    typealias SetIntFn = @convention(c) (Int32) -> Void

    final class Backend: @unchecked Sendable {
        let sgemm: SgemmFn
        let getCoreName: GetStringFn?
        let getConfig: GetStringFn?
        let getThreads: GetIntFn?
        let setThreads: SetIntFn?
        let library: String
        let coreChoice: BLASCoreChoice
        /// The dlopen handle, where further symbols (LAPACK: `LAPACK.swift`) are looked up; nil means
        /// the process's own symbols (Accelerate is linked).
        let handle: UnsafeMutableRawPointer?
        init(sgemm: @escaping SgemmFn, getCoreName: GetStringFn?, getConfig: GetStringFn?, getThreads: GetIntFn?,
             setThreads: SetIntFn?, library: String, coreChoice: BLASCoreChoice, handle: UnsafeMutableRawPointer? = nil) {
            self.sgemm = sgemm; self.getCoreName = getCoreName; self.getConfig = getConfig
            self.getThreads = getThreads; self.setThreads = setThreads
            self.library = library; self.coreChoice = coreChoice; self.handle = handle
        }

        /// A symbol of the loaded library (or, on macOS, of the process, which links Accelerate).
        func symbol(_ name: String) -> UnsafeMutableRawPointer? {
            #if canImport(Accelerate)
            return dlsym(UnsafeMutableRawPointer(bitPattern: -2), name)  // RTLD_DEFAULT
            #else
            return dlsym(handle, name)
            #endif
        }
    }

    private static let loaded: Result<Backend, BLASError> = loadBackend()

    /// Loads BLAS if needed; throws a clear error when it is missing. Call once at start-up
    /// (model constructors do); afterwards every kernel can use BLAS without checks.
    @discardableResult
    public static func load() throws -> BLASInfo {
        _ = try loaded.get()
        allocationApplied
        return info
    }

    /// Once, at load: BLAS threads capped at the process's CPU allocation (`CPUAllocation`) unless
    /// the user chose them with OPENBLAS_NUM_THREADS or OMP_NUM_THREADS.
    private static let allocationApplied: Void = {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_NUM_THREADS"] == nil, env["OMP_NUM_THREADS"] == nil else { return }
        let allowed = CPUAllocation.current.cpus
        if allowed < threads { setThreads(allowed) }
    }()

    static var backend: Backend {
        switch loaded {
        case .success(let b): return b
        case .failure(let e): fatalError("\(e)")  // unreachable after `load()`; kernels are only reached via models
        }
    }

    public static var info: BLASInfo {
        let b = backend
        let core = b.getCoreName.flatMap { $0() }.map { String(cString: $0) } ?? "unknown"
        let cfg = b.getConfig.flatMap { $0() }.map { String(cString: $0) } ?? ""
        return BLASInfo(library: b.library, coreName: core, threads: threads, config: cfg,
                        cpu: CPUFeatures.current, coreChoice: b.coreChoice)
    }

    /// Threads BLAS uses for one product.
    public static var threads: Int {
        get { Int(backend.getThreads?() ?? 1) }
    }

    /// Sets the BLAS thread count (OpenBLAS: process-wide).
    public static func setThreads(_ n: Int) {
        backend.setThreads?(Int32(max(1, n)))
    }

    private static let singleThreadLock = NSLock()

    /// Splits `count` independent items into contiguous slices, one per BLAS thread, and runs
    /// `body(range)` for each slice on its own core with single-threaded BLAS. Runs `body(0..<count)`
    /// directly when there is one thread or one item. Data parallelism over a batch avoids the
    /// synchronisation of multi-threaded BLAS on every product (measured ~15% faster for ViT-B/16
    /// at batch 8 on 2 cores).
    public static func forEachSlice(count: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let workers = Swift.min(count, threads)
        if workers <= 1 { body(0..<count); return }
        withSingleThreadedBLAS {
            Parallel.forEach(workers) { w in
                body((w * count / workers)..<((w + 1) * count / workers))
            }
        }
    }

    /// Runs `body` with BLAS single-threaded, for code that parallelises over many small products
    /// itself (attention over heads). OpenBLAS's thread count is process-wide, so this serialises.
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        singleThreadLock.lock()
        defer { singleThreadLock.unlock() }
        let before = threads
        if before != 1 { setThreads(1) }
        defer { if before != 1 { setThreads(before) } }
        return try body()
    }

    /// Row-major C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C.
    @inline(__always)
    public static func sgemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                             alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        let ta: Int32 = transA == .none ? 111 : 112
        let tb: Int32 = transB == .none ? 111 : 112
        backend.sgemm(101, ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                      beta, c, Int32(ldc))
    }

    // MARK: Loading

    private static func loadBackend() -> Result<Backend, BLASError> {
        #if canImport(Accelerate)
        let fn: SgemmFn = { o, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc in
            cblas_sgemm(CBLAS_ORDER(rawValue: UInt32(o))!, CBLAS_TRANSPOSE(rawValue: UInt32(ta))!,
                        CBLAS_TRANSPOSE(rawValue: UInt32(tb))!, m, n, k, al, a, lda, b, ldb, be, c, ldc)
        }
        return .success(Backend(sgemm: fn, getCoreName: nil, getConfig: nil, getThreads: nil, setThreads: nil,
                                library: "Accelerate",
                                coreChoice: BLASCoreChoice(core: nil, source: .openblas, reason: "Accelerate chooses its own kernels",
                                                           decidingFlags: [])))
        #else
        let choice = OpenBLASCoreRule.choose(cpu: CPUFeatures.current, environment: ProcessInfo.processInfo.environment)
        if choice.source == .refract, let core = choice.core { setenv("OPENBLAS_CORETYPE", core, 1) }
        defer { if choice.source == .refract { unsetenv("OPENBLAS_CORETYPE") } }
        var tried: [String] = []
        var lastError = ""
        var candidates = ["libopenblas.so.0", "libopenblas.so",
                          "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
                          "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
                          "libcblas.so.3", "libblas.so.3"]
        if let custom = ProcessInfo.processInfo.environment["REFRACT_BLAS_LIBRARY"], !custom.isEmpty {
            candidates = [custom]
        }
        for name in candidates {
            tried.append(name)
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                lastError = dlerror().map { String(cString: $0) } ?? "unknown"
                continue
            }
            guard let sym = dlsym(handle, "cblas_sgemm") else {
                lastError = "\(name) has no cblas_sgemm"
                continue
            }
            func fn<T>(_ s: String, _: T.Type) -> T? {
                dlsym(handle, s).map { unsafeBitCast($0, to: T.self) }
            }
            return .success(Backend(
                sgemm: unsafeBitCast(sym, to: SgemmFn.self),
                getCoreName: fn("openblas_get_corename", GetStringFn.self),
                getConfig: fn("openblas_get_config", GetStringFn.self),
                getThreads: fn("openblas_get_num_threads", GetIntFn.self),
                setThreads: fn("openblas_set_num_threads", SetIntFn.self),
                library: name, coreChoice: choice, handle: handle))
        }
        return .failure(.libraryNotFound(tried: tried, lastError: lastError))
        #endif
    }
}

extension BLASInfo {
    /// Labelled lines for `refract env` and `refract-bench`: the CPU, the flags the rule reads,
    /// the kernel set in use and who chose it, and why.
    public var reportLines: [(label: String, value: String)] {
        var id = cpu.vendor
        if let f = cpu.family { id += " family \(f)" }
        if let m = cpu.model { id += " model \(m)" }
        let present = CPUFeatures.ruleFlags.filter(cpu.flags.contains)
        let absent = CPUFeatures.ruleFlags.filter { !cpu.flags.contains($0) }
        let who: String
        switch coreChoice.source {
        case .refract: who = "set by Refract"
        case .user: who = "set by the user"
        case .openblas: who = "\(library.contains("Accelerate") ? "the library" : "OpenBLAS")'s own choice"
        }
        return [
            ("CPU", "\(cpu.modelName) (\(id))"),
            ("CPU flags (rule)", (present.isEmpty ? "none" : present.joined(separator: " "))
                + (absent.isEmpty ? "" : "; absent: \(absent.joined(separator: " "))")),
            ("CPU allocation", "\(CPUAllocation.current.cpus) (\(CPUAllocation.current.source))"),
            ("BLAS library", library),
            ("BLAS core", "\(coreName) (\(who): \(coreChoice.reason))"),
            ("BLAS threads", "\(threads)"),
        ]
    }
}
