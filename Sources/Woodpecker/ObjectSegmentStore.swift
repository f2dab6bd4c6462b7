import WoodpeckerCore
import WoodpeckerStorage

/// Object layout of one segment: `<prefix><logId>/<segmentId>/<n>.blk`, `m_<n>.blk`, `footer.blk`.
/// A fence object is a 1-byte object "F" at a block key: it stops the old writer's next conditional put.
struct ObjectSegmentStore: SegmentStore {
    let store: any ObjectStore
    let maxConcurrentWrites: Int
    let prefix: String
    let logId: Int64
    let segmentId: Int64

    var dir: String { "\(prefix)\(logId)/\(segmentId)/" }
    var location: String { "\(store.description)/\(dir)" }
    func blockKey(_ n: Int32) -> String { "\(dir)\(n).blk" }
    func mergedKey(_ n: Int32) -> String { "\(dir)m_\(n).blk" }
    var footerKey: String { "\(dir)footer.blk" }
    static let fenceBytes = ByteBuffer(bytes: [0x46])

    static func isFence(_ b: ByteBuffer) -> Bool { b.readableBytes == 1 && b == fenceBytes }

    func readFooter() async throws -> SegmentFooter? {
        do {
            let bytes = try await store.get(footerKey)
            do {
                return try SegmentCodec.decodeFooter(bytes)
            } catch {
                throw WoodpeckerError(.corrupted, "footer \(store.description)/\(footerKey): \(error)")
            }
        } catch let e as WoodpeckerError where e.code == .objectNotFound {
            return nil
        }
    }

    func key(for info: BlockInfo, compacted: Bool) -> String {
        compacted ? mergedKey(info.blockNumber) : blockKey(info.blockNumber)
    }

    /// Reads and verifies one block; nil if it does not exist; throws `.segmentFenced` at a fence object.
    func readBlock(key: String) async throws -> DecodedBlock? {
        let bytes: ByteBuffer
        do {
            bytes = try await store.get(key)
        } catch let e as WoodpeckerError where e.code == .objectNotFound {
            return nil
        }
        if Self.isFence(bytes) { throw WoodpeckerError(.segmentFenced, "\(key) is a fence object") }
        do {
            return try SegmentCodec.decodeBlock(bytes)
        } catch {
            throw WoodpeckerError(.corrupted, "block \(store.description)/\(key): \(error)")
        }
    }

    /// Contiguous original blocks 0, 1, 2, ... up to the first missing object or fence. Every block is fully
    /// verified; a corrupt block ends the run (it was never acknowledged intact).
    func probeBlocks() async throws -> [BlockInfo] { try await probe(continuing: []).blocks }

    func readBlock(at index: Int, of blocks: [BlockInfo], compacted: Bool) async throws -> DecodedBlock? {
        try await readBlock(key: key(for: blocks[index], compacted: compacted))
    }

    func readBlock(number n: Int32) async throws -> DecodedBlock? {
        try await readBlock(key: blockKey(n))
    }

    /// Continues a probe after the already verified contiguous blocks `known` (0...known.count-1).
    private func probe(continuing known: [BlockInfo]) async throws -> (blocks: [BlockInfo], stoppedAt: Int32) {
        var infos = known
        var n = Int32(known.count)
        while true {
            let block: DecodedBlock?
            do {
                block = try await readBlock(key: blockKey(n))
            } catch let e as WoodpeckerError where e.code == .segmentFenced || e.code == .corrupted {
                return (infos, n)
            }
            guard let block else { return (infos, n) }
            guard block.info.blockNumber == n,
                  block.info.firstEntryId == (infos.last.map { $0.lastEntryId + 1 } ?? 0)
            else { return (infos, n) }
            infos.append(block.info)
            n += 1
        }
    }

    /// Places a fence after the last contiguous block so that the old writer cannot add blocks, and returns the
    /// blocks the fence sealed in. When the old writer wins the race for the fence key, the probe continues from
    /// where it stopped (never from block 0 again), so a fencer catches up with a writer that is still appending.
    func fence(retries: Int) async throws -> [BlockInfo] {
        var attempt = 0
        var known: [BlockInfo] = []
        let maxAttempts = max(1, retries) * 20
        while true {
            let (blocks, next) = try await probe(continuing: known)
            known = blocks
            do {
                try await store.putIfAbsent(blockKey(next), Self.fenceBytes)
                return blocks
            } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
                // Either another fencer (fine: already fenced) or the old writer just wrote this block.
                let existing = try? await store.get(blockKey(next))  // re-probed below either way
                if let existing, Self.isFence(existing) { return blocks }
                attempt += 1
                if attempt > maxAttempts {
                    throw WoodpeckerError(.storageNotWritable,
                        "could not fence \(dir) after \(maxAttempts) attempts: block \(next) exists but does not continue the verified blocks (corrupt or foreign); inspect the segment")
                }
            }
        }
    }

    /// Writes the footer (the segment's commit point). An existing footer with the same LAC is success.
    func writeFooter(_ footer: SegmentFooter) async throws {
        do {
            try await store.putIfAbsent(footerKey, SegmentCodec.encodeFooter(footer))
        } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
            guard let existing = try await readFooter(), existing.lac == footer.lac else {
                throw WoodpeckerError(.segmentStateInvalid,
                                      "\(footerKey) already exists with a different LAC; another writer completed this segment")
            }
        }
    }
}

extension ObjectSegmentStore {
    /// Conditional put of a block. "Already exists" is success only if the object holds exactly our bytes
    /// (a retried put that had landed); a fence object there means a newer writer took over.
    func writeBlock(_ n: Int32, _ bytes: ByteBuffer) async throws {
        do {
            try await store.putIfAbsent(blockKey(n), bytes)
        } catch let e as WoodpeckerError where e.code == .objectAlreadyExists {
            if let existing = try? await store.get(blockKey(n)), existing == bytes { return }
            throw WoodpeckerError(.lockLost, "segment \(location) was fenced by a newer writer; reopen the writer to continue")
        }
    }

    func compact(_ footer: SegmentFooter, targetBytes: Int) async throws -> SegmentFooter? {
        if footer.compacted { return footer }
        guard footer.blocks.count > 1 else { return nil }
        // Plan groups of consecutive original blocks of about the target size, then write each merged block.
        var groups: [[Int]] = [[]]
        var groupBytes = 0
        for (i, info) in footer.blocks.enumerated() {
            if !groups[groups.count - 1].isEmpty && groupBytes + info.size > targetBytes {
                groups.append([])
                groupBytes = 0
            }
            groups[groups.count - 1].append(i)
            groupBytes += info.size
        }
        var merged: [BlockInfo] = []
        var nextFirst: Int64 = 0
        for group in groups {
            var entries: [SegmentEntry] = []
            for i in group {
                guard let block = try await readBlock(at: i, of: footer.blocks, compacted: false) else {
                    throw WoodpeckerError(.corrupted, "block \(blockKey(footer.blocks[i].blockNumber)) listed in the footer is missing")
                }
                // Never carry entries past the LAC into the compacted copy.
                for (k, e) in block.entries.enumerated() where block.info.firstEntryId + Int64(k) <= footer.lac {
                    entries.append(e)
                }
            }
            guard !entries.isEmpty else { continue }
            let n = Int32(merged.count)
            let bytes = SegmentCodec.encodeBlock(blockNumber: n, firstEntryId: nextFirst, entries: entries, includeHeader: n == 0)
            try await store.put(mergedKey(n), bytes)
            merged.append(BlockInfo.of(n, nextFirst, entries, size: bytes.readableBytes))
            nextFirst += Int64(entries.count)
        }
        let compacted = SegmentFooter(blocks: merged, lac: footer.lac, compacted: true, totalRecords: footer.totalRecords)
        // The overwrite of the footer is the commit point: before it readers use the originals, after it the merged.
        try await store.put(footerKey, SegmentCodec.encodeFooter(compacted))
        return compacted
    }

    func removeOriginals(after compacted: SegmentFooter) async throws {
        guard compacted.compacted else { return }
        let originals = try await store.listAll(prefix: dir).map(\.key).filter {
            let file = $0.dropFirst(dir.count)
            return !file.hasPrefix("m_") && file != "footer.blk"
        }
        try await store.delete(keys: originals)
    }

    func deleteAll() async throws {
        let keys = try await store.listAll(prefix: dir).map(\.key)
        try await store.delete(keys: keys)
    }

    func release() async {}
}
