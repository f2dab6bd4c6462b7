import WoodpeckerCore

/// Position of one entry: the segment and the entry's 0-based index within it. Ordered by (segment, entry).
public struct LogMessageId: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var segmentId: Int64
    public var entryId: Int64
    public init(segmentId: Int64, entryId: Int64) {
        self.segmentId = segmentId
        self.entryId = entryId
    }
    public static let earliest = LogMessageId(segmentId: 0, entryId: 0)
    public static func < (a: LogMessageId, b: LogMessageId) -> Bool {
        (a.segmentId, a.entryId) < (b.segmentId, b.entryId)
    }
    public var description: String { "\(segmentId):\(entryId)" }

    /// Parses `SEGMENT:ENTRY`.
    public init?(parsing s: Substring) {
        let parts = s.split(separator: ":")
        guard parts.count == 2, let seg = Int64(parts[0]), let e = Int64(parts[1]), seg >= 0, e >= 0 else { return nil }
        self.init(segmentId: seg, entryId: e)
    }
}

/// One entry read back from a log.
public struct LogEntry: Sendable, Equatable {
    public var id: LogMessageId
    /// Monotonic key given at append (the Kafka facade stores a batch's last offset here).
    public var key: Int64
    /// Timestamp given at append (ms; the Kafka facade stores a batch's max timestamp here).
    public var timestamp: Int64
    public var payload: ByteBuffer
    public init(id: LogMessageId, key: Int64, timestamp: Int64, payload: ByteBuffer) {
        self.id = id
        self.key = key
        self.timestamp = timestamp
        self.payload = payload
    }
}

/// Where a reader starts.
public enum ReadPosition: Sendable, Equatable {
    /// The first entry not truncated.
    case earliest
    /// The next entry appended after the reader opens.
    case latest
    case id(LogMessageId)
    /// The first entry whose key is >= the given key.
    case key(Int64)
    /// The first entry whose timestamp is >= the given time (ms).
    case timestamp(Int64)
}
