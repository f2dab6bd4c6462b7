import WoodpeckerCore

/// An ordered list of HTTP header fields with case-insensitive lookup. Duplicates are kept in order.
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    public private(set) var entries: [(name: String, value: String)] = []

    public init() {}
    public init(_ pairs: [(String, String)]) {
        entries = pairs.map { (name: $0.0, value: $0.1) }
    }
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    /// Appends a field (keeps existing fields of the same name).
    public mutating func add(_ name: String, _ value: String) {
        entries.append((name: name, value: value))
    }

    /// Replaces every field named `name` with a single one.
    public mutating func replace(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }

    public mutating func remove(_ name: String) {
        entries.removeAll { Self.same($0.name, name) }
    }

    /// The first value of `name`, compared case-insensitively.
    public subscript(_ name: String) -> String? {
        entries.first { Self.same($0.name, name) }?.value
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        entries.filter { Self.same($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public var count: Int { entries.count }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { entries.makeIterator() }

    public var description: String { entries.map { "\($0.name): \($0.value)" }.joined(separator: "\n") }

    static func same(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && a.utf8.elementsEqual(b.utf8) { asciiLower($0) == asciiLower($1) }
    }

    private static func asciiLower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }
}

/// One HTTP request for `HTTPClient`.
public struct HTTPRequest: Sendable {
    /// "GET", "PUT", "POST", "DELETE", "HEAD", ...
    public var method: String
    /// Absolute URL, e.g. "http://127.0.0.1:2379/v3/kv/range". Query values must already be percent-encoded.
    public var url: String
    public var headers: HTTPHeaders
    /// Request body; nil sends none.
    public var body: ByteBuffer?
    /// Deadline for the whole exchange, queueing included, in milliseconds. 0 means no deadline, which is meant
    /// only for long-lived streams (an etcd watch); such streams end when cancelled or when the client closes.
    public var timeoutMs: UInt64

    public init(method: String = "GET", url: String, headers: HTTPHeaders = HTTPHeaders(), body: ByteBuffer? = nil,
                timeoutMs: UInt64 = 30_000)
    {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeoutMs = timeoutMs
    }
}

/// A complete HTTP response. Any status is a response, not an error: callers decide what 404 or 412 means.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public init(status: Int, headers: HTTPHeaders, body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}
