import CWoodpeckerShims

/// Monotonic time for durations and deadlines; wall time for timestamps stored in data.
public enum Clock {
    @inline(__always) public static func monotonicNanos() -> UInt64 { wp_monotonic_ns() }
    public static func monotonicMillis() -> UInt64 { wp_monotonic_ns() / 1_000_000 }
    /// Milliseconds since the Unix epoch.
    public static func wallMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
