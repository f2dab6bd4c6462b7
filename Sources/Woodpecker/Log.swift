import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

/// One log as seen by this process: its metadata, the shared tail state that wakes readers when the in-process
/// writer acknowledges entries, and the log-level operations (writer, readers, truncation, compaction, GC).
/// All state lives on the client's event loop.
public actor Log {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    public nonisolated let name: String
    public nonisolated let logId: Int64
    nonisolated let loop: EventLoop
    nonisolated let client: WoodpeckerClient
    /// Blocks inside LogStore runs found so far (QuorumBuffer segments), shared by this log's segment stores.
    nonisolated let runLocations = RunLocations()
    nonisolated var config: WALConfig { client.config }

    /// The segment the in-process writer appends to, and its acknowledged blocks (for tail readers).
    private(set) var activeSegmentId: Int64?
    private(set) var activeBlocks: [BlockInfo] = []
    /// Last acknowledged entry of the in-process writer.
    private(set) var lastAcked: LogMessageId?
    /// Recently acknowledged blocks, decoded, newest last (from `tailHead` on), with their sequence numbers in the
    /// client's `TailBudget`, which bounds all logs' caches together and evicts the oldest first.
    private var tail: [(segmentId: Int64, seq: UInt64, block: DecodedBlock)] = []
    private var tailHead = 0
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextWaiter: UInt64 = 0
    private var writer: LogWriter?
    private var readerSegments: [UInt64: Int64] = [:]
    private var auditing = false

    init(name: String, logId: Int64, client: WoodpeckerClient) {
        self.name = name
        self.logId = logId
        self.client = client
        self.loop = client.loop
    }

    // MARK: writer and readers

    /// Opens the single writer of this log, fencing any previous writer (in this or another process).
    /// `segmentMaxBytes` and `segmentMaxAgeMs` replace the client's roll settings for this writer.
    public func openWriter(segmentMaxBytes: Int? = nil, segmentMaxAgeMs: Int64? = nil) async throws -> LogWriter {
        var c = config
        if let b = segmentMaxBytes { c.segmentMaxBytes = b }
        if let ms = segmentMaxAgeMs { c.segmentMaxAgeMs = ms }
        let w = LogWriter(log: self, loop: loop, config: c, writerName: client.writerName)
        try await w.start()
        writer = w
        return w
    }

    func writerClosed(_ w: LogWriter) {
        if writer === w {
            writer = nil
            activeSegmentId = nil
            activeBlocks = []
        }
        wakeAll()
    }

    /// Opens a reader at `position`. Reads never go past the last acknowledged (or sealed) entry.
    public func openReader(from position: ReadPosition) async throws -> LogReader {
        nextWaiter += 1
        let r = LogReader(log: self, readerId: nextWaiter)
        try await r.seek(to: position)
        return r
    }

    func readerMoved(_ id: UInt64, to segment: Int64?) {
        readerSegments[id] = segment
    }

    // MARK: tail state (called by the writer on the same loop)

    func segmentOpened(_ id: Int64) {
        activeSegmentId = id
        activeBlocks = []
    }

    func segmentCompleted(_ id: Int64) {
        if activeSegmentId == id {
            activeSegmentId = nil
            activeBlocks = []
        }
        wakeAll()
    }

    nonisolated func publish(segmentId: Int64, blocks: [DecodedBlock]) {
        assumeIsolated { $0.publishIsolated(segmentId: segmentId, blocks: blocks) }
    }

    private func publishIsolated(segmentId: Int64, blocks: [DecodedBlock]) {
        for b in blocks {
            if activeSegmentId == segmentId { activeBlocks.append(b.info) }
            lastAcked = LogMessageId(segmentId: segmentId, entryId: b.info.lastEntryId)
            // Cached before the budget hears of it: that may evict this very block when it alone is over.
            let seq = client.tailBudget.nextSequence()
            tail.append((segmentId, seq, b))
            client.tailBudget.published(self, seq: seq, bytes: b.info.size)
        }
        wakeAll()
    }

    /// Drops the cached block with sequence number `seq` (the budget evicts oldest first, so it is this log's oldest
    /// cached block, or gone already); returns the bytes freed, nil if the block was no longer cached.
    func evictCached(seq: UInt64) -> Int? {
        guard tailHead < tail.count, tail[tailHead].seq == seq else { return nil }
        let size = tail[tailHead].block.info.size
        // Release the entries now: the slot itself stays until the array is compacted below, which happens only
        // once evicted slots are the larger part (holding their payloads until then kept up to twice the budget
        // alive and freed a whole budget at once, the broker's RSS sawtooth).
        tail[tailHead].block.entries = []
        tailHead += 1
        if tailHead == tail.count {
            tail.removeAll(keepingCapacity: tail.capacity <= 1024)
            tailHead = 0
        } else if tailHead > 64 && tailHead * 2 > tail.count {
            tail.removeFirst(tailHead)
            tailHead = 0
        }
        return size
    }

    /// How many acknowledged blocks this log caches for tail readers now.
    public var cachedBlockCount: Int { tail.count - tailHead }

    /// Payload bytes this log's tail cache keeps alive, evicted slots not yet compacted away included (diagnostics;
    /// walks the cache).
    public var cachedPayloadBytes: Int {
        tail.reduce(0) { sum, t in t.block.entries.reduce(sum) { $0 + $1.payload.readableBytes } }
    }

    /// Whether the block with sequence number `seq` is still cached (sequence numbers increase along the tail).
    func holdsCached(seq: UInt64) -> Bool {
        var lo = tailHead, hi = tail.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if tail[mid].seq < seq { lo = mid + 1 } else { hi = mid }
        }
        return lo < tail.count && tail[lo].seq == seq
    }

    /// Forgets the tail cache of a deleted segment, so that no reader gets entries that storage no longer has.
    private func dropCachedBlocks(segment: Int64) {
        dropCached { $0 == segment }
    }

    /// Forgets the whole tail cache (the log is being deleted).
    func dropAllCached() {
        dropCached { _ in true }
    }

    private func dropCached(where matches: (Int64) -> Bool) {
        var blocks = 0, size = 0
        var kept: [(segmentId: Int64, seq: UInt64, block: DecodedBlock)] = []
        for t in tail[tailHead...] {
            if matches(t.segmentId) {
                blocks += 1
                size += t.block.info.size
            } else {
                kept.append(t)
            }
        }
        guard blocks > 0 else { return }
        tail = kept
        tailHead = 0
        client.tailBudget.dropped(blocks: blocks, bytes: size)
    }

    /// A cached decoded block of `segment` holding `entryId`, if still in the tail cache.
    func cachedBlock(segment: Int64, entryId: Int64) -> DecodedBlock? {
        for t in tail[tailHead...].reversed() where t.segmentId == segment {
            if t.block.info.firstEntryId <= entryId && entryId <= t.block.info.lastEntryId { return t.block }
            if t.block.info.lastEntryId < entryId { return nil }
        }
        return nil
    }

    /// Suspends until the in-process writer acknowledges something or `timeoutMs` passes.
    func waitForAppend(timeoutMs: UInt64) async {
        nextWaiter += 1
        let id = nextWaiter
        loop.schedule(afterMs: timeoutMs) { [weak self] in
            guard let self else { return }
            self.assumeIsolated { $0.wake(id) }
        }
        await withCheckedContinuation { waiters[id] = $0 }
    }

    private func wake(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.resume()
    }

    private func wakeAll() {
        let ws = waiters
        waiters.removeAll()
        for (_, c) in ws { c.resume() }
    }

    // MARK: metadata

    /// The storage of one segment, in the client's layout (local files, objects, or a LogStore ensemble in front
    /// of objects). `quorum` is the segment's ensemble from its metadata (nil: not a QuorumBuffer segment, or
    /// a read-only view that reads the objects and falls back to any configured node).
    nonisolated func segmentStore(_ segment: Int64, quorum: [String]? = nil) -> any SegmentStore {
        if let root = client.segmentFilesRoot {
            return FileSegmentStore(loop: loop, root: root, logId: logId, segmentId: segment)
        }
        let objects = ObjectSegmentStore(store: client.store, maxConcurrentWrites: config.maxInFlightBlocks,
                                         prefix: client.objectPrefix, logId: logId, segmentId: segment,
                                         runLocations: runLocations)
        guard let pool = client.pool else { return objects }
        return QuorumSegmentStore(objects: objects, pool: pool, ensemble: quorum ?? [],
                                  maxConcurrentWrites: config.maxInFlightBlocks)
    }

    /// The ensemble for a new segment in QuorumBuffer mode, nil otherwise.
    nonisolated func chooseEnsemble() throws -> [String]? { try client.pool?.chooseEnsemble() }

    /// All segment metadata in id order.
    /// Throws `.metadataCorrupted` naming the key and the store when a segment key holds a valid record of
    /// another segment or does not follow the layout (`<segments prefix><19-digit id>`).
    public func segmentMetas() async throws -> [Versioned<SegmentMeta>] {
        let kvs = try await client.metadata.range(prefix: client.keys.segmentsPrefix(name))
        return try kvs.map { try decodeSegment($0) }.sorted { $0.value.segmentId < $1.value.segmentId }
    }

    func segmentMeta(_ id: Int64) async throws -> Versioned<SegmentMeta>? {
        guard let kv = try await client.metadata.get(client.keys.segment(name, id)) else { return nil }
        return try decodeSegment(kv)
    }

    private nonisolated func decodeSegment(_ kv: KeyValue) throws -> Versioned<SegmentMeta> {
        let meta = try MetaCodec.decode(SegmentMeta.self, kv, in: client.metadata.description)
        guard kv.key == client.keys.segment(name, meta.segmentId) else {
            throw WoodpeckerError(.metadataCorrupted,
                "\(client.metadata.description): metadata key \(kv.key) holds segment \(meta.segmentId) of log \(name), but that segment's key is \(client.keys.segment(name, meta.segmentId)); the prefix holds keys not written by this version of Woodpecker (another application, or a foreign key layout): use another prefix or remove the key")
        }
        return Versioned(value: meta, modRevision: kv.modRevision)
    }

    public func logMeta() async throws -> Versioned<LogMeta> {
        guard let kv = try await client.metadata.get(client.keys.log(name)) else {
            throw WoodpeckerError(.logNotFound, "log \(name) does not exist (deleted?)")
        }
        return Versioned(value: try client.decodeLogMeta(kv, name: name), modRevision: kv.modRevision)
    }

    /// Takes the writer lock of this log for `lease`: `<root>/logs/<name>/writer`, attached to the lease, replacing
    /// any previous holder's (the previous writer is then fenced through its segments). `.logNotFound` if the log
    /// was deleted.
    func takeWriterLock(lease: Int64, writer: String) async throws {
        let key = client.keys.writerLock(name)
        let value = MetaCodec.encode(WriterLockMeta(writer: writer, lease: lease, openedAtMs: Clock.wallMillis()))
        let r = try await client.metadata.txn(compare: [.exists(client.keys.log(name))],
                                              then: [.put(key: key, value: value, lease: lease)], else: [])
        guard r.succeeded else { throw WoodpeckerError(.logNotFound, "log \(name) was deleted") }
    }

    /// The current holder of the writer lock, or nil when no writer holds a live lease.
    public func writerLock() async throws -> WriterLockMeta? {
        guard let kv = try await client.metadata.get(client.keys.writerLock(name)) else { return nil }
        return try MetaCodec.decode(WriterLockMeta.self, kv, in: client.metadata.description)
    }

    /// Creates segment metadata if the log exists and the segment does not. A conflict means another writer
    /// claimed the id: `.lockLost`.
    func createSegmentMeta(_ meta: SegmentMeta) async throws -> Int64 {
        let key = client.keys.segment(name, meta.segmentId)
        let r = try await client.metadata.txn(
            compare: [.exists(client.keys.log(name)), .absent(key)],
            then: [.put(key: key, value: MetaCodec.encode(meta)), .get(key: key)],
            else: [.get(key: client.keys.log(name))])
        guard r.succeeded, let kv = r.gets.first ?? nil else {
            if r.gets.first ?? nil == nil {
                throw WoodpeckerError(.logNotFound, "log \(name) was deleted")
            }
            throw WoodpeckerError(.lockLost, "segment \(meta.segmentId) of log \(name) was created by another writer")
        }
        return kv.modRevision
    }

    /// Compare-and-swap of segment metadata on its modRevision; returns the new revision.
    @discardableResult
    func casSegmentMeta(_ meta: SegmentMeta, expectedRevision: Int64) async throws -> Int64 {
        let key = client.keys.segment(name, meta.segmentId)
        let r = try await client.metadata.txn(
            compare: [.unchanged(key, modRevision: expectedRevision)],
            then: [.put(key: key, value: MetaCodec.encode(meta)), .get(key: key)],
            else: [])
        guard r.succeeded, let kv = r.gets.first ?? nil else {
            throw WoodpeckerError(.revisionConflict,
                                  "segment \(meta.segmentId) of log \(name) changed concurrently (expected revision \(expectedRevision))")
        }
        return kv.modRevision
    }

    /// Recovery of an active segment left by another (or a crashed) writer: fence its objects, compute the LAC
    /// from the contiguous verified blocks, write the footer, and CAS the metadata to Completed.
    func fenceAndComplete(_ s: Versioned<SegmentMeta>) async throws {
        if let q = s.value.quorum, client.pool == nil {
            throw WoodpeckerError(.invalidArgument,
                "segment \(s.value.segmentId) of log \(name) is a QuorumBuffer segment on \(q); open the log with those LogStores configured to recover it")
        }
        let objs = segmentStore(s.value.segmentId, quorum: s.value.quorum)
        let blocks: [BlockInfo]
        if let footer = try await objs.readFooter() {
            blocks = footer.blocks  // completed in storage but not in metadata (crash between the two)
        } else {
            blocks = try await objs.fence(retries: config.controlRetries)
            let lac = blocks.last?.lastEntryId ?? -1
            try await objs.writeFooter(SegmentFooter(blocks: blocks, lac: lac, compacted: false, totalRecords: Int(lac + 1)))
        }
        var meta = s.value
        meta.state = .completed
        meta.completionTimeMs = Clock.wallMillis()
        meta.lastEntryId = blocks.last?.lastEntryId ?? -1
        meta.sizeBytes = Int64(blocks.reduce(0) { $0 + $1.size })
        meta.firstKey = blocks.first?.firstKey
        meta.lastKey = blocks.last?.lastKey
        meta.maxTimestamp = blocks.map(\.maxTimestamp).max()
        do {
            try await casSegmentMeta(meta, expectedRevision: s.modRevision)
        } catch let e as WoodpeckerError where e.code == .revisionConflict {
            // Someone else completed it first; fine if it is no longer active.
            if let now = try await segmentMeta(meta.segmentId), now.value.state == .active { throw e }
        }
        if activeSegmentId == meta.segmentId {
            activeSegmentId = nil
            activeBlocks = []
        }
        wakeAll()
    }

    /// The last entry of the log, or nil when it holds none (after truncation the retained tail still counts).
    public func lastEntry() async throws -> LogEntry? {
        let metas = try await segmentMetas()
        for s in metas.reversed() {
            let objs = segmentStore(s.value.segmentId)
            var blocks: [BlockInfo] = []
            var compacted = false
            if s.value.segmentId == activeSegmentId {
                blocks = activeBlocks
            } else if s.value.state == .active {
                blocks = try await objs.probeBlocks()
            } else if let f = try await objs.readFooter() {
                blocks = f.blocks
                compacted = f.compacted
            }
            guard !blocks.isEmpty else { continue }
            guard let block = try await objs.readBlock(at: blocks.count - 1, of: blocks, compacted: compacted),
                  let e = block.entries.last
            else { continue }
            return LogEntry(id: LogMessageId(segmentId: s.value.segmentId, entryId: block.info.lastEntryId),
                            key: e.key, timestamp: e.timestamp, payload: e.payload)
        }
        return nil
    }

    // MARK: truncation, compaction, garbage collection

    /// Logically truncates the log up to and including `id`: readers opened at `.earliest` start after it, and
    /// whole segments before it become garbage. Moving the point backwards is a no-op.
    public func truncate(upTo id: LogMessageId) async throws {
        for _ in 0..<config.controlRetries {
            let m = try await logMeta()
            if (m.value.truncatedSegmentId, m.value.truncatedEntryId) >= (id.segmentId, id.entryId) { return }
            var v = m.value
            v.truncatedSegmentId = id.segmentId
            v.truncatedEntryId = id.entryId
            let key = client.keys.log(name)
            let r = try await client.metadata.txn(compare: [.unchanged(key, modRevision: m.modRevision)],
                                                  then: [.put(key: key, value: MetaCodec.encode(v))])
            if r.succeeded { return }
        }
        throw WoodpeckerError(.revisionConflict, "log \(name): truncation raced with other metadata changes; retry")
    }

    /// One auditor pass: compacts completed segments, marks segments before the truncation point Truncated and
    /// deletes their objects and metadata. Never touches the active segment or one an open reader is in.
    public func audit() async {
        guard !auditing else { return }
        auditing = true
        defer { auditing = false }
        do {
            try await collectGarbage()
            for s in try await segmentMetas() where s.value.state == .completed {
                try await compact(s)
            }
        } catch {
            // The auditor retries on its next pass; nothing it does is needed for correctness of appends.
            Diagnostics.warn("log \(name): audit pass failed: \(error)")
        }
    }

    /// Deletes segments wholly before the truncation point (not the active one, not one a reader is in).
    public func collectGarbage() async throws {
        let m = try await logMeta().value
        guard m.truncatedSegmentId > 0 else { return }
        let oldestReader = readerSegments.values.min() ?? .max
        for s in try await segmentMetas() {
            let id = s.value.segmentId
            guard id < m.truncatedSegmentId, id < oldestReader, id != activeSegmentId, s.value.state != .active else { break }
            var rev = s.modRevision
            if s.value.state != .truncated {
                var t = s.value
                t.state = .truncated
                rev = try await casSegmentMeta(t, expectedRevision: s.modRevision)
            }
            try await segmentStore(id).deleteAll()
            let key = client.keys.segment(name, id)
            _ = try await client.metadata.txn(compare: [.unchanged(key, modRevision: rev)], then: [.delete(key: key)])
            dropCachedBlocks(segment: id)
        }
    }

    /// Merges a completed segment's blocks into objects of about `compactionTargetBytes`, rewrites the footer with
    /// the compacted flag (same LAC), marks the segment Sealed and deletes the original blocks. Safe to re-run
    /// after a crash at any step.
    public func compact(_ s: Versioned<SegmentMeta>) async throws {
        _ = await client.compactionSlots.reserve(1, timeoutMs: nil)  // no deadline: granted when one ends
        defer { client.compactionSlots.release(1) }
        let objs = segmentStore(s.value.segmentId)
        guard let footer = try await objs.readFooter() else {
            throw WoodpeckerError(.corrupted, "completed segment \(objs.location) has no footer")
        }
        guard let compacted = try await objs.compact(footer, targetBytes: config.compactionTargetBytes) else {
            return try await seal(s, footer)  // nothing to merge in this layout or segment
        }
        try await seal(s, compacted)
        // Remove originals now that the compacted footer is the commit point.
        try await objs.removeOriginals(after: compacted)
    }

    private func seal(_ s: Versioned<SegmentMeta>, _ footer: SegmentFooter) async throws {
        guard s.value.state == .completed else { return }
        var m = s.value
        m.state = .sealed
        m.sealedTimeMs = Clock.wallMillis()
        m.sizeBytes = Int64(footer.blocks.reduce(0) { $0 + $1.size })
        try await casSegmentMeta(m, expectedRevision: s.modRevision)
    }
}
