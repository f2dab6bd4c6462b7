import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore
import WoodpeckerStorage

/// One segment in QuorumBuffer mode: every block goes to each node of the segment's ensemble in parallel and
/// counts as written once `ackQuorum` nodes hold it. The nodes upload confirmed blocks to object storage on
/// their own (conditional puts, so exactly one copy of each block lands) and then drop them; footers,
/// compaction and reads of completed segments use the objects directly (`ObjectSegmentStore`, same layout).
///
/// Guarantees on top of `SegmentStore`'s:
/// - `writeBlock` returns once a quorum holds the block; a replica that fails finally (after
///   `replicaAttempts`) is dropped from the segment, and `shouldRoll()` asks the writer to move to a fresh
///   ensemble as soon as enough healthy nodes exist; a write that cannot reach a quorum fails retryably.
/// - The writer's confirmed point (highest block such that it and all before it reached a quorum) travels on
///   every append and, when the writer goes quiet, in a delayed push; nodes never upload past it.
/// - `fence` (recovery by the next writer) needs `ensemble - ackQuorum + 1` nodes that *know* the segment (a node
///   restarted without its data refuses to count), so every acknowledged block is on one responder or already in
///   object storage. It then copies into object storage every block any responder holds past the objects'
///   contiguous prefix, in order, before sealing. Woodpecker's rule (the minimum of the replies) would drop a
///   block held by one responder and by a node that is down; this one keeps it.
/// - `writeFooter` first has a node make blocks 0...last durable in object storage (or verifies them there).
/// Confined to the client's loop: LogWriter and Log (loop actors) are its only callers.
final class QuorumSegmentStore: SegmentStore, @unchecked Sendable {
    let objects: ObjectSegmentStore
    let pool: LogStorePool
    let ref: SegmentRef
    /// The nodes of this segment (recorded in its metadata); empty for a read-only view.
    let ensemble: [String]
    let maxConcurrentWrites: Int
    var settings: QuorumSettings { pool.settings }
    var loop: EventLoop { pool.loop }

    private var excluded: [String: WoodpeckerError] = [:]
    /// Per node, the connection generation of its first acknowledgement in this segment.
    private var generations: [String: UInt64] = [:]
    private var ackedAhead: Set<Int32> = []
    private(set) var confirmedThrough: Int32 = -1
    private var pushedThrough: Int32 = -1
    /// Highest durable point any node of the ensemble reported (blocks 0...n are in object storage), and the one
    /// last pushed: passed on to the others so that they drop their copies without looking the blocks up.
    private(set) var durableThrough: Int32 = -1
    private var pushedDurable: Int32 = -1
    private var durablePolls = 0
    static let maxDurablePolls = 8
    private var pushScheduled = false

    init(objects: ObjectSegmentStore, pool: LogStorePool, ensemble: [String], maxConcurrentWrites: Int) {
        self.objects = objects
        self.pool = pool
        self.ensemble = ensemble
        self.maxConcurrentWrites = maxConcurrentWrites
        self.ref = SegmentRef(objectPrefix: objects.prefix, logId: objects.logId, segmentId: objects.segmentId)
    }

    var location: String { "quorum[\(ensemble.joined(separator: ","))] \(objects.location)" }

    // MARK: writing

    func writeBlock(_ n: Int32, _ bytes: ByteBuffer) async throws {
        let targets = ensemble.filter { excluded[$0] == nil }
        let needed = settings.ackQuorum
        guard targets.count >= needed else {
            throw WoodpeckerError(.nodeUnavailable,
                "\(ref): only \(targets.count) of the ensemble \(ensemble) still take writes, \(needed) needed (\(failureSummary)); the writer rolls to a fresh ensemble",
                retryable: true)
        }
        let confirmed = confirmedThrough
        pushedThrough = max(pushedThrough, confirmed)
        pushedDurable = max(pushedDurable, durableThrough)
        let uploader = self.uploader
        let wait = QuorumWait(needed: needed, total: targets.count)
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            wait.continuation = c
            for address in targets {
                let told = address == uploader ? confirmed : Self.lagging(confirmed)
                Task(executorPreference: loop) {
                    let error = await self.replicate(to: address, n, bytes, told)
                    wait.record(address, error, ref: self.ref, block: n)
                }
            }
        }
        acknowledged(n)
    }

    /// Sends block `n` to one replica with bounded retries; returns the final error, or nil once it holds it.
    private func replicate(to address: String, _ n: Int32, _ bytes: ByteBuffer, _ confirmed: Int32) async -> WoodpeckerError? {
        let node = pool.client(address)
        var attempt = 0
        // A node at its memory bound is healthy but behind on uploads: wait for it (bounded) rather than drop it,
        // so that a produce rate above the object store's becomes backpressure instead of failed writes.
        let busyDeadline = Clock.monotonicMillis() + settings.busyWaitMs
        var busyBackoff: UInt64 = 5
        while true {
            if let e = excluded[address] { return e }  // dropped meanwhile by another block's failure
            do {
                let uploaded = try await node.append(ref, block: n, bytes: bytes, confirmedThrough: confirmed,
                                                     durableThrough: durableThrough, uploader: address == uploader)
                noteDurable(uploaded)
                // A node reached over a new connection may be a restarted process that lost earlier blocks of
                // this segment (no data directory): its later acknowledgements cannot count, and its fence reply
                // would claim blocks it no longer has. Drop it from the segment; the writer rolls once it can.
                let g = node.connectionGeneration
                guard let first = generations[address] else {
                    generations[address] = g
                    return nil
                }
                if g == first { return nil }
                let e = WoodpeckerError(.nodeUnavailable,
                    "connection to \(address) was re-established during \(ref); the node may have restarted", retryable: true)
                if excluded[address] == nil { excluded[address] = e }
                return e
            } catch {
                let e = error as? WoodpeckerError ?? WoodpeckerError(.internalError, "\(address): \(error)")
                if e.code == .bufferFull && Clock.monotonicMillis() < busyDeadline {
                    // A node told a lagging confirmed point may be full of blocks it is not yet allowed to drop:
                    // give it the whole confirmed point, so that it finds (or uploads) them and frees room.
                    if confirmedThrough >= 0,
                       let uploaded = try? await node.updateConfirmed(ref, through: confirmedThrough, durableThrough: durableThrough,
                                                                      uploader: address == uploader) {
                        noteDurable(uploaded)
                    }
                    await loop.sleep(ms: busyBackoff)
                    busyBackoff = min(busyBackoff * 2, 200)
                    continue
                }
                attempt += 1
                if e.isRetryable && attempt < settings.replicaAttempts {
                    await loop.sleep(ms: UInt64(5 << min(attempt, 6)))
                    continue
                }
                if excluded[address] == nil { excluded[address] = e }
                if e.code == .nodeUnavailable || e.code == .timeout { pool.markDown(address) }
                return e
            }
        }
    }

    private var failureSummary: String {
        excluded.map { "\($0.key): \($0.value.message)" }.sorted().joined(separator: "; ")
    }

    private func acknowledged(_ n: Int32) {
        ackedAhead.insert(n)
        while ackedAhead.remove(confirmedThrough + 1) != nil { confirmedThrough += 1 }
        schedulePush()
    }

    /// Pushes the confirmed point to the nodes a moment after the last acknowledgement, unless a later append
    /// carried it already; at most one push per delay window. Also pushes a durable point that advanced since the
    /// last push, learning the uploader's from its answer, so that once the writer is quiet the other nodes drop
    /// their copies without a lookup per block. While uploads trail the confirmed point and nothing else moves,
    /// the uploader is asked again at doubling intervals, at most `maxDurablePolls` times.
    private func schedulePush() {
        guard !pushScheduled else { return }
        if confirmedThrough > pushedThrough || durableThrough > pushedDurable {
            durablePolls = 0
        } else if durableThrough < confirmedThrough && durablePolls < Self.maxDurablePolls {
            durablePolls += 1
        } else {
            return
        }
        pushScheduled = true
        loop.schedule(afterMs: settings.confirmPushDelayMs << UInt64(durablePolls)) { [self] in
            pushScheduled = false
            let c = confirmedThrough
            let d = durableThrough
            let progress = c > pushedThrough || d > pushedDurable
            if progress { durablePolls = 0 }
            guard progress || durablePolls > 0 else { return }
            pushedThrough = max(pushedThrough, c)
            pushedDurable = max(pushedDurable, d)
            let uploader = self.uploader
            for address in ensemble where excluded[address] == nil {
                let isUploader = address == uploader
                // Without progress only the uploader is asked (for its durable point).
                guard isUploader || progress else { continue }
                let told = isUploader ? c : Self.lagging(c)
                guard told >= 0 || d >= 0 else { continue }
                let node = pool.client(address)
                let ref = self.ref
                // Advisory: a lost push only delays that node's uploads until the next append or `complete`
                // carries the point again.
                Task(executorPreference: loop) {
                    if let uploaded = try? await node.updateConfirmed(ref, through: told, durableThrough: d, uploader: isUploader) {
                        self.noteDurable(uploaded)
                    }
                    if isUploader { self.schedulePush() }
                }
            }
        }
    }

    /// A node reported blocks 0...n durable in object storage.
    private func noteDurable(_ n: Int32) {
        guard n > durableThrough else { return }
        durableThrough = min(n, confirmedThrough)
        schedulePush()
    }

    /// The node told the confirmed point at once, so that it uploads each block as soon as it is confirmed. The
    /// others hear it `uploadLagBlocks` later (at once when they report being full): by then the uploader has
    /// normally put those blocks in object storage, the others find them there (a HEAD) and drop their copies, so
    /// node memory stays bounded without every block being written three times. If the uploader is lost they
    /// still upload, a little later; when it is dropped from the segment the next live node takes over. Spread
    /// over the ensemble by segment id, so that the partitions of a broker use every node.
    var uploader: String? {
        let live = ensemble.filter { excluded[$0] == nil }
        guard !live.isEmpty else { return nil }
        return live[Int(ref.segmentId % Int64(live.count))]
    }

    static let uploadLagBlocks: Int32 = 16
    static func lagging(_ confirmed: Int32) -> Int32 { confirmed - uploadLagBlocks }

    /// True once a replica was dropped and a full healthy ensemble is available to roll onto.
    func shouldRoll() -> Bool {
        !excluded.isEmpty && excluded.values.allSatisfy { $0.code != .segmentFenced }
            && pool.healthyCount >= settings.ensembleSize
    }

    // MARK: completion and recovery

    /// Has a node make blocks 0...last durable in object storage (falling back to checking the objects when no
    /// node can), then writes the footer there.
    func writeFooter(_ footer: SegmentFooter) async throws {
        if let last = footer.blocks.last?.blockNumber {
            try await makeDurable(through: last, blocks: footer.blocks.count)
        }
        try await objects.writeFooter(footer)
    }

    private func makeDurable(through last: Int32, blocks count: Int) async throws {
        var errors: [String] = []
        let nodes = ensemble.isEmpty ? pool.nodes : ensemble
        // The uploader first: it holds (or has uploaded) every block. The others then only find the objects and
        // drop their copies, which need not hold up the writer.
        if let uploader, nodes.contains(uploader) {
            do {
                try await pool.client(uploader).complete(ref, lastBlock: last)
                let ref = self.ref
                for address in nodes where address != uploader {
                    let node = pool.client(address)
                    // Only frees that node's copies (the uploader made the blocks durable); a node that misses it
                    // drops them once its idle-segment sweep finds the footer in object storage.
                    Task(executorPreference: loop) { try? await node.complete(ref, lastBlock: last) }
                }
                return
            } catch {
                errors.append("\(uploader): \(error)")
            }
        }
        let ok = await withTaskGroup(of: String?.self) { group in
            for address in nodes {
                let node = pool.client(address)
                let ref = self.ref
                group.addTask(executorPreference: loop) {
                    do {
                        try await node.complete(ref, lastBlock: last)
                        return nil
                    } catch {
                        return "\(address): \(error)"
                    }
                }
            }
            var anyOK = false
            for await r in group {
                if let r { errors.append(r) } else { anyOK = true }
            }
            return anyOK
        }
        if ok { return }
        // No node could confirm it (all down, or each misses blocks the others hold): the objects may still be
        // complete, uploaded before the nodes went away.
        if try await objects.probeBlocks().count >= count { return }
        throw WoodpeckerError(.nodeUnavailable,
            "\(ref): blocks 0...\(last) are not yet all in object storage and no LogStore of \(nodes) could upload them (\(errors.joined(separator: "; "))); retry when the nodes are back",
            retryable: true)
    }

    /// Recovery after the previous writer stopped: fence the ensemble, copy every block a responder holds past
    /// the objects' prefix into object storage, then seal the objects with a fence object.
    func fence(retries: Int) async throws -> [BlockInfo] {
        guard !ensemble.isEmpty else {
            throw WoodpeckerError(.invalidArgument, "\(ref) was written in QuorumBuffer mode; recovery needs its ensemble")
        }
        var known: [(String, SegmentStatus)] = []
        var errors: [String] = []
        // One node after the other, each bounded by its request timeout (a node that is down fails at once);
        // recovery is rare and three round trips are cheap. A task group here with `(String, Result<...>)` child
        // results crashed the release broker (compat/suites/quorum_s3_restart.sh): Swift 6.3.1 miscompiles that
        // shape at -O, reproduced without any of our code in compat/tools/taskgroup-miscompile.
        for address in ensemble {
            do {
                let s = try await pool.client(address).fence(ref)
                if s.known {
                    known.append((address, s))
                } else {
                    errors.append("\(address): does not hold the segment (a node without a data directory that restarted)")
                }
            } catch {
                errors.append("\(address): \((error as? WoodpeckerError)?.message ?? "\(error)")")
            }
        }
        guard known.count >= settings.fenceCoverage else {
            throw WoodpeckerError(.nodeUnavailable,
                "cannot recover \(ref): \(known.count) of the ensemble \(ensemble) answered with its state and \(settings.fenceCoverage) are needed so that no acknowledged entry is missed (\(errors.joined(separator: "; "))); start the missing LogStores and retry",
                retryable: true)
        }
        var blocks = try await objects.probeBlocks()
        copying: while true {
            let n = Int32(blocks.count)
            let holders = known.filter { $0.1.blocks.contains { $0.blockNumber == n } }.map(\.0)
            for address in holders {
                guard let bytes = try? await pool.client(address).readBlock(ref, number: n),
                      let block = try? SegmentCodec.decodeBlock(bytes),
                      block.info.blockNumber == n,
                      block.info.firstEntryId == (blocks.last.map { $0.lastEntryId + 1 } ?? 0)
                else { continue }
                do {
                    try await objects.writeBlock(n, bytes)
                } catch let e as WoodpeckerError where e.code == .lockLost {
                    break copying  // another recoverer sealed the objects first; its fence decides
                }
                blocks.append(block.info)
                continue copying
            }
            break
        }
        return try await objects.fence(retries: retries)
    }

    // MARK: reading (object storage; confirmed blocks still only on the nodes as a fallback)

    func readBlock(at index: Int, of blocks: [BlockInfo], compacted: Bool) async throws -> DecodedBlock? {
        if let b = try await objects.readBlock(at: index, of: blocks, compacted: compacted) { return b }
        guard !compacted else { return nil }
        // A block in the list is confirmed (the writer's acknowledged blocks or a footer's), so any node that still
        // holds it may serve it until its upload lands.
        let n = blocks[index].blockNumber
        for address in ensemble.isEmpty ? pool.nodes : ensemble {
            if let bytes = try? await pool.client(address).readBlock(ref, number: n),
               let b = try? SegmentCodec.decodeBlock(bytes), b.info.blockNumber == n {
                return b
            }
        }
        return nil
    }

    /// Blocks another process appended, once they are in object storage (unconfirmed node data is never read).
    func readRun(number n: Int32) async throws -> [DecodedBlock]? { try await objects.readRun(number: n) }
    func probeBlocks() async throws -> [BlockInfo] { try await objects.probeBlocks() }
    func readFooter() async throws -> SegmentFooter? { try await objects.readFooter() }
    func compact(_ footer: SegmentFooter, targetBytes: Int) async throws -> SegmentFooter? {
        try await objects.compact(footer, targetBytes: targetBytes)
    }
    func removeOriginals(after compacted: SegmentFooter) async throws { try await objects.removeOriginals(after: compacted) }
    func deleteAll() async throws { try await objects.deleteAll() }
    func release() async {}
}

/// Collects the replies of one block's fan-out: resumes once `needed` replicas hold it, or fails once so many
/// have failed that the quorum is out of reach. Loop-confined.
private final class QuorumWait: @unchecked Sendable {
    let needed: Int
    let total: Int
    var continuation: CheckedContinuation<Void, any Error>?
    private var successes = 0
    private var failures: [(String, WoodpeckerError)] = []

    init(needed: Int, total: Int) {
        self.needed = needed
        self.total = total
    }

    func record(_ address: String, _ error: WoodpeckerError?, ref: SegmentRef, block: Int32) {
        guard let c = continuation else { return }
        guard let error else {
            successes += 1
            if successes >= needed {
                continuation = nil
                c.resume()
            }
            return
        }
        failures.append((address, error))
        guard failures.count > total - needed else { return }
        continuation = nil
        let detail = failures.map { "\($0.0): \($0.1.message)" }.joined(separator: "; ")
        if failures.contains(where: { $0.1.code == .segmentFenced }) {
            c.resume(throwing: WoodpeckerError(.lockLost,
                "\(ref) was fenced by a newer writer (\(detail)); reopen the writer to continue"))
        } else {
            c.resume(throwing: WoodpeckerError(.nodeUnavailable,
                "\(ref) block \(block): \(failures.count) of \(total) LogStores failed, \(needed) must hold it (\(detail))",
                retryable: true))
        }
    }
}
