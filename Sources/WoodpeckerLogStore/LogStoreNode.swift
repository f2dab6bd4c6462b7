import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// Bounds and switches of a `LogStoreNode`.
public struct LogStoreNodeOptions: Sendable {
    /// Bytes of held blocks (in memory) beyond which appends fail with `.bufferFull`. A large block is held in the
    /// receive buffer it arrived in, which it fills at least half of (`ByteBuffer.retainable`), so the memory behind
    /// the held blocks is at most twice this.
    public var maxBufferedBytes = 256 * 1024 * 1024
    /// An append of block n is refused unless `n <= uploadedThrough + maxWindowBlocks`.
    public var maxWindowBlocks: Int32 = 4096
    /// fdatasync every data-file append before replying (machine-crash durability on this node alone).
    public var syncWrites = false
    /// Uploads (runs) in flight per segment.
    public var maxParallelUploadsPerSegment = 4
    /// A run (consecutive confirmed blocks uploaded as one object) starts once it holds this many bytes, or once its
    /// first block has waited `runDelayMs` (on the segment's uploader) or `standbyDelayMs` (on the other nodes,
    /// which normally drop their copies on the uploader's report first). Fewer, larger objects: at 1,000 blocks/s
    /// a 100 ms delay makes 10 puts/s per segment instead of 1,000 (each put also creates a file or an S3 object).
    public var runTargetBytes = 4 * 1024 * 1024
    /// Largest run object.
    public var maxRunBytes = 8 * 1024 * 1024
    public var runDelayMs: UInt64 = 100
    public var standbyDelayMs: UInt64 = 1_000
    /// Block uploads (and existence checks) in flight on the whole node.
    public var maxParallelUploads = 32
    /// Backoff between upload retries after a retryable store error, and between checks for a block this node
    /// does not hold: doubles from the first value up to the second.
    public var retryBackoffMs: (first: UInt64, max: UInt64) = (50, 2_000)
    /// How long `stop` waits for the node's own tasks (file writes, uploads) to end before it returns anyway.
    public var stopTimeoutMs: UInt64 = 5_000
    /// How long `complete` waits for uploads before failing with `.timeout`.
    public var completeTimeoutMs: UInt64 = 60_000
    /// Fenced, empty records kept for completed segments and for segments fenced before this node saw them
    /// (oldest dropped first; a dropped record is forgotten, with its data file).
    public var maxTombstones = 100_000
    /// A segment that holds blocks but took no append for this long is looked up in object storage: once its
    /// footer is there (completed by its writer or by a recovering one) the node drops its copies, even if it
    /// missed the `complete` (it was down, or the writer crashed). 0 = never.
    public var idleSegmentCheckMs: UInt64 = 60_000
    /// Largest request frame; a larger one closes its connection.
    public var maxRequestBytes = Limits.maxRequestSizeBytes
    /// Request bytes being processed per connection before it stops reading.
    public var maxInFlightBytesPerConnection = 64 * 1024 * 1024

    public init() {}
}

/// A LogStore node of QuorumBuffer mode: holds the segment blocks writers send it (in memory, and in an append-only
/// file per segment when it has a data directory), uploads blocks a writer confirmed to object storage in runs
/// (blocks n...m back to back at `SegmentRef.blockKey(n)`, put-if-absent; the layout is `ObjectSegmentStore`'s),
/// and drops them once durable there. Every node follows the same chain of objects: it uploads only at the key
/// after the last object it knows of (its `uploadedThrough + 1`), and a put that finds an object there adopts
/// that object's extent, so nodes that cut runs differently never leave a block off the chain.
///
/// Guarantees:
/// - an append is answered ok only once the node holds the block (decoded and CRC-verified; written to its data file
///   when there is a data directory, so a killed process restarted on the same directory still holds it);
/// - a block is never replaced by different bytes; a fenced segment accepts no append;
/// - blocks are uploaded only when confirmed (`n <= confirmedThrough`), and dropped only once 0...n are durable;
/// - memory is bounded by `maxBufferedBytes` (plus requests in flight, bounded per connection).
/// All state lives on `loop` (the actor's executor). Machine-crash durability comes from the quorum (2 of 3 nodes)
/// or from `syncWrites`.
public actor LogStoreNode {
    public nonisolated let loop: EventLoop
    public nonisolated let store: any ObjectStore
    public nonisolated let dataDirectory: String?
    public nonisolated let options: LogStoreNodeOptions
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    /// Random per process start (reported by `health`).
    public nonisolated let incarnation = UInt64.random(in: 1...UInt64.max)

    private var segments: [SegmentRef: SegmentState] = [:]
    private var tombstones: [SegmentRef] = []
    private var tombstoneHead = 0
    private var server: TCPServer?
    private var sweeper: Task<Void, Never>?
    /// Bytes of held blocks.
    public private(set) var bufferedBytes = 0
    /// Blocks this process uploaded (or found already durable) since start.
    public private(set) var uploadedBlocks: Int64 = 0
    private var stopping = false
    private var uploadsInFlight = 0
    /// Segments with confirmed blocks waiting for a node-wide upload slot.
    private var starved: [SegmentRef] = []
    private var activeTasks = 0
    /// Blocks marked durable on another node's report (no lookup of their own); for tests and diagnostics.
    public private(set) var reportedDurableBlocks: Int64 = 0
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    /// `dataDirectory` nil: an in-memory node that forgets everything when it stops.
    public init(loop: EventLoop, store: any ObjectStore, dataDirectory: String?, options: LogStoreNodeOptions = LogStoreNodeOptions()) {
        self.loop = loop
        self.store = store
        self.dataDirectory = dataDirectory
        self.options = options
    }

    /// The bound port, 0 before `start`.
    public var port: Int { server?.port ?? 0 }

    /// Reloads the data directory (if any), resumes uploads and starts listening. Fails naming the directory or the
    /// address.
    public func start(host: String, port: Int) async throws {
        precondition(server == nil, "LogStoreNode.start called twice")
        if let dir = dataDirectory {
            let (loaded, skipped) = try await loop.runBlocking { try SegmentFiles.loadAll(dir) }
            for path in skipped { Diagnostics.warn("logstore: \(path) has no valid header record; ignored") }
            for l in loaded { restore(l) }
        }
        var serverOptions = TCPServerOptions()
        serverOptions.connection.maxUnreadBytes = options.maxRequestBytes + 64 * 1024
        serverOptions.connection.lengthPrefixedFrames = true
        server = try await TCPServer.bind(loop: loop, host: host, port: port, options: serverOptions) { [self] conn in
            LogStoreServerConnection(node: self, maxFrameBytes: options.maxRequestBytes,
                                     maxInFlightBytes: options.maxInFlightBytesPerConnection)
        }
        for ref in segments.keys { pump(ref) }
        if options.idleSegmentCheckMs > 0 {
            sweeper = Task(executorPreference: loop) { await self.sweepIdleSegments() }
        }
    }

    /// Every half `idleSegmentCheckMs`: drops the copies of idle segments whose footer is in object storage.
    private func sweepIdleSegments() async {
        let interval = max(10, options.idleSegmentCheckMs / 2)
        while !stopping && !Task.isCancelled {
            await loop.sleep(ms: interval)
            let now = Clock.monotonicMillis()
            let idle = segments.values.filter {
                !$0.blocks.isEmpty && $0.completedThrough == nil && now - $0.lastAppendMs >= options.idleSegmentCheckMs
            }
            for seg in idle where !stopping {
                // A failed lookup is retried at the next sweep.
                guard (try? await store.head(seg.ref.directory + "footer.blk")) != nil,
                      let last = seg.blocks.keys.max(), seg.completedThrough == nil else { continue }
                Diagnostics.info("logstore: \(seg.ref) is completed in object storage; dropping the copies held here")
                do {
                    try await finish(seg, through: max(last, seg.uploadedThrough))
                } catch {
                    Diagnostics.warn("logstore: dropping the copies of \(seg.ref): \(error); the next start retries")
                }
            }
        }
    }

    /// Closes the listener and every connection, then waits until uploads and file writes have stopped. Blocks not
    /// yet uploaded stay in the data directory (if any) for the next start.
    public func stop() async {
        stopping = true
        sweeper?.cancel()
        sweeper = nil
        if let s = server { await s.close() }
        server = nil
        for seg in segments.values where !seg.waiters.isEmpty {
            let e = WoodpeckerError(.nodeUnavailable, "LogStore node stopping: complete of \(seg.ref) abandoned", retryable: true)
            for w in seg.waiters { seg.resumeWaiter(w.id, .failure(e)) }
        }
        // Every task ends within its own bounds (uploads re-check `stopping` after each backoff), but stopping must
        // not hang on one that does not: past `stopTimeoutMs` the node returns and says so.
        let deadline = Clock.monotonicMillis() + options.stopTimeoutMs
        if activeTasks > 0 {
            loop.schedule(afterMs: options.stopTimeoutMs) { [weak self] in
                self?.assumeIsolated { $0.wakeIdleWaiters() }
            }
        }
        while activeTasks > 0 {
            guard Clock.monotonicMillis() < deadline else {
                Diagnostics.warn("logstore: stopped with \(activeTasks) task(s) still running after \(options.stopTimeoutMs) ms (\(uploadsInFlight) upload(s)); data files are complete up to the last acknowledged append")
                break
            }
            await withCheckedContinuation { idleWaiters.append($0) }
        }
    }

    private func wakeIdleWaiters() {
        let w = idleWaiters
        idleWaiters.removeAll()
        for c in w { c.resume() }
    }

    public func health() -> NodeHealth {
        NodeHealth(incarnation: incarnation, bufferedBytes: bufferedBytes, maxBufferedBytes: options.maxBufferedBytes,
                   segments: segments.count, uploadedBlocks: uploadedBlocks, hasDataDirectory: dataDirectory != nil)
    }

    // MARK: dispatch

    /// Executes one decoded request.
    func execute(_ request: LogStoreRequest) async -> Result<LogStoreResult, WoodpeckerError> {
        do {
            switch request {
            case let .append(ref, n, bytes, confirmed, durable, uploader):
                let uploaded = try await append(ref, block: n, bytes: bytes, confirmedThrough: confirmed,
                                                durableThrough: durable, uploader: uploader)
                return .success(.uploaded(through: uploaded))
            case let .updateConfirmed(ref, through, durable, uploader):
                return .success(.uploaded(through: await updateConfirmed(ref, through: through, durableThrough: durable,
                                                                         uploader: uploader)))
            case let .fence(ref): return .success(.status(try await fence(ref)))
            case let .status(ref): return .success(.status(status(ref)))
            case let .readBlock(ref, n): return .success(.block(readBlock(ref, number: n)))
            case let .complete(ref, last):
                try await complete(ref, lastBlock: last)
                return .success(.done)
            case .health: return .success(.health(health()))
            }
        } catch let e as WoodpeckerError {
            return .failure(e)
        } catch {
            return .failure(WoodpeckerError(.internalError, "\(error)"))
        }
    }

    // MARK: operations

    /// See `LogStoreNodeClient.append`. Returns the segment's `uploadedThrough` once the node holds the block.
    @discardableResult
    public func append(_ ref: SegmentRef, block n: Int32, bytes: ByteBuffer, confirmedThrough: Int32,
                       durableThrough: Int32 = -1, uploader: Bool = false) async throws -> Int32 {
        // Every record CRC and the block's own checks, without building its entries (the node only stores them).
        let info = try SegmentCodec.verifyBlock(bytes)
        guard info.blockNumber == n, n >= 0 else {
            throw WoodpeckerError(.invalidArgument, "append to \(ref): block \(n) carries block number \(info.blockNumber)")
        }
        let seg = segment(ref, create: true)!
        if seg.fenced { throw fencedError(ref) }
        seg.known = true
        seg.lastAppendMs = Clock.monotonicMillis()
        seg.confirmedThrough = max(seg.confirmedThrough, confirmedThrough)
        seg.uploader = uploader
        defer { pump(ref) }
        await reportedDurable(seg, through: durableThrough)
        if n <= seg.uploadedThrough { return seg.uploadedThrough }
        if let held = seg.blocks[n] {
            guard held.bytes == bytes else {
                throw WoodpeckerError(.segmentStateInvalid, "append to \(ref): block \(n) is already held with different bytes")
            }
            // The first append of these bytes may still be writing them: answer after it.
            try await seg.fileQueue.barrier()
            return seg.uploadedThrough
        }
        guard Int64(n) <= Int64(seg.uploadedThrough) + Int64(options.maxWindowBlocks) else {
            throw WoodpeckerError(.invalidArgument,
                                  "append to \(ref): block \(n) is outside the buffer window (uploaded through \(seg.uploadedThrough), window \(options.maxWindowBlocks) blocks)")
        }
        guard bufferedBytes + bytes.readableBytes <= options.maxBufferedBytes else {
            throw WoodpeckerError(.bufferFull,
                                  "append to \(ref): node holds \(bufferedBytes) bytes, block \(n) of \(bytes.readableBytes) bytes exceeds the bound of \(options.maxBufferedBytes); retry once uploads drain")
        }
        // The request's bytes share the connection's receive buffer: kept as they are when they fill most of it (a
        // large block arrives in a buffer sized for its frame), else copied so a small block does not pin a large one.
        let own = bytes.retainable()
        seg.blocks[n] = Held(bytes: own, info: HeldBlock(blockNumber: n, firstEntryId: info.firstEntryId,
                                                          lastEntryId: info.lastEntryId, size: own.readableBytes),
                             receivedMs: Clock.monotonicMillis())
        bufferedBytes += own.readableBytes
        if dataDirectory != nil {
            do {
                try await persist(seg, [.block(n, confirmedThrough: seg.confirmedThrough, bytes: own)])
            } catch {
                if let h = seg.blocks[n], h.bytes == own, !seg.isUploading(n) {
                    seg.blocks[n] = nil
                    bufferedBytes -= own.readableBytes
                }
                throw error
            }
        }
        return seg.uploadedThrough
    }

    /// See `LogStoreNodeClient.updateConfirmed`. A segment the node does not know is left unknown (-1).
    @discardableResult
    public func updateConfirmed(_ ref: SegmentRef, through: Int32, durableThrough: Int32 = -1, uploader: Bool = false) async -> Int32 {
        guard let seg = segment(ref, create: false) else { return -1 }
        seg.confirmedThrough = max(seg.confirmedThrough, through)
        seg.uploader = uploader
        await reportedDurable(seg, through: durableThrough)
        pump(ref)
        return seg.uploadedThrough
    }

    /// Blocks 0...through are durable in object storage by another node's report (passed on by the writer): takes
    /// that point without looking the blocks up and drops the copies. The point is the end of an object of the
    /// chain (nodes only report such points), so this node's next upload lands at a chain key too. Bounded by the
    /// blocks held, not by the claim.
    private func reportedDurable(_ seg: SegmentState, through claimed: Int32) async {
        guard claimed > seg.uploadedThrough, seg.completedThrough == nil else { return }
        reportedDurableBlocks += Int64(claimed - seg.uploadedThrough)
        await advance(seg, to: claimed)
    }

    /// See `LogStoreNodeClient.fence`. An unknown segment gets a fenced, empty record (persisted with a data
    /// directory) and is reported `known: false`.
    public func fence(_ ref: SegmentRef) async throws -> SegmentStatus {
        let existed = segments[ref] != nil
        let seg = segment(ref, create: true)!
        // A record made only to refuse late appends is bounded like the tombstones of completed segments.
        if !existed { addTombstone(ref) }
        if !seg.fenced {
            seg.fenced = true
            if dataDirectory != nil { try await persist(seg, [.fence]) }
        }
        return reported(seg.status)
    }

    public func status(_ ref: SegmentRef) -> SegmentStatus {
        reported(segment(ref, create: false)?.status
            ?? SegmentStatus(known: false, fenced: false, blocks: [], uploadedThrough: -1, confirmedThrough: -1))
    }

    /// A node with a data directory writes a segment's record before it acknowledges any block of it, so what it
    /// reports is evidence even for a segment it never saw (it holds no block of it): `known`. Without one, a
    /// segment it does not hold may be one it lost in a restart. (A writer that created a segment and stopped
    /// before its first append leaves one that no node ever saw; recovery must be able to seal it empty.)
    private func reported(_ s: SegmentStatus) -> SegmentStatus {
        var s = s
        if dataDirectory != nil { s.known = true }
        return s
    }

    public func readBlock(_ ref: SegmentRef, number n: Int32) -> ByteBuffer? {
        segment(ref, create: false)?.blocks[n]?.bytes
    }

    /// See `LogStoreNodeClient.complete`.
    public func complete(_ ref: SegmentRef, lastBlock: Int32) async throws {
        let seg = segment(ref, create: true)!
        if let done = seg.completedThrough, done >= lastBlock { return }
        if !seg.fenced {
            seg.fenced = true
            if dataDirectory != nil { try await persist(seg, [.fence]) }
        }
        seg.confirmedThrough = max(seg.confirmedThrough, lastBlock)
        seg.completing = true  // upload the rest at once, without waiting for fuller runs
        if let reason = seg.stopReason { throw reason }
        try await checkMissing(seg, through: lastBlock)
        pump(ref)
        if seg.uploadedThrough < lastBlock {
            try await waitUploaded(seg, through: lastBlock)
        }
        try await finish(seg, through: lastBlock)
    }

    /// 0...lastBlock are durable in object storage: drop everything, keep a fenced tombstone.
    private func finish(_ seg: SegmentState, through lastBlock: Int32) async throws {
        seg.fenced = true
        seg.completedThrough = lastBlock
        for (_, h) in seg.blocks { bufferedBytes -= h.bytes.readableBytes }
        seg.blocks.removeAll()
        if dataDirectory != nil {
            let records: [SegmentFileRecord] = [.header(seg.ref), .fence, .completed(lastBlock)]
            try await replaceFile(seg, records)
        }
        addTombstone(seg.ref)
    }

    // MARK: segment state

    private func segment(_ ref: SegmentRef, create: Bool) -> SegmentState? {
        if let s = segments[ref] { return s }
        guard create else { return nil }
        let s = SegmentState(ref: ref, path: dataDirectory.map { $0 + "/" + SegmentFiles.fileName(ref) }, loop: loop)
        segments[ref] = s
        return s
    }

    private func restore(_ l: LoadedSegment) {
        let s = SegmentState(ref: l.ref, path: l.path, loop: loop)
        s.known = !l.blocks.isEmpty || l.uploadedThrough >= 0 || l.completedThrough != nil
        s.fenced = l.fenced
        s.uploadedThrough = l.uploadedThrough
        s.confirmedThrough = l.confirmedThrough
        s.completedThrough = l.completedThrough
        s.fileExists = true
        for (n, bytes) in l.blocks {
            // Verified by the loader.
            guard let info = try? SegmentCodec.verifyBlock(bytes) else { continue }
            s.blocks[n] = Held(bytes: bytes, info: HeldBlock(blockNumber: n, firstEntryId: info.firstEntryId,
                                                              lastEntryId: info.lastEntryId, size: bytes.readableBytes),
                               receivedMs: Clock.monotonicMillis())
            bufferedBytes += bytes.readableBytes
        }
        segments[l.ref] = s
        if l.completedThrough != nil { addTombstone(l.ref) }
        if l.truncatedBytes > 0 {
            Diagnostics.warn("logstore: cut \(l.truncatedBytes) torn bytes off the end of \(l.path)")
        }
    }

    private func fencedError(_ ref: SegmentRef) -> WoodpeckerError {
        WoodpeckerError(.segmentFenced, "append to \(ref): the segment is fenced on this node; a newer writer took over")
    }

    private func addTombstone(_ ref: SegmentRef) {
        tombstones.append(ref)
        while tombstones.count - tombstoneHead > options.maxTombstones {
            let old = tombstones[tombstoneHead]
            tombstoneHead += 1
            if let s = segments[old], s.completedThrough != nil || (!s.known && s.blocks.isEmpty) {
                segments[old] = nil
                if let path = s.path { enqueueFile(s) { try SegmentFiles.remove(path) } }
            }
        }
        if tombstoneHead > 1024 && tombstoneHead * 2 > tombstones.count {
            tombstones.removeFirst(tombstoneHead)
            tombstoneHead = 0
        }
    }

    // MARK: files

    /// Appends records to the segment's file, after every earlier file operation of the segment.
    /// Appends records to the segment's file before returning. Group commit: records that arrive while an earlier
    /// write of the segment waits or runs go to the file together, in one write (and one fdatasync with
    /// `syncWrites`), so a pipelined writer costs one thread-pool trip per batch instead of one per block.
    private func persist(_ seg: SegmentState, _ records: [SegmentFileRecord]) async throws {
        guard let path = seg.path else { return }
        var all = records
        if !seg.fileExists {
            all.insert(.header(seg.ref), at: 0)
            seg.fileExists = true
        }
        let sync = options.syncWrites
        let loop = loop
        let pending = seg.pendingAppends
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            SegmentFiles.encodeParts(all, into: &pending.parts)
            pending.waiters.append(c)
            guard !pending.queued else { return }
            pending.queued = true
            activeTasks += 1
            Task(executorPreference: loop) {
                // Runs in the segment's file order; takes everything queued by the time its turn comes.
                let batch = PendingAppends.Batch()
                do {
                    try await seg.fileQueue.run {
                        pending.take(into: batch)
                        let parts = batch.parts
                        try await loop.runBlocking { try SegmentFiles.append(path, parts, sync: sync) }
                    }
                    batch.resume(nil)
                } catch {
                    batch.resume(error)
                }
                await self.taskEnded()
            }
        }
    }

    private func replaceFile(_ seg: SegmentState, _ records: [SegmentFileRecord]) async throws {
        guard let path = seg.path else { return }
        seg.fileExists = true
        let data = SegmentFiles.encode(records)
        let sync = options.syncWrites
        try await runFileOp(seg) { try SegmentFiles.replace(path, data, sync: sync) }
    }

    private func runFileOp(_ seg: SegmentState, _ work: @escaping @Sendable () throws -> Void) async throws {
        let loop = loop
        activeTasks += 1
        defer { taskEnded() }
        try await seg.fileQueue.run { try await loop.runBlocking(work) }
    }

    /// Fire-and-forget file work in the segment's order; failures are logged (the next start replays the file).
    private func enqueueFile(_ seg: SegmentState, _ work: @escaping @Sendable () throws -> Void) {
        activeTasks += 1
        Task(executorPreference: loop) {
            do {
                try await self.runFileOpDetached(seg.fileQueue, work)
            } catch {
                Diagnostics.error("logstore: file update of \(seg.ref): \(error)")
            }
            await self.taskEnded()
        }
    }

    private func runFileOpDetached(_ queue: FileQueue, _ work: @escaping @Sendable () throws -> Void) async throws {
        let loop = loop
        try await queue.run { try await loop.runBlocking(work) }
    }

    private func taskEnded() {
        activeTasks -= 1
        if activeTasks == 0 { wakeIdleWaiters() }
    }

    // MARK: uploads

    /// Starts uploads of confirmed blocks along the chain: from the key after the last known object, runs of
    /// consecutive held blocks (up to `maxRunBytes`; started once `runTargetBytes` are gathered or the first block
    /// waited long enough), and a lookup where this node does not hold the block. At most
    /// `maxParallelUploadsPerSegment` at a time.
    private func pump(_ ref: SegmentRef) {
        guard !stopping, let seg = segments[ref], seg.stopReason == nil, seg.completedThrough == nil else { return }
        let urgent = seg.completing || bufferedBytes * 2 > options.maxBufferedBytes
        var p = seg.uploadedThrough + 1
        while p <= seg.confirmedThrough && seg.uploading.count < options.maxParallelUploadsPerSegment {
            if let end = seg.runs[p] {
                p = end + 1
                continue
            }
            if let end = seg.uploading[p] {
                guard end >= p else { return }  // a lookup: where the next object starts is not known yet
                p = end + 1
                continue
            }
            guard uploadsInFlight < options.maxParallelUploads else {
                if !seg.starved {
                    seg.starved = true
                    starved.append(ref)
                }
                return
            }
            guard let first = seg.blocks[p] else {
                start(seg, from: p, through: nil)
                return
            }
            var q = p
            var bytes = first.bytes.readableBytes
            while q < seg.confirmedThrough, let next = seg.blocks[q + 1], bytes + next.bytes.readableBytes <= options.maxRunBytes {
                q += 1
                bytes += next.bytes.readableBytes
            }
            let due = first.receivedMs + (seg.uploader ? options.runDelayMs : options.standbyDelayMs)
            if !urgent && bytes < options.runTargetBytes && Clock.monotonicMillis() < due {
                armRunTimer(seg, at: due)
                return
            }
            start(seg, from: p, through: q)
            p = q + 1
        }
    }

    private func start(_ seg: SegmentState, from p: Int32, through q: Int32?) {
        seg.uploading[p] = q ?? -1
        uploadsInFlight += 1
        activeTasks += 1
        let ref = seg.ref
        Task(executorPreference: loop) { await self.transfer(ref, from: p, through: q) }
    }

    private func armRunTimer(_ seg: SegmentState, at due: UInt64) {
        guard !seg.runTimerArmed else { return }
        seg.runTimerArmed = true
        let ref = seg.ref
        loop.schedule(afterMs: max(1, due - min(due, Clock.monotonicMillis()))) { [weak self] in
            guard let self else { return }
            self.assumeIsolated { node in
                node.segments[ref]?.runTimerArmed = false
                node.pump(ref)
            }
        }
    }

    private enum TransferOutcome { case durable(through: Int32), fenceObject, conflict(String), missing, failed(WoodpeckerError) }

    /// Uploads the run `p...q` (or, with `q` nil, looks up the object at block p's key), retrying retryable
    /// failures with backoff until the node stops or the chain passes `p` (another node's report).
    private func transfer(_ ref: SegmentRef, from p: Int32, through q: Int32?) async {
        defer {
            uploadsInFlight -= 1
            resumeStarved()
            taskEnded()
        }
        let body = q.flatMap { segments[ref]?.runParts(from: p, through: $0) }
        var backoff = options.retryBackoffMs.first
        while true {
            guard !stopping, let seg = segments[ref], seg.stopReason == nil, p > seg.uploadedThrough,
                  q == nil || body != nil else { break }
            let key = ref.blockKey(p)
            let outcome = await attempt(seg, key: key, from: p, body: body, last: q, lookFirst: !seg.uploader || body == nil)
            guard let seg = segments[ref] else { return }
            switch outcome {
            case let .durable(through: end):
                seg.uploading[p] = nil
                if p > seg.uploadedThrough { seg.runs[p] = end }
                uploadedBlocks += Int64(end - p + 1)
                await advance(seg)
                pump(ref)
                return
            case .fenceObject:
                Diagnostics.warn("logstore: \(ref) is fenced in object storage (fence object at \(key)); uploads stopped")
                seg.fenced = true
                seg.stopReason = WoodpeckerError(.segmentFenced, "\(ref): a fence object stands at \(key); the segment was taken over")
                seg.uploading[p] = nil
                seg.wakeWaiters()
                if dataDirectory != nil { try? await persist(seg, [.fence]) }  // best effort: storage holds the fence anyway
                return
            case let .conflict(what):
                Diagnostics.error("logstore: \(key) holds \(what); uploads of \(ref) stopped")
                seg.stopReason = WoodpeckerError(.segmentStateInvalid, "\(key) holds \(what)")
                seg.uploading[p] = nil
                seg.wakeWaiters()
                return
            case .missing:
                // Another node has not uploaded it yet: check again after the backoff. A `complete` waiting for it
                // learns now that this node cannot finish (the writer then asks another).
                if seg.completing {
                    let e = WoodpeckerError(.objectNotFound,
                                            "complete of \(ref): block \(p) is neither held by this node nor in object storage at \(key)")
                    for w in seg.waiters where w.through >= p { seg.resumeWaiter(w.id, .failure(e)) }
                }
            case let .failed(e):
                guard e.isRetryable else {
                    Diagnostics.error("logstore: upload of \(key): \(e); uploads of \(ref) stopped")
                    seg.stopReason = e
                    seg.uploading[p] = nil
                    seg.wakeWaiters()
                    return
                }
                Diagnostics.debug("logstore: upload of \(key): \(e); retrying in \(backoff) ms")
            }
            await loop.sleep(ms: backoff)
            backoff = min(backoff * 2, options.retryBackoffMs.max)
        }
        // Passed by the chain (or stopped): let the next position start.
        segments[ref]?.uploading[p] = nil
        pump(ref)
    }

    /// Gives freed node-wide upload slots to segments that waited for one, oldest first.
    private func resumeStarved() {
        while uploadsInFlight < options.maxParallelUploads && !starved.isEmpty {
            let ref = starved.removeFirst()
            segments[ref]?.starved = false
            pump(ref)
        }
    }

    /// Puts `body` (blocks p...last) at `key` unless an object is there; with `lookFirst` (a node that is not the
    /// segment's uploader, or a lookup) reads first: usually the uploader put it already. An object found there is
    /// adopted when it is a run starting at block p whose blocks this node holds with the same bytes; its extent,
    /// not ours, decides where the chain continues.
    private func attempt(_ seg: SegmentState, key: String, from p: Int32, body: [ByteBuffer]?, last: Int32?,
                         lookFirst: Bool) async -> TransferOutcome {
        do {
            if lookFirst {
                if let existing = try await existingObject(key) { return judge(existing, seg, from: p) }
            }
            guard let body, let last else { return .missing }
            do {
                try await store.putIfAbsent(key, parts: body)
                return .durable(through: last)
            } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
                guard let existing = try await existingObject(key) else {
                    return .failed(WoodpeckerError(.storageNotWritable, "\(key) existed and then vanished", retryable: true))
                }
                return judge(existing, seg, from: p)
            }
        } catch let e as WoodpeckerError {
            return .failed(e)
        } catch {
            return .failed(WoodpeckerError(.internalError, "\(key): \(error)"))
        }
    }

    private func existingObject(_ key: String) async throws -> ByteBuffer? {
        do {
            return try await store.get(key)
        } catch let e as WoodpeckerError where e.code == .objectNotFound {
            return nil
        }
    }

    /// What an object found at block p's key means for this node.
    private func judge(_ existing: ByteBuffer, _ seg: SegmentState, from p: Int32) -> TransferOutcome {
        if SegmentCodec.isFenceObject(existing) { return .fenceObject }
        guard let parts = try? SegmentCodec.splitRun(existing),
              let first = try? SegmentCodec.decodeBlockInfo(parts[0]), first.blockNumber == p else {
            return .conflict("\(existing.readableBytes) bytes that are not a run starting at block \(p)")
        }
        for (i, part) in parts.enumerated() {
            if let held = seg.blocks[p + Int32(i)], held.bytes != part {
                return .conflict("other bytes than block \(p + Int32(i)) held here")
            }
        }
        return .durable(through: p + Int32(parts.count) - 1)
    }

    /// Moves `uploadedThrough` along the chain of known objects (from `to`, another node's reported point, if
    /// further), drops the blocks it passed (and the data file once the segment holds nothing).
    private func advance(_ seg: SegmentState, to reported: Int32 = -1) async {
        let before = seg.uploadedThrough
        if reported > seg.uploadedThrough {
            seg.dropHeld(through: reported, counting: &bufferedBytes)
            seg.uploadedThrough = reported
        }
        while let end = seg.runs.removeValue(forKey: seg.uploadedThrough + 1) {
            seg.dropHeld(through: end, counting: &bufferedBytes)
            seg.uploadedThrough = end
        }
        guard seg.uploadedThrough > before else { return }
        if !seg.runs.isEmpty { seg.runs = seg.runs.filter { $0.key > seg.uploadedThrough } }
        seg.wakeWaiters()
        guard let path = seg.path, seg.completedThrough == nil else { return }
        let through = seg.uploadedThrough
        if seg.blocks.isEmpty {
            // Nothing held: shrink the file to what must survive a restart (the fence and the durable point).
            var records: [SegmentFileRecord] = [.header(seg.ref), .uploaded(through)]
            if seg.fenced { records.insert(.fence, at: 1) }
            let data = SegmentFiles.encode(records)
            let sync = options.syncWrites
            seg.fileExists = true
            enqueueFile(seg) { try SegmentFiles.replace(path, data, sync: sync) }
        } else if seg.fileExists {
            let data = SegmentFiles.encode([.uploaded(through)])
            enqueueFile(seg) { try SegmentFiles.append(path, data, sync: false) }
        }
    }

    /// Before a `complete`: while the next chain position is a block this node does not hold, looks the object up
    /// (and follows it); fails with `.objectNotFound` naming the first block that is in neither. Gaps further on
    /// are looked up by `pump` once the chain reaches them.
    private func checkMissing(_ seg: SegmentState, through last: Int32) async throws {
        while seg.uploadedThrough < last {
            let p = seg.uploadedThrough + 1
            guard seg.blocks[p] == nil, seg.uploading[p] == nil, seg.runs[p] == nil else { return }
            let key = seg.ref.blockKey(p)
            switch await attempt(seg, key: key, from: p, body: nil, last: nil, lookFirst: true) {
            case let .durable(through: end):
                if p > seg.uploadedThrough { seg.runs[p] = end }
                await advance(seg)
            case .missing, .fenceObject, .conflict:
                throw WoodpeckerError(.objectNotFound,
                                      "complete of \(seg.ref) through block \(last): block \(p) is neither held by this node nor in object storage at \(key)")
            case let .failed(e): throw e
            }
        }
    }

    private func waitUploaded(_ seg: SegmentState, through last: Int32) async throws {
        let timeoutMs = options.completeTimeoutMs
        let id = seg.nextWaiterId
        seg.nextWaiterId += 1
        loop.schedule(afterMs: timeoutMs) { [weak self] in
            guard let self else { return }
            self.assumeIsolated { node in
                node.segments[seg.ref]?.resumeWaiter(id, .failure(WoodpeckerError(
                    .timeout, "complete of \(seg.ref) through block \(last): not durable within \(timeoutMs) ms")))
            }
        }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            seg.waiters.append(UploadWaiter(id: id, through: last, continuation: c))
            seg.wakeWaiters()
        }
    }
}

// MARK: - per-segment state

struct Held {
    var bytes: ByteBuffer
    var info: HeldBlock
    /// When the node took it (monotonic ms), for the run delay.
    var receivedMs: UInt64
}

struct UploadWaiter {
    var id: UInt64
    var through: Int32
    var continuation: CheckedContinuation<Void, any Error>
}

/// One segment's state on a node. Touched only on the node's loop (inside the actor).
final class SegmentState: @unchecked Sendable {
    let ref: SegmentRef
    /// The data file, nil without a data directory.
    let path: String?
    var fileExists = false
    /// The writer chose this node to upload the segment (as of its last request).
    var uploader = false
    var known = false
    /// When the writer last appended (idle segments are checked for a footer in object storage).
    var lastAppendMs = Clock.monotonicMillis()
    var blocks: [Int32: Held] = [:]
    var fenced = false
    var confirmedThrough: Int32 = -1
    var uploadedThrough: Int32 = -1
    var completedThrough: Int32?
    /// Objects known at keys past `uploadedThrough + 1` (ours or found): first block → last block, until the chain
    /// reaches them (entries the chain passed are dropped).
    var runs: [Int32: Int32] = [:]
    /// Transfers in flight: first block → last block of the run, or -1 for a lookup (extent not known yet).
    var uploading: [Int32: Int32] = [:]
    /// `complete` was asked: upload without waiting for fuller runs.
    var completing = false
    var runTimerArmed = false
    /// Listed in the node's `starved` queue.
    var starved = false
    /// Set when uploads of the segment stopped for good (fence object, conflicting object, non-retryable error).
    var stopReason: WoodpeckerError?
    var waiters: [UploadWaiter] = []
    var nextWaiterId: UInt64 = 0
    let fileQueue: FileQueue
    let pendingAppends = PendingAppends()

    init(ref: SegmentRef, path: String?, loop: EventLoop) {
        self.ref = ref
        self.path = path
        fileQueue = FileQueue(loop: loop)
    }

    var status: SegmentStatus {
        let held = blocks.values.map(\.info).sorted { $0.blockNumber < $1.blockNumber }
        return SegmentStatus(known: known || completedThrough != nil, fenced: fenced, blocks: held,
                             uploadedThrough: uploadedThrough, confirmedThrough: confirmedThrough)
    }

    /// True while block n is part of a run being uploaded (or looked up).
    func isUploading(_ n: Int32) -> Bool {
        uploading.contains { $0.key <= n && n <= max($0.key, $0.value) }
    }

    /// The held blocks p...q, the run's object as parts to write back to back; nil if one is not held.
    func runParts(from p: Int32, through q: Int32) -> [ByteBuffer]? {
        var parts: [ByteBuffer] = []
        parts.reserveCapacity(Int(q - p) + 1)
        for n in p...q {
            guard let h = blocks[n] else { return nil }
            parts.append(h.bytes)
        }
        return parts
    }

    /// Drops the held blocks up to `through`, subtracting their bytes from `total`.
    func dropHeld(through: Int32, counting total: inout Int) {
        if Int64(through) - Int64(uploadedThrough) <= Int64(blocks.count) {
            var n = uploadedThrough + 1
            while n <= through {
                if let h = blocks.removeValue(forKey: n) { total -= h.bytes.readableBytes }
                n += 1
            }
        } else {
            for n in blocks.keys where n <= through {
                if let h = blocks.removeValue(forKey: n) { total -= h.bytes.readableBytes }
            }
        }
    }

    func wakeWaiters() {
        for w in waiters where w.through <= uploadedThrough || stopReason != nil {
            resumeWaiter(w.id, stopReason.map { .failure($0) } ?? .success(()))
        }
    }

    func resumeWaiter(_ id: UInt64, _ result: Result<Void, WoodpeckerError>) {
        guard let i = waiters.firstIndex(where: { $0.id == id }) else { return }
        let w = waiters.remove(at: i)
        w.continuation.resume(with: result.mapError { $0 as any Error })
    }
}

/// Runs async operations one after another in submission order (a segment's file writes). Loop-thread only.
final class FileQueue: @unchecked Sendable {
    let loop: EventLoop
    private var tail: Task<Void, Never>?

    init(loop: EventLoop) { self.loop = loop }

    /// Runs `op` after every operation submitted before it; returns its result.
    func run(_ op: @escaping @Sendable () async throws -> Void) async throws {
        let previous = tail
        let result = ResultSlot()
        let task = Task<Void, Never>(executorPreference: loop) {
            await previous?.value
            do { try await op() } catch { result.error = error }
        }
        tail = task
        await task.value
        if let e = result.error { throw e }
    }

    /// Returns once every operation submitted so far has finished.
    func barrier() async throws {
        await tail?.value
    }
}

/// Records waiting for the segment's next group write, with the appends waiting on them. Loop-confined.
final class PendingAppends: @unchecked Sendable {
    /// Encoded records (block bytes shared with the held blocks, not copied).
    var parts: [ByteBuffer] = []
    var waiters: [CheckedContinuation<Void, any Error>] = []
    var queued = false

    final class Batch: @unchecked Sendable {
        var parts: [ByteBuffer] = []
        var waiters: [CheckedContinuation<Void, any Error>] = []

        func resume(_ error: (any Error)?) {
            let ws = waiters
            waiters.removeAll()
            for w in ws {
                if let error { w.resume(throwing: error) } else { w.resume() }
            }
        }
    }

    /// Moves everything queued into `batch`; the next append queues a new write.
    func take(into batch: Batch) {
        batch.parts = parts
        batch.waiters = waiters
        parts = []
        waiters = []
        queued = false
    }
}

private final class ResultSlot: @unchecked Sendable {
    var error: (any Error)?
}
