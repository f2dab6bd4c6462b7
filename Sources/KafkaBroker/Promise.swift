/// A one-shot value fulfilled and awaited on the same event loop (no locks: loop thread only).
final class Promise<T: Sendable>: @unchecked Sendable {
    private var result: T?
    private var waiters: [CheckedContinuation<T, Never>] = []

    init() {}
    init(_ value: T) { result = value }

    func fulfill(_ value: T) {
        precondition(result == nil, "promise fulfilled twice")
        result = value
        let ws = waiters
        waiters.removeAll()
        for w in ws { w.resume(returning: value) }
    }

    var isFulfilled: Bool { result != nil }

    var value: T {
        get async {
            if let result { return result }
            return await withCheckedContinuation { waiters.append($0) }
        }
    }
}
