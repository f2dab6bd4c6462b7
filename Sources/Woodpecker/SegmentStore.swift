import WoodpeckerCore
import WoodpeckerStorage

/// Where one segment's blocks and footer live. Two layouts:
/// - `ObjectSegmentStore`: one object per block in an `ObjectStore` (S3, or files through `LocalFileStore`);
///   blocks upload in parallel; fencing by a conditional put of a fence object.
/// - `FileSegmentStore`: blocks appended to one `data.log` per segment on a local filesystem, one `fdatasync`
///   per block (the original's local mode); fencing by a `write.fence` file checked under a `flock`.
///
/// Shared guarantees: `writeBlock` returns once the block is durable, or throws `.lockLost` when a newer writer
/// fenced the segment; `fence` returns the contiguous, verified blocks it sealed in (nothing written after it
/// can be acknowledged); the footer is the commit point of a completed segment; every read verifies CRCs.
protocol SegmentStore: Sendable {
    /// Where the segment lives, for messages (`file:///...` path or object prefix).
    var location: String { get }
    /// Writes this writer may have in flight at once (acknowledgements still complete in order).
    var maxConcurrentWrites: Int { get }
    /// Writes block `n` (its encoded bytes); blocks are written in increasing `n` order.
    func writeBlock(_ n: Int32, _ bytes: ByteBuffer) async throws
    /// The block at `index` of `blocks` (a footer's or the writer's list), verified; nil if it does not exist.
    func readBlock(at index: Int, of blocks: [BlockInfo], compacted: Bool) async throws -> DecodedBlock?
    /// The blocks stored together starting at block `n` (one block, or a LogStore's run of blocks n...m), found by
    /// probing (active segments of another process); nil when not (yet) there. `n` must be a position the chain
    /// reaches: 0, or the block after a previous answer's last.
    func readRun(number n: Int32) async throws -> [DecodedBlock]?
    /// The contiguous verified blocks from the start, stopping at the first missing, torn or fenced one.
    func probeBlocks() async throws -> [BlockInfo]
    /// Stops the current writer and returns the blocks sealed in.
    func fence(retries: Int) async throws -> [BlockInfo]
    /// Writes the footer; an existing footer with the same LAC is success.
    func writeFooter(_ footer: SegmentFooter) async throws
    func readFooter() async throws -> SegmentFooter?
    /// Merges the blocks of a completed segment into larger ones and returns the new (compacted) footer, or nil
    /// when this layout does not compact (local files are already one file).
    func compact(_ footer: SegmentFooter, targetBytes: Int) async throws -> SegmentFooter?
    /// Removes the original blocks a compacted footer replaced (idempotent).
    func removeOriginals(after compacted: SegmentFooter) async throws
    /// Deletes everything of the segment.
    func deleteAll() async throws
    /// The writer is done with the segment (close files); reading still works.
    func release() async
    /// True when the writer should complete this segment and continue in a new one (a replica was lost and a
    /// replacement is available). Called on the writer's loop.
    func shouldRoll() -> Bool
}

extension SegmentStore {
    func shouldRoll() -> Bool { false }
}
