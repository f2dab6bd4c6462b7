import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO

/// Settings of one produce run.
struct ProducePlan: Sendable {
    var topic: String
    var partitions: Int
    var recordBytes: Int
    var recordsPerBatch: Int
    var seconds: Double
    var inFlight: Int
    /// Records per second; 0 = closed loop (as fast as responses come back).
    var rate: Double
}

/// What a produce run measured.
struct ProduceResult: Sendable {
    var requests = 0
    var ackedRecords = 0
    var errors = 0
    var errorNames: [String: Int] = [:]
    var elapsedSeconds = 0.0
    var latenciesNs: [UInt64] = []
    /// Per partition, the highest offset acknowledged + 1 (the expected high watermark on a fresh topic).
    var endOffsets: [Int64] = []

    func percentileMs(_ q: Double) -> Double {
        guard !latenciesNs.isEmpty else { return 0 }
        let s = latenciesNs.sorted()
        return Double(s[Swift.min(s.count - 1, Int(Double(s.count) * q))]) / 1e6
    }
}

/// Pipelined Produce v9 (acks=-1) over every connection, driven by response callbacks and (with a rate) a 1 ms
/// loop timer. Loop-thread object: `start` and every callback run on the loop thread.
///
/// Bounds: at most `inFlight` requests outstanding per connection; latencies are kept for at most
/// `maxSamples` requests (later ones still count in throughput and errors). The run ends at most 60 s after its
/// duration even if the broker stops answering (then it fails with `.timeout`).
final class ProduceRun: @unchecked Sendable {
    static let maxSamples = 20_000_000
    static let version: Int16 = 9

    let loop: EventLoop
    let plan: ProducePlan
    let conns: [KafkaPipeline]
    /// One encoded Produce request body per partition, built once and sent by reference.
    private var bodies: [ByteBuffer] = []
    private var result = ProduceResult()
    private var startNs: UInt64 = 0
    private var deadlineNs: UInt64 = 0
    private var issued = 0
    private var totalScheduled = 0
    private var intervalNs = 0.0
    private var ticker: LoopTimer?
    private var watchdog: LoopTimer?
    private var finished = false
    private var lastResponseNs: UInt64 = 0
    private var done: ((Result<ProduceResult, WoodpeckerError>) -> Void)?

    init(loop: EventLoop, plan: ProducePlan, conns: [KafkaPipeline]) throws {
        self.loop = loop
        self.plan = plan
        self.conns = conns
        let value = (0..<plan.recordBytes).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let records = (0..<plan.recordsPerBatch).map { Record(offsetDelta: Int32($0), value: value) }
        let batch = try RecordBatch.build(records: records, baseTimestamp: Int64(Clock.wallMillis()))
        for p in 0..<plan.partitions {
            let req = ProduceRequest(acks: -1, timeoutMs: 30_000, topicData: [
                .init(name: plan.topic, partitionData: [.init(index: Int32(p), records: batch.bytes)]),
            ])
            var body = ByteBuffer()
            req.encode(to: &body, version: Self.version)
            bodies.append(body)
        }
        result.endOffsets = Array(repeating: 0, count: plan.partitions)
        result.latenciesNs.reserveCapacity(min(Self.maxSamples, 1 << 20))
    }

    /// Starts the run; `done` is called once on the loop thread.
    func start(_ done: @escaping (Result<ProduceResult, WoodpeckerError>) -> Void) {
        loop.preconditionInLoop()
        self.done = done
        startNs = Clock.monotonicNanos()
        deadlineNs = startNs + UInt64(plan.seconds * 1e9)
        watchdog = LoopTimer(loop: loop) { [unowned self] in
            self.finish(.failure(WoodpeckerError(.timeout,
                                                 "produce: \(self.outstanding) requests unanswered 60 s after the run ended; is the broker stuck?")))
        }
        watchdog!.start(afterMs: UInt64(plan.seconds * 1000) + 60_000)
        if plan.rate > 0 {
            let requestsPerSecond = plan.rate / Double(plan.recordsPerBatch)
            intervalNs = 1e9 / requestsPerSecond
            totalScheduled = max(1, Int(requestsPerSecond * plan.seconds))
            ticker = LoopTimer(loop: loop) { [unowned self] in self.issueDue() }
            ticker!.start(afterMs: 1, repeatMs: 1)
            issueDue()
        } else {
            for c in conns {
                for _ in 0..<plan.inFlight { send(on: c, scheduledNs: Clock.monotonicNanos()) }
            }
        }
    }

    private var outstanding: Int { conns.reduce(0) { $0 + $1.outstanding } }

    /// Open loop: issues every request whose scheduled time has come, as in-flight slots allow. A request that waits
    /// for a slot keeps its scheduled time, so queueing shows in its latency.
    private func issueDue() {
        guard !finished else { return }
        let now = Clock.monotonicNanos()
        let due = min(totalScheduled, Int(Double(now - startNs) / intervalNs) + 1)
        while issued < due {
            guard let c = conns.min(by: { $0.outstanding < $1.outstanding }), c.outstanding < plan.inFlight else { break }
            send(on: c, scheduledNs: startNs + UInt64(Double(issued) * intervalNs))
        }
        if issued >= totalScheduled {
            ticker?.close()
            ticker = nil
            maybeFinish()
        }
    }

    private func send(on c: KafkaPipeline, scheduledNs: UInt64) {
        let partition = issued % plan.partitions
        issued += 1
        c.send(apiKey: ProduceRequest.apiKey, version: Self.version, body: bodies[partition]) { [unowned self] r in
            self.completed(r, on: c, scheduledNs: scheduledNs)
        }
    }

    private func completed(_ r: Result<ByteBuffer, WoodpeckerError>, on c: KafkaPipeline, scheduledNs: UInt64) {
        guard !finished else { return }
        let now = Clock.monotonicNanos()
        lastResponseNs = now
        switch r {
        case let .failure(e):
            finish(.failure(WoodpeckerError(e.code, "produce: \(e.message)", retryable: e.isRetryable)))
            return
        case var .success(body):
            result.requests += 1
            guard let resp = try? ProduceResponse(from: &body, version: Self.version) else {
                count(error: "UNDECODABLE_RESPONSE")
                break
            }
            var ok = false
            for t in resp.responses {
                for p in t.partitionResponses {
                    if p.errorCode != 0 {
                        count(error: KafkaErrorCode(rawValue: p.errorCode)?.name ?? "ERROR_\(p.errorCode)")
                    } else {
                        ok = true
                        let idx = Int(p.index)
                        if idx >= 0, idx < result.endOffsets.count {
                            result.endOffsets[idx] = max(result.endOffsets[idx], p.baseOffset + Int64(plan.recordsPerBatch))
                        }
                    }
                }
            }
            if ok {
                result.ackedRecords += plan.recordsPerBatch
                if result.latenciesNs.count < Self.maxSamples { result.latenciesNs.append(now - scheduledNs) }
            } else if resp.responses.isEmpty {
                count(error: "EMPTY_RESPONSE")
            }
        }
        if plan.rate > 0 {
            issueDue()
        } else if now < deadlineNs {
            send(on: c, scheduledNs: now)
        }
        maybeFinish()
    }

    private func count(error name: String) {
        result.errors += 1
        result.errorNames[name, default: 0] += 1
    }

    private func maybeFinish() {
        guard outstanding == 0 else { return }
        if plan.rate > 0 && issued < totalScheduled { return }
        if plan.rate == 0 && Clock.monotonicNanos() < deadlineNs { return }
        result.elapsedSeconds = Double(max(lastResponseNs, startNs + 1) - startNs) / 1e9
        finish(.success(result))
    }

    private func finish(_ r: Result<ProduceResult, WoodpeckerError>) {
        guard !finished else { return }
        finished = true
        ticker?.close()
        ticker = nil
        watchdog?.close()
        watchdog = nil
        let d = done
        done = nil
        d?(r)
    }
}

/// What a consume run measured.
struct ConsumeResult: Sendable {
    var records = 0
    var batchBytes = 0
    var fetches = 0
    var errors = 0
    var errorNames: [String: Int] = [:]
    var elapsedSeconds = 0.0
}

/// Fetch v12 from offset 0 up to each partition's high watermark. Every partition has one fetch outstanding at a
/// time; partitions are spread over the connections, so fetches of different partitions are pipelined.
/// Loop-thread object.
///
/// Bounds: `partitionMaxBytes` per partition per fetch; a partition that makes no progress in
/// `maxEmptyFetches` consecutive fetches fails the run (the broker holds data it does not return).
final class ConsumeRun: @unchecked Sendable {
    static let version: Int16 = 12
    static let maxEmptyFetches = 200

    let loop: EventLoop
    let topic: String
    let conns: [KafkaPipeline]
    let partitionMaxBytes: Int32
    private var offsets: [Int64]
    private var highWatermarks: [Int64?]
    private var emptyFetches: [Int]
    private var remaining: Int
    private var result = ConsumeResult()
    private var startNs: UInt64 = 0
    private var finished = false
    private var done: ((Result<ConsumeResult, WoodpeckerError>) -> Void)?

    init(loop: EventLoop, topic: String, partitions: Int, conns: [KafkaPipeline], partitionMaxBytes: Int32 = 8 << 20) {
        self.loop = loop
        self.topic = topic
        self.conns = conns
        self.partitionMaxBytes = partitionMaxBytes
        offsets = Array(repeating: 0, count: partitions)
        highWatermarks = Array(repeating: nil, count: partitions)
        emptyFetches = Array(repeating: 0, count: partitions)
        remaining = partitions
    }

    func start(_ done: @escaping (Result<ConsumeResult, WoodpeckerError>) -> Void) {
        loop.preconditionInLoop()
        self.done = done
        startNs = Clock.monotonicNanos()
        for p in 0..<offsets.count { fetch(p) }
    }

    private func fetch(_ p: Int) {
        let req = FetchRequest(maxWaitMs: 500, minBytes: 1, maxBytes: partitionMaxBytes, isolationLevel: 0,
                               sessionId: 0, sessionEpoch: -1,
                               topics: [.init(topic: topic, partitions: [
                                   .init(partition: Int32(p), fetchOffset: offsets[p], partitionMaxBytes: partitionMaxBytes),
                               ])])
        conns[p % conns.count].send(req, version: Self.version) { [unowned self] r in self.completed(p, r) }
    }

    private func completed(_ p: Int, _ r: Result<ByteBuffer, WoodpeckerError>) {
        guard !finished else { return }
        result.fetches += 1
        switch r {
        case let .failure(e):
            finish(.failure(WoodpeckerError(e.code, "fetch partition \(p): \(e.message)", retryable: e.isRetryable)))
            return
        case var .success(body):
            guard let resp = try? FetchResponse(from: &body, version: Self.version) else {
                finish(.failure(WoodpeckerError(.corrupted, "fetch partition \(p): undecodable FetchResponse v\(Self.version)")))
                return
            }
            guard resp.errorCode == 0 else {
                fail(p, code: resp.errorCode)
                return
            }
            guard let data = resp.responses.first(where: { $0.topic == topic })?.partitions
                .first(where: { $0.partitionIndex == Int32(p) })
            else {
                finish(.failure(WoodpeckerError(.corrupted, "fetch partition \(p): response does not mention \(topic)-\(p)")))
                return
            }
            guard data.errorCode == 0 else {
                fail(p, code: data.errorCode)
                return
            }
            if highWatermarks[p] == nil { highWatermarks[p] = data.highWatermark }
            let before = offsets[p]
            if let records = data.records { consume(records, partition: p) }
            if offsets[p] == before {
                emptyFetches[p] += 1
                if emptyFetches[p] >= Self.maxEmptyFetches {
                    finish(.failure(WoodpeckerError(.corrupted,
                                                    "fetch partition \(p): no progress at offset \(offsets[p]) below high watermark \(highWatermarks[p] ?? -1) after \(Self.maxEmptyFetches) fetches")))
                    return
                }
            } else {
                emptyFetches[p] = 0
            }
        }
        if offsets[p] >= (highWatermarks[p] ?? 0) {
            remaining -= 1
            if remaining == 0 {
                result.elapsedSeconds = Double(Clock.monotonicNanos() - startNs) / 1e9
                finish(.success(result))
            }
        } else {
            fetch(p)
        }
    }

    /// Counts the complete batches in `records` from the partition's fetch offset on and advances the offset past
    /// the last one. A trailing partial batch (cut by the size limit) is fetched again next time.
    private func consume(_ records: ByteBuffer, partition p: Int) {
        var rest = records
        while rest.readableBytes >= RecordBatchHeader.size {
            guard let h = try? RecordBatchHeader(parsing: rest), h.totalSize >= RecordBatchHeader.size,
                  h.totalSize <= rest.readableBytes
            else { break }
            try? rest.skip(h.totalSize)
            guard h.lastOffset >= offsets[p] else { continue }
            let first = max(h.baseOffset, offsets[p])
            result.records += Int(h.lastOffset - first + 1)
            result.batchBytes += h.totalSize
            offsets[p] = h.lastOffset + 1
        }
    }

    private func fail(_ p: Int, code: Int16) {
        let name = KafkaErrorCode(rawValue: code)?.name ?? "ERROR_\(code)"
        result.errors += 1
        result.errorNames[name, default: 0] += 1
        finish(.failure(WoodpeckerError(.ioFailure, "fetch \(topic)-\(p) at offset \(offsets[p]): broker error \(name)")))
    }

    private func finish(_ r: Result<ConsumeResult, WoodpeckerError>) {
        guard !finished else { return }
        finished = true
        let d = done
        done = nil
        d?(r)
    }
}
