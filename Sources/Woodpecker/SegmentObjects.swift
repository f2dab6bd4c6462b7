import WoodpeckerCore
import WoodpeckerStorage

/// Object layout of one segment: `<prefix><logId>/<segmentId>/<n>.blk`, `m_<n>.blk`, `footer.blk`.
/// A fence object is a 1-byte object "F" at a block key: it stops the old writer's next conditional put.
struct SegmentObjects: Sendable {
    let store: any ObjectStore
    let prefix: String
    let logId: Int64
    let segmentId: Int64

    var dir: String { "\(prefix)\(logId)/\(segmentId)/" }
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
    func probeBlocks() async throws -> (blocks: [BlockInfo], stoppedAt: Int32) {
        try await probeBlocks(continuing: [])
    }

    /// Continues a probe after the already verified contiguous blocks `known` (0...known.count-1).
    func probeBlocks(continuing known: [BlockInfo]) async throws -> (blocks: [BlockInfo], stoppedAt: Int32) {
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
            let (blocks, next) = try await probeBlocks(continuing: known)
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
