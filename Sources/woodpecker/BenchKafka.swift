import ArgumentParser
import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load generators.",
        subcommands: [BenchKafka.self])
}

/// `woodpecker bench kafka`: a native Kafka load generator that works against any Kafka broker.
struct BenchKafka: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kafka",
        abstract: "Produce (and optionally consume) against a Kafka broker with pipelined requests on one event loop.",
        discussion: """
            Creates the topic (an existing one is reused), builds one record batch, then sends Produce v9 (acks=-1)
            requests with up to --in-flight outstanding per connection, round-robin over the partitions. MB/s counts
            record payload bytes (10^6); latency runs from send (with --rate: from the scheduled send time) to the
            response. --consume then fetches (Fetch v12) every partition from offset 0 to its high watermark, in
            offset windows of about 4 MiB with up to --in-flight fetches outstanding per connection.
            Prints a human line and a final JSON line (keys as compat/bench/bench_produce.py). Exits non-zero if any
            produce response carried an error or fewer records were consumed than acknowledged.
            All requests go to the bootstrap broker: point it at the partitions' leader (a single broker).
            """)
    @Option(help: "HOST:PORT of the broker.") var bootstrap: String
    @Option(help: "Topic (created if missing).") var topic: String
    @Option(help: "Partitions of the topic when it is created.") var partitions: Int = 1
    @Option(help: "Bytes of each record's value.") var recordBytes: Int = 1024
    @Option(help: "Records per batch (one batch per Produce request).") var recordsPerBatch: Int = 100
    @Option(help: "Seconds of producing.") var seconds: Double = 10
    @Option(help: "TCP connections.") var connections: Int = 1
    @Option(help: "Produce requests outstanding per connection.") var inFlight: Int = 16
    @Option(help: "Records per second (0: as fast as the broker answers).") var rate: Double = 0
    @Flag(help: "After producing, fetch everything back and measure consume MB/s.") var consume = false
    @Option(help: "Label copied into the JSON line.") var label: String = ""
    @Option(help: ArgumentHelp("List the episodes of requests slower than this (ms; 0 = off).",
                               discussion: "Requests starting within 50 ms of the previous slow one form one episode: a steady tail shows many small episodes, a stall one large episode, periodic stalls a regular interval."))
    var slowMs: Double = 0

    func validate() throws {
        guard partitions >= 1, partitions <= 10_000 else { throw ValidationError("--partitions must be 1...10000") }
        guard recordBytes >= 0, recordBytes <= 8 << 20 else { throw ValidationError("--record-bytes must be 0...8388608") }
        guard recordsPerBatch >= 1, recordBytes * recordsPerBatch <= 64 << 20 else {
            throw ValidationError("--records-per-batch must be >= 1 and a batch at most 64 MiB")
        }
        guard seconds > 0, seconds <= 86_400 else { throw ValidationError("--seconds must be in (0, 86400]") }
        guard connections >= 1, connections <= 256 else { throw ValidationError("--connections must be 1...256") }
        guard inFlight >= 1, inFlight <= 1024 else { throw ValidationError("--in-flight must be 1...1024") }
        guard rate >= 0 else { throw ValidationError("--rate must be >= 0") }
        guard slowMs >= 0, slowMs <= 60_000 else { throw ValidationError("--slow-ms must be 0...60000") }
        guard splitHostPort(bootstrap) != nil else { throw ValidationError("--bootstrap must be HOST:PORT, got \(bootstrap)") }
    }

    func run() async throws {
        let (host, port) = splitHostPort(bootstrap)!
        let loop = EventLoop(name: "bench-kafka")
        var conns: [BenchConnection] = []
        for _ in 0..<connections {
            conns.append(try await BenchConnection.open(loop: loop, host: host, port: port))
        }
        let partitionCount = try await ensureTopic(conns[0])
        var plan = ProducePlan(topic: topic, partitions: partitionCount, recordBytes: recordBytes,
                               recordsPerBatch: recordsPerBatch, seconds: seconds, inFlight: inFlight, rate: rate)
        plan.partitions = partitionCount
        plan.slowNs = UInt64(slowMs * 1e6)
        let pipelines = conns.map(\.pipeline)
        let producer = try ProduceRun(loop: loop, plan: plan, conns: pipelines)
        let produced: ProduceResult = try await withCheckedThrowingContinuation { c in
            loop.execute { producer.start { c.resume(with: $0.mapError { $0 as any Error }) } }
        }
        let payloadBytes = Double(produced.ackedRecords) * Double(recordBytes)
        let mbs = payloadBytes / 1e6 / produced.elapsedSeconds
        let msgs = Double(produced.ackedRecords) / produced.elapsedSeconds
        var human = "produce \(topic) (\(partitionCount) partitions, \(connections) conn x \(inFlight) in flight"
            + (rate > 0 ? ", rate \(fmt(rate))/s" : "") + "): \(produced.ackedRecords) records in \(fmt(produced.elapsedSeconds)) s, "
            + "\(fmt(mbs)) MB/s, \(Int(msgs.rounded())) records/s, per request p50=\(ms(produced.percentileMs(0.5))) "
            + "p99=\(ms(produced.percentileMs(0.99))) p99.9=\(ms(produced.percentileMs(0.999))) ms, errors=\(produced.errors)"
        if !produced.errorNames.isEmpty {
            human += " " + produced.errorNames.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        print(human)
        if slowMs > 0 { printSlowEpisodes(produced.slow) }

        var json: [(String, String)] = [
            ("label", quote(label)), ("generator", quote("woodpecker-native")), ("records", "\(produced.ackedRecords)"),
            ("size", "\(recordBytes)"), ("partitions", "\(partitionCount)"), ("rate", "\(rate)"),
            ("connections", "\(connections)"), ("in_flight", "\(inFlight)"), ("records_per_batch", "\(recordsPerBatch)"),
            ("produce_mb_s", round1(mbs)), ("produce_msgs_s", "\(Int(msgs.rounded()))"),
            ("p50_ms", round2(produced.percentileMs(0.5))), ("p99_ms", round2(produced.percentileMs(0.99))),
            ("p999_ms", round2(produced.percentileMs(0.999))), ("errors", "\(produced.errors)"),
            ("acked", "\(produced.ackedRecords)"), ("requests", "\(produced.requests)"),
        ]
        var ok = produced.errors == 0
        if consume {
            let consumer = ConsumeRun(loop: loop, topic: topic, partitions: partitionCount, conns: pipelines,
                                      inFlight: inFlight, recordBytes: recordBytes)
            let consumed: ConsumeResult = try await withCheckedThrowingContinuation { c in
                loop.execute { consumer.start { c.resume(with: $0.mapError { $0 as any Error }) } }
            }
            let cmbs = Double(consumed.records) * Double(recordBytes) / 1e6 / consumed.elapsedSeconds
            print("consume \(topic): \(consumed.records) records in \(fmt(consumed.elapsedSeconds)) s, \(fmt(cmbs)) MB/s, "
                + "\(consumed.fetches) fetches, \(consumed.batchBytes) batch bytes")
            json += [("consumed", "\(consumed.records)"), ("consume_mb_s", round1(cmbs))]
            if consumed.records < produced.ackedRecords {
                print("error: consumed \(consumed.records) records, fewer than the \(produced.ackedRecords) acknowledged")
                ok = false
            }
        }
        for c in conns { await c.close() }
        print("{" + json.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        if !ok { throw ExitCode(1) }
    }

    /// Creates the topic (TOPIC_ALREADY_EXISTS is fine) and waits until Metadata lists every partition with a
    /// leader. Returns the topic's partition count (an existing topic keeps its own).
    /// One line per episode of slow requests (at most 50), then the median interval between episodes.
    private func printSlowEpisodes(_ slow: [(startNs: UInt64, latencyNs: UInt64)]) {
        let episodes = SlowEpisode.group(slow, gapNs: 50_000_000)
        print("slow requests (> \(fmt(slowMs)) ms): \(slow.count) in \(episodes.count) episode(s)")
        for e in episodes.prefix(50) {
            print("  at \(fmt(Double(e.startNs) / 1e9)) s: \(e.count) request(s) over \(ms(Double(e.spanNs) / 1e6)) ms, "
                + "worst \(ms(Double(e.maxLatencyNs) / 1e6)) ms")
        }
        if let gap = SlowEpisode.medianIntervalNs(episodes) {
            print("  median interval between episodes: \(ms(Double(gap) / 1e6)) ms")
        }
    }

    private func ensureTopic(_ conn: BenchConnection) async throws -> Int {
        let create = CreateTopicsRequest(topics: [.init(name: topic, numPartitions: Int32(partitions), replicationFactor: 1)],
                                         timeoutMs: 30_000)
        let created = try await conn.request(create, version: 4, response: CreateTopicsResponse.self)
        for t in created.topics where t.errorCode != 0 && t.errorCode != KafkaErrorCode.topicAlreadyExists.rawValue {
            let name = KafkaErrorCode(rawValue: t.errorCode)?.name ?? "\(t.errorCode)"
            throw WoodpeckerError(.invalidArgument, "create topic \(topic): \(name) \(t.errorMessage ?? "")")
        }
        let deadline = Clock.monotonicMillis() + 30_000
        var last = "no answer"
        while Clock.monotonicMillis() < deadline {
            let md = try await conn.request(MetadataRequest(topics: [.init(name: topic)], allowAutoTopicCreation: false),
                                            version: 9, response: MetadataResponse.self)
            if let t = md.topics.first(where: { $0.name == topic }) {
                if t.errorCode == 0, !t.partitions.isEmpty, t.partitions.allSatisfy({ $0.errorCode == 0 && $0.leaderId >= 0 }) {
                    if t.partitions.count != partitions {
                        print("note: topic \(topic) exists with \(t.partitions.count) partitions; using them")
                    }
                    return t.partitions.count
                }
                last = "topic error \(t.errorCode), \(t.partitions.count) partitions"
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WoodpeckerError(.timeout, "topic \(topic) not ready in Metadata within 30 s (\(last))")
    }
}

func splitHostPort(_ s: String) -> (String, Int)? {
    guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port > 0, port < 65536 else {
        return nil
    }
    let host = String(s[..<colon])
    return host.isEmpty ? nil : (host, port)
}

private func quote(_ s: String) -> String {
    var out = "\""
    for ch in s.unicodeScalars {
        switch ch {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where ch.value < 0x20: out += "\\u00" + (ch.value < 16 ? "0" : "") + String(ch.value, radix: 16)
        default: out.unicodeScalars.append(ch)
        }
    }
    return out + "\""
}

private func round1(_ d: Double) -> String { d.isFinite ? String((d * 10).rounded() / 10) : "0" }
private func round2(_ d: Double) -> String { d.isFinite ? String((d * 100).rounded() / 100) : "0" }
private func ms(_ d: Double) -> String { round2(d) }
