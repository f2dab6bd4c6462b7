/// Named bounds. Units last in every name. Components take these as defaults and allow overrides.
public enum Limits {
    /// Largest Kafka request frame the broker reads (Kafka's socket.request.max.bytes).
    public static let maxRequestSizeBytes = 100 * 1024 * 1024
    /// Largest single WAL entry.
    public static let maxEntrySizeBytes = 64 * 1024 * 1024
    /// Default in-memory write buffer of one LogWriter (bytes buffered or in flight, not yet durable).
    public static let writerBufferBytes = 256 * 1024 * 1024
    /// Default group-commit triggers.
    public static let flushIntervalMs = 5
    public static let flushBytes = 4 * 1024 * 1024
    public static let flushMaxEntries = 10_000
    /// Segment rolling.
    public static let segmentMaxBytes = 256 * 1024 * 1024
    public static let segmentMaxAgeMs = 600_000
    /// Appends waiting for space in the writer buffer before failing with `.bufferFull`.
    public static let appendWaitTimeoutMs = 30_000
    /// Entries in one read batch.
    public static let readBatchMaxEntries = 1_000
    public static let readBatchMaxBytes = 16 * 1024 * 1024
    /// Object listing page size.
    public static let listPageSize = 1_000
    /// Compaction target object size.
    public static let compactionTargetBytes = 32 * 1024 * 1024
}
