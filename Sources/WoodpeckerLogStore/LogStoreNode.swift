import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// Bounds and switches of a `LogStoreNode`.
public struct LogStoreNodeOptions: Sendable {
    /// Bytes of held blocks (in memory) beyond which appends fail with `.bufferFull`.
    public var maxBufferedBytes = 256 * 1024 * 1024
    /// An append of block n is refused unless `n <= uploadedThrough + maxWindowBlocks`.
    public var maxWindowBlocks: Int32 = 4096
    /// fdatasync every data-file append before replying (machine-crash durability on this node alone).
    public var syncWrites = false
    /// Block uploads in flight per segment.
    public var maxParallelUploadsPerSegment = 4
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
/// file per segment when it has a data directory), uploads blocks a writer confirmed to object storage at
/// `SegmentRef.blockKey(n)` (put-if-absent), and drops them once durable there.
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
        // A private copy: the request's bytes share the connection's receive buffer.
        let own = bytes.copyOfReadableBytes()
        seg.blocks[n] = Held(bytes: own, info: HeldBlock(blockNumber: n, firstEntryId: info.firstEntryId,
                                                          lastEntryId: info.lastEntryId, size: own.readableBytes))
        bufferedBytes += own.readableBytes
        if dataDirectory != nil {
            do {
                try await persist(seg, [.block(n, confirmedThrough: seg.confirmedThrough, bytes: own)])
            } catch {
                if let h = seg.blocks[n], h.bytes == own, !seg.inFlight.contains(n), !seg.durable.contains(n) {
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

    /// Blocks 0...through are durable in object storage by another node's report (passed on by the writer): marks
    /// them so without looking them up, and drops the copies. A block whose lookup or upload is in flight is left
    /// to it. Bounded by the buffer window (a larger claim is cut to it).
    private func reportedDurable(_ seg: SegmentState, through claimed: Int32) async {
        let through = Int32(clamping: min(Int64(claimed), Int64(seg.uploadedThrough) + Int64(options.maxWindowBlocks)))
        guard through > seg.uploadedThrough, seg.completedThrough == nil else { return }
        var n = seg.uploadedThrough + 1
        while n <= through {
            if !seg.inFlight.contains(n) && seg.durable.insert(n).inserted { reportedDurableBlocks += 1 }
            n += 1
        }
        await advance(seg)
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
                                                              lastEntryId: info.lastEntryId, size: bytes.readableBytes))
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
        let data = SegmentFiles.encode(all)
        let sync = options.syncWrites
        let loop = loop
        let pending = seg.pendingAppends
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            pending.data.writeBuffer(data)
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
                        let bytes = batch.data
                        try await loop.runBlocking { try SegmentFiles.append(path, bytes, sync: sync) }
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

    /// Starts uploads (or existence checks, for blocks this node does not hold) of confirmed blocks after
    /// `uploadedThrough`, at most `maxParallelUploadsPerSegment` at a time, in block order.
    private func pump(_ ref: SegmentRef) {
        guard !stopping, let seg = segments[ref], seg.stopReason == nil, seg.completedThrough == nil else { return }
        var n = seg.uploadedThrough + 1
        while n <= seg.confirmedThrough && seg.inFlight.count < options.maxParallelUploadsPerSegment {
            if !seg.inFlight.contains(n) && !seg.durable.contains(n) {
                guard uploadsInFlight < options.maxParallelUploads else {
                    if !seg.starved {
                        seg.starved = true
                        starved.append(ref)
                    }
                    return
                }
                seg.inFlight.insert(n)
                uploadsInFlight += 1
                activeTasks += 1
                let block = n
                Task(executorPreference: loop) { await self.transfer(ref, block) }
            }
            if n == Int32.max { break }
            n += 1
        }
    }

    private enum TransferOutcome { case durable, fenceObject, conflict(String), missing, failed(WoodpeckerError) }

    /// Uploads (or confirms the existence of) one block, retrying retryable failures with backoff until the node
    /// stops.
    private func transfer(_ ref: SegmentRef, _ n: Int32) async {
        defer {
            uploadsInFlight -= 1
            resumeStarved()
            taskEnded()
        }
        var backoff = options.retryBackoffMs.first
        while true {
            guard !stopping, let seg = segments[ref], seg.stopReason == nil else { break }
            let key = ref.blockKey(n)
            let outcome = await attempt(key: key, bytes: seg.blocks[n]?.bytes, lookFirst: !seg.uploader)
            guard let seg = segments[ref] else { return }
            switch outcome {
            case .durable:
                seg.inFlight.remove(n)
                seg.durable.insert(n)
                uploadedBlocks += 1
                await advance(seg)
                pump(ref)
                return
            case .fenceObject:
                Diagnostics.warn("logstore: \(ref) is fenced in object storage (fence object at \(key)); uploads stopped")
                seg.fenced = true
                seg.stopReason = WoodpeckerError(.segmentFenced, "\(ref): a fence object stands at \(key); the segment was taken over")
                seg.inFlight.remove(n)
                seg.wakeWaiters()
                if dataDirectory != nil { try? await persist(seg, [.fence]) }  // best effort: storage holds the fence anyway
                return
            case let .conflict(what):
                Diagnostics.error("logstore: \(key) holds \(what) than block \(n) held here; uploads of \(ref) stopped")
                seg.stopReason = WoodpeckerError(.segmentStateInvalid, "\(key) holds \(what) than the block this node holds")
                seg.inFlight.remove(n)
                seg.wakeWaiters()
                return
            case .missing:
                break  // another node has not uploaded it yet: check again after the backoff
            case let .failed(e):
                guard e.isRetryable else {
                    Diagnostics.error("logstore: upload of \(key): \(e); uploads of \(ref) stopped")
                    seg.stopReason = e
                    seg.inFlight.remove(n)
                    seg.wakeWaiters()
                    return
                }
                Diagnostics.debug("logstore: upload of \(key): \(e); retrying in \(backoff) ms")
            }
            await loop.sleep(ms: backoff)
            backoff = min(backoff * 2, options.retryBackoffMs.max)
        }
        segments[ref]?.inFlight.remove(n)
    }

    /// Gives freed node-wide upload slots to segments that waited for one, oldest first.
    private func resumeStarved() {
        while uploadsInFlight < options.maxParallelUploads && !starved.isEmpty {
            let ref = starved.removeFirst()
            segments[ref]?.starved = false
            pump(ref)
        }
    }

    /// With `lookFirst` (a node that is not the segment's uploader), looks for the object first: usually the
    /// uploader put it already, and a HEAD is far cheaper than a conditional write that fails (a temp file and
    /// fsync locally, the whole body on S3). An object of the block's size is compared on its first 4 KiB (the block
    /// header and the first records with their CRCs), which tells this block from a foreign one without reading it
    /// all. The uploader puts at once: the object is normally not there yet.
    private func attempt(key: String, bytes: ByteBuffer?, lookFirst: Bool = true) async -> TransferOutcome {
        do {
            if lookFirst, let bytes, let info = try await store.head(key) {
                if info.size == bytes.readableBytes {
                    let n = min(bytes.readableBytes, 4096)
                    let head = try await store.get(key, range: 0..<n)
                    if head == (try bytes.getSlice(at: bytes.readerIndex, length: n)) { return .durable }
                }
                let existing = try await store.get(key)
                if existing == bytes { return .durable }
                if existing.readableBytesArray == [UInt8(ascii: "F")] { return .fenceObject }
                return .conflict("\(existing.readableBytes) other bytes")
            }
            if let bytes {
                do {
                    try await store.putIfAbsent(key, bytes)
                    return .durable
                } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
                    let existing = try await store.get(key)
                    if existing == bytes { return .durable }
                    if existing.readableBytesArray == [UInt8(ascii: "F")] { return .fenceObject }
                    return .conflict("\(existing.readableBytes) other bytes")
                }
            }
            guard let info = try await store.head(key) else { return .missing }
            if info.size == 1 {
                let existing = try await store.get(key)
                if existing.readableBytesArray == [UInt8(ascii: "F")] { return .fenceObject }
            }
            return .durable
        } catch let e as WoodpeckerError {
            return .failed(e)
        } catch {
            return .failed(WoodpeckerError(.internalError, "\(key): \(error)"))
        }
    }

    /// Moves `uploadedThrough` over the contiguous durable run and drops those blocks (and the data file once the
    /// segment holds nothing).
    private func advance(_ seg: SegmentState) async {
        let before = seg.uploadedThrough
        while seg.durable.remove(seg.uploadedThrough + 1) != nil {
            seg.uploadedThrough += 1
            if let h = seg.blocks.removeValue(forKey: seg.uploadedThrough) { bufferedBytes -= h.bytes.readableBytes }
        }
        guard seg.uploadedThrough > before else { return }
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

    /// Marks durable every block in `uploadedThrough+1...last` this node does not hold and object storage has;
    /// fails with `.objectNotFound` naming the first that is in neither.
    private func checkMissing(_ seg: SegmentState, through last: Int32) async throws {
        guard seg.uploadedThrough < last else { return }
        var n = seg.uploadedThrough + 1
        while n <= last {
            if seg.blocks[n] == nil && !seg.durable.contains(n) && !seg.inFlight.contains(n) {
                let key = seg.ref.blockKey(n)
                switch await attempt(key: key, bytes: nil) {
                case .durable: seg.durable.insert(n)
                case .missing, .fenceObject, .conflict:
                    throw WoodpeckerError(.objectNotFound,
                                          "complete of \(seg.ref) through block \(last): block \(n) is neither held by this node nor in object storage at \(key)")
                case let .failed(e): throw e
                }
            }
            n += 1
        }
        await advance(seg)
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
    /// Uploaded (or found durable) but not yet contiguous with `uploadedThrough`.
    var durable: Set<Int32> = []
    var inFlight: Set<Int32> = []
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
    var data = ByteBuffer()
    var waiters: [CheckedContinuation<Void, any Error>] = []
    var queued = false

    final class Batch: @unchecked Sendable {
        var data = ByteBuffer()
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
        batch.data = data
        batch.waiters = waiters
        data = ByteBuffer()
        waiters = []
        queued = false
    }
}

private final class ResultSlot: @unchecked Sendable {
    var error: (any Error)?
}
