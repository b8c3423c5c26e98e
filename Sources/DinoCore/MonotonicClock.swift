// Wall-clock timing for benchmarks and progress throttling: CLOCK_MONOTONIC in nanoseconds.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A monotonic clock, unaffected by changes of the system time.
public enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point.
    @inline(__always)
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Seconds since an arbitrary fixed point.
    @inline(__always)
    public static func seconds() -> Double {
        Double(nanoseconds()) * 1e-9
    }
}

/// Summary statistics of repeated timings.
public enum Statistics {
    /// The median of `values` (mean of the two middle values for an even count); 0 when empty.
    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid])
    }
}
