// This process's resident memory as the kernel counts it: the peak (VmHWM) and, on Linux, a reset of
// that peak to the current size, so a benchmark can measure the peak of one phase (its steps)
// without a short-lived spike before it (a GEMM peak measurement's matrices).

import Foundation

public enum ResidentMemory {
    /// Peak resident set size in bytes: VmHWM of /proc/self/status (which `resetPeak` lowers), else
    /// getrusage's ru_maxrss.
    public static func peakBytes() -> Int {
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        {
            return kilobytes * 1024
        }
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024
    }

    /// Sets the peak to the current resident size (Linux: "5" to /proc/self/clear_refs). Returns
    /// whether the kernel accepted it.
    @discardableResult
    public static func resetPeak() -> Bool {
        let descriptor = open("/proc/self/clear_refs", O_WRONLY)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        return write(descriptor, "5", 1) == 1
    }
}
