// iBOT block-wise masks (dinov2/data/masking.py MaskingGenerator, collate.py), drawn from the
// counter-based stream.
//   One mask on a G x G grid with target T: while fewer than T cells are masked, add one rectangle
//   with budget min(T - masked, 0.5 G^2): up to 10 attempts of area ~ U(4, budget), aspect
//   exp(U(log 0.3, log 1/0.3)), h = round(sqrt(area aspect)), w = round(sqrt(area / aspect)) (round
//   half to even, as Python), kept when h, w < G and it adds 1 ... budget new cells; stop when an
//   attempt round adds nothing.
//   A step's plan over the global crops (2 per image): int(count p) crops are masked (p =
//   mask_sample_probability); masked crop i gets target int(N U(r_i, r_{i+1})), r = linspace(min, max,
//   masked + 1) (stratified ratios). Deliberately over the global batch by global image index (the
//   official code does it per rank's batch), so masks do not depend on the rank count; the masked
//   crops and their strata are spread so that every rank's contiguous slice gets its share of both
//   (the official per-rank balance, which keeps ranks' iBOT work and hence step times equal):
//   masked crops every (1/p)-th crop in image order from a random phase, strata in mirrored pairs.

import DinoCore
import Foundation

/// Block-wise mask generator for one grid.
public struct MaskGenerator: Sendable {
    public let grid: Int
    public let minPatches: Int
    public let maxPatches: Int
    public let logAspect: ClosedRange<Double>
    public let attempts = 10

    public init(grid: Int, minPatches: Int = 4, maxPatchesFraction: Double = 0.5, minAspect: Double = 0.3) {
        self.grid = grid
        self.minPatches = minPatches
        maxPatches = Int(maxPatchesFraction * Double(grid * grid))
        logAspect = Foundation.log(minAspect)...Foundation.log(1 / minAspect)
    }

    /// One rectangle a mask was built from.
    public struct Rectangle: Sendable, Equatable {
        public var top: Int, left: Int, height: Int, width: Int
    }

    /// A mask [G * G] (row-major) with at most `target` cells, and the rectangles that made it.
    public func mask(target: Int, stream: RandomStream) -> (mask: [Bool], rectangles: [Rectangle]) {
        var mask = [Bool](repeating: false, count: grid * grid)
        var rectangles: [Rectangle] = []
        var draw: UInt64 = 0
        func uniform() -> Double {
            defer { draw += 1 }
            return stream.uniform(draw)
        }
        var count = 0
        while count < target {
            let budget = Swift.min(target - count, maxPatches)
            var added = 0
            for _ in 0..<attempts {
                let area = Double(minPatches) + (Double(budget) - Double(minPatches)) * uniform()
                let aspect = Foundation.exp(
                    logAspect.lowerBound + (logAspect.upperBound - logAspect.lowerBound) * uniform())
                let h = Int((area * aspect).squareRoot().rounded(.toNearestOrEven))
                let w = Int((area / aspect).squareRoot().rounded(.toNearestOrEven))
                guard w < grid && h < grid else { continue }
                // random.randint(0, G - h) is inclusive of both ends.
                let top = Swift.min(Int(uniform() * Double(grid - h + 1)), grid - h)
                let left = Swift.min(Int(uniform() * Double(grid - w + 1)), grid - w)
                var fresh = 0
                for y in top..<(top + h) { for x in left..<(left + w) where !mask[y * grid + x] { fresh += 1 } }
                if fresh > 0 && fresh <= budget {
                    for y in top..<(top + h) { for x in left..<(left + w) { mask[y * grid + x] = true } }
                    rectangles.append(Rectangle(top: top, left: left, height: h, width: w))
                    added = fresh
                    break
                }
            }
            if added == 0 { break }
            count += added
        }
        return (mask, rectangles)
    }
}

/// The masks of one step for the global crops of the whole global batch.
public struct MaskPlan: Sendable {
    /// Target masked cells for each global crop (0: unmasked), indexed view * globalImages + image.
    public let targets: [Int]
    public let globalImages: Int
    public let generator: MaskGenerator
    public let stream: RandomStream

    /// Plans the masks of step `iteration` for `globalImages` images (2 global crops each).
    public init(
        seed: UInt64, iteration: UInt64, globalImages: Int, grid: Int, probability: Double,
        ratioRange: [Double]
    ) {
        generator = MaskGenerator(grid: grid)
        self.globalImages = globalImages
        let stream = RandomStream(seed: seed, purpose: .masking, iteration)
        self.stream = stream
        let crops = 2 * globalImages, patches = grid * grid
        let masked = Int(Double(crops) * probability)
        let low = ratioRange.first ?? 0.1, high = ratioRange.last ?? 0.5
        var targets = [Int](repeating: 0, count: crops)
        // Which crops: walking the crops image by image, every (1/p)-th from a random phase, so any
        // run of consecutive images (every rank's slice, for any rank count) holds its share of
        // masked crops, as the official per-rank collate does; a random view order per image.
        let pick = stream.child(1)
        let phase = pick.uniform(0), rate = Double(masked) / Double(crops)
        var chosen: [Int] = []
        for j in 0..<crops where chosen.count < masked {
            guard Int((Double(j + 1) * rate + phase).rounded(.down)) > Int((Double(j) * rate + phase).rounded(.down))
            else { continue }
            let image = j / 2, flip = pick.bits(UInt64(1 + image)) & 1 == 1
            chosen.append((flip ? 1 - j % 2 : j % 2) * globalImages + image)
        }
        // Which ratio stratum: consecutive chosen crops come in pairs whose strata add up to
        // masked - 1 (a random low stratum and its mirror), so any run of whole pairs (every rank's
        // slice when its masked count is even) carries the same expected number of masked tokens.
        let pairs = masked / 2
        let lows = (0..<pairs).sorted { pick.child(2).bits(UInt64($0)) < pick.child(2).bits(UInt64($1)) }
        for (k, crop) in chosen.enumerated() {
            let stratum = k / 2 < pairs ? (k % 2 == 0 ? lows[k / 2] : masked - 1 - lows[k / 2]) : pairs
            let lower = low + (high - low) * Double(stratum) / Double(masked)
            let upper = low + (high - low) * Double(stratum + 1) / Double(masked)
            let ratio = lower + (upper - lower) * stream.child(2).uniform(UInt64(stratum))
            targets[crop] = Int(Double(patches) * ratio)
        }
        self.targets = targets
    }

    /// The mask of global crop `view` of global image `image`.
    public func mask(view: Int, image: Int) -> [Bool] {
        let crop = view * globalImages + image
        guard targets[crop] > 0 else { return [Bool](repeating: false, count: generator.grid * generator.grid) }
        return generator.mask(target: targets[crop], stream: stream.child(3, UInt64(crop))).mask
    }

    /// The masks of a rank's global crops [2B, N], rows view-major (view 1 of its images, then view 2),
    /// for the images firstImage ..< firstImage + count.
    public func masks(firstImage: Int, count: Int) -> [Bool] {
        var all: [Bool] = []
        for view in 0..<2 { for image in firstImage..<(firstImage + count) { all += mask(view: view, image: image) } }
        return all
    }
}
