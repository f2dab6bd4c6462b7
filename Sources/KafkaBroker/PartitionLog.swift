import KafkaProtocol
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO

/// One topic-partition on one Woodpecker log: each produced record batch is one entry whose key is the batch's
/// last offset and whose timestamp is its max timestamp.
///
/// Guarantees: offsets are assigned densely in produce order; a produce is answered only once its entry is
/// durable; the high watermark is the last acknowledged offset + 1 and never moves backwards; a fetch never
/// returns data at or past the high watermark; waiting fetches are woken by acknowledgements.
actor PartitionLog {
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    nonisolated let topic: String
    nonisolated let partition: Int32
    nonisolated let loop: EventLoop
    let log: Log
    private var writer: LogWriter
    let brokerConfig: BrokerConfig
    let appendSignal: AppendSignal
    /// The topic's `segment.bytes` and `segment.ms`, applied to every writer of this partition.
    private(set) var roll: SegmentRoll

    /// Next offset to assign.
    private(set) var logEndOffset: Int64 = 0
    /// Last acknowledged offset + 1.
    private(set) var highWatermark: Int64 = 0
    private(set) var logStartOffset: Int64 = 0
    /// Largest max timestamp and the base offset of the first batch carrying it (for ListOffsets -3).
    private var maxTimestamp: (timestamp: Int64, offset: Int64) = (-1, -1)
    private var producers = ProducerStateTable()
    /// Appends not yet durable, by base offset: a duplicate of one of them is answered with its outcome, never
    /// before it (bounded by the writer's in-flight limit).
    private var unacknowledged: [Int64: Promise<ProduceResult>] = [:]
    /// Readers parked at the offset they will return next, for sequential consumers (bounded).
    private var readers: [Int64: ParkedReader] = [:]
    private static let maxParkedReaders = 16
    private var failed: WoodpeckerError?

    struct ParkedReader {
        var reader: LogReader
        /// Entries read ahead but not yet returned.
        var pending: [LogEntry]
    }

    private init(topic: String, partition: Int32, loop: EventLoop, log: Log, writer: LogWriter, config: BrokerConfig,
                 appendSignal: AppendSignal, roll: SegmentRoll) {
        self.appendSignal = appendSignal
        self.roll = roll
        self.topic = topic
        self.partition = partition
        self.loop = loop
        self.log = log
        self.writer = writer
        self.brokerConfig = config
    }

    /// The Woodpecker log of a partition: `<topic>-<partition>` when that is a valid log name. Log names allow at
    /// most 249 bytes and no "..", while a topic name alone may be 249 bytes and contain ".."; those partitions use
    /// `~<readable prefix>~<128-bit hash of the topic>-<partition>` instead. `~` never occurs in a topic name, so
    /// the two forms cannot collide; two topics share a log only if their 128-bit (non-cryptographic) hashes and
    /// prefixes both match.
    static func logName(topic: String, partition: Int32) -> String {
        let plain = "\(topic)-\(partition)"
        if plain.utf8.count <= 249 && !plain.contains("..") { return plain }
        let readable = String(topic.prefix(180).map { $0 == "." ? "~" : $0 })
        return "~\(readable)~\(hash128Hex(topic))-\(partition)"
    }

    /// Two independent 64-bit FNV-1a hashes, each finished with the splitmix64 mixer, as 32 hex digits.
    static func hash128Hex(_ s: String) -> String {
        func fnv(_ basis: UInt64) -> UInt64 {
            var h = basis
            for b in s.utf8 {
                h ^= UInt64(b)
                h = h &* 0x0000_0100_0000_01b3
            }
            h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
            h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
            return h ^ (h >> 31)
        }
        func hex(_ v: UInt64) -> String {
            let d = String(v, radix: 16)
            return String(repeating: "0", count: 16 - d.count) + d
        }
        return hex(fnv(0xcbf2_9ce4_8422_2325)) + hex(fnv(0x6c62_272e_07bb_0142))
    }

    /// Opens (creating if needed) the partition's log, takes over its writer (fencing any older one) and
    /// recovers offsets and idempotent-producer state from the log.
    static func open(topic: String, partition: Int32, client: WoodpeckerClient, config: BrokerConfig,
                     appendSignal: AppendSignal, roll: SegmentRoll = SegmentRoll()) async throws -> PartitionLog {
        let log = try await client.openOrCreateLog(logName(topic: topic, partition: partition))
        let writer = try await log.openWriter(segmentMaxBytes: roll.maxBytes, segmentMaxAgeMs: roll.maxAgeMs)
        let p = PartitionLog(topic: topic, partition: partition, loop: client.loop, log: log, writer: writer, config: config,
                             appendSignal: appendSignal, roll: roll)
        try await p.recover()
        return p
    }

    private func recover() async throws {
        if let last = try await log.lastEntry() {
            logEndOffset = last.key + 1
        }
        highWatermark = logEndOffset
        let earliest = try await log.openReader(from: .earliest)
        if let first = try await earliest.next(maxEntries: 1, maxBytes: 1).first, let h = try? RecordBatchHeader(parsing: first.payload) {
            logStartOffset = h.baseOffset
        } else {
            logStartOffset = logEndOffset
        }
        await earliest.close()
        // Idempotent-producer windows and the max timestamp from the most recent entries.
        let tailFrom = max(logStartOffset, logEndOffset - Int64(brokerConfig.producerStateRecoveryEntries))
        try await replayProducerState(from: tailFrom, to: logEndOffset)
    }

    /// Records the producer sequences and timestamps of the entries with keys in `from..<to` (at most
    /// `producerStateRecoveryEntries` of them), so that a producer's retry of a batch already in the log is answered
    /// as a duplicate instead of being written twice.
    private func replayProducerState(from: Int64, to: Int64) async throws {
        guard from < to else { return }
        let r = try await log.openReader(from: .key(from))
        var seen = 0
        reading: while seen < brokerConfig.producerStateRecoveryEntries {
            let batch = try await r.next(maxEntries: 1000, maxBytes: 16 << 20)
            if batch.isEmpty { break }
            for e in batch {
                if e.key >= to { break reading }
                guard let h = try? RecordBatchHeader(parsing: e.payload) else { continue }
                producers.record(producerId: h.producerId, epoch: h.producerEpoch, firstSeq: h.baseSequence,
                                 lastSeq: h.baseSequence &+ h.lastOffsetDelta, baseOffset: h.baseOffset)
                if h.maxTimestamp > maxTimestamp.timestamp { maxTimestamp = (h.maxTimestamp, h.baseOffset) }
            }
            seen += batch.count
        }
        await r.close()
    }

    // MARK: produce

    struct ProduceResult: Sendable {
        var error: KafkaErrorCode
        var baseOffset: Int64 = -1
        var logAppendTimeMs: Int64 = -1
        var logStartOffset: Int64 = -1
        var message: String?
    }

    /// Assigns offsets to one validated batch and queues it for the log, synchronously, so that batches submitted
    /// in order get increasing offsets. The promise is fulfilled once the entry is durable (or failed).
    /// `logAppendTime` rewrites the batch's timestamps (and CRC) to the broker time.
    func submit(_ batch: RecordBatch, logAppendTime: Bool) -> Promise<ProduceResult> {
        if let failed { return Promise(ProduceResult(error: .notLeaderOrFollower, message: failed.message)) }
        if let broken = writerBroken {
            // The last reopen failed (storage or the LogStore quorum away): try again now and then, and answer with
            // a retryable error meanwhile, so that producers keep retrying instead of dropping records.
            if !writerReopening && Clock.monotonicMillis() >= nextReopenAtMs {
                writerReopening = true
                Task(executorPreference: loop) { await self.retryReopen() }
            }
            return Promise(ProduceResult(error: Self.retryableCode(broken), logStartOffset: logStartOffset,
                                         message: "partition \(topic)-\(partition) cannot write right now: \(broken.message)"))
        }
        var batch = batch
        let h = batch.header
        let lastSeq = h.baseSequence &+ h.lastOffsetDelta
        switch producers.check(producerId: h.producerId, epoch: h.producerEpoch, firstSeq: h.baseSequence, lastSeq: lastSeq) {
        case let .duplicate(base):
            if let original = unacknowledged[base] { return original }
            return Promise(ProduceResult(error: .none, baseOffset: base, logStartOffset: logStartOffset))
        case let .reject(code):
            return Promise(ProduceResult(error: code, logStartOffset: logStartOffset))
        case .accept:
            break
        }
        let base = logEndOffset
        let last = base + Int64(h.lastOffsetDelta)
        logEndOffset = last + 1
        batch.setBaseOffset(base)
        var appendTime: Int64 = -1
        var ts = h.maxTimestamp
        if logAppendTime {
            appendTime = Clock.wallMillis()
            batch.setLogAppendTime(appendTime)
            ts = appendTime
        }
        producers.record(producerId: h.producerId, epoch: h.producerEpoch, firstSeq: h.baseSequence, lastSeq: lastSeq,
                         baseOffset: base)
        let promise = Promise<ProduceResult>()
        unacknowledged[base] = promise
        let (entryTs, appendTs, generation) = (ts, appendTime, writerGeneration)
        writer.enqueueOnLoop(batch.bytes, key: last, timestamp: entryTs) { [self] result in
            self.assumeIsolated { p in
                switch result {
                case .success:
                    if last + 1 > p.highWatermark { p.highWatermark = last + 1 }
                    if entryTs > p.maxTimestamp.timestamp { p.maxTimestamp = (entryTs, base) }
                    p.wakeAll()
                    if p.unacknowledged[base] === promise { p.unacknowledged[base] = nil }
                    promise.fulfill(ProduceResult(error: .none, baseOffset: base, logAppendTimeMs: appendTs,
                                                  logStartOffset: p.logStartOffset))
                case let .failure(e):
                    p.producers.forget(producerId: h.producerId, firstSeq: h.baseSequence, baseOffset: base)
                    Task(executorPreference: p.loop) {
                        let result = await p.appendFailed(e, base: base, generation: generation)
                        await p.settleFailed(base, promise)
                        promise.fulfill(result)
                    }
                }
            }
        }
        return promise
    }

    private func settleFailed(_ base: Int64, _ promise: Promise<ProduceResult>) {
        if unacknowledged[base] === promise { unacknowledged[base] = nil }
    }

    private func appendFailed(_ e: WoodpeckerError, base: Int64, generation: Int) async -> ProduceResult {
        Diagnostics.warn("\(topic)-\(partition): append at offset \(base) failed: \(e)")
        let answer = ProduceResult(error: e.isRetryable ? Self.retryableCode(e) : .unknownServerError, message: e.message)
        // Failed by a writer that has been replaced since: the reopen has set the offsets already.
        guard generation == writerGeneration else { return answer }
        if e.code == .lockLost, await writer.lostLease {
            // The writer's lease lapsed (etcd unreachable longer than its TTL); nobody else took the log. Answer
            // retryably and reopen the writer once the metadata store answers again.
            writerBroken = e
            nextReopenAtMs = 0
            return ProduceResult(error: .kafkaStorageError, message: e.message)
        }
        if e.code == .lockLost || e.code == .clientClosed {
            // Another broker took this partition's log: stop writing here.
            failed = e
            return ProduceResult(error: .notLeaderOrFollower, message: e.message)
        }
        // Offsets after the failure were assigned to batches that will fail too; restart numbering after the
        // last acknowledged offset once everything in flight has settled. The reopen runs on its own: closing the
        // failed writer waits for its storage (in QuorumBuffer mode, for a quorum of LogStores to answer again),
        // which may take as long as the outage, and the producer must get its retryable error now, not a request
        // timeout. Meanwhile produces are answered with the same retryable error (`writerBroken`).
        if highWatermark < logEndOffset && !writerReopening {
            writerReopening = true
            writerBroken = e
            nextReopenAtMs = 0
            Task(executorPreference: loop) { await self.retryReopen() }
        }
        return answer
    }

    /// The retryable Kafka error for a retryable WAL failure: too few LogStores is NOT_ENOUGH_REPLICAS (what a
    /// Kafka broker answers when fewer in-sync replicas than required hold a partition), anything else
    /// KAFKA_STORAGE_ERROR.
    static func retryableCode(_ e: WoodpeckerError) -> KafkaErrorCode {
        e.code == .nodeUnavailable ? .notEnoughReplicas : .kafkaStorageError
    }

    private var writerReopening = false
    /// Counts writer reopens: a failure reported by an older writer must not reopen the current one.
    private var writerGeneration = 0
    /// Why the writer could not be reopened (nil while it is writable); produces get a retryable error meanwhile.
    private var writerBroken: WoodpeckerError?
    private var nextReopenAtMs: UInt64 = 0

    /// The topic's roll settings changed (AlterConfigs): the writer rolls by them from its next append on.
    func setRoll(_ r: SegmentRoll) async {
        roll = r
        await writer.setRoll(segmentMaxBytes: r.maxBytes, segmentMaxAgeMs: r.maxAgeMs)
    }

    /// After a storage failure: a fresh writer (which seals the old segment at its last durable entry) and offsets
    /// continuing from the log's real end.
    private func retryReopen() async {
        await reopenWriter()
        writerReopening = false
    }

    private func reopenWriter() async {
        do {
            // The old writer is failing anyway; the new one fences and seals its segment whatever close did. What
            // the old writer fails from here on belongs to an older generation and triggers nothing.
            writerGeneration &+= 1
            try? await writer.close()
            writer = try await log.openWriter()
            // After the open: a `setRoll` during it reached the old writer only.
            await writer.setRoll(segmentMaxBytes: roll.maxBytes, segmentMaxAgeMs: roll.maxAgeMs)
            // `writerBroken` stays set until the offsets below are right: a produce let through earlier would take
            // an offset from the old numbering and the new writer would refuse the next one's lower key.
            // When the old writer could not complete its segment itself, opening the new one recovered it, which
            // may have kept entries beyond the last acknowledged one (a LogStore or the object store held them;
            // their producers got an error and may retry): they are part of the log now, readable, and their
            // producer sequences are recorded so that such a retry is answered as a duplicate.
            var end = highWatermark
            if let lastEntry = try await log.lastEntry(), lastEntry.key + 1 > end { end = lastEntry.key + 1 }
            if end > highWatermark { try await replayProducerState(from: highWatermark, to: end) }
            logEndOffset = end
            if end > highWatermark {
                highWatermark = end
                wakeAll()
            }
            writerBroken = nil
        } catch {
            Diagnostics.error("\(topic)-\(partition): cannot reopen the log writer: \(error)")
            writerBroken = error as? WoodpeckerError ?? WoodpeckerError(.internalError, "\(error)", retryable: true)
            nextReopenAtMs = Clock.monotonicMillis() + 250
        }
    }

    // MARK: fetch

    /// Whole batches starting with the one containing `offset`, up to `maxBytes` (the first batch always, even if
    /// larger). Never past the high watermark.
    func read(from offset: Int64, maxBytes: Int) async throws -> [ByteBuffer] {
        guard offset < highWatermark, offset >= logStartOffset else { return [] }
        var parked = try await takeReader(at: offset)
        var out: [ByteBuffer] = []
        var total = 0
        var nextOffset = offset
        while true {
            if parked.pending.isEmpty {
                parked.pending = try await parked.reader.next(maxEntries: 256, maxBytes: max(maxBytes - total, 1 << 20))
                if parked.pending.isEmpty { break }
            }
            let e = parked.pending[0]
            if e.key < nextOffset {  // a batch wholly before the requested offset (seek landed early)
                parked.pending.removeFirst()
                continue
            }
            let size = e.payload.readableBytes
            if !out.isEmpty && total + size > maxBytes { break }
            out.append(e.payload)
            total += size
            nextOffset = e.key + 1
            parked.pending.removeFirst()
            if total >= maxBytes || nextOffset >= highWatermark { break }
        }
        park(parked, at: nextOffset)
        return out
    }

    private func takeReader(at offset: Int64) async throws -> ParkedReader {
        if let r = readers.removeValue(forKey: offset) { return r }
        let r = try await log.openReader(from: .key(offset))
        return ParkedReader(reader: r, pending: [])
    }

    private func park(_ r: ParkedReader, at offset: Int64) {
        if let old = readers.updateValue(r, forKey: offset) {
            Task(executorPreference: loop) { await old.reader.close() }
        }
        if readers.count > Self.maxParkedReaders, let victim = readers.keys.min() {
            let v = readers.removeValue(forKey: victim)!
            Task(executorPreference: loop) { await v.reader.close() }
        }
    }

    private func wakeAll() { appendSignal.signal() }

    // MARK: offsets

    /// ListOffsets: -1 latest, -2 earliest, -3 max timestamp, else the first offset with timestamp >= ts.
    func offset(forTimestamp ts: Int64) async throws -> (offset: Int64, timestamp: Int64) {
        switch ts {
        case -1: return (highWatermark, -1)
        case -2: return (logStartOffset, -1)
        case -3:
            guard maxTimestamp.offset >= 0 else { return (-1, -1) }
            return try await recordWithMaxTimestamp(batchBase: maxTimestamp.offset, timestamp: maxTimestamp.timestamp)
        default:
            let r = try await log.openReader(from: .timestamp(ts))
            defer { Task(executorPreference: loop) { await r.close() } }
            guard let e = try await r.next(maxEntries: 1, maxBytes: 1).first, e.key < highWatermark else { return (-1, -1) }
            // The batch holds the first record at or after `ts`; find that record's exact offset.
            let batch = try RecordBatch(bytes: e.payload)
            let base = batch.header.baseOffset
            for r in try batch.records() {
                let t = batch.header.baseTimestamp + r.timestampDelta
                if t >= ts { return (base + Int64(r.offsetDelta), t) }
            }
            return (base, batch.header.maxTimestamp)
        }
    }

    /// KIP-734: the offset of the first record carrying the batch's max timestamp (every record of a LogAppendTime
    /// batch carries it, so that is the batch's first).
    private func recordWithMaxTimestamp(batchBase: Int64, timestamp: Int64) async throws -> (offset: Int64, timestamp: Int64) {
        let r = try await log.openReader(from: .key(batchBase))
        defer { Task(executorPreference: loop) { await r.close() } }
        guard let e = try await r.next(maxEntries: 1, maxBytes: 1).first else { return (batchBase, timestamp) }
        let batch = try RecordBatch(bytes: e.payload)
        guard batch.header.baseOffset == batchBase, !batch.header.isLogAppendTime else { return (batchBase, timestamp) }
        for rec in try batch.records() where batch.header.baseTimestamp + rec.timestampDelta == timestamp {
            return (batchBase + Int64(rec.offsetDelta), timestamp)
        }
        return (batchBase, timestamp)
    }

    // MARK: retention

    /// Truncates whole segments older than `retentionMs` or beyond `retentionBytes` (never the active one),
    /// advancing the log start offset. Returns the new log start offset.
    func enforceRetention(retentionMs: Int64, retentionBytes: Int64) async throws -> Int64 {
        let segments = try await log.segmentMetas().filter { $0.value.state != .active && $0.value.state != .truncated }
        var cut: (segment: Int64, lastEntry: Int64, lastKey: Int64)?
        let now = Clock.wallMillis()
        var bytesAfter = segments.reduce(Int64(0)) { $0 + $1.value.sizeBytes }
        for s in segments {
            let m = s.value
            let tooOld = retentionMs >= 0 && (m.maxTimestamp ?? now) < now - retentionMs
            let tooBig = retentionBytes >= 0 && bytesAfter > retentionBytes
            guard tooOld || tooBig, let lastKey = m.lastKey, m.lastEntryId >= 0 else { break }
            cut = (m.segmentId, m.lastEntryId, lastKey)
            bytesAfter -= m.sizeBytes
        }
        if let cut {
            try await log.truncate(upTo: Woodpecker.LogMessageId(segmentId: cut.segment, entryId: cut.lastEntry))
            logStartOffset = max(logStartOffset, cut.lastKey + 1)
            readers = readers.filter { $0.key >= logStartOffset }
            await log.audit()
        }
        return logStartOffset
    }

    func close() async {
        for (_, r) in readers { await r.reader.close() }
        readers.removeAll()
        wakeAll()
        // A failed close leaves the segment active; the next open fences and seals it, losing nothing acknowledged.
        try? await writer.close()
    }
}

/// When a partition's writer rolls to a new segment: a topic's `segment.bytes` and `segment.ms` (nil: the client's).
struct SegmentRoll: Sendable, Equatable {
    var maxBytes: Int?
    var maxAgeMs: Int64?

    init(maxBytes: Int? = nil, maxAgeMs: Int64? = nil) {
        self.maxBytes = maxBytes
        self.maxAgeMs = maxAgeMs
    }

    /// A value the broker would refuse today (stored before values were validated) is ignored: the client's
    /// setting applies instead.
    init(topicConfigs c: [String: String]) {
        func valid(_ key: String) -> String? {
            guard let v = c[key] else { return nil }
            if let problem = BrokerConfig.topicConfigProblem(key, v) {
                Diagnostics.warn("ignoring \(problem)")
                return nil
            }
            return v
        }
        self.init(maxBytes: valid("segment.bytes").flatMap { Int($0) }, maxAgeMs: valid("segment.ms").flatMap { Int64($0) })
    }
}
