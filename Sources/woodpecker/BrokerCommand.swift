import ArgumentParser
import Foundation
import KafkaBroker
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO

#if canImport(Glibc)
import Glibc
#endif

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker",
        abstract: "Run the Kafka-protocol broker (each topic-partition is a Woodpecker log).",
        discussion: """
            Settings come from, in increasing precedence: defaults, --config FILE (lines of `key = value`),
            environment variables WOODPECKER_<KEY> (e.g. WOODPECKER_LISTEN), and flags.
            Keys: listen, advertise, data-dir, storage, metadata, mode, logstores, default-partitions, auto-create-topics, max-request-bytes,
            idle-timeout-ms, node-id, cluster-id, group-initial-rebalance-delay-ms.
            """)
    @Option(help: "Config file of `key = value` lines.") var config: String?
    @Option(help: "HOST:PORT to listen on (default 127.0.0.1:9092).") var listen: String?
    @Option(help: "HOST:PORT advertised to clients (default: the listen address).") var advertise: String?
    @Option(help: "Data directory: objects/ holds the logs, meta/ the embedded metadata (default ./data).") var dataDir: String?
    @Option(help: "Partitions of auto-created topics (default 1).") var defaultPartitions: Int32?
    @Option(help: "Log storage: file:///PATH (default: DATA_DIR/segments) or s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true].")
    var storage: String?
    @Option(help: "Metadata: embedded (default, under DATA_DIR/meta) or etcd://HOST:PORT[,HOST:PORT]/PREFIX.")
    var metadata: String?
    @Option(help: "Write mode: memory (default; MemoryBuffer, acknowledged once in storage) or quorum (QuorumBuffer, acknowledged once 2 of 3 LogStores hold it).")
    var mode: String?
    @Option(help: "QuorumBuffer: LogStore nodes HOST:PORT,HOST:PORT,HOST:PORT (started with `woodpecker logstore` on the same --storage).")
    var logstores: String?
    @Option(help: "How long the first rebalance of an empty consumer group waits for more members, ms (Kafka's group.initial.rebalance.delay.ms; default 100).")
    var groupInitialRebalanceDelayMs: UInt64?
    @Option(help: "Roll a partition's segment past this many bytes (Kafka's log.segment.bytes; default 268435456).")
    var segmentBytes: Int?
    @Option(help: "Roll a partition's segment once its first entry is this old, ms (Kafka's log.roll.ms; default 600000).")
    var segmentMs: Int64?
    @Flag(help: "Log debug lines.") var verbose = false

    func run() async throws {
        Diagnostics.verbose = verbose
        let settings = try BrokerSettings.resolve(file: config, flags: [
            "listen": listen, "advertise": advertise, "data-dir": dataDir,
            "default-partitions": defaultPartitions.map(String.init), "storage": storage, "metadata": metadata,
            "mode": mode, "logstores": logstores,
            "group-initial-rebalance-delay-ms": groupInitialRebalanceDelayMs.map(String.init),
            "segment-bytes": segmentBytes.map(String.init), "segment-ms": segmentMs.map(String.init),
        ])
        var cfg = try settings.brokerConfig()
        let nodes = try settings.logstores()
        let rt = try await Runtime.open(dataDir: cfg.dataDir, storage: settings.values["storage"],
                                        metadata: settings.values["metadata"], config: try settings.walConfig(),
                                        logstores: nodes)
        cfg.metadataPrefix = rt.metadataPrefix
        let broker = Broker(config: cfg, client: rt.client)
        let port = try await onLoop(rt.loop) { try await broker.start() }
        let releaser = MemoryReleaser(loop: rt.loop)
        rt.loop.execute { releaser.start() }
        Diagnostics.info("woodpecker broker listening on \(cfg.listenHost):\(port) (advertised \(cfg.advertisedHost):\(cfg.advertisedPort)), data in \(cfg.dataDir)")
        let stop = AsyncStream<Int32>.makeStream()
        let watcher = await SignalWatcher(loop: rt.loop, signals: [SIGTERM, SIGINT]) { stop.continuation.yield($0) }
        for await sig in stop.stream {
            Diagnostics.info("signal \(sig): shutting down")
            break
        }
        try await onLoop(rt.loop) {
            releaser.stop()
            await broker.stop()
        }
        await watcher.close()
        await rt.close()
        Diagnostics.info("broker stopped")
    }
}

/// Merges defaults, a `key = value` file, WOODPECKER_* environment variables and flags.
struct BrokerSettings {
    var values: [String: String]

    static func resolve(file: String?, flags: [String: String?]) throws -> BrokerSettings {
        var v: [String: String] = [:]
        let env = ProcessInfoLite.environment
        if let path = file ?? env["WOODPECKER_CONFIG"] {
            for (k, val) in try parseFile(path) { v[k] = val }
        }
        // WOODPECKER_BIN names the binary for scripts; it is not a setting.
        for (k, val) in env where k.hasPrefix("WOODPECKER_") && k != "WOODPECKER_BIN" {
            let key = k.dropFirst("WOODPECKER_".count).lowercased().replacingOccurrences(of: "_", with: "-")
            v[key] = val
        }
        for (k, val) in flags { if let val { v[k] = val } }
        return BrokerSettings(values: v)
    }

    static func parseFile(_ path: String) throws -> [(String, String)] {
        guard let f = fopen(path, "r") else { throw ValidationError("cannot read config file \(path): \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var out: [(String, String)] = []
        var line = [CChar](repeating: 0, count: 4096)
        var n = 0
        while fgets(&line, 4096, f) != nil {
            n += 1
            let s = String(cChars: line).trimmingCharacters(in: .whitespacesAndNewlines)
            if s.isEmpty || s.hasPrefix("#") { continue }
            guard let eq = s.firstIndex(of: "=") else { throw ValidationError("\(path):\(n): expected `key = value`") }
            out.append((s[..<eq].trimmingCharacters(in: .whitespaces), s[s.index(after: eq)...].trimmingCharacters(in: .whitespaces)))
        }
        return out
    }

    /// The LogStore nodes in quorum mode, nil in memory mode.
    func logstores() throws -> [String]? {
        switch values["mode"] ?? "memory" {
        case "memory":
            if values["logstores"] != nil { Diagnostics.warn("logstores is ignored in memory mode; add --mode quorum") }
            return nil
        case "quorum":
            let nodes = (values["logstores"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }
            for n in nodes { _ = try hostPort(n, "logstores") }
            let discovery = (values["metadata"] ?? "").hasPrefix("etcd")
            guard !nodes.isEmpty || discovery else {
                throw ValidationError("--mode quorum needs --logstores HOST:PORT,HOST:PORT,HOST:PORT (or --metadata etcd://... with LogStores registered there)")
            }
            guard discovery || Set(nodes).count >= 3 else {
                throw ValidationError("--logstores: QuorumBuffer needs 3 distinct LogStore nodes (an entry is acknowledged once 2 hold it); got \(nodes)")
            }
            return nodes
        case let m:
            throw ValidationError("--mode \(m): use memory or quorum")
        }
    }

    func brokerConfig() throws -> BrokerConfig {
        var c = BrokerConfig()
        let known: Set = ["listen", "advertise", "data-dir", "default-partitions", "auto-create-topics", "max-request-bytes",
                          "idle-timeout-ms", "node-id", "cluster-id", "config", "storage", "metadata", "mode", "logstores",
                          "group-initial-rebalance-delay-ms", "segment-bytes", "segment-ms"]
        for k in values.keys where !known.contains(k) {
            Diagnostics.warn("ignoring unknown setting \(k)")
        }
        if let l = values["listen"] { (c.listenHost, c.listenPort) = try hostPort(l, "listen") }
        if let a = values["advertise"] {
            (c.advertisedHost, c.advertisedPort) = try hostPort(a, "advertise")
        } else {
            (c.advertisedHost, c.advertisedPort) = (c.listenHost == "0.0.0.0" ? "127.0.0.1" : c.listenHost, c.listenPort)
        }
        if let d = values["data-dir"] { c.dataDir = d }
        if let p = values["default-partitions"] { c.defaultPartitions = try int(p, "default-partitions") }
        if let a = values["auto-create-topics"] { c.autoCreateTopics = a == "true" || a == "1" }
        if let m = values["max-request-bytes"] { c.maxRequestBytes = try int(m, "max-request-bytes") }
        if let i = values["idle-timeout-ms"] { c.idleTimeoutMs = try int(i, "idle-timeout-ms") }
        if let n = values["node-id"] { c.nodeId = try int(n, "node-id") }
        if let id = values["cluster-id"] { c.clusterId = id }
        if let d = values["group-initial-rebalance-delay-ms"] {
            let ms: UInt64 = try int(d, "group-initial-rebalance-delay-ms")
            guard ms <= 300_000 else { throw ValidationError("group-initial-rebalance-delay-ms: \(ms) is above 300000 (5 minutes)") }
            c.groups.initialRebalanceDelayMs = ms
        }
        // Topic defaults set here (their values reach the topics through the WAL config, see walConfig()).
        if values["segment-bytes"] != nil { c.staticTopicConfigs.insert("segment.bytes") }
        if values["segment-ms"] != nil { c.staticTopicConfigs.insert("segment.ms") }
        return c
    }

    /// The log settings: `segment-bytes` and `segment-ms` roll each partition's segment past that size or age
    /// (Kafka's `log.segment.bytes` and `log.roll.ms`).
    func walConfig() throws -> WALConfig {
        var w = WALConfig()
        // The same ranges as the topic configs these settings are the defaults of.
        if let b = values["segment-bytes"] {
            if let problem = BrokerConfig.topicConfigProblem("segment.bytes", b) { throw ValidationError("segment-bytes: \(problem)") }
            w.segmentMaxBytes = try int(b, "segment-bytes")
        }
        if let m = values["segment-ms"] {
            if let problem = BrokerConfig.topicConfigProblem("segment.ms", m) { throw ValidationError("segment-ms: \(problem)") }
            w.segmentMaxAgeMs = try int(m, "segment-ms")
        }
        return w
    }

    private func int<T: FixedWidthInteger>(_ s: String, _ name: String) throws -> T {
        guard let v = T(s) else { throw ValidationError("\(name): \(s) is not a number") }
        return v
    }

    private func hostPort(_ s: String, _ name: String) throws -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port >= 0, port < 65536 else {
            throw ValidationError("\(name): expected HOST:PORT, got \(s)")
        }
        return (String(s[..<colon]), port)
    }
}

enum ProcessInfoLite {
    static var environment: [String: String] {
        var out: [String: String] = [:]
        var p = environ
        while let e = p.pointee {
            let s = String(cString: e)
            if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return out
    }
}
