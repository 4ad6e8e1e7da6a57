// swift-tools-version:6.0
import PackageDescription

// Refract fuzz harnesses (libFuzzer). Not part of the main build or of CI: scripts/fuzz.sh builds
// this package with `--sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address`
// (docs/Fuzzing.md says why the last flag is needed), so the root package's real modules
// (and the C shims over libjpeg-turbo and libpng) are compiled with coverage and
// AddressSanitizer/LeakSanitizer instrumentation, then runs each harness. See docs/Fuzzing.md.
//
// One executable per parser; each defines `LLVMFuzzerTestOneInput` (libFuzzer supplies `main`)
// and feeds the bytes to the same public entry point the CLI uses. Thrown Swift errors are clean
// refusals; only crashes, hangs, leaks and memory blow-ups are findings.
let harnesses = ["safetensors", "npy", "config", "tokenizer", "image", "manifest", "hdf5"]

let package = Package(
    name: "RefractFuzz",
    platforms: [.macOS(.v14)],
    products: harnesses.map { .executable(name: "fuzz-\($0)", targets: ["fuzz-\($0)"]) },
    dependencies: [
        .package(name: "Refract", path: ".."),
    ],
    targets: [
        // Scratch files on tmpfs and input splitting, shared by the harnesses.
        .target(name: "FuzzSupport"),
    ] + harnesses.map { name in
        .executableTarget(
            name: "fuzz-\(name)",
            dependencies: ["FuzzSupport", .product(name: "Refract", package: "Refract")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    }
)
