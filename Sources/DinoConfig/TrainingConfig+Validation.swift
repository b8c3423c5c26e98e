// Checks that go beyond kinds (ranges, names, divisibility) and the values derived when a run
// starts (the learning rate from the scaling rule). Every problem names its dotted key.

extension TrainingConfig {
    /// Throws `ConfigError.invalid` listing every value out of its allowed range.
    public func validate() throws {
        let problems = rangeProblems()
        if !problems.isEmpty { throw ConfigError.invalid(problems) }
    }

    /// Every value out of its allowed range, each as "dotted.key: what is wrong". (Names outside a
    /// `ConfigChoice`'s set cannot be decoded at all; `ConfigLoader` lists those.)
    func rangeProblems() -> [String] {
        var problems: [String] = []
        func require(_ condition: Bool, _ path: String, _ message: String) {
            if !condition { problems.append("\(path): \(message)") }
        }
        func pair(_ values: [Double], _ path: String, lower: Double, upper: Double, openLower: Bool) {
            guard values.count == 2 else {
                problems.append("\(path): expects two numbers [min, max], got \(values.count)")
                return
            }
            let lowOK = openLower ? values[0] > lower : values[0] >= lower
            require(
                lowOK && values[0] <= values[1] && values[1] <= upper, path,
                "needs \(openLower ? "\(lower) <" : "\(lower) <=") min <= max <= \(upper), got \(values)")
        }

        // student
        require(student.patchSize > 0, "student.patch_size", "must be positive")
        require((0..<1).contains(student.dropPathRate), "student.drop_path_rate", "must be in [0, 1)")
        require(student.layerScale >= 0, "student.layerscale", "must be >= 0 (0 disables LayerScale)")
        require(student.blockChunks >= 0, "student.block_chunks", "must be >= 0")
        require(student.registerTokens >= 0, "student.num_register_tokens", "must be >= 0")
        require(student.interpolateOffset >= 0, "student.interpolate_offset", "must be >= 0")
        require(
            student.embedDim >= 0 && student.depth >= 0 && student.numHeads >= 0, "student.embed_dim/depth/num_heads",
            "must be >= 0 (0 keeps the value of student.arch)")
        if student.embedDim > 0 && student.numHeads > 0 {
            require(
                student.embedDim % student.numHeads == 0, "student.embed_dim",
                "\(student.embedDim) is not divisible by student.num_heads \(student.numHeads)")
        }
        if student.blockChunks > 0 && student.depth > 0 {
            require(
                student.depth % student.blockChunks == 0, "student.block_chunks",
                "\(student.blockChunks) does not divide student.depth \(student.depth)")
        }

        // crops
        if student.patchSize > 0 {
            require(
                crops.globalCropsSize > 0 && crops.globalCropsSize % student.patchSize == 0, "crops.global_crops_size",
                "\(crops.globalCropsSize) must be a positive multiple of student.patch_size \(student.patchSize)")
            require(
                crops.localCropsSize > 0 && crops.localCropsSize % student.patchSize == 0, "crops.local_crops_size",
                "\(crops.localCropsSize) must be a positive multiple of student.patch_size \(student.patchSize)")
        }
        require(crops.localCropsNumber >= 0, "crops.local_crops_number", "must be >= 0")
        pair(crops.globalCropsScale, "crops.global_crops_scale", lower: 0, upper: 1, openLower: true)
        pair(crops.localCropsScale, "crops.local_crops_scale", lower: 0, upper: 1, openLower: true)

        // heads and losses
        for (prefix, prototypes, bottleneck, layers, hidden) in [
            ("dino", dino.headPrototypes, dino.headBottleneckDim, dino.headLayers, dino.headHiddenDim),
            ("ibot", ibot.headPrototypes, ibot.headBottleneckDim, ibot.headLayers, ibot.headHiddenDim),
        ] {
            require(prototypes > 0, "\(prefix).head_n_prototypes", "must be positive")
            require(bottleneck > 0, "\(prefix).head_bottleneck_dim", "must be positive")
            require(layers >= 1, "\(prefix).head_nlayers", "must be >= 1")
            require(hidden > 0, "\(prefix).head_hidden_dim", "must be positive")
        }
        require(dino.lossWeight >= 0, "dino.loss_weight", "must be >= 0")
        require(dino.koleoLossWeight >= 0, "dino.koleo_loss_weight", "must be >= 0")
        require(ibot.lossWeight >= 0, "ibot.loss_weight", "must be >= 0")
        require(copyDetection.lossWeight >= 0, "copy_detection.loss_weight", "must be >= 0 (0 turns it off)")
        require(copyDetection.temperature > 0, "copy_detection.temperature", "must be positive")
        for (value, key) in [
            (augmentation.brightness, "brightness"), (augmentation.contrast, "contrast"),
            (augmentation.saturation, "saturation"),
        ] {
            require((0...1).contains(value), "augmentation.\(key)", "must be in [0, 1] (factors in [1 - x, 1 + x])")
        }
        require((0...0.5).contains(augmentation.hue), "augmentation.hue", "must be in [0, 0.5]")
        require(
            (0...1).contains(augmentation.grayscaleProbability), "augmentation.grayscale_probability",
            "must be in [0, 1]")
        require(
            (0...1).contains(augmentation.solarizeProbability), "augmentation.solarize_probability", "must be in [0, 1]"
        )
        require((0...1).contains(ibot.maskSampleProbability), "ibot.mask_sample_probability", "must be in [0, 1]")
        pair(ibot.maskRatioMinMax, "ibot.mask_ratio_min_max", lower: 0, upper: 1, openLower: false)

        // train
        require(train.batchSizePerRank >= 1, "train.batch_size_per_gpu", "must be >= 1")
        require(
            dino.koleoLossWeight == 0 || train.batchSizePerRank >= 2, "train.batch_size_per_gpu",
            "must be >= 2 while dino.koleo_loss_weight > 0 (KoLeo needs a nearest neighbour among the rank's images); "
                + "raise the batch or set dino.koleo_loss_weight=0")
        require(train.officialEpochLength >= 1, "train.OFFICIAL_EPOCH_LENGTH", "must be >= 1")
        require(train.workers >= 0, "train.num_workers", "must be >= 0")
        require(train.seed >= 0, "train.seed", "must be >= 0")
        require(train.logEvery >= 1, "train.log_every", "must be >= 1")
        require(train.stopIteration >= 0, "train.stop_iteration", "must be >= 0 (0 = the last iteration)")
        require(train.collectiveTimeout >= 0, "train.collective_timeout", "must be >= 0 seconds (0 = no timeout)")

        // teacher
        require((0...1).contains(teacher.momentumTeacher), "teacher.momentum_teacher", "must be in [0, 1]")
        require((0...1).contains(teacher.finalMomentumTeacher), "teacher.final_momentum_teacher", "must be in [0, 1]")
        require(teacher.teacherTemp > 0, "teacher.teacher_temp", "must be positive")
        require(teacher.warmupTeacherTemp > 0, "teacher.warmup_teacher_temp", "must be positive")
        require(teacher.warmupTeacherTempEpochs >= 0, "teacher.warmup_teacher_temp_epochs", "must be >= 0")

        // optim
        require(optim.epochs >= 1, "optim.epochs", "must be >= 1")
        require(
            optim.warmupEpochs >= 0 && optim.warmupEpochs <= optim.epochs, "optim.warmup_epochs",
            "must be in [0, optim.epochs = \(optim.epochs)]")
        require(optim.freezeLastLayerEpochs >= 0, "optim.freeze_last_layer_epochs", "must be >= 0")
        require(optim.baseLR > 0, "optim.base_lr", "must be positive")
        require(optim.lr >= 0, "optim.lr", "must be >= 0 (0: derived from optim.base_lr)")
        require(optim.minLR >= 0, "optim.min_lr", "must be >= 0")
        require(optim.weightDecay >= 0 && optim.weightDecayEnd >= 0, "optim.weight_decay", "must be >= 0")
        require(optim.clipGrad >= 0, "optim.clip_grad", "must be >= 0 (0 disables clipping)")
        require(optim.patchEmbedLRMult >= 0, "optim.patch_embed_lr_mult", "must be >= 0")
        require(optim.layerwiseDecay > 0 && optim.layerwiseDecay <= 1, "optim.layerwise_decay", "must be in (0, 1]")
        require((0..<1).contains(optim.adamwBeta1), "optim.adamw_beta1", "must be in [0, 1)")
        require((0..<1).contains(optim.adamwBeta2), "optim.adamw_beta2", "must be in [0, 1)")

        // compute_precision: only the GEMM inputs may be bf16
        let fp32Only: [(ComputeDtype, ComputePrecisionConfig.CodingKeys)] = [
            (computePrecision.studentBackboneReduce, .studentBackboneReduce),
            (computePrecision.studentBackboneBuffer, .studentBackboneBuffer),
            (computePrecision.studentDinoHeadReduce, .studentDinoHeadReduce),
            (computePrecision.studentDinoHeadBuffer, .studentDinoHeadBuffer),
            (computePrecision.studentIbotHeadReduce, .studentIbotHeadReduce),
            (computePrecision.studentIbotHeadBuffer, .studentIbotHeadBuffer),
            (computePrecision.teacherBackboneReduce, .teacherBackboneReduce),
            (computePrecision.teacherBackboneBuffer, .teacherBackboneBuffer),
            (computePrecision.teacherDinoHeadReduce, .teacherDinoHeadReduce),
            (computePrecision.teacherDinoHeadBuffer, .teacherDinoHeadBuffer),
            (computePrecision.teacherIbotHeadReduce, .teacherIbotHeadReduce),
            (computePrecision.teacherIbotHeadBuffer, .teacherIbotHeadBuffer),
        ]
        for (dtype, key) in fp32Only {
            require(
                dtype == .fp32, "compute_precision." + key.rawValue,
                "must be fp32: gradient reductions, buffers, AdamW and the EMA stay fp32 here (param_dtype: bf16 "
                    + "puts the GEMMs in bf16)")
        }

        // evaluation, fsdp, checkpointing
        require(evaluation.evalPeriodIterations >= 0, "evaluation.eval_period_iterations", "must be >= 0")
        require(fsdp.hybridGroupSize >= 0, "fsdp.hybrid_group_size", "must be >= 0 (0: the ranks of one node)")
        require(checkpointing.period >= 1, "checkpointing.period", "must be >= 1")
        require(checkpointing.maxToKeep >= 1, "checkpointing.max_to_keep", "must be >= 1")
        require(checkpointing.keepEvery >= 0, "checkpointing.keep_every", "must be >= 0")
        require(
            !distillation.enabled || !distillation.checkpointPath.isEmpty, "distillation.checkpoint_path",
            "must name the teacher (a checkpoint or run folder, or an exported backbone) when distillation.enabled")

        return problems
    }

    /// Global batch size: images per rank times ranks.
    public func globalBatchSize(worldSize: Int) -> Int { train.batchSizePerRank * worldSize }

    /// The learning rate the scaling rule gives for `worldSize` ranks:
    /// `base_lr * sqrt(batch_size_per_gpu * worldSize / 1024)`.
    public func scaledLearningRate(worldSize: Int) -> Double {
        optim.baseLR * (Double(globalBatchSize(worldSize: worldSize)) / 1024).squareRoot()
    }

    /// This config with the values derived at start-up filled in (`optim.lr`), as written with the run.
    public func resolved(worldSize: Int) -> TrainingConfig {
        var copy = self
        copy.optim.lr = scaledLearningRate(worldSize: worldSize)
        return copy
    }

    /// Total training iterations: `optim.epochs * train.OFFICIAL_EPOCH_LENGTH`.
    public var totalIterations: Int { optim.epochs * train.officialEpochLength }
    /// The iteration this run ends at: `train.stop_iteration` when set (and earlier), else the last.
    public var endIteration: Int {
        train.stopIteration > 0 ? Swift.min(train.stopIteration, totalIterations) : totalIterations
    }
}
