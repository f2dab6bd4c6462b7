import Foundation
import KafkaProtocol
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata

/// A topic as stored under `<prefix>/topics/<name>` in the metadata store.
struct TopicRecord: Codable, Sendable, Equatable {
    var name: String
    var topicIdHigh: UInt64
    var topicIdLow: UInt64
    var partitions: Int32
    /// The configs set for this topic at creation; every other config follows the broker's default, so a broker
    /// restarted with another default applies it to the topics that did not set their own (as in Kafka).
    var configs: [String: String]
    var createTimeMs: Int64
    /// True in records written since topics keep only their own configs. Older records stored every default too;
    /// `decoded` drops those so that the broker's defaults apply to them again.
    var ownConfigsOnly: Bool?

    var topicId: KafkaUUID { KafkaUUID(high: topicIdHigh, low: topicIdLow) }

    /// The defaults every topic record stored before `ownConfigsOnly`.
    static let legacyDefaults: [String: String] = [
        "retention.ms": "604800000", "retention.bytes": "-1", "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime", "cleanup.policy": "delete", "segment.bytes": "268435456",
        "segment.ms": "600000",
    ]

    /// Decodes a stored record; one written before `ownConfigsOnly` loses the configs equal to the old defaults.
    static func decoded(_ bytes: [UInt8]) throws -> TopicRecord {
        var t = try JSONDecoder().decode(TopicRecord.self, from: Data(bytes))
        if t.ownConfigsOnly != true {
            t.configs = t.configs.filter { legacyDefaults[$0.key] != $0.value }
            t.ownConfigsOnly = true
        }
        return t
    }
}

extension BrokerConfig {
    /// The value of topic config `key` for `t`: its own, else the broker's default.
    func topicConfig(_ key: String, of t: TopicRecord) -> String? {
        t.configs[key] ?? defaultTopicConfigs[key]
    }

    /// Where the value of topic config `key` for `t` comes from, as DescribeConfigs reports it: DYNAMIC_TOPIC_CONFIG
    /// (1) for the topic's own, STATIC_BROKER_CONFIG (4) for a default the operator set, else DEFAULT_CONFIG (5).
    func topicConfigSource(_ key: String, of t: TopicRecord) -> Int8 {
        if t.configs[key] != nil { return 1 }
        return staticTopicConfigs.contains(key) ? 4 : 5
    }

    /// Every config of `t` with its value (its own over the broker's defaults).
    func topicConfigs(of t: TopicRecord) -> [String: String] {
        defaultTopicConfigs.merging(t.configs) { _, own in own }
    }
}

/// Topics and their partitions: creation (explicit or automatic), deletion, partition growth, configs, and the
/// lazily opened `PartitionLog` of each partition. State lives on the broker loop; the metadata store is the
/// source of truth, so another broker process on the same stores sees the same topics.
actor TopicManager {
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    nonisolated let loop: EventLoop
    let client: WoodpeckerClient
    let metadata: any MetadataStore
    let config: BrokerConfig
    let prefix: String
    let appendSignal: AppendSignal
    private var topics: [String: TopicRecord] = [:]
    private var partitions: [String: PartitionLog] = [:]
    private var opening: [String: Task<PartitionLog, any Error>] = [:]

    init(loop: EventLoop, client: WoodpeckerClient, metadata: any MetadataStore, config: BrokerConfig,
         appendSignal: AppendSignal, prefix: String = "kafka") {
        self.loop = loop
        self.appendSignal = appendSignal
        self.client = client
        self.metadata = metadata
        self.config = config
        self.prefix = prefix
    }

    private func key(_ topic: String) -> String { "\(prefix)/topics/\(topic)" }

    func load() async throws {
        for kv in try await metadata.range(prefix: "\(prefix)/topics/") {
            do {
                let t = try TopicRecord.decoded(kv.value)
                topics[t.name] = t
            } catch {
                throw WoodpeckerError(.metadataCorrupted, "topic record \(kv.key) is not valid JSON: \(error)")
            }
        }
    }

    func allTopics() -> [TopicRecord] { topics.values.sorted { $0.name < $1.name } }

    func topic(_ name: String) async throws -> TopicRecord? {
        if let t = topics[name] { return t }
        // Created by another broker sharing the metadata store?
        if let kv = try await metadata.get(key(name)), let t = try? TopicRecord.decoded(kv.value) {
            topics[name] = t
            return t
        }
        return nil
    }

    static func validTopicName(_ name: String) -> Bool {
        guard !name.isEmpty, name.count <= 249, name != ".", name != ".." else { return false }
        return name.utf8.allSatisfy { c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x5f || c == 0x2d
        }
    }

    /// Refusals of a topic request, each answered with its Kafka error code (`Broker.topicRequestError`).
    enum CreateError: Error {
        case exists, invalidName, invalidPartitions(String), invalidReplicationFactor(String), invalidConfig(String)
        case invalidRequest(String)
    }

    /// The most partitions a topic may have.
    static let maxPartitions: Int32 = 10_000

    /// Throws `.invalidConfig` naming the first config that is unknown or has a value the broker cannot honour.
    func validate(_ configs: [String: String]) throws {
        for (k, v) in configs.sorted(by: { $0.key < $1.key }) {
            guard config.defaultTopicConfigs[k] != nil else { throw CreateError.invalidConfig("unknown topic config \(k)") }
            if let problem = BrokerConfig.topicConfigProblem(k, v) { throw CreateError.invalidConfig(problem) }
        }
    }

    /// Replaces the configs topic `name` sets itself with `change(current)` (every other config follows the broker's
    /// default) after validating the ones that change, and applies the roll settings to its open partitions; with
    /// `validateOnly` nothing changes. The record is replaced only if nobody changed or deleted it since it was read
    /// (a concurrent change makes this one fail retryably). Throws `.logNotFound` for a topic that does not exist,
    /// `CreateError.invalidConfig`.
    func alterConfigs(_ name: String, validateOnly: Bool,
                      _ change: @Sendable ([String: String]) throws -> [String: String]) async throws {
        let changed = try await modify(name, what: "its configs were being altered") { t in
            let configs = try change(t.configs)
            try validate(configs.filter { t.configs[$0.key] != $0.value })
            if validateOnly || configs == t.configs { return false }
            t.configs = configs
            return true
        }
        guard let t = changed else { return }
        Diagnostics.info("topic \(name): configs now \(t.configs.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })")
        for p in partitions.values where p.topic == name { await applyRoll(to: p) }
    }

    /// Reads topic `name` from the metadata store (not the cache), lets `change` edit it, and writes it back only if
    /// nobody changed or deleted it since it was read: a concurrent change makes this one fail retryably instead of
    /// being lost, undoing the other (a partition count going down) or resurrecting a deleted topic. Returns the
    /// record written, or nil when `change` returned false (nothing to write). Throws `.logNotFound` for a topic
    /// that does not exist, and what `change` throws.
    private func modify(_ name: String, what: String,
                        _ change: (inout TopicRecord) throws -> Bool) async throws -> TopicRecord? {
        guard let kv = try await metadata.get(key(name)) else {
            topics[name] = nil
            throw WoodpeckerError(.logNotFound, "topic \(name) does not exist")
        }
        var t = try TopicRecord.decoded(kv.value)
        topics[name] = t  // the latest stored record, also for a caller that changes nothing
        guard try change(&t) else { return nil }
        let r = try await metadata.txn(compare: [.unchanged(key(name), modRevision: kv.modRevision)],
                                       then: [.put(key: key(name), value: Self.encode(t))], else: [])
        guard r.succeeded else {
            topics[name] = nil  // re-read on next use
            throw WoodpeckerError(.metadataUnavailable, "topic \(name) changed while \(what); retry", retryable: true)
        }
        topics[name] = t
        return t
    }

    /// Gives partition `p` the roll settings of its topic as cached now (after an await, the latest ones).
    private func applyRoll(to p: PartitionLog) async {
        guard let t = topics[p.topic] else { return }
        await p.setRoll(SegmentRoll(topicConfigs: t.configs))
    }

    /// Creates a topic; `.exists` when it already does.
    @discardableResult
    func create(_ name: String, partitions: Int32, configs: [String: String], validateOnly: Bool = false) async throws -> TopicRecord {
        guard Self.validTopicName(name) else { throw CreateError.invalidName }
        let n = partitions <= 0 ? config.defaultPartitions : partitions
        guard n >= 1, n <= Self.maxPartitions else {
            throw CreateError.invalidPartitions("invalid partition count \(partitions): a topic has 1...\(Self.maxPartitions)")
        }
        try validate(configs)
        if try await topic(name) != nil { throw CreateError.exists }
        let id = KafkaUUID.random()
        let rec = TopicRecord(name: name, topicIdHigh: id.high, topicIdLow: id.low, partitions: n, configs: configs,
                              createTimeMs: Clock.wallMillis(), ownConfigsOnly: true)
        if validateOnly { return rec }
        let r = try await metadata.txn(compare: [.absent(key(name))],
                                       then: [.put(key: key(name), value: Self.encode(rec))], else: [])
        guard r.succeeded else {
            _ = try await topic(name)
            throw CreateError.exists
        }
        topics[name] = rec
        Diagnostics.info("created topic \(name) with \(n) partition(s)")
        return rec
    }

    /// The topic, created with defaults when missing and auto-creation is on.
    func topicOrAutoCreate(_ name: String, allowed: Bool) async throws -> TopicRecord? {
        if let t = try await topic(name) { return t }
        guard allowed && config.autoCreateTopics && Self.validTopicName(name) else { return nil }
        do {
            return try await create(name, partitions: config.defaultPartitions, configs: [:])
        } catch CreateError.exists {
            return try await topic(name)
        }
    }

    /// Deletes a topic, its partitions' logs and their data.
    func delete(_ name: String) async throws -> Bool {
        guard let t = try await topic(name) else { return false }
        for p in 0..<t.partitions {
            let k = "\(name)-\(p)"
            if let open = partitions.removeValue(forKey: k) { await open.close() }
            try await client.deleteLog(PartitionLog.logName(topic: name, partition: p))
        }
        try await metadata.delete(key(name))
        topics[name] = nil
        Diagnostics.info("deleted topic \(name)")
        return true
    }

    /// Grows topic `name` to `count` partitions (`validateOnly`: checks only). Throws `.invalidPartitions` when
    /// `count` is not above the current count or beyond `maxPartitions`, `.logNotFound`, and a retryable error when
    /// the topic changed meanwhile (two requests growing one topic at once: the second fails and retries against the
    /// new count instead of setting its smaller one).
    func addPartitions(_ name: String, to count: Int32, validateOnly: Bool = false) async throws {
        let grown = try await modify(name, what: "partitions were being added") { t in
            guard count <= Self.maxPartitions else {
                throw CreateError.invalidPartitions("Topic \(name) cannot have more than \(Self.maxPartitions) partitions; \(count) were requested.")
            }
            guard count > t.partitions else {
                throw CreateError.invalidPartitions("Topic currently has \(t.partitions) partitions, which is higher than or equal to the requested \(count).")
            }
            t.partitions = count
            return !validateOnly
        }
        if grown != nil { Diagnostics.info("topic \(name) now has \(count) partitions") }
    }

    /// The partition, or the Kafka error code a client should see: UNKNOWN_TOPIC_OR_PARTITION when it does not
    /// exist, KAFKA_STORAGE_ERROR (retriable) when opening its log failed.
    func partitionOrError(_ topic: String, _ index: Int32) async -> Result<PartitionLog, KafkaErrorCode> {
        do {
            guard let p = try await partition(topic, index) else { return .failure(.unknownTopicOrPartition) }
            return .success(p)
        } catch {
            Diagnostics.warn("opening \(topic)-\(index): \(error)")
            return .failure(.kafkaStorageError)
        }
    }

    /// The open partition log, opening it on first use (one open at a time per partition).
    func partition(_ topic: String, _ index: Int32) async throws -> PartitionLog? {
        guard let t = try await self.topic(topic), index >= 0, index < t.partitions else { return nil }
        let k = "\(topic)-\(index)"
        if let p = partitions[k] { return p }
        if let pending = opening[k] { return try await pending.value }
        let client = client
        let config = config
        let signal = appendSignal
        let roll = SegmentRoll(topicConfigs: t.configs)
        let task = Task(executorPreference: loop) {
            try await PartitionLog.open(topic: topic, partition: index, client: client, config: config, appendSignal: signal,
                                        roll: roll)
        }
        opening[k] = task
        defer { opening[k] = nil }
        let p = try await task.value
        partitions[k] = p
        // The topic's configs may have changed while the partition was being opened.
        if topics[topic].map({ SegmentRoll(topicConfigs: $0.configs) }) != roll { await applyRoll(to: p) }
        return p
    }

    func openPartitions() -> [(TopicRecord, PartitionLog)] {
        partitions.compactMap { (k, p) in topics[p.topic].map { ($0, p) } }
    }

    func closeAll() async {
        for (_, p) in partitions { await p.close() }
        partitions.removeAll()
    }

    static func encode(_ t: TopicRecord) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        return Array(try! e.encode(t))  // plain struct of strings and integers: cannot fail
    }
}
