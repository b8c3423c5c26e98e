// Per-parameter optimiser multipliers, as dinov2/utils/param_groups.py assigns them, from the
// official names of the layout tables:
//   lr multiplier = layerwise_decay ^ (depth + 1 - layer id) for backbone tensors (layer id 0 for
//   pos_embed / patch_embed / mask_token / cls_token / register_tokens, block i -> i + 1, everything
//   else -> depth + 1), times patch_embed_lr_mult for names containing "patch_embed"; heads: 1.
//   wd multiplier = 0 for names ending ".bias" or containing "norm" or "gamma", else 1.
//   last layer: head tensors whose name contains "last_layer" follow the last-layer lr schedule.

import DinoModel
import Foundation

/// Optimiser multipliers of one tensor.
public struct ParameterGroup: Sendable, Equatable {
    public var lrMultiplier: Double
    public var weightDecayMultiplier: Double
    public var isLastLayer: Bool

    public init(lrMultiplier: Double, weightDecayMultiplier: Double, isLastLayer: Bool) {
        self.lrMultiplier = lrMultiplier
        self.weightDecayMultiplier = weightDecayMultiplier
        self.isLastLayer = isLastLayer
    }
}

public enum ParameterGroups {
    /// The multipliers of backbone tensor `name` in a backbone of `depth` blocks.
    public static func backbone(
        _ name: String, depth: Int, layerwiseDecay: Double, patchEmbedMultiplier: Double
    )
        -> ParameterGroup
    {
        let layer: Int
        if ["pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens"].contains(where: {
            name.contains($0)
        }) {
            layer = 0
        } else if name.hasPrefix("blocks.") {
            // blocks.<i>.x or, chunked, blocks.<chunk>.<i>.x: the global block index is the last number.
            let parts = name.split(separator: ".")
            let numbers = parts.dropFirst().prefix { Int($0) != nil }.compactMap { Int($0) }
            layer = (numbers.last ?? 0) + 1
        } else {
            layer = depth + 1
        }
        var lr = pow(layerwiseDecay, Double(depth + 1 - layer))
        if name.contains("patch_embed") { lr *= patchEmbedMultiplier }
        return ParameterGroup(lrMultiplier: lr, weightDecayMultiplier: decays(name) ? 1 : 0, isLastLayer: false)
    }

    /// The multipliers of head tensor `name`.
    public static func head(_ name: String) -> ParameterGroup {
        ParameterGroup(
            lrMultiplier: 1, weightDecayMultiplier: decays(name) ? 1 : 0, isLastLayer: name.contains("last_layer"))
    }

    static func decays(_ name: String) -> Bool {
        !(name.hasSuffix(".bias") || name.contains("norm") || name.contains("gamma"))
    }
}
