// `bench data`: the data pipeline's cost on one core. Images (by default 500 x 375 JPEGs, the
// typical ImageNet size, drawn by the embedded-dataset generator and encoded at quality 90) are
// read from disk and decoded, then run through the official multi-crop pipeline of the config
// (2 global + n local crops, every augmentation, normalised to float32), one thread, several
// passes; the median pass gives images/s per core. The same run then times training steps of the
// config on synthetic crops with one thread, so the share of a step that data preparation costs
// (per core, per image) comes from two numbers measured side by side.

import DinoConfig
import DinoCore
import DinoData
import DinoTraining
import Foundation

/// The result of `bench data`.
public struct DataReport: Codable, Sendable {
    public var images: Int
    public var meanWidth: Double
    public var meanHeight: Double
    public var passes: Int
    /// Read + decode only.
    public var decodeImagesPerSecond: Double
    /// Read + decode + every crop with its augmentations + normalisation: what a loader thread does per image.
    public var pipelineImagesPerSecond: Double
    /// Training step seconds per image on one core (synthetic crops), or 0 when skipped.
    public var stepSecondsPerImage: Double
    /// Pipeline seconds per image / step seconds per image (both one core).
    public var shareOfStep: Double
    public var config: String

    enum CodingKeys: String, CodingKey {
        case images, passes, config
        case meanWidth = "mean_width"
        case meanHeight = "mean_height"
        case decodeImagesPerSecond = "decode_images_per_sec_per_core"
        case pipelineImagesPerSecond = "pipeline_images_per_sec_per_core"
        case stepSecondsPerImage = "step_seconds_per_image_per_core"
        case shareOfStep = "share_of_step"
    }
}

/// Times decoding and multi-crop augmentation on one core.
public enum DataBenchmark {
    /// Writes `count` JPEGs of `width` x `height` into `folder` (drawn deterministically) and returns their paths.
    public static func writeJPEGs(count: Int, width: Int, height: Int, folder: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let side = max(width, height)
        return try (0..<count).map { index in
            let square = SyntheticImages.draw(
                label: index % SyntheticImages.classNames.count, index: index, split: 0,
                size: side, seed: 11)
            var pixels = [UInt8](repeating: 0, count: width * height * 3)
            for y in 0..<height {
                for x in 0..<(width * 3) { pixels[y * width * 3 + x] = square.pixels[y * side * 3 + x] }
            }
            let path = String(format: "%@/%05d.jpg", folder, index)
            try ImageCodec.encodeJPEG(RGBImage(width: width, height: height, pixels: pixels), quality: 90)
                .write(to: URL(fileURLWithPath: path))
            return path
        }
    }

    /// Times `passes` passes over `files` with the pipeline of `config`; with `stepSteps` > 0 also
    /// times that many training steps (after one warm-up) of `config` on one core.
    public static func run(
        files: [String], config: TrainingConfig, passes: Int, stepSteps: Int,
        progress: (String) -> Void
    ) throws -> DataReport {
        let pipeline = MultiCrop(config.crops, config.augmentation)
        let g = pipeline.globalSize, l = pipeline.localSize
        let global = UnsafeMutablePointer<Float>.allocate(capacity: 3 * g * g)
        let local = UnsafeMutablePointer<Float>.allocate(capacity: 3 * l * l)
        defer {
            global.deallocate()
            local.deallocate()
        }
        var decodeTimes: [Double] = [], pipelineTimes: [Double] = []
        var width = 0.0, height = 0.0
        for pass in 0..<passes {
            var start = MonotonicClock.seconds()
            for path in files { _ = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: path))) }
            decodeTimes.append(MonotonicClock.seconds() - start)
            start = MonotonicClock.seconds()
            for (index, path) in files.enumerated() {
                let image = try ImageCodec.decode(Data(contentsOf: URL(fileURLWithPath: path)))
                if pass == 0 {
                    width += Double(image.width) / Double(files.count)
                    height += Double(image.height) / Double(files.count)
                }
                // The loader's own per-image work (pass plays the epoch); crops overwrite one scratch each.
                pipeline.normalizedCrops(of: image, seed: 0, epoch: UInt64(pass), index: index) {
                    $0 < 2 ? global : local
                }
            }
            pipelineTimes.append(MonotonicClock.seconds() - start)
            progress(
                String(
                    format: "pass %d: decode %.1f images/s, decode + multi-crop %.1f images/s", pass + 1,
                    Double(files.count) / decodeTimes[pass], Double(files.count) / pipelineTimes[pass]))
        }
        let decodeRate = Double(files.count) / Statistics.median(decodeTimes)
        let pipelineRate = Double(files.count) / Statistics.median(pipelineTimes)
        var stepPerImage = 0.0
        if stepSteps > 0 {
            let step = try StepBenchmark.run(
                config: config, communicator: SingleProcessCommunicator(), steps: stepSteps,
                warmup: 1, seed: 0, threads: 1)
            stepPerImage = step.timeStep / Double(step.imagesPerRank)
            progress(
                String(
                    format: "training step: %.3f s per image on one core (%@, batch %d)", stepPerImage,
                    config.student.arch.rawValue, step.imagesPerRank))
        }
        return DataReport(
            images: files.count, meanWidth: width, meanHeight: height, passes: passes,
            decodeImagesPerSecond: decodeRate, pipelineImagesPerSecond: pipelineRate,
            stepSecondsPerImage: stepPerImage,
            shareOfStep: stepPerImage > 0 ? (1 / pipelineRate) / stepPerImage : 0,
            config: ConfigLoader.yaml(config))
    }
}
