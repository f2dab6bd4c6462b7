import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

/// The single writer of a log in MemoryBuffer mode.
///
/// Guarantees:
/// - `append` returns `(segmentId, entryId)` only once the entry's block is durable in the object store
///   (fsync'd for local files), and acknowledgements complete strictly in append order.
/// - Group commit: buffered entries become one block on `flushIntervalMs`, `flushBytes` or `flushMaxEntries`
///   (and at once when nothing is in flight, if `flushWhenIdle`). Up to `maxInFlightBlocks` blocks upload in
///   parallel; a failed block fails every later one.
/// - One writer per log: opening a writer fences every active segment (fence object + LAC + footer + metadata CAS).
///   An older writer then fails with `.lockLost` on its next flush or roll, and acknowledges nothing the new
///   writer did not seal in.
/// - Memory is bounded by `writerBufferBytes`: appends wait for space (at most `appendWaitTimeoutMs`).
/// - Lease (when `writerLeaseTTLSeconds` > 0): the writer holds a metadata-store lease with that TTL, renewed in the
///   background every third of the TTL, and its lock key `<root>/logs/<name>/writer` is attached to it. The
///   writer counts its lease as valid until TTL after the *send* time of the last successful renewal (never later
///   than the store does). Past that point (the lease expired or was revoked, or the store was unreachable for a
///   whole TTL) it stops for good: in-flight, buffered and later appends fail with `.lockLost`, and nothing is
///   acknowledged afterwards — every acknowledgement checks the deadline (a clock read, no metadata call on the
///   append path). A newer writer takes over at once by fencing the segments (it does not wait for this lease to
///   go); the lock key disappears with the lease, and `close()` revokes it. A caller that wants to keep writing
///   after a lapse (`lostLease`) opens a new writer once the store answers again.
public actor LogWriter {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    let loop: EventLoop
    let log: Log
    private(set) var config: WALConfig
    let writerName: String

    /// Called once, on the writer's loop, with the entry's id or the reason it failed.
    public typealias Completion = @Sendable (Result<LogMessageId, WoodpeckerError>) -> Void

    private struct Pending {
        var entry: SegmentEntry
        var completion: Completion
        var enqueuedAtMs: UInt64
    }

    private struct InFlight {
        var blockNumber: Int32
        var firstEntryId: Int64
        var entries: [SegmentEntry]
        var completions: [Completion]
        var bytes: Int
        var encodedSize: Int
        var result: Result<BlockInfo, WoodpeckerError>?
    }

    private struct Segment {
        var id: Int64
        var metaRevision: Int64
        var meta: SegmentMeta
        var objects: any SegmentStore
        var nextEntryId: Int64 = 0
        var nextBlock: Int32 = 0
        var blocks: [BlockInfo] = []
        var sizeBytes: Int = 0
        var createdAtMs: Int64
        var firstKey: Int64?
        var lastKey: Int64?
        var maxTimestamp: Int64?
    }

    private enum State {
        case open
        /// Not writable any more (fenced by a newer writer, closed, or a fatal error).
        case failed(WoodpeckerError)
    }

    private var state: State = .open
    private var segment: Segment?
    private var queue: [Pending] = []
    private var queueHead = 0
    private var queuedBytes = 0
    private var inFlight: [InFlight] = []
    private var inFlightBytes = 0
    /// Set when the current segment must be completed before more blocks start (size/age roll or a failed block).
    private var rollPending = false
    private var rolling = false
    /// `close` has begun: no new segment is opened once nothing is queued.
    private var closing = false
    /// The current segment is completed in storage and metadata; the next one could not be created yet.
    private var segmentCompleted = false
    private var timer: LoopTimer?
    private var timerArmed = false
    private var spaceWaiters: [(id: UInt64, needed: Int, c: CheckedContinuation<Void, any Error>)] = []
    /// Bytes granted to resumed space waiters that have not enqueued yet (they count against the bound).
    private var reservedBytes = 0
    /// Highest key accepted so far: keys must not decrease (blocks and seeks rely on it).
    private var lastKey = Int64.min
    private var nextWaiterId: UInt64 = 0
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var auditor: Task<Void, Never>?
    /// The writer's lease (0 = none), the monotonic ms until which it is surely valid, the renewal timer, and
    /// whether a renewal is in flight.
    private var leaseId: Int64 = 0
    private var leaseDeadlineMs: UInt64 = .max
    private var leaseTimer: LoopTimer?
    private var leaseRenewing = false
    private var leaseLost = false
    private var lastRenewalError: WoodpeckerError?
    /// Blocks and payload bytes made durable by this writer (for benchmarks and diagnostics).
    public private(set) var blocksFlushed = 0
    public private(set) var bytesFlushed = 0
    public private(set) var encodedBytesFlushed = 0
    /// Payload bytes buffered or in flight right now, and the most ever (never above `writerBufferBytes` for
    /// entries appended with `append`).
    public var bufferedBytes: Int { queuedBytes + inFlightBytes }
    public private(set) var peakBufferedBytes = 0

    init(log: Log, loop: EventLoop, config: WALConfig, writerName: String) {
        self.log = log
        self.loop = loop
        self.config = config
        self.writerName = writerName
    }

    // MARK: opening

    /// Fences every active segment, then claims the next segment id. Retries a bounded number of times if
    /// another writer races for the same id.
    func start() async throws {
        do {
            // The lease and lock are independent of fencing (segments do the excluding): take them concurrently so
            // that opening costs about one metadata round trip more than without a lease, not three.
            async let leased: Void = startLease()
            do {
                try await claimSegment()
            } catch {
                try? await leased
                throw error
            }
            try await leased
        } catch {
            await releaseLease()
            throw error
        }
        if config.auditIntervalMs > 0 {
            let interval = config.auditIntervalMs
            auditor = Task(executorPreference: loop) { [log] in
                while !Task.isCancelled {
                    await log.loop.sleep(ms: interval)
                    if Task.isCancelled { break }
                    await log.audit()
                }
            }
        }
    }

    private func claimSegment() async throws {
        var attempt = 0
        while true {
            let segments = try await log.segmentMetas()
            for s in segments where s.value.state == .active {
                try await log.fenceAndComplete(s)
            }
            let nextId = (segments.last?.value.segmentId ?? -1) + 1
            do {
                segment = try await createSegment(nextId)
                return
            } catch let e as WoodpeckerError where e.code == .lockLost && attempt < config.controlRetries {
                attempt += 1
            }
        }
    }

    private func createSegment(_ id: Int64) async throws -> Segment {
        let now = Clock.wallMillis()
        var meta = SegmentMeta(segmentId: id, state: .active, createTimeMs: now, writer: writerName)
        meta.quorum = try log.chooseEnsemble()
        let rev = try await log.createSegmentMeta(meta)
        let objects = log.segmentStore(id, quorum: meta.quorum)
        await log.segmentOpened(id)
        return Segment(id: id, metaRevision: rev, meta: meta, objects: objects, createdAtMs: now)
    }

    // MARK: appending

    /// Appends one entry and returns its id once durable. `key` must not decrease across appends (the WAL uses
    /// it for seeks); `timestamp` is in ms.
    public func append(_ payload: ByteBuffer, key: Int64 = 0, timestamp: Int64 = 0) async throws -> LogMessageId {
        if case let .failed(e) = state { throw e }
        let size = payload.readableBytes
        guard size > 0, size <= config.maxEntryBytes else {
            throw WoodpeckerError(.invalidArgument, "entry of \(size) bytes: entries must hold 1...\(config.maxEntryBytes) bytes")
        }
        guard size <= config.writerBufferBytes else {
            throw WoodpeckerError(.invalidArgument,
                                  "entry of \(size) bytes is larger than the writer buffer (writerBufferBytes \(config.writerBufferBytes))")
        }
        // FIFO: wait behind earlier waiters, and whenever the entry does not fit beside what is buffered, in flight
        // or already granted to a waiter.
        if !spaceWaiters.isEmpty || queuedBytes + inFlightBytes + reservedBytes + size > config.writerBufferBytes {
            try await waitForSpace(size)
            // The grant reserved `size` bytes for this entry; it is enqueued (or dropped) below, in this job.
            reservedBytes -= size
            if case let .failed(e) = state { throw e }
        }
        return try await withCheckedThrowingContinuation { c in
            enqueue(payload, key: key, timestamp: timestamp) { c.resume(with: $0.mapError { $0 }) }
        }
    }

    /// Enqueues an entry synchronously for a caller already running on the writer's loop, so that the caller can
    /// keep its own numbering (e.g. Kafka offsets) in the same order as the log. The continuation is resumed
    /// with the entry's id once durable, or with an error. The caller bounds its own input (no buffer wait here).
    public nonisolated func enqueueOnLoop(_ payload: ByteBuffer, key: Int64, timestamp: Int64,
                                          _ completion: @escaping Completion) {
        assumeIsolated { $0.enqueue(payload, key: key, timestamp: timestamp, completion) }
    }

    private func enqueue(_ payload: ByteBuffer, key: Int64, timestamp: Int64, _ completion: @escaping Completion) {
        if case .open = state, !leaseHeld() { loseLease(leaseExpiredError()) }
        if case let .failed(e) = state { return completion(.failure(e)) }
        let size = payload.readableBytes
        guard size > 0, size <= config.maxEntryBytes else {
            return completion(.failure(WoodpeckerError(.invalidArgument, "entry of \(size) bytes: entries must hold 1...\(config.maxEntryBytes) bytes")))
        }
        guard key >= lastKey else {
            return completion(.failure(WoodpeckerError(.invalidArgument,
                "key \(key) is below the previous entry's key \(lastKey); keys must not decrease within a log")))
        }
        lastKey = key
        queue.append(Pending(entry: SegmentEntry(key: key, timestamp: timestamp, payload: payload),
                             completion: completion, enqueuedAtMs: Clock.monotonicMillis()))
        queuedBytes += size
        peakBufferedBytes = max(peakBufferedBytes, queuedBytes + inFlightBytes)
        pump()
    }

    private func waitForSpace(_ size: Int) async throws {
        nextWaiterId += 1
        let id = nextWaiterId
        let timeout = config.appendWaitTimeoutMs
        loop.schedule(afterMs: timeout) { [weak self] in
            guard let self else { return }
            Task(executorPreference: self.loop) { await self.expireSpaceWaiter(id) }
        }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            spaceWaiters.append((id, size, c))
        }
    }

    private func expireSpaceWaiter(_ id: UInt64) {
        guard let i = spaceWaiters.firstIndex(where: { $0.id == id }) else { return }
        let w = spaceWaiters.remove(at: i)
        w.c.resume(throwing: WoodpeckerError(.bufferFull,
            "writer buffer of \(config.writerBufferBytes) bytes stayed full for \(config.appendWaitTimeoutMs) ms; storage is slower than the append rate"))
    }

    /// Grants space to waiters in order while they fit; each grant is reserved until its append enqueues.
    private func releaseSpace() {
        while let w = spaceWaiters.first,
              queuedBytes + inFlightBytes + reservedBytes + w.needed <= config.writerBufferBytes {
            spaceWaiters.removeFirst()
            reservedBytes += w.needed
            w.c.resume()
        }
    }

    /// Changes when this writer rolls: past `segmentMaxBytes` or once the segment is `segmentMaxAgeMs` old (nil: the
    /// client's setting). Takes effect from the next append on, for the active segment too.
    public func setRoll(segmentMaxBytes: Int?, segmentMaxAgeMs: Int64?) {
        config.segmentMaxBytes = segmentMaxBytes ?? log.config.segmentMaxBytes
        config.segmentMaxAgeMs = segmentMaxAgeMs ?? log.config.segmentMaxAgeMs
    }

    private var queuedCount: Int { queue.count - queueHead }
    private var maxInFlight: Int { min(config.maxInFlightBlocks, segment?.objects.maxConcurrentWrites ?? 1) }

    /// Starts as many blocks as the triggers and the in-flight bound allow; arms the interval timer otherwise.
    private func pump() {
        guard case .open = state else { return }
        // Age roll: checked on every append, like the size roll; only a segment holding data rolls.
        if !rollPending, !rolling, queuedCount > 0, let seg = segment, seg.sizeBytes > 0,
           Clock.wallMillis() - seg.createdAtMs >= config.segmentMaxAgeMs || seg.objects.shouldRoll() {
            rollPending = true
        }
        if rollPending || rolling {
            maybeRoll()
            return
        }
        while queuedCount > 0 && inFlight.count < maxInFlight && shouldFlushNow() {
            startBlock()
            if rollPending { break }
        }
        if rollPending { maybeRoll() }
        if queuedCount > 0 { armTimer() }
    }

    private func shouldFlushNow() -> Bool {
        if queuedBytes >= config.flushBytes || queuedCount >= config.flushMaxEntries { return true }
        if config.flushWhenIdle && inFlight.isEmpty { return true }
        let oldest = queue[queueHead].enqueuedAtMs
        return Clock.monotonicMillis() - oldest >= config.flushIntervalMs
    }

    private func armTimer() {
        guard !timerArmed else { return }
        timerArmed = true
        if timer == nil {
            timer = LoopTimer(loop: loop) { [weak self] in
                guard let self else { return }
                self.assumeIsolated { $0.timerFired() }
            }
        }
        timer!.start(afterMs: max(1, config.flushIntervalMs))
    }

    private func timerFired() {
        timerArmed = false
        if queuedCount > 0 && inFlight.count < maxInFlight && !rollPending && !rolling {
            startBlock()
        }
        pump()
    }

    private func startBlock() {
        guard var seg = segment else { return }
        var entries: [SegmentEntry] = []
        var completions: [Completion] = []
        var bytes = 0
        // A block never takes the segment past its size bound unless it holds a single entry: the segment rolls
        // before the entry that does not fit, like a Kafka segment.
        let room = max(0, config.segmentMaxBytes - seg.sizeBytes)
        var full = false
        while queueHead < queue.count && entries.count < config.flushMaxEntries {
            let size = queue[queueHead].entry.payload.readableBytes
            if !entries.isEmpty && bytes + size > room {
                full = true
                break
            }
            if !entries.isEmpty && bytes + size > config.flushBytes { break }
            entries.append(queue[queueHead].entry)
            completions.append(queue[queueHead].completion)
            bytes += size
            queueHead += 1
        }
        // Drop taken entries so that their payloads are released: an emptied queue at once, else once they are
        // the larger part (a few large entries must not linger until a thousand have gone by).
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: queue.capacity <= 4096)
            queueHead = 0
        } else if queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
        queuedBytes -= bytes
        inFlightBytes += bytes
        let blockNumber = seg.nextBlock
        let first = seg.nextEntryId
        seg.nextBlock += 1
        seg.nextEntryId += Int64(entries.count)
        seg.sizeBytes += bytes
        if full || seg.sizeBytes >= config.segmentMaxBytes { rollPending = true }
        segment = seg
        let objects = seg.objects
        let encoded = SegmentCodec.encodeBlock(blockNumber: blockNumber, firstEntryId: first, entries: entries,
                                               includeHeader: blockNumber == 0)
        inFlight.append(InFlight(blockNumber: blockNumber, firstEntryId: first, entries: entries,
                                 completions: completions, bytes: bytes, encodedSize: encoded.readableBytes))
        let segId = seg.id
        // Started inline, so that the write is submitted before the jobs of the appenders just acknowledged run:
        // the store stays busy instead of idling behind them.
        Task.immediate {
            let result: Result<Void, WoodpeckerError>
            do {
                try await objects.writeBlock(blockNumber, encoded)
                result = .success(())
            } catch let e as WoodpeckerError {
                result = .failure(e)
            } catch {
                result = .failure(WoodpeckerError(.ioFailure, "\(objects.location) block \(blockNumber): \(error)"))
            }
            // Always handled as a later loop job, never from inside this call: a store that completes without
            // suspending must not re-enter the writer halfway through `pump` or `close`, and the appends queued
            // meanwhile still go into the next block together.
            self.loop.execute { self.assumeIsolated { $0.blockFinished(segmentId: segId, blockNumber: blockNumber, result) } }
        }
    }

    private func blockFinished(segmentId: Int64, blockNumber: Int32, _ result: Result<Void, WoodpeckerError>) {
        guard let i = inFlight.firstIndex(where: { $0.blockNumber == blockNumber }), segment?.id == segmentId else { return }
        switch result {
        case .success:
            let b = inFlight[i]
            inFlight[i].result = .success(BlockInfo.of(b.blockNumber, b.firstEntryId, b.entries, size: b.encodedSize))
        case let .failure(e):
            inFlight[i].result = .failure(e)
        }
        completeInOrder()
    }

    /// Acknowledges finished blocks from the head, in order. The first failure fails every later block.
    private func completeInOrder() {
        // Nothing is acknowledged once the lease may have lapsed: a newer writer may own the log by now.
        if case .open = state, !leaseHeld() {
            loseLease(leaseExpiredError())
            return
        }
        var acked: [DecodedBlock] = []
        while let head = inFlight.first, let result = head.result {
            inFlight.removeFirst()
            inFlightBytes -= head.bytes
            switch result {
            case let .success(info):
                ack(head, info)
                acked.append(DecodedBlock(info: info, entries: head.entries))
            case let .failure(e):
                fail(head, e)
                for later in inFlight { fail(later, e) }
                // Later uploads may still land; they sit past the failed block, so recovery and the footer
                // exclude them. Their bytes are released when they finish (ignored by blockFinished).
                inFlightBytes -= inFlight.reduce(0) { $0 + $1.bytes }
                inFlight.removeAll()
                if e.code == .lockLost {
                    fenced(e)
                } else {
                    rollPending = true  // complete this segment at the last acked entry, continue in a new one
                }
            }
        }
        if !acked.isEmpty, let seg = segment {
            log.publish(segmentId: seg.id, blocks: acked)
        }
        releaseSpace()
        pump()
        notifyProgress()
    }

    private func ack(_ b: InFlight, _ info: BlockInfo) {
        guard segment != nil else { return }
        blocksFlushed += 1
        bytesFlushed += b.bytes
        encodedBytesFlushed += b.encodedSize
        // Mutated in place: a copy of the segment here would copy its whole block list on every ack.
        segment!.blocks.append(info)
        if segment!.firstKey == nil { segment!.firstKey = info.firstKey }
        segment!.lastKey = info.lastKey
        segment!.maxTimestamp = max(segment!.maxTimestamp ?? .min, info.maxTimestamp)
        let segId = segment!.id
        for (k, c) in b.completions.enumerated() {
            c(.success(LogMessageId(segmentId: segId, entryId: b.firstEntryId + Int64(k))))
        }
    }

    private func fail(_ b: InFlight, _ e: WoodpeckerError) {
        for c in b.completions { c(.failure(e)) }
    }

    // MARK: rolling

    private func maybeRoll() {
        guard !rolling, inFlight.isEmpty, case .open = state else { return }
        // Closing with nothing left to write: `close` completes the segment itself; opening another one (and
        // retrying that while storage or the nodes are away) would only keep `close` waiting.
        if closing && queuedCount == 0 { return }
        if !rollPending {
            guard let seg = segment, seg.sizeBytes > 0, Clock.wallMillis() - seg.createdAtMs >= config.segmentMaxAgeMs else { return }
        }
        rolling = true
        Task(executorPreference: loop) { await self.roll() }
    }

    /// Completes the current segment at its last acknowledged entry and opens the next one.
    private func roll() async {
        defer {
            rolling = false
            pump()
            notifyProgress()
        }
        guard let seg = segment else { return }
        var lastError: WoodpeckerError?
        for attempt in 0..<config.controlRetries {
            do {
                // Completing is not repeatable (its CAS would conflict with itself): only creating the next
                // segment is retried, here and by later rolls.
                if !segmentCompleted {
                    try await completeOwn(seg)
                    segmentCompleted = true
                }
                if case .failed = state { return }  // the lease was lost meanwhile: open nothing more
                segment = try await createSegment(seg.id + 1)
                segmentCompleted = false
                rollPending = false
                return
            } catch let e as WoodpeckerError {
                if e.code == .lockLost || e.code == .revisionConflict || e.code == .segmentStateInvalid {
                    fenced(WoodpeckerError(.lockLost, "log \(log.name): \(e.message); a newer writer owns the log"))
                    return
                }
                lastError = e
                await loop.sleep(ms: UInt64(50 << min(attempt, 5)))
            } catch {
                lastError = WoodpeckerError(.internalError, "\(error)")
            }
        }
        // Storage or metadata keeps failing: fail what is queued so callers see the cause; stay retryable.
        let e = lastError ?? WoodpeckerError(.internalError, "roll failed")
        failQueued(WoodpeckerError(e.code, "log \(log.name): cannot roll segment \(seg.id): \(e.message)", retryable: true))
    }

    private func completeOwn(_ seg: Segment) async throws {
        let lac = seg.blocks.last?.lastEntryId ?? -1
        let footer = SegmentFooter(blocks: seg.blocks, lac: lac, compacted: false,
                                   totalRecords: Int(lac + 1))
        try await seg.objects.writeFooter(footer)
        await seg.objects.release()
        var meta = seg.meta
        meta.state = .completed
        meta.completionTimeMs = Clock.wallMillis()
        meta.lastEntryId = lac
        meta.sizeBytes = Int64(seg.blocks.reduce(0) { $0 + $1.size })
        meta.firstKey = seg.firstKey
        meta.lastKey = seg.lastKey
        meta.maxTimestamp = seg.maxTimestamp
        try await log.casSegmentMeta(meta, expectedRevision: seg.metaRevision)
        await log.segmentCompleted(seg.id)
    }

    private func failQueued(_ e: WoodpeckerError) {
        for p in queue[queueHead...] { p.completion(.failure(e)) }
        queue.removeAll()
        queueHead = 0
        queuedBytes = 0
        releaseSpace()
    }

    private func fenced(_ e: WoodpeckerError) {
        state = .failed(e)
        stopLeaseTimer()
        failQueued(e)
        for w in spaceWaiters { w.c.resume(throwing: e) }
        spaceWaiters.removeAll()
        notifyProgress()
    }

    private func notifyProgress() {
        let ws = closeWaiters
        closeWaiters.removeAll()
        for w in ws { w.resume() }
    }

    // MARK: lease

    private var leaseTTLMs: UInt64 { UInt64(config.writerLeaseTTLSeconds) * 1000 }

    /// Grants the lease, attaches the writer lock to it and starts renewing it.
    private func startLease() async throws {
        guard config.writerLeaseTTLSeconds > 0 else { return }
        let sentAt = Clock.monotonicMillis()
        let metadata = log.client.metadata
        leaseId = try await metadata.grantLease(ttlSeconds: config.writerLeaseTTLSeconds)
        leaseDeadlineMs = sentAt + leaseTTLMs
        armLeaseTimer(afterMs: renewIntervalMs)
        do {
            try await log.takeWriterLock(lease: leaseId, writer: writerName)
        } catch let e as WoodpeckerError where e.code == .keyNotFound {
            leaseLost = true
            throw WoodpeckerError(.lockLost,
                "log \(log.name): writer lease \(leaseId) expired before the writer lock was taken (\(log.client.metadata.description) answered slower than the lease TTL of \(config.writerLeaseTTLSeconds) s); retry, or raise writerLeaseTTLSeconds",
                retryable: true)
        }
    }

    /// True while the lease is surely valid (always without a lease). A clock read, no metadata call.
    private func leaseHeld() -> Bool {
        leaseId == 0 || (!leaseLost && Clock.monotonicMillis() < leaseDeadlineMs)
    }

    private var renewIntervalMs: UInt64 { max(1, leaseTTLMs / 3) }

    private func leaseExpiredError() -> WoodpeckerError {
        let cause = lastRenewalError.map { "; last renewal error: \($0.message)" } ?? ""
        return WoodpeckerError(.lockLost,
            "log \(log.name): writer lease \(leaseId) lost: not renewed within its TTL of \(config.writerLeaseTTLSeconds) s (metadata store \(log.client.metadata.description) unreachable or too slow\(cause)); this writer has stopped and acknowledges nothing more: reopen the writer")
    }

    private func armLeaseTimer(afterMs: UInt64) {
        if leaseTimer == nil {
            leaseTimer = LoopTimer(loop: loop) { [weak self] in
                guard let self else { return }
                self.assumeIsolated { $0.leaseTimerFired() }
            }
        }
        leaseTimer!.start(afterMs: max(1, afterMs))
    }

    private func stopLeaseTimer() {
        guard let t = leaseTimer else { return }
        leaseTimer = nil
        t.close()
        // May run inside the timer's own callback: keep the object alive until that returns.
        loop.execute { withExtendedLifetime(t) {} }
    }

    /// Renews the lease every third of the TTL; fires at the deadline too, so a lapse stops the writer on time
    /// even while a renewal hangs.
    private func leaseTimerFired() {
        guard leaseId != 0, case .open = state else { return }
        let now = Clock.monotonicMillis()
        if !leaseHeld() {
            loseLease(leaseExpiredError())
            return
        }
        if !leaseRenewing {
            leaseRenewing = true
            let id = leaseId
            let metadata = log.client.metadata
            Task(executorPreference: loop) {
                let result: Result<Void, WoodpeckerError>
                do {
                    try await metadata.keepAlive(lease: id)
                    result = .success(())
                } catch let e as WoodpeckerError {
                    result = .failure(e)
                } catch {
                    result = .failure(WoodpeckerError(.internalError, "keep-alive of lease \(id): \(error)"))
                }
                await self.renewed(sentAt: now, result)
            }
        }
        armLeaseTimer(afterMs: min(renewIntervalMs, leaseDeadlineMs > now ? leaseDeadlineMs - now : 1))
    }

    private func renewed(sentAt: UInt64, _ result: Result<Void, WoodpeckerError>) {
        leaseRenewing = false
        guard case .open = state, leaseId != 0 else { return }
        switch result {
        case .success:
            // The store renewed at or after `sentAt`. A renewal answered after the deadline revives nothing.
            guard leaseHeld() else { return loseLease(leaseExpiredError()) }
            leaseDeadlineMs = sentAt + leaseTTLMs
            lastRenewalError = nil
        case let .failure(e) where e.code == .keyNotFound:
            loseLease(WoodpeckerError(.lockLost,
                "log \(log.name): writer lease \(leaseId) lost: it expired or was revoked on \(log.client.metadata.description); this writer has stopped and acknowledges nothing more: reopen the writer"))
        case let .failure(e):
            // Unreachable or slow: retry soon; the deadline timer stops the writer if this lasts a whole TTL.
            lastRenewalError = e
            let now = Clock.monotonicMillis()
            if now < leaseDeadlineMs { armLeaseTimer(afterMs: min(min(500, renewIntervalMs), leaseDeadlineMs - now)) }
        }
    }

    /// Stops the writer for good: fails what is in flight and queued, and everything later, with `e`.
    private func loseLease(_ e: WoodpeckerError) {
        guard case .open = state else { return }
        leaseLost = true
        Diagnostics.warn(e.message)
        for b in inFlight { fail(b, e) }
        inFlightBytes -= inFlight.reduce(0) { $0 + $1.bytes }
        inFlight.removeAll()
        fenced(e)
    }

    /// Revokes the lease (deleting the lock key if this writer still holds it), unless it is already lost.
    private func releaseLease() async {
        stopLeaseTimer()
        guard leaseId != 0 else { return }
        let id = leaseId
        leaseId = 0
        if leaseLost { return }
        do {
            try await log.client.metadata.revokeLease(id)
        } catch {
            // It expires on its own within the TTL; nothing depends on the revoke.
            Diagnostics.warn("log \(log.name): revoking writer lease \(id) failed (it expires within \(config.writerLeaseTTLSeconds) s): \(error)")
        }
    }

    /// The writer's lease id (0 without a lease, and after close), for diagnostics and tests.
    public var lease: Int64 { leaseId }
    /// True once the writer stopped because its lease lapsed (expired, revoked, or the store unreachable for a
    /// TTL) rather than because a newer writer fenced it: the log may have no writer now, and a caller that
    /// still wants to write should open a new writer once the metadata store answers again.
    public var lostLease: Bool { leaseLost }

    // MARK: closing

    /// Flushes everything buffered, completes the active segment and releases the writer. Appends after close fail.
    public func close() async throws {
        auditor?.cancel()
        auditor = nil
        closing = true
        if case .open = state {
            while queuedCount > 0 || !inFlight.isEmpty || rolling {
                if queuedCount > 0 && inFlight.count < maxInFlight && !rollPending && !rolling { startBlock() }
                await withCheckedContinuation { closeWaiters.append($0) }
            }
            if case .open = state, let seg = segment {
                state = .failed(WoodpeckerError(.clientClosed, "log \(log.name): writer is closed"))
                if !segmentCompleted { try await completeOwn(seg) }
            }
        }
        timer?.close()
        timer = nil
        await releaseLease()
        await log.writerClosed(self)
    }

    /// The id the next append would get if it were flushed now (for diagnostics and tests).
    public var currentSegmentId: Int64? { segment?.id }
    public var isWritable: Bool { if case .open = state { true } else { false } }
    /// Entries the writer still references in its queue (taken or not); 0 once everything is acknowledged.
    public var retainedQueueEntries: Int { queue.count }
}

extension BlockInfo {
    static func of(_ n: Int32, _ first: Int64, _ entries: [SegmentEntry], size encodedSize: Int) -> BlockInfo {
        return BlockInfo(blockNumber: n, firstEntryId: first, lastEntryId: first + Int64(entries.count) - 1,
                         firstKey: entries.first?.key ?? 0, lastKey: entries.last?.key ?? 0,
                         maxTimestamp: entries.reduce(Int64.min) { max($0, $1.timestamp) }, size: encodedSize)
    }
}
