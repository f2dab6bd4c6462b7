import WoodpeckerCore

/// Tunables of the MemoryBuffer write path and the background work of a log. Every field is a bound.
public struct WALConfig: Sendable {
    /// Flush the buffered entries when the oldest has waited this long.
    public var flushIntervalMs: UInt64 = UInt64(Limits.flushIntervalMs)
    /// Flush when this many bytes are buffered (also the target block size).
    public var flushBytes: Int = Limits.flushBytes
    /// Flush when this many entries are buffered (also the most entries per block).
    public var flushMaxEntries: Int = Limits.flushMaxEntries
    /// Flush at once when no block is in flight (lowest latency at low load; group commit under load).
    public var flushWhenIdle: Bool = true
    /// Blocks uploaded concurrently; acknowledgements still complete strictly in order.
    public var maxInFlightBlocks: Int = 16
    /// Bytes buffered or in flight per writer; appends beyond it wait (up to `appendWaitTimeoutMs`).
    public var writerBufferBytes: Int = Limits.writerBufferBytes
    public var appendWaitTimeoutMs: UInt64 = UInt64(Limits.appendWaitTimeoutMs)
    /// Roll to a new segment past this size or age (age only when the segment holds data).
    public var segmentMaxBytes: Int = Limits.segmentMaxBytes
    public var segmentMaxAgeMs: Int64 = Int64(Limits.segmentMaxAgeMs)
    /// Largest single entry.
    public var maxEntryBytes: Int = Limits.maxEntrySizeBytes
    /// Compaction merges completed segments' blocks into objects of about this size.
    public var compactionTargetBytes: Int = Limits.compactionTargetBytes
    /// Compactions running at once across all logs of a client. Each holds about two merged objects in memory
    /// (the blocks read for one and the one written), so segments of many partitions completing together (they
    /// roll at the same size and age) would otherwise each take that at once.
    public var maxConcurrentCompactions: Int = 1
    /// How often a writer's auditor compacts, marks truncated segments and collects garbage (0 = never).
    public var auditIntervalMs: UInt64 = 10_000
    /// Decoded recent blocks kept in memory for tail readers, for all logs of a client together (the blocks
    /// published longest ago are evicted first, whichever log holds them).
    public var tailCacheBytes: Int = 128 * 1024 * 1024
    /// Readers poll storage at this interval for appends made by another process (in-process appends wake them).
    public var crossProcessPollMs: UInt64 = 100
    /// Blocks of a completed segment a reader fetches ahead of its position (0 = none).
    public var readAheadBlocks: Int = 4
    /// Attempts for metadata and storage steps of fencing, completion and rolling.
    public var controlRetries: Int = 5
    /// TTL of the lease each writer holds on the metadata store (0 = no lease). The writer renews it every third
    /// of the TTL in the background; once a renewal has not succeeded for a whole TTL (the lease expired or was
    /// revoked, or the store was unreachable), the writer stops: nothing more is acknowledged and appends fail
    /// with `.lockLost`. The writer's lock key is attached to the lease.
    public var writerLeaseTTLSeconds: Int64 = 10

    public init() {}
}
