// swift-tools-version:6.0
import PackageDescription

// Refract: exact, fast decomposition of Vision Transformer image representations.
// One target per concern; see docs/Architecture.md.
let package = Package(
    name: "Refract",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Refract", targets: ["RefractCLIP", "RefractTimm", "RefractDecompose", "RefractStore", "RefractTextSpan",
                                           "RefractSegment", "RefractRetrieve", "RefractSpurious"]),
        .executable(name: "refract", targets: ["refract"]),
        .executable(name: "refract-bench", targets: ["refract-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // SHA-256 of weights and shards (BoringSSL on Linux, with the CPU's SHA extensions; CryptoKit on macOS).
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // The explorer's local web server (`refract serve`).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Thin C shims over libjpeg-turbo and libpng (setjmp-based error handling cannot live in Swift).
        .target(
            name: "CRefractCodecs",
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png")]
        ),
        // Elementwise/row-wise float kernels in C, multi-versioned for AVX-512 / AVX2 / baseline.
        .target(name: "CRefractKernels"),
        // Float32 tensors, BLAS (OpenBLAS loaded at run time on Linux, Accelerate on macOS), kernels, .npy I/O.
        .target(
            name: "RefractTensor",
            dependencies: ["CRefractKernels"],
            linkerSettings: [.linkedLibrary("dl", .when(platforms: [.linux])),
                             .linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        // safetensors (strict), model directories, Hugging Face cache and downloader, SHA-256.
        .target(
            name: "RefractCheckpoint",
            dependencies: ["RefractTensor", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Image decoding (JPEG, PNG) and checkpoint-tied preprocessing (PIL-compatible resize).
        .target(name: "RefractImage", dependencies: ["CRefractCodecs", "RefractTensor"]),
        // CLIP byte-level BPE tokenizer (open_clip and transformers flavours).
        .target(name: "RefractTokenizer", dependencies: ["RefractTensor"], resources: [.copy("Resources")]),
        // CLIP model definitions, loading, encoders, zero-shot classifier.
        .target(
            name: "RefractCLIP",
            dependencies: ["RefractTensor", "RefractCheckpoint", "RefractImage", "RefractTokenizer"]
        ),
        // timm checkpoints (ViT, DeiT, DINO, DINOv2, Swin): configuration, registry, forward passes.
        .target(name: "RefractTimm", dependencies: ["RefractCLIP", "RefractCheckpoint", "RefractImage", "RefractTensor"]),
        // CompAlign: linear maps of every component into CLIP space (Balasubramanian et al.).
        .target(name: "RefractAlign", dependencies: ["RefractTensor", "RefractCheckpoint", "RefractStore", "RefractDecompose", "RefractPlot"]),
        // Run stores: manifest + safetensors shards of per-image tensors, resumable writing, reading, export.
        .target(name: "RefractStore", dependencies: ["RefractTensor", "RefractCheckpoint", "CRefractKernels"]),
        // PNG charts (line plots) drawn in memory and written with libpng; the pieces every HTML page shares.
        .target(name: "RefractPlot", dependencies: ["RefractImage"]),
        // Exact direct-effect decomposition (generic pass + model definitions), dataset runs, mean ablation.
        .target(name: "RefractDecompose", dependencies: ["RefractCLIP", "RefractTimm", "RefractCheckpoint", "RefractStore", "RefractPlot"]),
        // TextSpan: greedy text descriptions of head contributions, description pools and text-embedding cache, reports.
        .target(name: "RefractTextSpan", dependencies: ["RefractTensor", "RefractStore", "RefractDecompose", "RefractCLIP", "RefractAlign", "RefractPlot"]),
        // zlib (Debian: zlib1g-dev; in the macOS SDK), for HDF5's deflate filter.
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // Reading HDF5 files (MATLAB v7.3 .mat) in Swift: datasets, object references, cells.
        .target(name: "RefractHDF5", dependencies: ["CZlib"]),
        // Token heatmaps, zero-shot segmentation and its metrics, segmentation datasets.
        .target(name: "RefractSegment",
                dependencies: ["RefractHDF5", "RefractDecompose", "RefractTextSpan", "RefractCLIP", "RefractImage", "RefractPlot", "RefractAlign", "RefractTimm"],
                resources: [.copy("Resources")]),
        // Property-based retrieval: nearest images by chosen heads' contributions; JSON and HTML contact sheets.
        .target(name: "RefractRetrieve", dependencies: ["RefractTextSpan", "RefractDecompose", "RefractStore", "RefractCLIP", "RefractImage", "RefractAlign", "RefractPlot"]),
        // The explorer's answers over a run (components, text ranking, images, heatmaps), without HTTP.
        .target(name: "RefractExplore", dependencies: ["RefractStore", "RefractDecompose", "RefractAlign", "RefractCLIP", "RefractTextSpan",
                                                       "RefractImage", "RefractTensor", "RefractSegment", "RefractTimm"]),
        // `refract serve`: the explorer over HTTP (Hummingbird) and its offline pages.
        .target(name: "RefractServe", dependencies: ["RefractExplore", .product(name: "Hummingbird", package: "hummingbird"),
                                                     .product(name: "HTTPTypes", package: "swift-http-types"),
                                                     .product(name: "Logging", package: "swift-log")]),
        // Spurious cues (Waterbirds): per-group accuracy under head ablations.
        .target(name: "RefractSpurious", dependencies: ["RefractTextSpan", "RefractDecompose", "RefractStore", "RefractCLIP", "RefractAlign"]),
        .executableTarget(
            name: "refract",
            dependencies: ["RefractCLIP", "RefractTimm", "RefractDecompose", "RefractStore", "RefractTextSpan",
                           "RefractSegment", "RefractRetrieve", "RefractSpurious", "RefractAlign", "RefractExplore", "RefractServe",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // FP32 peak probe for the benchmark (vector FMA loops with per-function target attributes).
        .target(name: "CRefractBench"),
        .executableTarget(name: "refract-bench",
                          dependencies: ["RefractCLIP", "RefractTimm", "RefractDecompose", "RefractTextSpan", "RefractCheckpoint", "RefractImage",
                                         "RefractSegment", "RefractRetrieve", "RefractAlign", "RefractExplore", "CRefractBench"]),

        // Parity assertions with named tolerances, shared by the test targets (imports XCTest).
        .target(name: "RefractTestSupport", dependencies: ["RefractTensor", "RefractStore"]),

        .testTarget(name: "RefractTensorTests", dependencies: ["RefractTensor"]),
        .testTarget(name: "RefractCheckpointTests", dependencies: ["RefractCheckpoint", "RefractTestSupport"]),
        .testTarget(name: "RefractImageTests", dependencies: ["RefractImage", "RefractTensor"]),
        .testTarget(name: "RefractTokenizerTests", dependencies: ["RefractTokenizer"]),
        .testTarget(name: "RefractCLIPTests", dependencies: ["RefractCLIP", "RefractTestSupport"]),
        .testTarget(name: "RefractStoreTests", dependencies: ["RefractStore"]),
        .testTarget(name: "RefractPlotTests", dependencies: ["RefractPlot", "RefractImage"]),
        .testTarget(name: "RefractDecomposeTests", dependencies: ["RefractDecompose", "RefractTestSupport"]),
        .testTarget(name: "RefractTextSpanTests", dependencies: ["RefractTextSpan", "RefractPlot", "RefractTestSupport"]),
        .testTarget(name: "RefractHDF5Tests", dependencies: ["RefractHDF5"]),
        .testTarget(name: "RefractTimmTests", dependencies: ["RefractTimm", "RefractTestSupport"]),
        .testTarget(name: "RefractAlignTests", dependencies: ["RefractAlign", "RefractTestSupport"]),
        .testTarget(name: "RefractSegmentTests", dependencies: ["RefractSegment", "RefractTestSupport"]),
        .testTarget(name: "RefractRetrieveTests", dependencies: ["RefractRetrieve", "RefractTestSupport"]),
        .testTarget(name: "RefractSpuriousTests", dependencies: ["RefractSpurious", "RefractTestSupport"]),
        .testTarget(name: "RefractExploreTests", dependencies: ["RefractExplore", "RefractServe", "RefractTestSupport"]),
        .testTarget(name: "RefractCLITests", dependencies: ["RefractCLIP", "RefractTimm", "RefractStore", "RefractDecompose", "RefractImage", "RefractTestSupport", "refract"]),
    ]
)
