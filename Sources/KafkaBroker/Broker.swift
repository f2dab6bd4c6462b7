import KafkaProtocol
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

/// The Kafka-protocol facade: accepts Kafka clients, maps every topic-partition to a Woodpecker log, and answers
/// the APIs in `Broker.supportedVersions`. One broker runs on one event loop.
public final class Broker: @unchecked Sendable {
    public let config: BrokerConfig
    public let loop: EventLoop
    let client: WoodpeckerClient
    let metadata: any MetadataStore
    let topics: TopicManager
    let producerIds: ProducerIdAllocator
    let groups: GroupCoordinator
    /// Bounds the bytes of fetch responses being assembled (`BrokerConfig.fetchResponseBudgetBytes`).
    let fetchMemory: LoopBudget
    private var server: TCPServer?
    private var connections: [UInt64: TCPConnection] = [:]
    private var nextConnectionId: UInt64 = 0
    private var retentionTask: Task<Void, Never>?
    let appendSignal: AppendSignal

    /// Builds a broker over an existing WAL client (its loop, object store and metadata store).
    /// The topics' `segment.bytes` and `segment.ms` default to the client's roll settings.
    public init(config: BrokerConfig, client: WoodpeckerClient) {
        var config = config
        config.defaultTopicConfigs["segment.bytes"] = String(client.config.segmentMaxBytes)
        config.defaultTopicConfigs["segment.ms"] = String(client.config.segmentMaxAgeMs)
        self.config = config
        self.loop = client.loop
        self.client = client
        self.metadata = client.metadata
        let signal = AppendSignal(loop: client.loop)
        self.appendSignal = signal
        self.topics = TopicManager(loop: client.loop, client: client, metadata: client.metadata, config: config,
                                   appendSignal: signal, prefix: config.metadataPrefix + "kafka")
        self.producerIds = ProducerIdAllocator(loop: client.loop, metadata: client.metadata,
                                               key: config.metadataPrefix + "kafka/producer-id-next")
        self.groups = GroupCoordinator(loop: client.loop, metadata: client.metadata, prefix: config.metadataPrefix + "kafka/",
                                       config: config.groups)
        self.fetchMemory = LoopBudget(limit: config.fetchResponseBudgetBytes, loop: client.loop)
    }

    /// Loads topics and starts listening. Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        try await topics.load()
        var options = TCPServerOptions()
        options.connection.idleTimeoutMs = config.idleTimeoutMs
        options.connection.maxUnreadBytes = config.maxRequestBytes + 64 * 1024
        options.connection.lengthPrefixedFrames = true
        let server = try await TCPServer.bind(loop: loop, host: config.listenHost, port: config.listenPort, options: options) {
            [unowned self] conn in
            self.loop.preconditionInLoop()
            self.nextConnectionId += 1
            let id = self.nextConnectionId
            self.connections[id] = conn
            return KafkaConnection(broker: self, id: id)
        }
        self.server = server
        startRetention()
        await groups.start()
        return server.port
    }

    func connectionClosed(_ id: UInt64) {
        connections[id] = nil
    }

    /// Response bytes queued in the broker for its clients' sockets (diagnostics and tests; on the loop).
    func pendingResponseBytes() -> Int {
        loop.preconditionInLoop()
        return connections.values.reduce(0) { $0 + $1.pendingWriteBytes }
    }

    /// Stops accepting, closes connections and closes every partition's writer (sealing active segments).
    public func stop() async {
        retentionTask?.cancel()
        retentionTask = nil
        await groups.shutdown()
        if let server { await server.close() }
        server = nil
        await topics.closeAll()
    }

    private func startRetention() {
        let interval = config.retentionCheckIntervalMs
        retentionTask = Task(executorPreference: loop) { [topics, config] in
            while !Task.isCancelled {
                await topics.loop.sleep(ms: interval)
                if Task.isCancelled { return }
                for (t, p) in await topics.openPartitions() {
                    let ms = Int64(config.topicConfig("retention.ms", of: t) ?? "") ?? -1
                    let bytes = Int64(config.topicConfig("retention.bytes", of: t) ?? "") ?? -1
                    do {
                        _ = try await p.enforceRetention(retentionMs: ms, retentionBytes: bytes)
                    } catch {
                        Diagnostics.warn("retention of \(t.name)-\(p.partition): \(error)")
                    }
                }
            }
        }
    }

    // MARK: dispatch

    /// Versions we answer, per API key. Produce 0-2 are advertised (old librdkafka feature probes need them) but
    /// answered with UNSUPPORTED_VERSION.
    static let supportedVersions: [ApiKey: ClosedRange<Int16>] = [
        .produce: 0...11, .fetch: 4...12, .listOffsets: 0...7, .metadata: 0...12, .apiVersions: 0...4,
        .initProducerId: 0...4, .findCoordinator: 0...5, .createTopics: 0...7, .deleteTopics: 0...6,
        .createPartitions: 0...3, .describeConfigs: 0...4, .describeCluster: 0...1, .alterConfigs: 0...2,
        .incrementalAlterConfigs: 0...1,
        .joinGroup: 0...9, .syncGroup: 0...5, .heartbeat: 0...4, .leaveGroup: 0...5, .offsetCommit: 0...9,
        .offsetFetch: 0...9, .listGroups: 0...5, .describeGroups: 0...5, .deleteGroups: 0...2, .offsetDelete: 0...0,
    ]

    func handle(_ r: KafkaRequest) async -> KafkaResponseOutcome {
        guard let key = ApiKey(rawValue: r.apiKey), let range = Self.supportedVersions[key] else {
            return .close("unsupported API key \(r.apiKey) from \(r.clientId ?? "?")")
        }
        if key == .apiVersions { return apiVersions(r) }
        // Logged by number: interpolating an `ApiKey` itself would call its `description`, which recurses.
        let api = "API key \(r.apiKey)"
        guard range.contains(r.version) else {
            return .close("unsupported \(api) version \(r.version) (supported \(range)) from \(r.clientId ?? "?")")
        }
        do {
            switch key {
            case .produce: return try await produce(r)
            case .fetch: return try await fetch(r)
            case .listOffsets: return try await listOffsets(r)
            case .metadata: return try await metadataRequest(r)
            case .initProducerId: return try await initProducerId(r)
            case .findCoordinator: return try findCoordinator(r)
            case .createTopics: return try await createTopics(r)
            case .deleteTopics: return try await deleteTopics(r)
            case .createPartitions: return try await createPartitions(r)
            case .describeConfigs: return try await describeConfigs(r)
            case .alterConfigs: return try await alterConfigs(r)
            case .incrementalAlterConfigs: return try await incrementalAlterConfigs(r)
            case .describeCluster: return try describeCluster(r)
            case .joinGroup: return try await joinGroup(r)
            case .syncGroup: return try await syncGroup(r)
            case .heartbeat: return try await heartbeat(r)
            case .leaveGroup: return try await leaveGroup(r)
            case .offsetCommit: return try await offsetCommit(r)
            case .offsetFetch: return try await offsetFetch(r)
            case .listGroups: return try await listGroups(r)
            case .describeGroups: return try await describeGroups(r)
            case .deleteGroups: return try await deleteGroups(r)
            case .offsetDelete: return try await offsetDelete(r)
            default: return .close("unhandled \(api)")
            }
        } catch let e as DecodeError {
            return .close("malformed \(api) v\(r.version) request: \(e)")
        } catch {
            return .close("\(api) v\(r.version) failed: \(error)")
        }
    }

    func decode<M: KafkaMessage>(_ type: M.Type, _ r: KafkaRequest) throws -> M {
        var body = r.body
        return try M(from: &body, version: r.version)
    }

    func respond<M: KafkaMessage>(_ m: M, _ r: KafkaRequest) -> KafkaResponseOutcome {
        .respond(KafkaHeaders.responseFrame(m, correlationId: r.correlationId, version: r.version))
    }
}

/// Wakes long-polling fetches when any partition acknowledges an append.
actor AppendSignal {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var next: UInt64 = 0

    init(loop: EventLoop) { self.loop = loop }

    /// Returns after the next signal or after `timeoutMs`.
    func wait(timeoutMs: UInt64) async {
        next += 1
        let id = next
        loop.schedule(afterMs: timeoutMs) { [weak self] in
            guard let self else { return }
            self.assumeIsolated { $0.waiters.removeValue(forKey: id)?.resume() }
        }
        await withCheckedContinuation { waiters[id] = $0 }
    }

    nonisolated func signal() {
        assumeIsolated { s in
            guard !s.waiters.isEmpty else { return }
            let ws = s.waiters
            s.waiters.removeAll()
            for (_, c) in ws { c.resume() }
        }
    }
}

/// Hands out producer ids that are never reused, reserving blocks of ids in the metadata store.
actor ProducerIdAllocator {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    let metadata: any MetadataStore
    let key: String
    static let blockSize: Int64 = 1000
    private var next: Int64 = 0
    private var limit: Int64 = 0

    init(loop: EventLoop, metadata: any MetadataStore, key: String) {
        self.loop = loop
        self.metadata = metadata
        self.key = key
    }

    func allocate() async throws -> Int64 {
        if next >= limit { try await reserve() }
        defer { next += 1 }
        return next
    }

    private func reserve() async throws {
        for _ in 0..<10 {
            let cur = try await metadata.get(key)
            let start = cur.flatMap { Int64($0.stringValue) } ?? 1000
            let end = start + Self.blockSize
            let guardCmp: Compare = cur.map { .unchanged(key, modRevision: $0.modRevision) } ?? .absent(key)
            let r = try await metadata.txn(compare: [guardCmp], then: [.put(key: key, value: Array(String(end).utf8))])
            if r.succeeded {
                next = start
                limit = end
                return
            }
        }
        throw WoodpeckerError(.revisionConflict, "could not reserve producer ids at \(key): too much contention")
    }
}
