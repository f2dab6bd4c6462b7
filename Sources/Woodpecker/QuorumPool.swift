import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore

/// QuorumBuffer settings of a client: which LogStore nodes to use and how many must hold an entry.
public struct QuorumSettings: Sendable {
    /// Seed list of LogStore nodes (`host:port`). Each new segment gets an ensemble chosen from it.
    public var nodes: [String]
    /// Nodes that receive every block of a segment (3, or 5).
    public var ensembleSize: Int
    /// Nodes that must hold a block before it is acknowledged (a majority of the ensemble).
    public var ackQuorum: Int
    /// Attempts per replica for a retryable failure (timeout, node busy, connection lost) before the replica is
    /// dropped from the segment (the segment then rolls onto a fresh ensemble as soon as one is available).
    public var replicaAttempts: Int = 2
    /// How long after the last acknowledgement the confirmed point is pushed to the nodes when no later append
    /// carries it (nodes upload only confirmed blocks).
    public var confirmPushDelayMs: UInt64 = 2
    /// How long a write waits for a node that answers "buffer full" (it uploads slower than the writer appends)
    /// before the node is dropped from the segment.
    public var busyWaitMs: UInt64 = 30_000
    /// How often a node that failed is probed until it answers again.
    public var probeIntervalMs: UInt64 = 500
    /// Opens the connection to one node (the CLI passes `LogStoreClient`).
    public var connect: @Sendable (EventLoop, String) -> any LogStoreNodeClient

    public init(nodes: [String], ensembleSize: Int = 3, ackQuorum: Int? = nil,
                connect: @escaping @Sendable (EventLoop, String) -> any LogStoreNodeClient) {
        self.nodes = nodes
        self.ensembleSize = ensembleSize
        self.ackQuorum = ackQuorum ?? (ensembleSize / 2 + 1)
        self.connect = connect
    }

    /// Checks the shape: enough nodes, a majority quorum.
    public func validate() throws {
        guard ensembleSize >= 1, ackQuorum >= 1, ackQuorum <= ensembleSize else {
            throw WoodpeckerError(.invalidArgument, "quorum: ackQuorum \(ackQuorum) must be in 1...ensembleSize \(ensembleSize)")
        }
        guard ackQuorum * 2 > ensembleSize else {
            throw WoodpeckerError(.invalidArgument,
                                  "quorum: ackQuorum \(ackQuorum) is not a majority of \(ensembleSize); two writers' quorums could miss each other")
        }
        guard discoverFromMetadata || Set(nodes).count >= ensembleSize else {
            throw WoodpeckerError(.invalidArgument,
                                  "quorum: \(Set(nodes).count) distinct LogStore nodes given, an ensemble needs \(ensembleSize); pass more with --logstores")
        }
    }

    /// Also use the LogStore nodes registered in the metadata store (`woodpecker logstore --metadata ...`),
    /// refreshed every `discoveryIntervalMs`; `nodes` may then be empty.
    public var discoverFromMetadata = false
    public var discoveryIntervalMs: UInt64 = 2_000

    /// Replies a fence needs so that every acknowledged block is on at least one responder.
    var fenceCoverage: Int { ensembleSize - ackQuorum + 1 }
}

/// The LogStore nodes a client talks to: one connection per node (shared by every segment of every log of the
/// client), which nodes are healthy, and the choice of an ensemble for a new segment.
/// Confined to the client's loop (all callers are loop actors or tasks on the loop).
final class LogStorePool: @unchecked Sendable {
    let loop: EventLoop
    let settings: QuorumSettings
    private var clients: [String: any LogStoreNodeClient] = [:]
    /// The configured seed nodes plus those registered in the metadata store, distinct and sorted.
    private(set) var nodes: [String]
    /// Nodes whose last request failed finally, with when; cleared by a successful probe.
    private var down: [String: UInt64] = [:]
    private var probing = false
    private var closed = false

    init(loop: EventLoop, settings: QuorumSettings) {
        self.loop = loop
        self.settings = settings
        self.nodes = Array(Set(settings.nodes)).sorted()
    }

    /// Replaces the registered part of the node list (the configured seeds always stay).
    func setRegistered(_ registered: [String]) {
        nodes = Array(Set(settings.nodes + registered)).sorted()
    }

    func client(_ address: String) -> any LogStoreNodeClient {
        if let c = clients[address] { return c }
        let c = settings.connect(loop, address)
        clients[address] = c
        return c
    }

    func isHealthy(_ address: String) -> Bool { down[address] == nil }
    var healthyCount: Int { nodes.filter { down[$0] == nil }.count }

    /// An ensemble for a new segment: healthy nodes first (in random order), then failed ones to fill it (a write
    /// still succeeds while a quorum of the ensemble answers). Fails retryably while fewer than `ackQuorum` nodes
    /// are healthy: a segment whose every write would fail only churns metadata.
    func chooseEnsemble() throws -> [String] {
        let distinct = nodes
        guard distinct.count >= settings.ensembleSize else {
            throw WoodpeckerError(.nodeUnavailable,
                "\(distinct.count) LogStore nodes known (\(distinct)), an ensemble needs \(settings.ensembleSize); start more nodes or list them with --logstores",
                retryable: true)
        }
        let healthyNow = distinct.filter { down[$0] == nil }.count
        guard healthyNow >= settings.ackQuorum else {
            throw WoodpeckerError(.nodeUnavailable,
                "only \(healthyNow) of the LogStores \(distinct.sorted()) answer, \(settings.ackQuorum) must hold every entry; start the stopped nodes (they are probed every \(settings.probeIntervalMs) ms)",
                retryable: true)
        }
        let healthy = distinct.filter { down[$0] == nil }.shuffled()
        let failed = distinct.filter { down[$0] != nil }.sorted { down[$0]! < down[$1]! }
        return Array((healthy + failed).prefix(settings.ensembleSize))
    }

    /// Records a final failure of a node and starts probing it.
    func markDown(_ address: String) {
        guard down[address] == nil else { return }
        down[address] = Clock.monotonicMillis()
        startProbing()
    }

    private func startProbing() {
        guard !probing, !closed else { return }
        probing = true
        Task(executorPreference: loop) { await self.probeLoop() }
    }

    private func probeLoop() async {
        defer { probing = false }
        while !down.isEmpty && !closed {
            await loop.sleep(ms: settings.probeIntervalMs)
            for address in Array(down.keys) {
                if (try? await client(address).health()) != nil {
                    down[address] = nil
                }
            }
        }
    }

    func close() async {
        closed = true
        for c in clients.values { await c.close() }
        clients.removeAll()
    }
}
