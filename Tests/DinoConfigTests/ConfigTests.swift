// Config layering, strict keys and kinds, validation, and the YAML written with every run.

import DinoConfig
import DinoTestSupport
import Foundation
import Testing

@Suite("configuration")
struct ConfigTests {
    let root = TestPaths.packageRoot.path

    @Test("code defaults equal the official ssl_default_config.yaml values")
    func officialDefaults() {
        let c = TrainingConfig()
        #expect(c.student.arch == .vitLarge && c.student.patchSize == 16 && c.student.ffnLayer == .mlp)
        #expect(c.student.layerScale == 1.0e-05 && c.student.dropPathRate == 0.3 && c.student.interpolateOffset == 0.1)
        #expect(c.dino.headPrototypes == 65536 && c.dino.headBottleneckDim == 256 && c.dino.headHiddenDim == 2048)
        #expect(c.dino.koleoLossWeight == 0.1 && c.ibot.maskRatioMinMax == [0.1, 0.5] && !c.ibot.separateHead)
        #expect(c.optim.baseLR == 0.004 && c.optim.epochs == 100 && c.optim.warmupEpochs == 10)
        #expect(c.optim.weightDecay == 0.04 && c.optim.weightDecayEnd == 0.4 && c.optim.layerwiseDecay == 0.9)
        #expect(c.optim.minLR == 1.0e-06 && c.optim.clipGrad == 3.0 && c.optim.patchEmbedLRMult == 0.2)
        #expect(
            c.teacher.momentumTeacher == 0.992 && c.teacher.warmupTeacherTemp == 0.04 && c.teacher.teacherTemp == 0.07)
        #expect(c.teacher.warmupTeacherTempEpochs == 30)
        #expect(c.crops.globalCropsScale == [0.32, 1.0] && c.crops.localCropsScale == [0.05, 0.32])
        #expect(c.crops.localCropsNumber == 8 && c.crops.globalCropsSize == 224 && c.crops.localCropsSize == 96)
        #expect(c.train.batchSizePerRank == 64 && c.train.officialEpochLength == 1250 && c.train.centering == .softmax)
        #expect(c.evaluation.evalPeriodIterations == 12500)
    }

    @Test("Configs/default.yaml is exactly the code defaults")
    func defaultFileMatchesCode() throws {
        let loaded = try ConfigLoader.load(file: root + "/Configs/default.yaml")
        #expect(loaded == TrainingConfig())
        let text = try String(contentsOfFile: root + "/Configs/default.yaml", encoding: .utf8)
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("#") }
        let rendered = ConfigLoader.yaml(TrainingConfig()).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(body == rendered, "regenerate with: dinov2-fsdp config > Configs/default.yaml")
    }

    @Test("vitl14.yaml carries the official long-recipe values")
    func vitl14() throws {
        let c = try ConfigLoader.load(file: root + "/Configs/vitl14.yaml")
        #expect(c.student.arch == .vitLarge && c.student.patchSize == 14 && c.student.ffnLayer == .swigluFused)
        #expect(c.student.blockChunks == 4 && c.student.dropPathRate == 0.4)
        #expect(c.dino.headPrototypes == 131072 && c.dino.headBottleneckDim == 384)
        #expect(c.ibot.separateHead && c.ibot.headPrototypes == 131072 && c.ibot.headBottleneckDim == 256)
        #expect(c.train.centering == .sinkhornKnopp && c.train.batchSizePerRank == 32)
        #expect(c.optim.baseLR == 2.0e-04 && c.optim.epochs == 500 && c.optim.warmupEpochs == 80)
        #expect(c.optim.layerwiseDecay == 1.0 && c.optim.weightDecayEnd == 0.2 && c.teacher.momentumTeacher == 0.994)
        #expect(c.crops.localCropsSize == 98)
        let g = try ConfigLoader.load(file: root + "/Configs/vitg14.yaml")
        #expect(g.student.arch == .vitGiant2 && g.train.batchSizePerRank == 12)
    }

    @Test(
        "every shipped config loads",
        arguments: [
            "default", "quickstart", "small-data", "vits14", "vitb14", "vitl14", "vitg14", "tests/tiny", "vitl14-518",
            "vitg14-518", "quickstart-highres", "small-data-distill",
        ])
    func shippedConfigs(name: String) throws {
        _ = try ConfigLoader.load(file: root + "/Configs/\(name).yaml")
    }

    @Test(
        "a high-resolution phase config is its base recipe with other crop sizes, nothing else",
        arguments: [
            ("vitl14", "vitl14-518", 518, 224), ("vitg14", "vitg14-518", 518, 224),
            ("quickstart", "quickstart-highres", 168, 84),
        ])
    func highResolutionPhases(base: String, phase: String, global: Int, local: Int) throws {
        let recipe = try ConfigLoader.load(file: root + "/Configs/\(base).yaml")
        var continued = try ConfigLoader.load(file: root + "/Configs/\(phase).yaml")
        #expect(continued.crops.globalCropsSize == global && continued.crops.localCropsSize == local)
        (continued.crops.globalCropsSize, continued.crops.localCropsSize) =
            (recipe.crops.globalCropsSize, recipe.crops.localCropsSize)
        #expect(continued == recipe, "\(phase) differs from \(base) beyond the crop sizes")
    }

    @Test("the distillation config is the small-data recipe with the distillation section, nothing else")
    func distillationConfig() throws {
        let recipe = try ConfigLoader.load(file: root + "/Configs/small-data.yaml")
        var distilled = try ConfigLoader.load(file: root + "/Configs/small-data-distill.yaml")
        #expect(distilled.distillation.enabled && distilled.distillation.checkpointPath == "runs/learning/ours")
        distilled.distillation = recipe.distillation
        #expect(distilled == recipe)
    }

    @Test("overrides apply after the file, the file after the defaults")
    func mergeOrder() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("run.yaml").path
        try "optim:\n  base_lr: 0.001\n  epochs: 17\ncrops:\n  global_crops_scale: [0.4, 1]\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(
            file: file,
            overrides: [
                "optim.base_lr=2e-4", "ibot.mask_ratio_min_max=[0.2, 0.4]",
                "train.centering=sinkhorn_knopp", "ibot.separate_head=true",
            ])
        #expect(c.optim.baseLR == 2e-4)  // override beats file
        #expect(c.optim.epochs == 17)  // file beats default
        #expect(c.optim.warmupEpochs == 10)  // default kept
        #expect(c.crops.globalCropsScale == [0.4, 1.0])  // integers accepted where numbers are expected
        #expect(c.ibot.maskRatioMinMax == [0.2, 0.4])
        #expect(c.train.centering == .sinkhornKnopp && c.ibot.separateHead)
    }

    @Test("unknown keys name the dotted path and suggest the near miss")
    func unknownKeys() {
        #expect(
            throws: ConfigError.unknownKey(
                path: "optim.bse_lr", suggestion: "optim.base_lr",
                source: "command-line override 'optim.bse_lr=1'")
        ) {
            try ConfigLoader.load(file: nil, overrides: ["optim.bse_lr=1"])
        }
        #expect(throws: ConfigError.unknownKey(path: "studnt", suggestion: "student", source: "config")) {
            try ConfigLoader.load(yaml: "studnt:\n  arch: vit_small\n")
        }
        #expect(
            throws: ConfigError.unknownKey(
                path: "optim.completely_unrelated", suggestion: nil,
                source: "command-line override 'optim.completely_unrelated=1'")
        ) {
            try ConfigLoader.load(file: nil, overrides: ["optim.completely_unrelated=1"])
        }
    }

    @Test("wrong kinds name the path, what was expected and what was found")
    func wrongKinds() {
        #expect(
            throws: ConfigError.typeMismatch(
                path: "optim.base_lr", expected: "a finite number", found: "'abc'",
                source: "command-line override 'optim.base_lr=abc'")
        ) {
            try ConfigLoader.load(file: nil, overrides: ["optim.base_lr=abc"])
        }
        #expect(
            throws: ConfigError.typeMismatch(
                path: "train.batch_size_per_gpu", expected: "an integer", found: "'3.5'",
                source: "config")
        ) {
            try ConfigLoader.load(yaml: "train:\n  batch_size_per_gpu: 3.5\n")
        }
        #expect(
            throws: ConfigError.typeMismatch(
                path: "ibot.separate_head", expected: "true or false", found: "'1'",
                source: "config")
        ) {
            try ConfigLoader.load(yaml: "ibot:\n  separate_head: 1\n")
        }
        #expect(throws: ConfigError.notAMapping(source: "config", path: "optim")) {
            try ConfigLoader.load(yaml: "optim: 3\n")
        }
        #expect(throws: ConfigError.badOverride("optim.base_lr")) {
            try ConfigLoader.load(file: nil, overrides: ["optim.base_lr"])
        }
    }

    @Test("values out of range are listed, each with its key")
    func validation() throws {
        do {
            _ = try ConfigLoader.load(
                file: nil,
                overrides: [
                    "student.arch=vit_hugee", "crops.local_crops_size=97", "ibot.mask_ratio_min_max=[0.6, 0.5]",
                    "fsdp.sharding_strategy=FULL", "train.batch_size_per_gpu=0",
                ])
            Issue.record("expected a validation error")
        } catch ConfigError.invalid(let problems) {
            #expect(problems.count == 6, "\(problems)")  // batch 0 also fails the KoLeo minimum of 2
            for key in [
                "student.arch", "crops.local_crops_size", "ibot.mask_ratio_min_max", "fsdp.sharding_strategy",
                "train.batch_size_per_gpu",
            ] {
                #expect(problems.contains { $0.hasPrefix(key + ":") }, "\(key) missing from \(problems)")
            }
        }
    }

    @Test("compute_precision: the official nested block, dotted overrides, the shorthand, fp32-only reductions")
    func computePrecision() throws {
        let official = """
            compute_precision:
              student:
                backbone:
                  mixed_precision:
                    param_dtype: bf16
                    reduce_dtype: fp32
                    buffer_dtype: fp32
                dino_head:
                  mixed_precision:
                    param_dtype: bf16
            """
        let nested = try ConfigLoader.load(yaml: official)
        #expect(nested.computePrecision.studentBackboneParam == .bf16)
        #expect(nested.computePrecision.studentDinoHeadParam == .bf16)
        #expect(nested.computePrecision.teacherBackboneParam == .fp32)
        #expect(try ConfigLoader.load(yaml: ConfigLoader.yaml(nested)) == nested)

        let dotted = try ConfigLoader.load(
            file: nil, overrides: ["compute_precision.teacher.ibot_head.mixed_precision.param_dtype=bf16"])
        #expect(dotted.computePrecision.teacherIbotHeadParam == .bf16)
        #expect(dotted.computePrecision.studentIbotHeadParam == .fp32)

        let all = try ConfigLoader.load(file: nil, overrides: ["compute_precision=bf16"])
        var expected = TrainingConfig()
        expected.computePrecision.setAllParameters(.bf16)
        #expect(all == expected)
        #expect(all.computePrecision.studentBackboneReduce == .fp32)
        let defaults = Mirror(reflecting: TrainingConfig().computePrecision).children.map { $0.value as? ComputeDtype }
        #expect(defaults.count == 18 && defaults.allSatisfy { $0 == .fp32 })

        do {
            _ = try ConfigLoader.load(
                file: nil,
                overrides: [
                    "compute_precision.student.backbone.mixed_precision.param_dtype=fp16",
                    "compute_precision.student.backbone.mixed_precision.reduce_dtype=bf16",
                ])
            Issue.record("expected a validation error")
        } catch ConfigError.invalid(let problems) {
            #expect(problems.count == 2, "\(problems)")
            #expect(
                problems.contains {
                    $0.hasPrefix("compute_precision.student.backbone.mixed_precision.param_dtype: 'fp16'")
                        && $0.contains("fp32, bf16")
                }, "\(problems)")
            #expect(
                problems.contains {
                    $0.hasPrefix("compute_precision.student.backbone.mixed_precision.reduce_dtype: must be fp32")
                }, "\(problems)")
        }
        #expect(throws: ConfigError.self) {
            try ConfigLoader.load(
                file: nil, overrides: ["compute_precision.student.backbone.mixed_precision.dtype=bf16"])
        }
    }

    @Test("the rendered YAML reads back to the same config")
    func roundTrip() throws {
        var c = try ConfigLoader.load(
            file: root + "/Configs/vitl14.yaml",
            overrides: ["train.dataset_path=/data/my images: v2", "student.pretrained_weights=true"])
        c = c.resolved(worldSize: 96)
        let text = ConfigLoader.yaml(c)
        #expect(try ConfigLoader.load(yaml: text) == c)
        #expect(text.contains("  layerscale: 1.0e-05\n"))  // YAML 1.1 readers need the dot
        #expect(text.contains("  dataset_path: \"/data/my images: v2\"\n"))
        #expect(text.contains("  pretrained_weights: \"true\"\n"))
    }

    @Test("the scaling rule derives the learning rate from the global batch")
    func scaledLearningRate() throws {
        let c = try ConfigLoader.load(file: root + "/Configs/vitl14.yaml")
        #expect(abs(c.resolved(worldSize: 96).optim.lr - 2e-4 * 3.0.squareRoot()) < 1e-15)  // 32 x 96 = 3072
        #expect(abs(TrainingConfig().resolved(worldSize: 32).optim.lr - 0.004 * 2.0.squareRoot()) < 1e-15)
        #expect(c.totalIterations == 625_000)
    }

    @Test("the resolved config is written atomically and reads back")
    func writeResolved() throws {
        let folder = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("config.yaml").path
        let c = TrainingConfig().resolved(worldSize: 8)
        try ConfigLoader.write(c, to: path)
        let loaded = try ConfigLoader.load(file: path)
        #expect(loaded == c, "\(loaded)\n\(c)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(leftovers == ["config.yaml"])
    }
}
