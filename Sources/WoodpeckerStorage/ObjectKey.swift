import WoodpeckerCore

/// The key rules every `ObjectStore` enforces, so a key valid for one store is valid for all of them.
///
/// A key is a `/`-separated relative path: not empty, no leading `/`, no empty segment (`a//b`, trailing `/`),
/// no `.` or `..` segment, no NUL byte, and no segment starting with `ObjectKey.tempPrefix` (reserved for the
/// temporary files of `LocalFileStore`).
public enum ObjectKey {
    /// Names starting with this are in-flight temporary files; listings skip them and keys may not use it.
    public static let tempPrefix = ".wp-tmp."

    /// Throws `WoodpeckerError(.invalidArgument)` naming the key and the rule it breaks.
    public static func validate(_ key: String, store: String) throws {
        func reject(_ why: String) -> WoodpeckerError {
            WoodpeckerError(.invalidArgument, "\(store): invalid object key \"\(key)\": \(why)")
        }
        if key.isEmpty { throw reject("key is empty") }
        if key.utf8.first == UInt8(ascii: "/") { throw reject("absolute keys are not allowed; use a relative path") }
        if key.utf8.contains(0) { throw reject("key contains a NUL byte") }
        for segment in key.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            if segment.isEmpty { throw reject("empty path segment (\"//\" or a trailing \"/\")") }
            if segment.elementsEqual(".".utf8) || segment.elementsEqual("..".utf8) {
                throw reject("\".\" and \"..\" segments are not allowed")
            }
            if segment.starts(with: tempPrefix.utf8) {
                throw reject("segments starting with \"\(tempPrefix)\" are reserved for temporary files")
            }
        }
    }

    /// Byte-wise (UTF-8) ordering, the order of S3 listings.
    static func less(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    static func hasPrefix(_ s: String, _ prefix: String) -> Bool {
        s.utf8.starts(with: prefix.utf8)
    }
}
