import WoodpeckerCore

/// Settings of one `woodpecker broker`. Every field can come from the config file, the environment
/// (`WOODPECKER_<NAME>`) or a flag; see README "Configuration".
public struct BrokerConfig: Sendable {
    public var listenHost = "127.0.0.1"
    public var listenPort = 9092
    /// Host and port clients are told to connect to (Metadata, FindCoordinator).
    public var advertisedHost = "127.0.0.1"
    public var advertisedPort = 9092
    public var nodeId: Int32 = 0
    public var clusterId = "woodpecker-cluster"
    public var dataDir = "./data"
    /// Prefix of the facade's metadata keys (`<prefix>kafka/...`), e.g. the etcd prefix.
    public var metadataPrefix = ""
    /// Largest request frame; a larger one closes the connection with a log line.
    public var maxRequestBytes = Limits.maxRequestSizeBytes
    /// Connections idle this long are closed (0 = never).
    public var idleTimeoutMs: UInt64 = 600_000
    /// Requests read but not yet answered per connection before the broker stops reading from it.
    public var maxInFlightRequestsPerConnection = 1_000
    /// Request bytes read but not yet answered per connection before the broker stops reading from it. This is
    /// what bounds broker memory under a producer faster than storage (each byte is held about twice: the
    /// request and the block being written).
    public var maxInFlightBytesPerConnection = 32 * 1024 * 1024
    /// Largest fetch response (Kafka's broker `fetch.max.bytes`): a request's `max_bytes` above it is lowered to it.
    public var fetchMaxBytes = 57_671_680
    /// Bytes of fetch responses being assembled or waiting to be written, across the broker. Each response is built
    /// in memory before it is written (no zero-copy send), so catch-up consumers with many large fetches in flight
    /// would otherwise hold up to `fetchMaxBytes` each; a response holds its share until it has been written to the
    /// socket, and past this a fetch waits (up to its max_wait_ms) for others to go out.
    public var fetchResponseBudgetBytes = 256 * 1024 * 1024
    public var autoCreateTopics = true
    public var defaultPartitions: Int32 = 1
    /// Topic config defaults (overridable per topic at creation).
    public var defaultTopicConfigs: [String: String] = [
        "retention.ms": "604800000",
        "retention.bytes": "-1",
        "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime",
        "cleanup.policy": "delete",
        "segment.bytes": String(Limits.segmentMaxBytes),
        "segment.ms": String(Limits.segmentMaxAgeMs),
    ]
    /// Topic configs whose default the operator set for this broker (flags, environment, config file): DescribeConfigs
    /// reports them with source STATIC_BROKER_CONFIG, as Kafka does for `log.*` settings in server.properties, and
    /// the other defaults with DEFAULT_CONFIG.
    public var staticTopicConfigs: Set<String> = []
    /// How often retention is enforced.
    public var retentionCheckIntervalMs: UInt64 = 30_000
    /// Recent batches scanned per partition at startup to rebuild idempotent-producer state.
    public var producerStateRecoveryEntries = 10_000
    /// Consumer-group coordinator settings (initial rebalance delay, session timeout bounds, limits).
    public var groups = GroupCoordinatorConfig()

    public init() {}
}

extension BrokerConfig {
    /// Why `value` is not valid for the topic config `key`, or nil when it is (also the range of the broker settings
    /// that give those configs their defaults). Numbers must parse and lie in the
    /// range the broker can honour; a bad value is refused at creation (INVALID_CONFIG) instead of being read as
    /// a default later.
    public static func topicConfigProblem(_ key: String, _ value: String) -> String? {
        func number(_ min: Int64, _ max: Int64 = .max, _ what: String) -> String? {
            guard let n = Int64(value) else { return "\(key)=\(value): not a number" }
            return n < min || n > max ? "\(key)=\(value): \(what)" : nil
        }
        switch key {
        case "retention.ms", "retention.bytes": return number(-1, .max, "must be -1 (no limit) or more")
        case "max.message.bytes":
            return number(0, Int64(Limits.maxEntrySizeBytes), "must be 0...\(Limits.maxEntrySizeBytes) (the log's largest entry)")
        case "segment.bytes": return number(1 << 20, 1 << 40, "must be 1048576 (1 MiB) ... 1099511627776 (1 TiB)")
        case "segment.ms": return number(1_000, .max, "must be at least 1000 (1 second)")
        case "message.timestamp.type":
            return ["CreateTime", "LogAppendTime"].contains(value) ? nil : "\(key)=\(value): must be CreateTime or LogAppendTime"
        case "cleanup.policy":
            return value == "delete" ? nil : "\(key)=\(value): only delete is supported (no log compaction)"
        default: return nil
        }
    }
}
