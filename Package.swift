// swift-tools-version: 6.0
// dinov2-fsdp: DINOv2 self-supervised ViT training across MPI ranks, on CPUs.
import Foundation
import PackageDescription

// MARK: - Code generation for the host CPU

// Swift's default x86-64 target is SSE2 only (no AVX, no FMA): SIMD code then becomes scalar
// calls. Release builds target the CPU they are built on unless DINO_TARGET_CPU names another
// (for example `DINO_TARGET_CPU=znver4` or `x86-64-v3`-class CPUs such as `haswell`).
let targetCPU = Context.environment["DINO_TARGET_CPU"] ?? "native"
let hostCPUSettings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", targetCPU]),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

// MARK: - System libraries (thin shims for the macros Swift cannot import)

let systemLibraries: [Target] = [
    .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CHDF5", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
    .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
    .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
    .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
]

// MARK: - Swift modules

let modules: [Target] = [
    .target(name: "DinoCore", swiftSettings: hostCPUSettings),
    .target(
        name: "DinoConfig", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: hostCPUSettings),
    .target(name: "DinoKernels", dependencies: ["DinoCore", "CBLAS", "CDNNL"], swiftSettings: hostCPUSettings),
    .target(
        name: "DinoModel", dependencies: ["DinoCore", "DinoKernels", "DinoConfig"], swiftSettings: hostCPUSettings),
    .target(name: "DinoData", dependencies: ["DinoCore", "CTurboJPEG", "CPNG"], swiftSettings: hostCPUSettings),
    .target(name: "DinoDistributed", dependencies: ["DinoCore", "CMPI"], swiftSettings: hostCPUSettings),
    .target(
        name: "DinoSharding", dependencies: ["DinoConfig", "DinoCore", "DinoKernels", "DinoModel"],
        swiftSettings: hostCPUSettings),
    .target(
        name: "DinoCheckpoint",
        dependencies: ["DinoConfig", "DinoCore", "DinoKernels", "DinoModel", "DinoSharding", "CHDF5"],
        swiftSettings: hostCPUSettings),
    .target(
        name: "DinoEval", dependencies: ["DinoCore", "DinoKernels", "DinoData", "DinoCheckpoint"],
        swiftSettings: hostCPUSettings),
    .target(name: "DinoPlot", swiftSettings: hostCPUSettings),
    .target(
        name: "DinoCuration", dependencies: ["DinoCheckpoint", "DinoCore", "DinoData", "DinoKernels"],
        swiftSettings: hostCPUSettings),
    .target(
        name: "DinoTraining",
        dependencies: [
            "DinoCheckpoint", "DinoConfig", "DinoCore", "DinoData", "DinoEval", "DinoKernels", "DinoModel",
            "DinoPlot", "DinoSharding",
        ],
        swiftSettings: hostCPUSettings),
    .target(
        name: "DinoBench",
        dependencies: [
            "DinoCheckpoint", "DinoConfig", "DinoCore", "DinoCuration", "DinoData", "DinoKernels", "DinoModel",
            "DinoPlot", "DinoTraining",
        ],
        swiftSettings: hostCPUSettings),
    .executableTarget(
        name: "dinov2-fsdp",
        dependencies: [
            "DinoBench", "DinoCheckpoint", "DinoConfig", "DinoCore", "DinoCuration", "DinoData", "DinoDistributed",
            "DinoEval",
            "DinoKernels", "DinoTraining", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ],
        swiftSettings: hostCPUSettings),
]

// MARK: - Tests

let tests: [Target] = [
    .target(name: "DinoTestSupport", path: "Tests/DinoTestSupport"),
    .testTarget(name: "DinoConfigTests", dependencies: ["DinoConfig", "DinoTestSupport"]),
    .testTarget(name: "DinoKernelsTests", dependencies: ["DinoKernels", "DinoTestSupport"]),
    .testTarget(
        name: "DinoModelTests",
        dependencies: ["DinoCheckpoint", "DinoConfig", "DinoCore", "DinoKernels", "DinoModel", "DinoTestSupport"],
        exclude: ["Fixtures"]),
    .testTarget(
        name: "DinoTrainingTests",
        dependencies: [
            "DinoCheckpoint", "DinoConfig", "DinoCore", "DinoEval", "DinoKernels", "DinoModel", "DinoPlot",
            "DinoTestSupport", "DinoTraining",
        ],
        exclude: ["Fixtures"]),
    .testTarget(
        name: "DinoDataTests", dependencies: ["DinoCheckpoint", "DinoCore", "DinoData", "DinoTestSupport"],
        exclude: ["Fixtures"]),
    .testTarget(
        name: "DinoCurationTests",
        dependencies: ["DinoCheckpoint", "DinoCore", "DinoCuration", "DinoData", "DinoTestSupport"]),
    .testTarget(
        name: "DinoCoreTests", dependencies: ["DinoCheckpoint", "DinoCore", "DinoKernels", "DinoTestSupport"]),
    // Imports only what it lists besides dinov2-fsdp, which it launches under mpirun (so it must be built first).
    .testTarget(
        name: "MPIIntegrationTests",
        dependencies: ["dinov2-fsdp", "DinoCheckpoint", "DinoCuration", "DinoData", "DinoTestSupport", "DinoTraining"]),
]

let package = Package(
    name: "dinov2-fsdp",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dinov2-fsdp", targets: ["dinov2-fsdp"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: systemLibraries + modules + tests
)
