import KafkaProtocol
import WoodpeckerCore
import WoodpeckerIO

/// What a consume run measured.
struct ConsumeResult: Sendable {
    /// Records read, each offset in [0, high watermark) counted once.
    var records = 0
    /// Bytes of the complete batches received (duplicates at window edges included).
    var batchBytes = 0
    var fetches = 0
    var elapsedSeconds = 0.0
}

/// Reads every partition from offset 0 to its high watermark with pipelined Fetch v12 requests.
/// Loop-thread object: `start` and every callback run on the loop thread.
///
/// A first fetch per partition at offset 0 learns the high watermark; the rest of the partition is then cut into
/// offset windows of `windowRecords` that are fetched concurrently, up to `inFlight` per connection. A window
/// counts only the records inside it, so batches returned twice at window edges are not counted twice; a window
/// the broker returns only part of is fetched again from where it stopped.
///
/// Bounds: `inFlight` fetches outstanding per connection, `partitionMaxBytes` per fetch; a window that makes no
/// progress in `maxEmptyFetches` consecutive fetches fails the run.
final class ConsumeRun: @unchecked Sendable {
    static let version: Int16 = 12
    static let maxEmptyFetches = 200

    private struct Window {
        let partition: Int
        /// Next offset to read; the window is done when it reaches `end`.
        var next: Int64
        /// Exclusive; nil until the partition's high watermark is known (the first window of each partition).
        var end: Int64?
        var emptyFetches = 0
    }

    let loop: EventLoop
    let topic: String
    let conns: [KafkaPipeline]
    let inFlight: Int
    let windowRecords: Int64
    let partitionMaxBytes: Int32
    private let partitions: Int
    private var queue: [Window] = []
    private var queueHead = 0
    private var outstanding = 0
    private var result = ConsumeResult()
    private var startNs: UInt64 = 0
    private var finished = false
    private var done: ((Result<ConsumeResult, WoodpeckerError>) -> Void)?

    /// `recordBytes` sizes the windows (about 4 MiB of records each).
    init(loop: EventLoop, topic: String, partitions: Int, conns: [KafkaPipeline], inFlight: Int, recordBytes: Int) {
        self.loop = loop
        self.topic = topic
        self.partitions = partitions
        self.conns = conns
        self.inFlight = max(1, inFlight)
        let perRecord = max(1, recordBytes + 16)
        windowRecords = Int64(max(1, (4 << 20) / perRecord))
        // A window's records plus batch headers, and room for the batch straddling its start.
        partitionMaxBytes = Int32(min(Int(Int32.max), Int(windowRecords) * perRecord + 1 << 20))
    }

    func start(_ done: @escaping (Result<ConsumeResult, WoodpeckerError>) -> Void) {
        loop.preconditionInLoop()
        self.done = done
        startNs = Clock.monotonicNanos()
        for p in 0..<partitions { queue.append(Window(partition: p, next: 0, end: nil)) }
        pump()
    }

    /// Issues queued windows while connections have in-flight room; finishes when nothing is left.
    private func pump() {
        guard !finished else { return }
        while queueHead < queue.count {
            guard let c = conns.min(by: { $0.outstanding < $1.outstanding }), c.outstanding < inFlight else { break }
            let w = queue[queueHead]
            queueHead += 1
            fetch(w, on: c)
        }
        if queueHead > 4096 {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
        if queueHead == queue.count && outstanding == 0 {
            result.elapsedSeconds = Double(Clock.monotonicNanos() - startNs) / 1e9
            finish(.success(result))
        }
    }

    private func fetch(_ w: Window, on c: KafkaPipeline) {
        let req = FetchRequest(maxWaitMs: 500, minBytes: 1, maxBytes: partitionMaxBytes, isolationLevel: 0,
                               sessionId: 0, sessionEpoch: -1,
                               topics: [.init(topic: topic, partitions: [
                                   .init(partition: Int32(w.partition), fetchOffset: w.next, partitionMaxBytes: partitionMaxBytes),
                               ])])
        outstanding += 1
        c.send(req, version: Self.version) { [unowned self] r in
            self.outstanding -= 1
            self.completed(w, r)
        }
    }

    private func completed(_ window: Window, _ r: Result<ByteBuffer, WoodpeckerError>) {
        guard !finished else { return }
        var w = window
        let p = w.partition
        result.fetches += 1
        let body: ByteBuffer
        switch r {
        case let .failure(e):
            finish(.failure(WoodpeckerError(e.code, "fetch \(topic)-\(p) at offset \(w.next): \(e.message)", retryable: e.isRetryable)))
            return
        case let .success(b):
            body = b
        }
        var b = body
        guard let resp = try? FetchResponse(from: &b, version: Self.version) else {
            finish(.failure(WoodpeckerError(.corrupted, "fetch \(topic)-\(p): undecodable FetchResponse v\(Self.version)")))
            return
        }
        guard let data = resp.responses.first(where: { $0.topic == topic })?.partitions
            .first(where: { $0.partitionIndex == Int32(p) })
        else {
            let code = resp.errorCode != 0 ? " (error \(errorName(resp.errorCode)))" : ""
            finish(.failure(WoodpeckerError(.corrupted, "fetch \(topic)-\(p): the response does not mention the partition\(code)")))
            return
        }
        guard resp.errorCode == 0, data.errorCode == 0 else {
            finish(.failure(WoodpeckerError(.ioFailure,
                                            "fetch \(topic)-\(p) at offset \(w.next): broker error \(errorName(resp.errorCode != 0 ? resp.errorCode : data.errorCode))")))
            return
        }
        if w.end == nil {
            // The partition's first window: plan the rest of it now that the high watermark is known.
            let hw = data.highWatermark
            let firstEnd = min(hw, windowRecords)
            w.end = firstEnd
            var start = firstEnd
            while start < hw {
                let end = min(hw, start + windowRecords)
                queue.append(Window(partition: p, next: start, end: end))
                start = end
            }
        }
        let end = w.end!
        let before = w.next
        if let records = data.records { read(records, window: &w, end: end) }
        if w.next < end {
            if w.next == before {
                w.emptyFetches += 1
                if w.emptyFetches >= Self.maxEmptyFetches {
                    finish(.failure(WoodpeckerError(.corrupted,
                                                    "fetch \(topic)-\(p): no progress at offset \(w.next) below \(end) after \(Self.maxEmptyFetches) fetches; the broker keeps records it does not return")))
                    return
                }
            } else {
                w.emptyFetches = 0
            }
            // The rest of this window goes next, ahead of the queue.
            if let c = conns.min(by: { $0.outstanding < $1.outstanding }) {
                fetch(w, on: c)
            }
        }
        pump()
    }

    /// Counts the records of complete batches with offsets in [w.next, end) and advances `w.next` past them.
    /// A trailing partial batch (cut by the size limit) is fetched again.
    private func read(_ records: ByteBuffer, window w: inout Window, end: Int64) {
        var rest = records
        while rest.readableBytes >= RecordBatchHeader.size, w.next < end {
            guard let h = try? RecordBatchHeader(parsing: rest), h.totalSize >= RecordBatchHeader.size,
                  h.totalSize <= rest.readableBytes
            else { break }
            try? rest.skip(h.totalSize)
            result.batchBytes += h.totalSize
            guard h.lastOffset >= w.next else { continue }
            let first = max(h.baseOffset, w.next)
            let last = min(h.lastOffset, end - 1)
            result.records += Int(last - first + 1)
            w.next = last + 1
        }
    }

    private func errorName(_ code: Int16) -> String { KafkaErrorCode(rawValue: code)?.name ?? "ERROR_\(code)" }

    private func finish(_ r: Result<ConsumeResult, WoodpeckerError>) {
        guard !finished else { return }
        finished = true
        let d = done
        done = nil
        d?(r)
    }
}
