// Line charts as standalone SVG: a grid of panels, each with its own y axis and one or more named
// series over a shared kind of x axis. Used for the training curves (`plot`) and the scaling sweep.
// Layout: `columns` panels a row, each panelWidth x panelHeight pixels with margins for tick labels;
// ticks at 1, 2 or 5 x 10^k steps (or decades on a log axis).

import Foundation

/// One named line: points in data coordinates, drawn in order.
public struct LineSeries: Sendable {
    public var name: String
    public var points: [(x: Double, y: Double)]
    /// Also draw a dot at every point (for short series such as evaluations or rank counts).
    public var markers: Bool

    public init(name: String, points: [(x: Double, y: Double)], markers: Bool = false) {
        self.name = name
        self.points = points
        self.markers = markers
    }
}

/// One panel: a title, axis labels and its series.
public struct ChartPanel: Sendable {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [LineSeries]
    /// Logarithmic y axis (positive values only; others are left out).
    public var logY: Bool
    /// Logarithmic x axis (e.g. rank counts 1, 2, 4, 8).
    public var logX: Bool
    /// Tick positions on the x axis instead of the automatic ones (e.g. the rank counts measured).
    public var xTicks: [Double]?

    public init(
        title: String, xLabel: String, yLabel: String, series: [LineSeries], logY: Bool = false, logX: Bool = false,
        xTicks: [Double]? = nil
    ) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
        self.logX = logX
        self.xTicks = xTicks
    }
}

/// Renders panels into one SVG document.
public enum LineChart {
    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#000000", "#7f7f7f",
    ]

    /// The SVG text of `panels` laid out `columns` a row under `title`.
    public static func svg(
        title: String, panels: [ChartPanel], columns: Int = 2,
        panelWidth: Double = 440, panelHeight: Double = 260
    ) -> String {
        let columns = max(1, min(columns, panels.count))
        let rows = (panels.count + columns - 1) / columns
        let top = 34.0
        let width = Double(columns) * panelWidth, height = top + Double(rows) * panelHeight
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(format(width))" height="\(format(height))" \
            viewBox="0 0 \(format(width)) \(format(height))" font-family="Helvetica, Arial, sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(format(width / 2))" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

            """
        for (index, panel) in panels.enumerated() {
            let x0 = Double(index % columns) * panelWidth, y0 = top + Double(index / columns) * panelHeight
            out += render(panel, x: x0, y: y0, width: panelWidth, height: panelHeight)
        }
        out += "</svg>\n"
        return out
    }

    static func render(_ panel: ChartPanel, x x0: Double, y y0: Double, width: Double, height: Double) -> String {
        let left = x0 + 62, right = x0 + width - 14, top = y0 + 26, bottom = y0 + height - 42
        let visible = panel.series.map { series in
            series.points.filter {
                $0.x.isFinite && $0.y.isFinite && (!panel.logY || $0.y > 0) && (!panel.logX || $0.x > 0)
            }
        }
        var out =
            "<g>\n<text x=\"\(format((left + right) / 2))\" y=\"\(format(y0 + 16))\" text-anchor=\"middle\" "
            + "font-size=\"13\">\(escape(panel.title))</text>\n"
        let xs = visible.flatMap { $0.map(\.x) }, ys = visible.flatMap { $0.map(\.y) }
        guard let xMin = xs.min(), let xMax = xs.max(), let yMin = ys.min(), let yMax = ys.max() else {
            out +=
                "<text x=\"\(format((left + right) / 2))\" y=\"\(format((top + bottom) / 2))\" text-anchor=\"middle\" "
                + "fill=\"#888\">no data</text>\n</g>\n"
            return out
        }
        let xAxis = Axis(low: xMin, high: xMax, logarithmic: panel.logX, padFraction: 0)
        var yAxis = Axis(low: yMin, high: yMax, logarithmic: panel.logY, padFraction: 0.05)
        func px(_ v: Double) -> Double { left + xAxis.fraction(v) * (right - left) }
        func py(_ v: Double) -> Double { bottom - yAxis.fraction(v) * (bottom - top) }
        func pixels() -> [[(x: Double, y: Double)]] { visible.map { $0.map { (px($0.x), py($0.y)) } } }

        // The legend goes in the first plot corner no line or marker crosses; when every corner is taken,
        // the y axis grows upwards until the data sits below the legend band.
        let names = panel.series.indices.filter { !visible[$0].isEmpty }.map { panel.series[$0].name }
        let legendWidth = 32 + 7.0 * Double(names.map(\.count).max() ?? 0)
        let legendHeight = 6 + 14 * Double(names.count)
        let corners = [
            (right - 6 - legendWidth, top + 6), (left + 6, top + 6),
            (right - 6 - legendWidth, bottom - 6 - legendHeight), (left + 6, bottom - 6 - legendHeight),
        ].map { LegendBox(x: $0.0, y: $0.1, width: legendWidth, height: legendHeight) }
        var legend = corners[0]
        if let free = corners.first(where: { $0.isClear(of: pixels()) }) {
            legend = free
        } else {
            yAxis = yAxis.raisingTop(dataFraction: (bottom - top - legendHeight - 12) / (bottom - top))
        }

        out +=
            "<rect x=\"\(format(left))\" y=\"\(format(top))\" width=\"\(format(right - left))\" "
            + "height=\"\(format(bottom - top))\" fill=\"none\" stroke=\"#444\"/>\n"
        let yTicks = yAxis.ticks(), xTicks = panel.xTicks ?? xAxis.ticks()
        for tick in yTicks {
            let y = py(tick)
            out +=
                "<line x1=\"\(format(left))\" x2=\"\(format(right))\" y1=\"\(format(y))\" y2=\"\(format(y))\" "
                + "stroke=\"#e4e4e4\"/>\n"
            out +=
                "<text x=\"\(format(left - 5))\" y=\"\(format(y + 4))\" "
                + "text-anchor=\"end\">\(label(tick, among: yTicks))</text>\n"
        }
        for tick in xTicks {
            let x = px(tick)
            out +=
                "<line x1=\"\(format(x))\" x2=\"\(format(x))\" y1=\"\(format(top))\" y2=\"\(format(bottom))\" "
                + "stroke=\"#e4e4e4\"/>\n"
            out +=
                "<text x=\"\(format(x))\" y=\"\(format(bottom + 14))\" "
                + "text-anchor=\"middle\">\(label(tick, among: xTicks))</text>\n"
        }
        out +=
            "<text x=\"\(format((left + right) / 2))\" y=\"\(format(bottom + 30))\" text-anchor=\"middle\">"
            + "\(escape(panel.xLabel))</text>\n"
        out +=
            "<text transform=\"translate(\(format(x0 + 14)) \(format((top + bottom) / 2))) rotate(-90)\" "
            + "text-anchor=\"middle\">\(escape(panel.yLabel))</text>\n"
        var legendLines = "", legendRow = 0
        for (index, points) in pixels().enumerated() where !points.isEmpty {
            let colour = palette[index % palette.count]
            let path = points.map { "\(format($0.x)),\(format($0.y))" }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.6\" points=\"\(path)\"/>\n"
            if panel.series[index].markers {
                for p in points {
                    out += "<circle cx=\"\(format(p.x))\" cy=\"\(format(p.y))\" r=\"3\" fill=\"\(colour)\"/>\n"
                }
            }
            let ly = legend.y + 14 + 14 * Double(legendRow)
            legendRow += 1
            legendLines +=
                "<line x1=\"\(format(legend.x + 6))\" x2=\"\(format(legend.x + 22))\" y1=\"\(format(ly - 4))\" "
                + "y2=\"\(format(ly - 4))\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            legendLines +=
                "<text x=\"\(format(legend.x + 26))\" y=\"\(format(ly))\">\(escape(panel.series[index].name))</text>\n"
        }
        out +=
            "<rect class=\"legend\" x=\"\(format(legend.x))\" y=\"\(format(legend.y))\" "
            + "width=\"\(format(legend.width))\" "
            + "height=\"\(format(legend.height))\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"
        out += legendLines
        out += "</g>\n"
        return out
    }

    /// A legend's rectangle in pixels.
    struct LegendBox {
        var x: Double, y: Double, width: Double, height: Double

        /// True when no segment of `lines` (nor a marker of radius 3 at a point) comes within 5 px of the box.
        func isClear(of lines: [[(x: Double, y: Double)]]) -> Bool {
            let margin = 5.0
            let (x0, x1, y0, y1) = (x - margin, x + width + margin, y - margin, y + height + margin)
            for line in lines {
                for (i, p) in line.enumerated() {
                    if p.x >= x0 && p.x <= x1 && p.y >= y0 && p.y <= y1 { return false }
                    if i > 0 && segmentCrosses(from: line[i - 1], to: p, x0: x0, x1: x1, y0: y0, y1: y1) {
                        return false
                    }
                }
            }
            return true
        }
    }

    /// Whether the segment a-b meets the rectangle [x0, x1] x [y0, y1] (Liang-Barsky clipping).
    static func segmentCrosses(
        from a: (x: Double, y: Double), to b: (x: Double, y: Double), x0: Double, x1: Double, y0: Double, y1: Double
    ) -> Bool {
        let (dx, dy) = (b.x - a.x, b.y - a.y)
        var (enter, leave) = (0.0, 1.0)
        for (p, q) in [(-dx, a.x - x0), (dx, x1 - a.x), (-dy, a.y - y0), (dy, y1 - a.y)] {
            if p == 0 {
                if q < 0 { return false }
            } else {
                let t = q / p
                if p < 0 { enter = max(enter, t) } else { leave = min(leave, t) }
                if enter > leave { return false }
            }
        }
        return true
    }

    /// A linear or decade axis over [low, high].
    struct Axis {
        var low: Double, high: Double
        let logarithmic: Bool

        init(low: Double, high: Double, logarithmic: Bool, padFraction: Double) {
            self.logarithmic = logarithmic
            var (a, b) = logarithmic ? (log10(low), log10(high)) : (low, high)
            if b - a < 1e-12 * max(1, abs(a)) {
                // One value: a window around it, so the line sits mid-panel.
                let half = logarithmic ? 0.5 : max(abs(a) * 0.1, 1e-9)
                (a, b) = (a - half, b + half)
            }
            let pad = (b - a) * padFraction
            self.low = a - pad
            self.high = b + pad
        }

        /// The same axis with its top raised so that the data spans only the lower `dataFraction` of it.
        func raisingTop(dataFraction: Double) -> Axis {
            var raised = self
            raised.high = low + (high - low) / max(dataFraction, 0.05)
            return raised
        }

        func fraction(_ v: Double) -> Double { ((logarithmic ? log10(v) : v) - low) / (high - low) }

        /// Tick values in data units: decades on a log axis, else 1/2/5 steps giving 4 to 8 ticks.
        func ticks() -> [Double] {
            if logarithmic {
                let decades = Int(ceil(low))...Int(floor(high))
                if decades.count >= 2 { return decades.map { pow(10, Double($0)) } }
                // Less than two decades: 1, 2, 5 within them.
                var ticks: [Double] = []
                for decade in Int(floor(low))...Int(ceil(high)) {
                    for m in [1.0, 2, 5] {
                        let v = m * pow(10, Double(decade))
                        if log10(v) >= low && log10(v) <= high { ticks.append(v) }
                    }
                }
                return ticks
            }
            let raw = (high - low) / 6
            let magnitude = pow(10, floor(log10(raw)))
            let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
            var ticks: [Double] = []
            var v = ceil(low / step) * step
            while v <= high + step * 1e-9 {
                ticks.append(abs(v) < step * 1e-9 ? 0 : v)
                v += step
            }
            return ticks
        }
    }

    /// A tick label with as many decimals as the spacing of `ticks` needs.
    static func label(_ v: Double, among ticks: [Double]) -> String {
        let largest = ticks.map(abs).max() ?? abs(v)
        if v == 0 { return "0" }
        if largest >= 1e5 || largest < 1e-3 { return String(format: "%.1e", v) }
        let step = ticks.count >= 2 ? abs(ticks[1] - ticks[0]) : abs(v)
        let decimals = max(0, Int(-floor(log10(step) + 1e-9)))
        return String(format: "%.\(decimals)f", v)
    }

    static func format(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
