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
    /// Requests slower than this are kept with their send time for `SlowEpisode` (0 = none).
    var slowNs: UInt64 = 0
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
    /// Requests slower than the plan's `slowNs`: (scheduled send time after the run's start, latency), at most
    /// `ProduceRun.maxSlowSamples`.
    var slow: [(startNs: UInt64, latencyNs: UInt64)] = []

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
    static let maxSlowSamples = 1_000_000
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
                if plan.slowNs > 0, now - scheduledNs > plan.slowNs, result.slow.count < Self.maxSlowSamples {
                    result.slow.append((scheduledNs - startNs, now - scheduledNs))
                }
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

