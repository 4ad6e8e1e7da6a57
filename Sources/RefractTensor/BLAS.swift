// MARK: - BLAS
//
// Matrix products go through `cblas_sgemm`. On macOS that is Accelerate. On Linux Refract loads
// OpenBLAS with dlopen at first use instead of linking it, for one reason: OpenBLAS picks its
// kernels from `OPENBLAS_CORETYPE` in a library constructor, i.e. when the library is loaded.
// Debian's OpenBLAS 0.3.21 does not recognise AMD Zen 4/5 and silently falls back to its AVX2
// kernels at half speed. Loading it ourselves lets Refract set `OPENBLAS_CORETYPE=SkylakeX` on
// AVX-512 AMD CPUs before the constructor runs — automatically, for the CLI, the tests, the
// benchmark and library users alike. A user-set `OPENBLAS_CORETYPE` is always respected.

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
    /// `OPENBLAS_CORETYPE` as the library saw it, and whether Refract set it.
    public var coreTypeOverride: String?
    public var coreTypeSetByRefract: Bool
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
        let coreTypeSetByRefract: Bool
        /// The dlopen handle, where further symbols (LAPACK: `LAPACK.swift`) are looked up; nil means
        /// the process's own symbols (Accelerate is linked).
        let handle: UnsafeMutableRawPointer?
        init(sgemm: @escaping SgemmFn, getCoreName: GetStringFn?, getConfig: GetStringFn?, getThreads: GetIntFn?,
             setThreads: SetIntFn?, library: String, coreTypeSetByRefract: Bool, handle: UnsafeMutableRawPointer? = nil) {
            self.sgemm = sgemm; self.getCoreName = getCoreName; self.getConfig = getConfig
            self.getThreads = getThreads; self.setThreads = setThreads
            self.library = library; self.coreTypeSetByRefract = coreTypeSetByRefract; self.handle = handle
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
        return info
    }

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
                        coreTypeOverride: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"],
                        coreTypeSetByRefract: b.coreTypeSetByRefract)
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
                                library: "Accelerate", coreTypeSetByRefract: false))
        #else
        let setByUs = chooseOpenBLASCoreType()
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
                library: name, coreTypeSetByRefract: setByUs, handle: handle))
        }
        return .failure(.libraryNotFound(tried: tried, lastError: lastError))
        #endif
    }

    /// Sets OPENBLAS_CORETYPE=SkylakeX on AMD CPUs with the AVX-512 subsets SkylakeX kernels need,
    /// unless the user already chose a core type. Returns whether it set the variable.
    static func chooseOpenBLASCoreType() -> Bool {
        #if os(Linux) && arch(x86_64)
        let env = ProcessInfo.processInfo.environment
        if env["OPENBLAS_CORETYPE"] != nil || env["REFRACT_KEEP_BLAS_CORETYPE"] == "1" { return false }
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        return applyCoreTypeRule(cpuinfo: cpuinfo)
        #else
        return false
        #endif
    }

    /// The rule, separated for testing: AMD vendor and avx512 f/cd/bw/dq/vl present.
    static func coreTypeFor(cpuinfo: String) -> String? {
        var vendor = ""
        var flags = Set<Substring>()
        for line in cpuinfo.split(separator: "\n") {
            if vendor.isEmpty, line.hasPrefix("vendor_id") {
                vendor = line.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            } else if flags.isEmpty, line.hasPrefix("flags") {
                flags = Set((line.split(separator: ":").last ?? "").split(separator: " "))
            }
            if !vendor.isEmpty && !flags.isEmpty { break }
        }
        let needed: [Substring] = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
        guard vendor == "AuthenticAMD", needed.allSatisfy(flags.contains) else { return nil }
        return "SkylakeX"
    }

    private static func applyCoreTypeRule(cpuinfo: String) -> Bool {
        guard let core = coreTypeFor(cpuinfo: cpuinfo) else { return false }
        setenv("OPENBLAS_CORETYPE", core, 1)
        return true
    }
}
