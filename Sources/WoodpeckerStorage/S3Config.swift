import WoodpeckerCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How often and how fast `S3Store` retries a request that failed in a way that may pass on a second try
/// (5xx, 429/SlowDown, timeouts, refused or reset connections). Never 4xx errors that cannot succeed.
///
/// The wait before retry `n` (1-based) is a uniformly random value in `[d/2, d]` where
/// `d = min(maxBackoffMs, initialBackoffMs * 2^(n-1))` ("equal jitter"): concurrent clients spread out, and a
/// retry never waits longer than `maxBackoffMs`.
public struct S3RetryPolicy: Sendable, Equatable {
    /// Attempts per request, the first included (1 disables retries).
    public var maxAttempts: Int
    public var initialBackoffMs: UInt64
    public var maxBackoffMs: UInt64

    public init(maxAttempts: Int = 6, initialBackoffMs: UInt64 = 100, maxBackoffMs: UInt64 = 5_000) {
        precondition(maxAttempts >= 1, "S3RetryPolicy.maxAttempts must be at least 1")
        self.maxAttempts = maxAttempts
        self.initialBackoffMs = initialBackoffMs
        self.maxBackoffMs = maxBackoffMs
    }

    /// The wait before retry number `retry` (1 = the wait after the first failed attempt).
    public func backoffMs(retry: Int, using rng: inout some RandomNumberGenerator) -> UInt64 {
        let shift = UInt64(min(max(retry - 1, 0), 30))
        let (scaled, overflow) = initialBackoffMs.multipliedReportingOverflow(by: 1 << shift)
        let d = overflow ? maxBackoffMs : min(maxBackoffMs, scaled)
        return d == 0 ? 0 : UInt64.random(in: (d / 2)...d, using: &rng)
    }
}

/// Where and how `S3Store` talks to an S3-compatible service.
///
/// Build it explicitly, from the standard environment variables (`fromEnvironment`), or from a URL
/// (`parse(url:)`). Keys are stored as `<keyPrefix>/<key>` (just `<key>` when the prefix is empty).
public struct S3Config: Sendable, CustomStringConvertible {
    /// How requests address the bucket.
    public enum Addressing: Sendable, Equatable {
        /// `http://endpoint/bucket/key` (MinIO, SeaweedFS and most self-hosted servers).
        case pathStyle
        /// `http://bucket.endpoint/key` (AWS's default).
        case virtualHosted
    }

    /// Whether the request body's SHA-256 is part of the signature.
    public enum PayloadSigning: Sendable, Equatable {
        /// `x-amz-content-sha256` is the hex SHA-256 of the body: the server rejects a body changed in flight.
        case signed
        /// `UNSIGNED-PAYLOAD`: saves hashing the body (use with TLS, which protects the body anyway).
        case unsigned
    }

    /// Scheme, host and optional port, without a trailing `/`, e.g. `http://127.0.0.1:8333`.
    public var endpoint: String
    public var region: String
    public var bucket: String
    /// A clean relative path (`wp/data`) or empty; no leading or trailing `/`.
    public var keyPrefix: String
    public var addressing: Addressing
    public var credentials: S3Credentials
    public var payloadSigning: PayloadSigning = .signed
    /// Requests in flight at once (further ones queue in the HTTP client).
    public var maxConcurrentRequests = 16
    public var retry = S3RetryPolicy()
    /// Deadline of one attempt (queueing included).
    public var requestTimeoutMs: UInt64 = 30_000
    public var connectTimeoutMs: UInt64 = 5_000
    /// `put` of a larger object uses a multipart upload.
    public var multipartThresholdBytes = 16 * 1024 * 1024
    /// Part size of a multipart upload (S3's minimum is 5 MiB for all parts but the last).
    public var multipartPartSizeBytes = 8 * 1024 * 1024
    /// Parts of one multipart upload in flight at once.
    public var multipartConcurrency = 4
    /// Largest response body accepted (a `get` of a bigger object fails with `.bufferFull`).
    public var maxResponseBodyBytes = 256 * 1024 * 1024

    public init(endpoint: String, region: String = "us-east-1", bucket: String, keyPrefix: String = "",
                addressing: Addressing = .pathStyle, credentials: S3Credentials)
    {
        var e = endpoint
        while e.hasSuffix("/") { e.removeLast() }
        var p = keyPrefix
        while p.hasSuffix("/") { p.removeLast() }
        self.endpoint = e
        self.region = region
        self.bucket = bucket
        self.keyPrefix = p
        self.addressing = addressing
        self.credentials = credentials
    }

    public var description: String {
        "s3://\(bucket)\(keyPrefix.isEmpty ? "" : "/" + keyPrefix) (endpoint \(endpoint), region \(region), "
            + "\(addressing == .pathStyle ? "path-style" : "virtual-hosted"))"
    }

    /// Checks the fields a request depends on; throws `.invalidArgument` naming the field and what to do.
    public func validate() throws {
        func bad(_ why: String) -> WoodpeckerError { WoodpeckerError(.invalidArgument, "S3 config \(self): \(why)") }
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://"),
              endpoint.split(separator: "/").count == 2
        else { throw bad("endpoint \"\(endpoint)\" must be http(s)://host[:port] without a path") }
        guard !region.isEmpty else { throw bad("region is empty; set it or AWS_REGION") }
        guard bucket.utf8.count >= 3, bucket.utf8.count <= 63,
              bucket.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E })
        else { throw bad("bucket name \"\(bucket)\" must be 3-63 characters of a-z, 0-9, '-' and '.'") }
        if !keyPrefix.isEmpty { try ObjectKey.validate(keyPrefix, store: "S3 key prefix") }
        guard !credentials.accessKeyId.isEmpty, !credentials.secretAccessKey.isEmpty else {
            throw bad("no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        }
        guard maxConcurrentRequests >= 1, multipartConcurrency >= 1 else { throw bad("concurrency must be >= 1") }
        guard multipartPartSizeBytes >= 5 * 1024 * 1024, multipartThresholdBytes >= multipartPartSizeBytes else {
            throw bad("multipart part size must be >= 5 MiB and the threshold >= the part size")
        }
    }

    // MARK: environment and URLs

    /// The standard AWS variables this config reads.
    public static let environmentNames = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                                          "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"]

    /// The current values of `environmentNames` (unset ones are absent).
    public static func processEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        for name in environmentNames {
            if let v = getenv(name) { env[name] = String(cString: v) }
        }
        return env
    }

    /// A config from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (else
    /// `AWS_DEFAULT_REGION`, else us-east-1) and `AWS_ENDPOINT_URL` (else AWS's regional endpoint). Without an
    /// explicit `addressing`, a custom endpoint uses path-style and AWS virtual-hosted.
    public static func fromEnvironment(bucket: String, keyPrefix: String = "", endpoint: String? = nil,
                                       region: String? = nil, addressing: Addressing? = nil,
                                       environment: [String: String] = processEnvironment()) throws -> S3Config
    {
        func nonEmpty(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        let region = region ?? nonEmpty("AWS_REGION") ?? nonEmpty("AWS_DEFAULT_REGION") ?? "us-east-1"
        let custom = endpoint ?? nonEmpty("AWS_ENDPOINT_URL")
        let endpoint = custom ?? "https://s3.\(region).amazonaws.com"
        let credentials = S3Credentials(accessKeyId: nonEmpty("AWS_ACCESS_KEY_ID") ?? "",
                                        secretAccessKey: nonEmpty("AWS_SECRET_ACCESS_KEY") ?? "",
                                        sessionToken: nonEmpty("AWS_SESSION_TOKEN"))
        let config = S3Config(endpoint: endpoint, region: region, bucket: bucket, keyPrefix: keyPrefix,
                              addressing: addressing ?? (custom == nil ? .virtualHosted : .pathStyle),
                              credentials: credentials)
        try config.validate()
        return config
    }

    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]`; credentials (and defaults for
    /// the omitted parts) come from `environment` as in `fromEnvironment`. Query values may be percent-encoded.
    public static func parse(url: String, environment: [String: String] = processEnvironment()) throws -> S3Config {
        func bad(_ why: String) -> WoodpeckerError {
            WoodpeckerError(.invalidArgument, "S3 URL \"\(url)\": \(why); expected s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true")
        }
        guard url.hasPrefix("s3://") else { throw bad("it must start with s3://") }
        let rest = url.dropFirst(5)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let location = parts[0]
        let slash = location.firstIndex(of: "/")
        let bucket = String(location[..<(slash ?? location.endIndex)])
        var prefix = slash.map { String(location[location.index(after: $0)...]) } ?? ""
        while prefix.hasSuffix("/") { prefix.removeLast() }
        guard !bucket.isEmpty else { throw bad("the bucket is missing") }
        var endpoint: String? = nil
        var region: String? = nil
        var addressing: Addressing? = nil
        if parts.count == 2 {
            for item in parts[1].split(separator: "&") where !item.isEmpty {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let value = S3Signer.percentDecode(kv.count == 2 ? String(kv[1]) : "") else {
                    throw bad("malformed percent-encoding in \"\(item)\"")
                }
                switch kv[0] {
                case "endpoint": endpoint = value
                case "region": region = value
                case "path_style":
                    switch value {
                    case "true", "1": addressing = .pathStyle
                    case "false", "0": addressing = .virtualHosted
                    default: throw bad("path_style must be true or false, not \"\(value)\"")
                    }
                default: throw bad("unknown parameter \"\(kv[0])\"")
                }
            }
        }
        return try fromEnvironment(bucket: bucket, keyPrefix: prefix, endpoint: endpoint, region: region,
                                   addressing: addressing, environment: environment)
    }
}
