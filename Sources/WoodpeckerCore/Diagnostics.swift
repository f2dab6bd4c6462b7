#if canImport(Glibc)
import Glibc
#endif

/// Minimal structured log lines on stderr: `LEVEL message`. Thread-safe (one write(2) per line).
public enum Diagnostics {
    nonisolated(unsafe) public static var verbose = false

    public static func info(_ message: @autoclosure () -> String) { emit("INFO", message()) }
    public static func warn(_ message: @autoclosure () -> String) { emit("WARN", message()) }
    public static func error(_ message: @autoclosure () -> String) { emit("ERROR", message()) }
    public static func debug(_ message: @autoclosure () -> String) {
        if verbose { emit("DEBUG", message()) }
    }

    static func emit(_ level: String, _ message: String) {
        let line = "\(Clock.wallMillis()) \(level) \(message)\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }
}
