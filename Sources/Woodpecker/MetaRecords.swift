import Foundation
import WoodpeckerCore
import WoodpeckerMetadata

/// Segment lifecycle. Every transition is a compare-and-swap on the segment key's modRevision.
public enum SegmentState: Int, Codable, Sendable {
    case active = 0
    case completed = 2
    case sealed = 3
    case truncated = 4
}

/// Value of `<root>/logs/<name>`.
public struct LogMeta: Codable, Sendable, Equatable {
    public var logId: Int64
    public var name: String
    public var createTimeMs: Int64
    /// Inclusive logical truncation point; (-1, -1) when never truncated.
    public var truncatedSegmentId: Int64 = -1
    public var truncatedEntryId: Int64 = -1
}

/// Value of `<root>/logs/<name>/segments/<id>`.
public struct SegmentMeta: Codable, Sendable, Equatable {
    public var segmentId: Int64
    public var state: SegmentState
    public var createTimeMs: Int64
    public var completionTimeMs: Int64 = 0
    public var sealedTimeMs: Int64 = 0
    /// The LAC once completed; -1 while active or when empty.
    public var lastEntryId: Int64 = -1
    public var sizeBytes: Int64 = 0
    /// Key and time range of the entries (set at completion; nil when empty).
    public var firstKey: Int64?
    public var lastKey: Int64?
    public var maxTimestamp: Int64?
    /// Who created the segment (diagnostics).
    public var writer: String = ""
    /// QuorumBuffer: the LogStore nodes (`host:port`) that hold the segment's blocks until they are in object
    /// storage; nil for MemoryBuffer segments.
    public var quorum: [String]?
}

/// Value of `<root>/logs/<name>/writer`: who holds the log's writer lock, attached to that writer's lease (so it
/// disappears when the lease expires or is revoked). A newer writer overwrites it with its own lease.
public struct WriterLockMeta: Codable, Sendable, Equatable {
    public var writer: String
    public var lease: Int64
    public var openedAtMs: Int64
}

/// A decoded value with the modRevision it was read at (the CAS guard for the next change).
public struct Versioned<T: Sendable>: Sendable {
    public var value: T
    public var modRevision: Int64
}

/// Metadata key layout under one root prefix.
struct MetaKeys: Sendable {
    let root: String
    var logIdGen: String { "\(root)/logidgen" }
    var logsPrefix: String { "\(root)/logs/" }
    /// QuorumBuffer: live LogStore nodes, each key attached to the node's lease.
    var logstoresPrefix: String { "\(root)/logstores/" }
    func log(_ name: String) -> String { "\(root)/logs/\(name)" }
    func writerLock(_ name: String) -> String { "\(root)/logs/\(name)/writer" }
    func segmentsPrefix(_ name: String) -> String { "\(root)/logs/\(name)/segments/" }
    func segment(_ name: String, _ id: Int64) -> String { "\(root)/logs/\(name)/segments/\(pad(id))" }
    /// Zero-padded so that a prefix range returns segments in id order.
    func pad(_ id: Int64) -> String {
        let s = String(id)
        return String(repeating: "0", count: max(0, 19 - s.count)) + s
    }
}

enum MetaCodec {
    static func encode<T: Encodable>(_ v: T) -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        // Encoding plain structs of integers and strings cannot fail.
        return Array(try! enc.encode(v))
    }

    /// Decodes a value read from `store` (named in the error, e.g. the etcd endpoints).
    static func decode<T: Decodable>(_ type: T.Type, _ kv: KeyValue, in store: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(kv.value))
        } catch {
            throw WoodpeckerError(.metadataCorrupted,
                                  "\(store): metadata key \(kv.key) does not hold a valid \(T.self) (\(kv.value.count) bytes: \(preview(kv.value))): \(error); inspect or delete the key")
        }
    }

    /// The start of a value, printable, for error messages.
    static func preview(_ v: [UInt8]) -> String {
        let s = String(decoding: v.prefix(64), as: UTF8.self).map { $0.isASCII && !$0.isNewline ? String($0) : "?" }.joined()
        return (v.count > 64 ? s + "..." : s).debugDescription
    }
}
