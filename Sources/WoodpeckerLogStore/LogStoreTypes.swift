import WoodpeckerCore

/// Names one segment on a LogStore node. A node is multi-tenant: the same node buffers segments of many logs,
/// of many writers, under many object prefixes. The node uploads block `n` of the segment to the object key
/// `<objectPrefix><logId>/<segmentId>/<n>.blk` in its own object store (the layout `ObjectSegmentStore` reads).
public struct SegmentRef: Sendable, Hashable, CustomStringConvertible {
    public var objectPrefix: String
    public var logId: Int64
    public var segmentId: Int64

    public init(objectPrefix: String, logId: Int64, segmentId: Int64) {
        self.objectPrefix = objectPrefix
        self.logId = logId
        self.segmentId = segmentId
    }

    /// The object-key directory of the segment.
    public var directory: String { "\(objectPrefix)\(logId)/\(segmentId)/" }
    public func blockKey(_ n: Int32) -> String { "\(directory)\(n).blk" }
    public var description: String { "segment \(logId)/\(segmentId) under '\(objectPrefix)'" }
}

/// One block a node holds (in memory or in its data directory) and has not yet dropped.
public struct HeldBlock: Sendable, Equatable {
    public var blockNumber: Int32
    public var firstEntryId: Int64
    public var lastEntryId: Int64
    public var size: Int

    public init(blockNumber: Int32, firstEntryId: Int64, lastEntryId: Int64, size: Int) {
        self.blockNumber = blockNumber
        self.firstEntryId = firstEntryId
        self.lastEntryId = lastEntryId
        self.size = size
    }
}

/// What a node knows of one segment (the answer to `fence` and `status`).
public struct SegmentStatus: Sendable, Equatable {
    /// False when the node's reply proves nothing about which blocks exist: it holds no state for the segment and
    /// has no data directory (it may have lost the segment in a restart). Such a reply must not count towards a
    /// fence quorum. A node with a data directory is always `known` (it records a segment before acknowledging
    /// any of its blocks, so holding nothing means it acknowledged nothing).
    public var known: Bool
    /// Whether appends to the segment are refused from now on.
    public var fenced: Bool
    /// Blocks the node still holds, ascending by number (blocks already durable in object storage are dropped).
    public var blocks: [HeldBlock]
    /// Highest n such that blocks 0...n are durable in object storage by this node's knowledge; -1 for none.
    public var uploadedThrough: Int32
    /// Highest block number the writer told this node is confirmed by a quorum; -1 for none.
    public var confirmedThrough: Int32

    public init(known: Bool, fenced: Bool, blocks: [HeldBlock], uploadedThrough: Int32, confirmedThrough: Int32) {
        self.known = known
        self.fenced = fenced
        self.blocks = blocks
        self.uploadedThrough = uploadedThrough
        self.confirmedThrough = confirmedThrough
    }
}

/// A node's health report.
public struct NodeHealth: Sendable, Equatable {
    /// Random per process start: a change tells a client the node restarted.
    public var incarnation: UInt64
    public var bufferedBytes: Int
    public var maxBufferedBytes: Int
    public var segments: Int
    public var uploadedBlocks: Int64
    public var hasDataDirectory: Bool

    public init(incarnation: UInt64, bufferedBytes: Int, maxBufferedBytes: Int, segments: Int, uploadedBlocks: Int64,
                hasDataDirectory: Bool) {
        self.incarnation = incarnation
        self.bufferedBytes = bufferedBytes
        self.maxBufferedBytes = maxBufferedBytes
        self.segments = segments
        self.uploadedBlocks = uploadedBlocks
        self.hasDataDirectory = hasDataDirectory
    }
}

/// The operations a QuorumBuffer writer needs from one LogStore node. `LogStoreClient` implements it over the
/// binary RPC protocol. Every call has a deadline; failures are `WoodpeckerError`s:
/// - `.segmentFenced`: the node refuses appends to this segment (a newer writer fenced it); not retryable;
/// - `.nodeUnavailable` / `.timeout`: connection refused, lost, or no reply in time; retryable;
/// - `.bufferFull`: the node is at its memory bound; retryable;
/// - `.invalidArgument`: a block outside the node's window, or a block number that does not match its bytes;
/// - `.corrupted`: the block failed its CRC check on the node; `.unsupportedVersion`: protocol mismatch.
public protocol LogStoreNodeClient: Sendable {
    /// `host:port` of the node.
    var address: String { get }
    /// Connections established to the node so far. A change between two calls means the connection was lost in
    /// between, so the node may have restarted and, without a data directory, lost what it acknowledged.
    var connectionGeneration: UInt64 { get }
    /// Stores block `n` (an encoded segment block, verified by the node) and returns once the node holds it.
    /// Idempotent for the same bytes. `confirmedThrough` piggybacks the writer's quorum-confirmed point, which
    /// lets the node upload blocks 0...confirmedThrough to object storage and then drop them. `durableThrough`
    /// (-1: none) passes on what another node reported durable in object storage: the node drops those copies
    /// without looking them up. `uploader`: this node uploads the segment's blocks (it puts them at once; the other
    /// nodes look for each first, as the uploader has normally put it). Returns the node's own durable point
    /// (`uploadedThrough`) for the segment.
    @discardableResult
    func append(_ segment: SegmentRef, block n: Int32, bytes: ByteBuffer, confirmedThrough: Int32,
                durableThrough: Int32, uploader: Bool) async throws -> Int32
    /// Advances the confirmed and durable points without an append (sent when the writer goes idle); returns the
    /// node's durable point.
    @discardableResult
    func updateConfirmed(_ segment: SegmentRef, through: Int32, durableThrough: Int32, uploader: Bool) async throws -> Int32
    /// Refuses every later append to the segment and reports what the node holds.
    func fence(_ segment: SegmentRef) async throws -> SegmentStatus
    /// Reports what the node holds without fencing.
    func status(_ segment: SegmentRef) async throws -> SegmentStatus
    /// The bytes of block `n` if the node still holds it, else nil.
    func readBlock(_ segment: SegmentRef, number n: Int32) async throws -> ByteBuffer?
    /// Makes blocks 0...lastBlock durable in object storage (uploading what it holds, checking the rest exist),
    /// returns once they are, and then drops the segment's data (the segment stays fenced on the node).
    /// Fails with `.objectNotFound` naming the block when one is neither held nor in object storage.
    func complete(_ segment: SegmentRef, lastBlock: Int32) async throws
    func health() async throws -> NodeHealth
    /// Closes the connection; later calls fail with `.clientClosed`.
    func close() async
}

extension LogStoreNodeClient {
    /// `append` passing on no durable point.
    @discardableResult
    public func append(_ segment: SegmentRef, block n: Int32, bytes: ByteBuffer, confirmedThrough: Int32) async throws -> Int32 {
        try await append(segment, block: n, bytes: bytes, confirmedThrough: confirmedThrough, durableThrough: -1, uploader: false)
    }

    /// `updateConfirmed` passing on no durable point.
    @discardableResult
    public func updateConfirmed(_ segment: SegmentRef, through: Int32) async throws -> Int32 {
        try await updateConfirmed(segment, through: through, durableThrough: -1, uploader: false)
    }
}
