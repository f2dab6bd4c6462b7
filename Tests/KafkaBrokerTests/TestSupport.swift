import Foundation
import KafkaBroker
import KafkaProtocol
import Synchronization
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

/// Thread-safe box shared between loop-thread callbacks and the test body.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ v: T) { m = Mutex(v) }
    func with<R>(_ body: (inout T) -> R) -> R { m.withLock { body(&$0) } }
    var value: T { m.withLock { $0 } }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func nowMs() -> UInt64 { Clock.monotonicMillis() }

/// Runs `body` on a task that prefers `loop`.
func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task(executorPreference: loop) { try await body() }.value
}

/// An in-process broker on its own event loop, over in-memory stores or on-disk stores under `dir`.
final class TestBroker: @unchecked Sendable {
    let loop: EventLoop
    let broker: Broker
    let port: Int
    let metadata: EmbeddedMetadataStore
    private var stopped = false

    static func start(dir: String? = nil, store wrap: ((any ObjectStore) -> any ObjectStore)? = nil,
                      wal: WALConfig = WALConfig(),
                      _ configure: (inout BrokerConfig) -> Void = { _ in }) async throws -> TestBroker {
        let loop = EventLoop(name: "broker-test")
        var store: any ObjectStore
        let metadata: EmbeddedMetadataStore
        if let dir {
            try FileManager.default.createDirectory(atPath: dir + "/objects", withIntermediateDirectories: true)
            store = LocalFileStore(root: dir + "/objects", loop: loop)
            metadata = try await EmbeddedMetadataStore(directory: dir + "/meta", loop: loop)
        } else {
            store = MemoryStore()
            metadata = EmbeddedMetadataStore.inMemory()
        }
        if let wrap { store = wrap(store) }
        let client = WoodpeckerClient(loop: loop, store: store, metadata: metadata, config: wal)
        var config = BrokerConfig()
        config.listenPort = 0
        config.retentionCheckIntervalMs = 3_600_000
        configure(&config)
        let broker = Broker(config: config, client: client)
        let port = try await onLoop(loop) { try await broker.start() }
        return TestBroker(loop: loop, broker: broker, port: port, metadata: metadata)
    }

    private init(loop: EventLoop, broker: Broker, port: Int, metadata: EmbeddedMetadataStore) {
        self.loop = loop
        self.broker = broker
        self.port = port
        self.metadata = metadata
    }

    func stop() async {
        if stopped { return }
        stopped = true
        let broker = broker
        let metadata = metadata
        _ = try? await onLoop(loop) {
            await broker.stop()
            await metadata.close()
        }
        loop.shutdown()
    }

    func connect(inboxBytes: Int = 8 << 20) async throws -> TestClient {
        try await TestClient.connect(loop: loop, port: port, inboxBytes: inboxBytes)
    }
}

/// Starts a broker, runs `body`, stops the broker even when `body` throws.
func withBroker(dir: String? = nil, store: ((any ObjectStore) -> any ObjectStore)? = nil, wal: WALConfig = WALConfig(),
                _ configure: (inout BrokerConfig) -> Void = { _ in },
                _ body: (TestBroker) async throws -> Void) async throws {
    let b = try await TestBroker.start(dir: dir, store: store, wal: wal, configure)
    do {
        try await body(b)
    } catch {
        await b.stop()
        throw error
    }
    await b.stop()
}

func temporaryDirectory() -> String {
    let d = NSTemporaryDirectory() + "kafka-broker-test-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// A minimal Kafka client over one TCP connection: frames requests, reads size-prefixed responses.
final class TestClient: Sendable {
    let conn: TCPConnection
    let loop: EventLoop
    /// Kept here (not only as the connection's handler) so bytes that arrived before the peer closed stay readable.
    private let inbox: TestInbox
    private let nextCorrelation = Shared<Int32>(1)

    static func connect(loop: EventLoop, port: Int, inboxBytes: Int) async throws -> TestClient {
        let inbox = TestInbox(maxBufferedBytes: inboxBytes)
        let conn = try await TCPClient.connect(loop: loop, host: "127.0.0.1", port: port) { _ in inbox }
        return TestClient(conn: conn, loop: loop, inbox: inbox)
    }

    private init(conn: TCPConnection, loop: EventLoop, inbox: TestInbox) {
        self.conn = conn
        self.loop = loop
        self.inbox = inbox
    }

    private func receive(exactly count: Int) async throws -> ByteBuffer {
        let inbox = inbox
        let conn = conn
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<ByteBuffer, any Error>) in
            loop.executeOrRun { inbox.receive(conn, exactly: count) { c.resume(with: $0) } }
        }
    }

    func correlationId() -> Int32 { nextCorrelation.with { v in defer { v += 1 }; return v } }

    /// Sends one request frame; returns its correlation id.
    @discardableResult
    func send<M: KafkaMessage>(_ m: M, version: Int16, correlationId: Int32? = nil, clientId: String? = "broker-test") async throws -> Int32 {
        let id = correlationId ?? self.correlationId()
        try await conn.send(KafkaHeaders.requestFrame(m, version: version, correlationId: id, clientId: clientId))
        return id
    }

    func sendRaw(_ bytes: [UInt8]) async throws {
        try await conn.send(ByteBuffer(bytes: bytes))
    }

    /// Queues bytes without waiting for the kernel to take them.
    func writeNoWait(_ buffer: ByteBuffer) async {
        await conn.onLoop { $0.write(buffer) }
    }

    /// Reads one response frame (without its size prefix). Closes the connection after `timeoutMs` so that a
    /// missing response fails the test instead of hanging it.
    func readFrame(timeoutMs: UInt64 = 20_000) async throws -> ByteBuffer {
        let done = Shared(false)
        let conn = conn
        let watchdog = Task {
            try? await Task.sleep(nanoseconds: timeoutMs * 1_000_000)
            if !done.value && !Task.isCancelled { await conn.closeAndWait() }
        }
        defer {
            done.with { $0 = true }
            watchdog.cancel()
        }
        var sizeBytes = try await receive(exactly: 4)
        let size = try sizeBytes.readInteger(as: Int32.self)
        guard size >= 4 else { throw TestFailure("response frame size \(size)") }
        return try await receive(exactly: Int(size))
    }

    /// Reads one response and decodes header + body; the body must be consumed exactly.
    func read<R: KafkaMessage>(_ type: R.Type, version: Int16, correlationId: Int32? = nil) async throws -> R {
        var frame = try await readFrame()
        let cid = try frame.readInteger(as: Int32.self)
        if let correlationId, cid != correlationId {
            throw TestFailure("response correlation id \(cid), expected \(correlationId)")
        }
        if KafkaHeaders.responseHeaderVersion(apiKey: R.apiKey, version: version) == 1 {
            let tags = try frame.readUnsignedVarint()
            for _ in 0..<tags {
                _ = try frame.readUnsignedVarint()
                let n = try frame.readUnsignedVarint()
                try frame.skip(Int(n))
            }
        }
        let r = try R(from: &frame, version: version)
        guard frame.readableBytes == 0 else {
            throw TestFailure("\(R.self) v\(version): \(frame.readableBytes) bytes left after decoding")
        }
        return r
    }

    /// Sends a request and reads its response.
    func call<Req: KafkaMessage, Resp: KafkaMessage>(_ req: Req, version: Int16, _ resp: Resp.Type) async throws -> Resp {
        let id = try await send(req, version: version)
        return try await read(resp, version: version, correlationId: id)
    }

    /// True when the peer closes the connection within `withinMs` (reading and discarding anything it sends).
    func closedByPeer(withinMs: UInt64 = 5_000) async -> Bool {
        let conn = conn
        let closed = Shared(false)
        let waiter = Task {
            _ = await conn.waitClosed()
            closed.with { $0 = true }
        }
        let deadline = nowMs() + withinMs
        while nowMs() < deadline && !closed.value {
            try? await Task.sleep(nanoseconds: 5_000_000)
        }
        let result = closed.value
        if !result { await conn.closeAndWait() }
        _ = await waiter.value
        return result
    }

    func close() async {
        await conn.closeAndWait()
    }
}

/// Buffers received bytes for `TestClient` (loop thread only). At most `maxBufferedBytes` are buffered; beyond
/// that it pauses reading, so an unread client pushes back on the broker through TCP. Buffered bytes stay
/// readable after the connection closed.
final class TestInbox: TCPConnectionHandler, @unchecked Sendable {
    let maxBufferedBytes: Int
    private var buffer = ByteBuffer()
    private var waiter: (count: Int, resume: (Result<ByteBuffer, any Error>) -> Void)?
    private var closed = false

    init(maxBufferedBytes: Int) { self.maxBufferedBytes = maxBufferedBytes }

    func connectionRead(_ connection: TCPConnection, _ data: inout ByteBuffer) {
        buffer.writeBuffer(data)
        data.readerIndex = data.writerIndex
        if buffer.readableBytes >= maxBufferedBytes { connection.pauseReading() }
        satisfy(connection)
    }

    func connectionClosed(_ connection: TCPConnection, error: WoodpeckerError?) {
        closed = true
        satisfy(connection)
    }

    func receive(_ connection: TCPConnection, exactly count: Int, _ resume: @escaping (Result<ByteBuffer, any Error>) -> Void) {
        precondition(waiter == nil, "one receive at a time")
        waiter = (count, resume)
        satisfy(connection)
    }

    private func satisfy(_ connection: TCPConnection) {
        guard let w = waiter else { return }
        if buffer.readableBytes >= w.count {
            waiter = nil
            let out = try! buffer.readSlice(length: w.count)
            if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 1 << 20 { buffer.discardReadBytes() }
            if !closed && connection.isReadingPaused && buffer.readableBytes < maxBufferedBytes { connection.resumeReading() }
            w.resume(.success(out))
        } else if closed {
            waiter = nil
            w.resume(.failure(TestFailure("connection closed with \(buffer.readableBytes) of \(w.count) bytes received")))
        }
    }
}

/// A real store whose writes can be held back: while `held` is true, `put`/`putIfAbsent` wait (the data is not
/// durable yet), so tests can observe what the broker answers before an append is acknowledged.
final class GatedStore: ObjectStore {
    let inner: any ObjectStore
    let held = Shared(false)
    let waitingPuts = Shared(0)
    var description: String { "gated(\(inner.description))" }

    init(_ inner: any ObjectStore) { self.inner = inner }

    private func gate() async {
        guard held.value else { return }
        waitingPuts.with { $0 += 1 }
        while held.value { try? await Task.sleep(nanoseconds: 2_000_000) }
        waitingPuts.with { $0 -= 1 }
    }

    func put(_ key: String, _ data: ByteBuffer) async throws {
        await gate()
        try await inner.put(key, data)
    }

    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws {
        await gate()
        try await inner.putIfAbsent(key, data)
    }

    func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer { try await inner.get(key, range: range) }
    func head(_ key: String) async throws -> ObjectInfo? { try await inner.head(key) }
    func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage {
        try await inner.list(prefix: prefix, continuationToken: continuationToken, limit: limit)
    }
    func delete(_ key: String) async throws { try await inner.delete(key) }
}

// MARK: records

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// A batch of `count` records "prefix-i" with keys "k-i", timestamps base + i.
func makeBatch(count: Int, prefix: String = "v", baseTimestamp: Int64 = 1_700_000_000_000, timestampStep: Int64 = 1,
               compression: CompressionCodec = .none, producerId: Int64 = -1, producerEpoch: Int16 = -1,
               baseSequence: Int32 = -1, valueSize: Int = 0) -> RecordBatch {
    let records = (0..<count).map { i in
        var v = bytes("\(prefix)-\(i)")
        if valueSize > v.count { v += [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: valueSize - v.count) }
        return Record(offsetDelta: Int32(i), timestampDelta: Int64(i) * timestampStep, key: bytes("k-\(i)"), value: v)
    }
    return try! RecordBatch.build(records: records, baseTimestamp: baseTimestamp, compression: compression,
                                  producerId: producerId, producerEpoch: producerEpoch, baseSequence: baseSequence)
}

func produceRequest(topic: String, partition: Int32 = 0, records: ByteBuffer?, acks: Int16 = -1) -> ProduceRequest {
    ProduceRequest(transactionalId: nil, acks: acks, timeoutMs: 30_000,
                   topicData: [.init(name: topic, partitionData: [.init(index: partition, records: records)])])
}

extension TestClient {
    /// Produces `records` to one partition and returns that partition's response.
    func produce(_ topic: String, partition: Int32 = 0, _ records: ByteBuffer?, version: Int16 = 9)
        async throws -> ProduceResponse.PartitionProduceResponse
    {
        let r = try await call(produceRequest(topic: topic, partition: partition, records: records), version: version,
                               ProduceResponse.self)
        guard let p = r.responses.first?.partitionResponses.first else { throw TestFailure("empty produce response") }
        return p
    }

    func fetchRequest(_ topic: String, partition: Int32 = 0, offset: Int64, maxWaitMs: Int32 = 0, minBytes: Int32 = 1,
                      maxBytes: Int32 = 50 << 20, partitionMaxBytes: Int32 = 10 << 20) -> FetchRequest {
        var req = FetchRequest()
        req.maxWaitMs = maxWaitMs
        req.minBytes = minBytes
        req.maxBytes = maxBytes
        req.topics = [.init(topic: topic, topicId: .zero,
                            partitions: [.init(partition: partition, fetchOffset: offset, partitionMaxBytes: partitionMaxBytes)])]
        return req
    }

    func fetch(_ topic: String, partition: Int32 = 0, offset: Int64, maxWaitMs: Int32 = 0, minBytes: Int32 = 1,
               maxBytes: Int32 = 50 << 20, partitionMaxBytes: Int32 = 10 << 20, version: Int16 = 12)
        async throws -> FetchResponse.PartitionData
    {
        let req = fetchRequest(topic, partition: partition, offset: offset, maxWaitMs: maxWaitMs, minBytes: minBytes,
                               maxBytes: maxBytes, partitionMaxBytes: partitionMaxBytes)
        let r = try await call(req, version: version, FetchResponse.self)
        guard let p = r.responses.first?.partitions.first else { throw TestFailure("empty fetch response") }
        return p
    }

    @discardableResult
    func createTopic(_ name: String, partitions: Int32 = 1, configs: [String: String] = [:]) async throws
        -> CreateTopicsResponse.CreatableTopicResult
    {
        var req = CreateTopicsRequest()
        req.topics = [.init(name: name, numPartitions: partitions, replicationFactor: 1, assignments: [],
                            configs: configs.map { .init(name: $0.key, value: $0.value) })]
        let r = try await call(req, version: 7, CreateTopicsResponse.self)
        guard let t = r.topics.first else { throw TestFailure("empty CreateTopics response") }
        return t
    }

    func listOffset(_ topic: String, partition: Int32 = 0, timestamp: Int64, version: Int16 = 7) async throws
        -> ListOffsetsResponse.ListOffsetsPartitionResponse
    {
        var req = ListOffsetsRequest()
        req.replicaId = -1
        req.topics = [.init(name: topic, partitions: [.init(partitionIndex: partition, timestamp: timestamp)])]
        let r = try await call(req, version: version, ListOffsetsResponse.self)
        guard let p = r.topics.first?.partitions.first else { throw TestFailure("empty ListOffsets response") }
        return p
    }

    func highWatermark(_ topic: String, partition: Int32 = 0) async throws -> Int64 {
        try await listOffset(topic, partition: partition, timestamp: -1).offset
    }
}

/// The batches of a fetched `records` field.
func batches(_ records: ByteBuffer?) throws -> [RecordBatch] {
    guard let records else { return [] }
    return try RecordBatch.split(records)
}

/// Batch bytes with the baseOffset field zeroed (what the producer sent).
func withoutBaseOffset(_ b: RecordBatch) -> [UInt8] {
    var c = b
    c.setBaseOffset(0)
    return c.bytes.readableBytesArray
}
