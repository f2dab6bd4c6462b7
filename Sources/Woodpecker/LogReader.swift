import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// Reads a log in order from a position, following the tail.
///
/// Guarantees: entries come back in id order with no gaps and no duplicates; never past the last acknowledged
/// entry of an active segment or the LAC of a completed one; every byte returned passed its CRC checks.
/// `next` waits for new entries (woken by the in-process writer's acknowledgements; appends by another process
/// are picked up by polling storage every `crossProcessPollMs`).
public actor LogReader {
    public nonisolated var unownedExecutor: UnownedSerialExecutor { log.loop.asUnownedSerialExecutor() }
    let log: Log
    let readerId: UInt64
    /// Position of the next entry to return.
    public private(set) var position = LogMessageId.earliest
    /// Footer of completed segments, cached per segment id.
    private var footers: [Int64: SegmentFooter] = [:]
    /// Decoded block holding (or preceding) `position`.
    private var current: DecodedBlock?
    private var currentSegment: Int64 = -1
    /// Next block number to probe in an active segment written by another process.
    private var probeBlock: Int32 = 0
    /// The blocks of the object read last by the cross-process probe (one block, or a LogStore's run).
    private var probedRun: [DecodedBlock] = []
    private var closed = false

    init(log: Log, readerId: UInt64) {
        self.log = log
        self.readerId = readerId
    }

    // MARK: positioning

    /// Moves the reader. `.key`/`.timestamp` find the first entry at or after the given value; when there is none
    /// the reader waits at the tail.
    public func seek(to p: ReadPosition) async throws {
        current = nil
        switch p {
        case .earliest:
            position = try await earliestPosition()
        case .latest:
            position = try await endPosition()
        case let .id(id):
            position = id
        case let .key(k):
            let found = try await find { $0.lastKey >= k } entryMatch: { $0.key >= k }
            if let found { position = found } else { position = try await endPosition() }
        case let .timestamp(t):
            let found = try await find { $0.maxTimestamp >= t } entryMatch: { $0.timestamp >= t }
            if let found { position = found } else { position = try await endPosition() }
        }
        await log.readerMoved(readerId, to: position.segmentId)
    }

    private func earliestPosition() async throws -> LogMessageId {
        let m = try await log.logMeta().value
        let metas = try await log.segmentMetas()
        var p = LogMessageId(segmentId: metas.first?.value.segmentId ?? 0, entryId: 0)
        if m.truncatedSegmentId >= 0 {
            p = max(p, LogMessageId(segmentId: m.truncatedSegmentId, entryId: m.truncatedEntryId + 1))
        }
        return p
    }

    /// The id the next appended entry will have, as far as this process can tell.
    private func endPosition() async throws -> LogMessageId {
        let metas = try await log.segmentMetas()
        guard let last = metas.last else { return .earliest }
        let id = last.value.segmentId
        if await log.activeSegmentId == id {
            let blocks = await log.activeBlocks
            return LogMessageId(segmentId: id, entryId: (blocks.last?.lastEntryId ?? -1) + 1)
        }
        if last.value.state == .active {
            let probed = try await log.segmentStore(id).probeBlocks()
            return LogMessageId(segmentId: id, entryId: (probed.last?.lastEntryId ?? -1) + 1)
        }
        return LogMessageId(segmentId: id + 1, entryId: 0)
    }

    /// First entry whose block passes `blockMatch` and which passes `entryMatch`, searching segments in order.
    private func find(blockMatch: (BlockInfo) -> Bool, entryMatch: (SegmentEntry) -> Bool) async throws -> LogMessageId? {
        let start = try await earliestPosition()
        for s in try await log.segmentMetas() where s.value.segmentId >= start.segmentId {
            let id = s.value.segmentId
            let blocks = try await blockInfos(segment: id, state: s.value.state)
            guard let bi = blocks.infos.firstIndex(where: blockMatch) else { continue }
            for i in bi..<blocks.infos.count where blockMatch(blocks.infos[i]) {
                guard let block = try await loadBlock(segment: id, index: i, of: blocks.infos, compacted: blocks.compacted) else { continue }
                for (k, e) in block.entries.enumerated() where entryMatch(e) {
                    let eid = block.info.firstEntryId + Int64(k)
                    if eid > blocks.lac { break }
                    return max(start, LogMessageId(segmentId: id, entryId: eid))
                }
            }
        }
        return nil
    }

    /// Known block infos of a segment and the highest readable entry id.
    private func blockInfos(segment id: Int64, state: SegmentState) async throws -> (infos: [BlockInfo], compacted: Bool, lac: Int64) {
        if state != .active, let f = try await footer(id) {
            return (f.blocks, f.compacted, f.lac)
        }
        if await log.activeSegmentId == id {
            let b = await log.activeBlocks
            return (b, false, b.last?.lastEntryId ?? -1)
        }
        let b = try await log.segmentStore(id).probeBlocks()
        return (b, false, b.last?.lastEntryId ?? -1)
    }

    private func footer(_ id: Int64) async throws -> SegmentFooter? {
        if let f = footers[id] { return f }
        let f = try await log.segmentStore(id).readFooter()
        if let f { footers[id] = f }
        return f
    }

    private func loadBlock(segment: Int64, index: Int, of infos: [BlockInfo], compacted: Bool) async throws -> DecodedBlock? {
        if !compacted, let b = await log.cachedBlock(segment: segment, entryId: infos[index].firstEntryId) { return b }
        return try await log.segmentStore(segment).readBlock(at: index, of: infos, compacted: compacted)
    }

    // MARK: reading

    /// Returns up to `maxEntries` entries (and about `maxBytes`, at least one entry) from the current position,
    /// waiting up to `waitMs` for the first one. Returns an empty array when nothing arrived in time.
    public func next(maxEntries: Int = Limits.readBatchMaxEntries, maxBytes: Int = Limits.readBatchMaxBytes,
                     waitMs: UInt64 = 0) async throws -> [LogEntry] {
        let deadline = Clock.monotonicMillis() + waitMs
        while true {
            if closed { throw WoodpeckerError(.readerClosed, "reader of log \(log.name) is closed") }
            let got = try await readAvailable(maxEntries: maxEntries, maxBytes: maxBytes)
            if !got.isEmpty || waitMs == 0 { return got }
            let now = Clock.monotonicMillis()
            if now >= deadline { return [] }
            await log.waitForAppend(timeoutMs: min(deadline - now, log.config.crossProcessPollMs))
        }
    }

    /// Reads one entry, waiting as long as needed (bounded by `waitMs`; throws `.timeout` after it).
    public func readNext(waitMs: UInt64 = .max / 2) async throws -> LogEntry {
        let got = try await next(maxEntries: 1, maxBytes: 1, waitMs: waitMs)
        guard let e = got.first else { throw WoodpeckerError(.timeout, "no entry in log \(log.name) within \(waitMs) ms") }
        return e
    }

    private func readAvailable(maxEntries: Int, maxBytes: Int) async throws -> [LogEntry] {
        var out: [LogEntry] = []
        var bytes = 0
        var hops = 0
        while out.count < maxEntries && (out.isEmpty || bytes < maxBytes) && hops < 64 {
            let block: DecodedBlock?
            let lac: Int64
            do {
                block = try await blockAtPosition()
                if block == nil {
                    // Nothing at the position: move to the next segment if this one is finished.
                    if try await advanceIfSegmentDone() { hops += 1; continue }
                    break
                }
                lac = try await readableLimit(segment: position.segmentId)
            } catch {
                // Entries already collected (and passed by `position`) are returned; the error surfaces on the
                // next call, which starts at the failing entry.
                if out.isEmpty { throw error }
                break
            }
            guard let block else { break }
            var e = position.entryId
            while e <= block.info.lastEntryId && e <= lac && out.count < maxEntries && (out.isEmpty || bytes < maxBytes) {
                let entry = block.entries[Int(e - block.info.firstEntryId)]
                out.append(LogEntry(id: LogMessageId(segmentId: position.segmentId, entryId: e),
                                    key: entry.key, timestamp: entry.timestamp, payload: entry.payload))
                bytes += entry.payload.readableBytes
                e += 1
            }
            if e == position.entryId { break }
            position.entryId = e
        }
        return out
    }

    /// The highest entry id a reader may return from a segment right now.
    private func readableLimit(segment id: Int64) async throws -> Int64 {
        if let f = footers[id] { return f.lac }
        if await log.activeSegmentId == id { return await log.activeBlocks.last?.lastEntryId ?? -1 }
        return .max  // blocks probed in storage are durable and contiguous
    }

    /// The decoded block holding the entry at `position`, or nil when there is none (yet).
    private func blockAtPosition() async throws -> DecodedBlock? {
        if let c = current, currentSegment == position.segmentId,
           c.info.firstEntryId <= position.entryId, position.entryId <= c.info.lastEntryId {
            return c
        }
        let seg = position.segmentId
        if let b = await log.cachedBlock(segment: seg, entryId: position.entryId) {
            return remember(b, seg)
        }
        let objs = log.segmentStore(seg)
        if let f = try await footer(seg) {
            guard position.entryId <= f.lac, let i = SegmentCodec.blockIndex(containingEntry: position.entryId, in: f.blocks) else { return nil }
            var block = await takePrefetched(segment: seg, index: i)
            readAhead(objs, segment: seg, footer: f, after: i)
            if block == nil { block = try await objs.readBlock(at: i, of: f.blocks, compacted: f.compacted) }
            guard let b = block else {
                // Compaction replaced the originals after we cached the footer: reload it once.
                footers[seg] = nil
                guard let f2 = try await footer(seg), let j = SegmentCodec.blockIndex(containingEntry: position.entryId, in: f2.blocks),
                      let b2 = try await objs.readBlock(at: j, of: f2.blocks, compacted: f2.compacted)
                else { throw WoodpeckerError(.corrupted, "segment \(objs.location): block for entry \(position.entryId) is missing") }
                return remember(b2, seg)
            }
            return remember(b, seg)
        }
        // Active segment: the in-process writer's block list, else probe storage block by block.
        if await log.activeSegmentId == seg {
            let blocks = await log.activeBlocks
            guard let i = SegmentCodec.blockIndex(containingEntry: position.entryId, in: blocks) else { return nil }
            return try await objs.readBlock(at: i, of: blocks, compacted: false).map { remember($0, seg) }
        }
        if currentSegment != seg {
            probeBlock = 0
            probedRun = []
        }
        currentSegment = seg
        while true {
            // The run read last (blocks before `probeBlock`) may still hold the position.
            if let b = probedRun.first(where: { position.entryId <= $0.info.lastEntryId }) { return remember(b, seg) }
            let run: [DecodedBlock]?
            do {
                run = try await objs.readRun(number: probeBlock)
            } catch let e as WoodpeckerError where e.code == .segmentFenced {
                return nil  // recovery is sealing this segment; its footer will tell the rest
            }
            guard let run, let last = run.last else { return nil }
            probeBlock = last.info.blockNumber + 1
            probedRun = run
            if last.info.lastEntryId < position.entryId { continue }
        }
    }

    /// Blocks of a completed segment being fetched ahead of the reader (bounded by `readAheadBlocks`), so that a
    /// catch-up read from object storage overlaps the GETs of the next blocks with decoding this one.
    private var prefetch: [Int: Task<DecodedBlock?, any Error>] = [:]
    private var prefetchSegment: Int64 = -1

    private func readAhead(_ objs: any SegmentStore, segment: Int64, footer f: SegmentFooter, after i: Int) {
        let depth = log.config.readAheadBlocks
        guard depth > 0 else { return }
        if prefetchSegment != segment {
            prefetch.removeAll()
            prefetchSegment = segment
        }
        prefetch = prefetch.filter { $0.key > i }
        for j in (i + 1)..<min(f.blocks.count, i + 1 + depth) where prefetch[j] == nil {
            prefetch[j] = Task(executorPreference: log.loop) { try await objs.readBlock(at: j, of: f.blocks, compacted: f.compacted) }
        }
    }

    /// A prefetched block, or nil when none is ready for this position (or its fetch failed: read it directly).
    private func takePrefetched(segment: Int64, index: Int) async -> DecodedBlock? {
        guard prefetchSegment == segment, let t = prefetch.removeValue(forKey: index) else { return nil }
        return try? await t.value  // a failed prefetch is retried by the direct read, which reports the error
    }

    private func remember(_ b: DecodedBlock, _ seg: Int64) -> DecodedBlock {
        current = b
        currentSegment = seg
        return b
    }

    /// If the current segment is complete and fully read (or gone), moves to the next one.
    private func advanceIfSegmentDone() async throws -> Bool {
        let seg = position.segmentId
        if await log.activeSegmentId == seg { return false }
        guard let meta = try await log.segmentMeta(seg) else {
            // Missing: garbage collected (skip ahead) or not created yet (wait).
            let metas = try await log.segmentMetas()
            if let next = metas.first(where: { $0.value.segmentId > seg }) {
                move(to: LogMessageId(segmentId: next.value.segmentId, entryId: 0))
                return true
            }
            return false
        }
        if meta.value.state == .active { return false }
        guard let f = try await footer(seg) else { return false }
        guard position.entryId > f.lac else { return false }
        move(to: LogMessageId(segmentId: seg + 1, entryId: 0))
        // Skip over gaps in segment ids (a segment deleted while empty); stay if nothing newer exists.
        return true
    }

    private func move(to p: LogMessageId) {
        position = p
        current = nil
        footers = footers.filter { $0.key >= p.segmentId }
        log.assumeIsolated { $0.readerMoved(readerId, to: p.segmentId) }
    }

    public func close() {
        closed = true
        log.assumeIsolated { $0.readerMoved(readerId, to: nil) }
    }
}
