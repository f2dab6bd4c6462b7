import WoodpeckerCore
import WoodpeckerIO

/// The one-machine `MetadataStore`: etcd v3 semantics, kept in memory, made durable by a CRC-framed journal plus
/// periodic snapshots in a directory (or kept only in memory, for tests).
///
/// Guarantees:
/// - **Revisions as in etcd.** An empty store is at revision 1; every put, every delete that removes something,
///   every transaction that writes, and every lease revoke or expiry that removes keys bumps the revision exactly
///   once. Keys carry createRevision, modRevision and version; a deleted key recreated starts over at version 1.
///   Ranges are in key byte order.
/// - **Durable before visible.** A call returns only after every change it made or saw is on disk (journal record
///   written and `fdatasync`ed; concurrent writers share one fsync). Reads wait for in-flight writes they could
///   observe, and watches deliver only durable events, so nothing a caller sees can be lost by `kill -9`.
///   If a journal write fails, the store stops: every later call fails (not retryable) until it is reopened.
/// - **Leases.** Ids are never reused (persisted counter). Expiry is checked every `leaseCheckIntervalMs` and
///   before every call; it deletes the lease's keys at a new revision, seen by watches. After a reopen every lease
///   gets its full TTL again (as etcd does on leader change), so it expires at most TTL after the restart.
/// - **Watches.** `watch(prefix:fromRevision:)` delivers every event with revision > `fromRevision` (0 = from the
///   current revision on), in revision order and op order within a revision, with none missed. (etcd's
///   `start_revision` is inclusive: it equals `fromRevision + 1`.) A start older than the history kept
///   (`historyEvents`, and since the last snapshot after a reopen) fails with `.revisionConflict` ("compacted").
/// - **Exclusive.** The directory is locked with `flock`; a second opener fails naming the directory.
public actor EmbeddedMetadataStore: MetadataStore {
    /// Tunables, each with a bound.
    public struct Options: Sendable {
        /// Journal size that triggers a snapshot and a new journal generation.
        public var snapshotJournalBytes = 16 * 1024 * 1024
        /// Events kept for watches that start in the past.
        public var historyEvents = 16_384
        /// Events buffered per watch before a slow consumer's stream ends with `.bufferFull`.
        public var watchBufferEvents = 4_096
        /// Period of the lease expiry check.
        public var leaseCheckIntervalMs = 100
        /// etcd's `--max-txn-ops` default.
        public var maxTxnOps = 128
        /// etcd's `--max-request-bytes` default (keys plus values of one request).
        public var maxRequestBytes = 1_572_864
        /// Largest lease TTL (etcd's limit).
        public var maxLeaseTTLSeconds: Int64 = 9_000_000_000
        public init() {}
    }

    public nonisolated let description: String
    let options: Options
    private var state: MetadataState
    private var history: EventHistory
    private let journal: JournalDirectory?
    private let loop: EventLoop?
    private let ownsLoop: Bool

    // Durability: records are applied to `state` at once and queued in `pending`; a flush task writes and syncs
    // them. `durableRevision` is the revision whose records are all on disk.
    private var pending = ByteBuffer()
    private var appendedSeq: UInt64 = 0
    private var durableSeq: UInt64 = 0
    private var durableRevision: Int64
    private var flushing = false
    private var waiters: [(seq: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var failure: WoodpeckerError?
    private var closed = false

    private struct Watcher {
        var prefix: [UInt8]
        var after: Int64
        var watch: EmbeddedWatch
    }
    private var watchers: [UInt64: Watcher] = [:]
    private var nextWatchId: UInt64 = 1
    /// Every history event with revision <= this has been offered to the watchers.
    private var dispatchedRevision: Int64
    private var sweeper: Task<Void, Never>?
    private var nextExpiryCheckMillis: UInt64 = .max

    /// The torn bytes cut from the journal tail at open (0 if it ended cleanly). For tests and logs.
    public nonisolated let recoveredTornBytes: Int

    /// A store kept only in memory: the same semantics, nothing durable. For tests.
    public static func inMemory(options: Options = Options()) -> EmbeddedMetadataStore {
        EmbeddedMetadataStore(memoryOptions: options)
    }

    private init(memoryOptions options: Options) {
        description = "EmbeddedMetadataStore(in-memory)"
        self.options = options
        state = MetadataState()
        history = EventHistory(maxEvents: options.historyEvents, startRevision: 1)
        journal = nil
        loop = nil
        ownsLoop = false
        durableRevision = 1
        dispatchedRevision = 1
        recoveredTornBytes = 0
    }

    /// Opens (creating if needed) the store in `directory`: loads the snapshot, replays the journal, cuts a torn
    /// tail. Blocking file work runs on `loop`'s threadpool (a private loop is started and stopped with the store
    /// when none is given).
    public init(directory: String, loop: EventLoop? = nil, options: Options = Options()) async throws {
        let ioLoop = loop ?? EventLoop(name: "wp-meta")
        let now = WoodpeckerCore.Clock.monotonicMillis()
        let opened: (JournalDirectory, JournalDirectory.Recovered)
        do {
            opened = try await ioLoop.runBlocking { try JournalDirectory.open(path: directory, nowMillis: now) }
        } catch {
            if loop == nil { ioLoop.shutdown() }
            throw error
        }
        let (files, recovered) = opened
        description = "EmbeddedMetadataStore(\(directory))"
        self.options = options
        journal = files
        self.loop = ioLoop
        ownsLoop = loop == nil
        state = recovered.state
        var h = EventHistory(maxEvents: options.historyEvents, startRevision: recovered.snapshotRevision)
        for e in recovered.events { h.append(e.event) }
        history = h
        durableRevision = recovered.state.revision
        dispatchedRevision = recovered.state.revision
        recoveredTornBytes = recovered.truncatedBytes
        nextExpiryCheckMillis = recovered.state.earliestLeaseDeadline ?? .max
    }

    // MARK: MetadataStore

    public func get(_ key: String) async throws -> KeyValue? {
        try begin()
        let kv = state.get(KeyBytes(key))
        try await awaitDurable()
        return kv
    }

    public func range(prefix: String, limit: Int) async throws -> [KeyValue] {
        try begin()
        let kvs = state.range(prefix: Array(prefix.utf8), limit: limit)
        try await awaitDurable()
        return kvs
    }

    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 {
        try await txn(compare: [], then: [.put(key: key, value: value, lease: lease)], else: []).revision
    }

    @discardableResult
    public func delete(_ key: String) async throws -> Bool {
        try begin()
        let existed = state.get(KeyBytes(key)) != nil
        _ = try await txn(compare: [], then: [.delete(key: key)], else: [])
        return existed
    }

    public func txn(compare: [Compare], then: [TxnOp], else elseOps: [TxnOp]) async throws -> TxnResult {
        try begin()
        let limits = RequestLimits(maxTxnOps: options.maxTxnOps, maxRequestBytes: options.maxRequestBytes)
        let plan = try state.planTxn(compare: compare, then: then, else: elseOps, limits: limits, store: description)
        if let record = plan.record { try commit(record) }
        let revision = state.revision
        try await awaitDurable()
        return TxnResult(succeeded: plan.succeeded, revision: revision, gets: plan.gets)
    }

    public func grantLease(ttlSeconds: Int64) async throws -> Int64 {
        try begin()
        guard ttlSeconds > 0, ttlSeconds <= options.maxLeaseTTLSeconds else {
            throw WoodpeckerError(.invalidArgument, "\(description): lease TTL \(ttlSeconds) s is outside 1...\(options.maxLeaseTTLSeconds)")
        }
        let id = state.nextLeaseId
        try commit(.grant(lease: id, ttlSeconds: ttlSeconds))
        ensureSweeper()
        try await awaitDurable()
        return id
    }

    public func keepAlive(lease: Int64) async throws {
        try begin()
        guard state.extendLease(lease, nowMillis: WoodpeckerCore.Clock.monotonicMillis()) else { throw leaseNotFound(lease) }
        try await awaitDurable()
    }

    public func revokeLease(_ lease: Int64) async throws {
        try begin()
        guard let record = state.planRevoke(lease) else { throw leaseNotFound(lease) }
        try commit(record)
        try await awaitDurable()
    }

    public func leaseTimeToLive(_ lease: Int64) async throws -> Int64? {
        try begin()
        let now = WoodpeckerCore.Clock.monotonicMillis()
        let ttl = state.leases[lease].map { Int64(($0.deadlineMillis - min(now, $0.deadlineMillis) + 999) / 1000) }
        try await awaitDurable()
        return ttl
    }

    public func watch(prefix: String, fromRevision: Int64) async throws -> any MetadataWatch {
        try begin()
        try await awaitDurable()
        try begin()
        let after = fromRevision == 0 ? durableRevision : fromRevision
        guard after >= history.startRevision else {
            throw WoodpeckerError(.revisionConflict,
                                  "\(description): watch on prefix '\(prefix)' from revision \(fromRevision): compacted (oldest revision kept is \(history.startRevision + 1)); read the current state with range and watch from its revision")
        }
        let id = nextWatchId
        nextWatchId += 1
        let w = EmbeddedWatch(bufferEvents: options.watchBufferEvents)
        w.continuation.onTermination = { [weak self] _ in
            guard let self else { return }
            Task { await self.removeWatcher(id) }
        }
        let watcher = Watcher(prefix: Array(prefix.utf8), after: after, watch: w)
        watchers[id] = watcher
        for e in history.events(after: after, through: dispatchedRevision) {
            offer(e.event, revision: e.revision, to: id, watcher)
        }
        return w
    }

    /// Waits for in-flight writes, closes the files and ends every watch with `.clientClosed`. Idempotent.
    public func close() async {
        guard !closed else { return }
        closed = true
        sweeper?.cancel()
        sweeper = nil
        // Errors of the last flush already reached their callers; closing only needs it finished.
        try? await awaitDurable()
        let error = WoodpeckerError(.clientClosed, "\(description) was closed")
        for (_, w) in watchers { w.watch.continuation.finish(throwing: error) }
        watchers.removeAll()
        journal?.close()
        if ownsLoop, let loop { loop.shutdown() }
    }

    /// Current store revision (including changes not yet durable). For tests and diagnostics.
    public var currentRevision: Int64 { state.revision }

    // MARK: internals

    private func leaseNotFound(_ lease: Int64) -> WoodpeckerError {
        WoodpeckerError(.keyNotFound, "\(description): lease \(lease) not found (expired or revoked); grant a new lease")
    }

    /// Checks the store is usable and expires due leases (lazily, before every call).
    private func begin() throws {
        if let failure { throw failure }
        if closed { throw WoodpeckerError(.clientClosed, "\(description) is closed") }
        if sweeper == nil, !state.leases.isEmpty { ensureSweeper() }
        try expireDueLeases()
    }

    private func expireDueLeases() throws {
        let now = WoodpeckerCore.Clock.monotonicMillis()
        guard now >= nextExpiryCheckMillis else { return }
        for id in state.expiredLeases(nowMillis: now) {
            if let record = state.planRevoke(id) { try commit(record) }
        }
        nextExpiryCheckMillis = state.earliestLeaseDeadline ?? .max
    }

    /// Applies a record to the state, queues it for the journal and records its events.
    private func commit(_ record: JournalRecord) throws {
        let events = try state.apply(record, nowMillis: WoodpeckerCore.Clock.monotonicMillis())
        for e in events { history.append(e) }
        if case .grant = record { nextExpiryCheckMillis = min(nextExpiryCheckMillis, state.earliestLeaseDeadline ?? .max) }
        appendedSeq += 1
        guard journal != nil else {
            durableSeq = appendedSeq
            durableRevision = state.revision
            dispatchWatchEvents()
            return
        }
        JournalCodec.appendFrame(record, to: &pending)
        if !flushing {
            flushing = true
            Task { await self.flushLoop() }
        }
    }

    /// Returns once everything applied so far is durable.
    private func awaitDurable() async throws {
        let target = appendedSeq
        if durableSeq >= target { return }
        if let failure { throw failure }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            waiters.append((target, c))
        }
    }

    /// Group commit: writes everything queued in one write and one fdatasync, repeats while more arrived meanwhile.
    private func flushLoop() async {
        guard let journal, let loop else { return }
        while failure == nil, pending.readableBytes > 0 {
            let bytes = pending.readableBytesArray
            pending.clear()
            let seq = appendedSeq
            let revision = state.revision
            // The state now is exactly the journal after `bytes`: the moment to take a snapshot.
            let snapshot = journal.journalBytes + bytes.count >= options.snapshotJournalBytes
                ? state.encodeSnapshot(journalGeneration: journal.generation + 1) : nil
            do {
                try await loop.runBlocking {
                    try journal.append(bytes)
                    if let snapshot { try journal.rotate(snapshot: snapshot) }
                }
            } catch {
                fail(error)
                break
            }
            durableSeq = seq
            durableRevision = revision
            var ready: [CheckedContinuation<Void, any Error>] = []
            waiters.removeAll { w in
                guard w.seq <= seq else { return false }
                ready.append(w.continuation)
                return true
            }
            for c in ready { c.resume() }
            dispatchWatchEvents()
        }
        flushing = false
    }

    private func fail(_ error: any Error) {
        let e = WoodpeckerError(.metadataUnavailable,
                                "\(description): journal write failed (\(error)); the store stopped accepting calls, reopen it",
                                retryable: false)
        failure = e
        for w in waiters { w.continuation.resume(throwing: e) }
        waiters.removeAll()
        for (_, w) in watchers { w.watch.continuation.finish(throwing: e) }
        watchers.removeAll()
    }

    private func dispatchWatchEvents() {
        guard durableRevision > dispatchedRevision else { return }
        let through = durableRevision
        if !watchers.isEmpty {
            for e in history.events(after: dispatchedRevision, through: through) {
                for (id, w) in watchers { offer(e.event, revision: e.revision, to: id, w) }
            }
        }
        dispatchedRevision = through
    }

    private func offer(_ event: WatchEvent, revision: Int64, to id: UInt64, _ w: Watcher) {
        guard revision > w.after, event.kv.key.utf8.starts(with: w.prefix) else { return }
        switch w.watch.continuation.yield(event) {
        case .enqueued: break
        case .dropped:
            watchers[id] = nil
            w.watch.continuation.finish(throwing: WoodpeckerError(.bufferFull,
                "\(description): watch fell more than \(options.watchBufferEvents) events behind at revision \(revision); watch again from the last revision received"))
        case .terminated: watchers[id] = nil
        @unknown default: watchers[id] = nil
        }
    }

    private func removeWatcher(_ id: UInt64) { watchers[id] = nil }

    private func ensureSweeper() {
        guard sweeper == nil else { return }
        let interval = UInt64(max(1, options.leaseCheckIntervalMs)) * 1_000_000
        sweeper = Task { [weak self] in
            while true {
                do { try await Task.sleep(nanoseconds: interval) } catch { return }
                guard let self else { return }
                await self.sweep()
            }
        }
    }

    private func sweep() {
        guard failure == nil, !closed else { return }
        do { try expireDueLeases() } catch { fail(error) }
    }
}
