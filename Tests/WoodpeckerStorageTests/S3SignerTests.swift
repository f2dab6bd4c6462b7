import Testing
import WoodpeckerCore
import WoodpeckerIO
@testable import WoodpeckerStorage

/// SigV4 against published vectors, and the pure parts of the S3 client (config, XML, backoff). No server needed.
@Suite struct S3SignerTests {
    /// AWS S3 documentation, "Signature Calculations for the Authorization Header", example "GET Object":
    /// the first 10 bytes of examplebucket/test.txt, signed with the documentation's example key pair.
    @Test func awsDocumentationGetObjectExample() {
        let signer = S3Signer(credentials: S3Credentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE",
                                                         secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                              region: "us-east-1")
        let s = signer.sign(method: "GET", path: "/test.txt", query: [],
                            headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
                                      ("x-amz-content-sha256", S3Signer.emptyPayloadHash),
                                      ("x-amz-date", "20130524T000000Z")],
                            payloadHash: S3Signer.emptyPayloadHash, amzDate: "20130524T000000Z")
        #expect(s.canonicalRequest == """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        #expect(s.stringToSign == """
            AWS4-HMAC-SHA256
            20130524T000000Z
            20130524/us-east-1/s3/aws4_request
            7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972
            """)
        #expect(s.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(s.authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// aws-sig-v4-test-suite, get-vanilla-query-order-key-case: query parameters must be sorted.
    @Test func awsTestSuiteQueryOrder() {
        let signer = S3Signer(credentials: S3Credentials(accessKeyId: "AKIDEXAMPLE",
                                                         secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                              region: "us-east-1", service: "service")
        let s = signer.sign(method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")],
                            headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
                            payloadHash: S3Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
        #expect(s.canonicalRequest.split(separator: "\n", omittingEmptySubsequences: false)[2] == "Param1=value1&Param2=value2")
        #expect(s.signature == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    @Test func headersAreAddedAndSignedWithTheSessionToken() {
        let signer = S3Signer(credentials: S3Credentials(accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "TOKEN"),
                              region: "eu-west-1")
        var headers: HTTPHeaders = ["Host": "127.0.0.1:8333", "If-None-Match": "*"]
        signer.sign(method: "PUT", path: "/b/k", query: [], headers: &headers, payloadHash: S3Signer.unsignedPayload,
                    amzDate: "20240102T030405Z")
        #expect(headers["x-amz-security-token"] == "TOKEN")
        #expect(headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD")
        let auth = try! #require(headers["Authorization"])
        #expect(auth.contains("Credential=AK/20240102/eu-west-1/s3/aws4_request,"))
        #expect(auth.contains("SignedHeaders=host;if-none-match;x-amz-content-sha256;x-amz-date;x-amz-security-token,"))
        // Signing again replaces the previous signature rather than adding a second one.
        signer.sign(method: "PUT", path: "/b/k", query: [], headers: &headers, payloadHash: S3Signer.unsignedPayload,
                    amzDate: "20240102T030405Z")
        #expect(headers.values("Authorization") == [auth])
    }

    @Test func canonicalFormsFollowRFC3986() {
        #expect(S3Signer.uriEncode("seg/") == "seg%2F")
        #expect(S3Signer.uriEncode("a b+c=d&e~f_g.h-i") == "a%20b%2Bc%3Dd%26e~f_g.h-i")
        #expect(S3Signer.uriEncode("é") == "%C3%A9")
        #expect(S3Signer.encodePath("/wal/log 1/0.blk") == "/wal/log%201/0.blk")
        #expect(S3Signer.canonicalQuery([("prefix", "seg/"), ("list-type", "2"), ("uploads", "")])
            == "list-type=2&prefix=seg%2F&uploads=")
        #expect(S3Signer.canonicalHeaders([("X-B", "  two   spaces  "), ("a", "1"), ("x-b", "more")])
            .map { "\($0.0):\($0.1)" } == ["a:1", "x-b:two spaces,more"])
        #expect(S3Signer.percentDecode("http%3A%2F%2Fh%3A1") == "http://h:1")
        #expect(S3Signer.percentDecode("bad%zz") == nil)
        #expect(S3Signer.amzDate(epochSeconds: 1_369_353_600) == "20130524T000000Z")
    }

    @Test func digestsMatchKnownValues() {
        #expect(S3Crypto.hex(S3Crypto.sha256([UInt8]())) == S3Signer.emptyPayloadHash)
        #expect(S3Crypto.hex(S3Crypto.sha256(Array("abc".utf8)))
            == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(S3Crypto.base64(S3Crypto.md5([])) == "1B2M2Y8AsgTpgAmY7PhCfg==")  // RFC 1321 empty-string MD5
        #expect(S3Crypto.base64(Array("ab".utf8)) == "YWI=")
    }

    // MARK: XML

    @Test func listResultWithEntityEscapedETags() {
        let xml = S3XML("""
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>wal</Name><IsTruncated>true</IsTruncated>
            <Contents><Key>o/a&amp;b</Key><ETag>&#34;764e&#34;</ETag><Size>3</Size></Contents>
            <!-- a comment with <Key>nope</Key> -->
            <Contents><Key>o/&lt;x&gt;</Key><ETag>&quot;99-2&quot;</ETag><Size>12</Size><Owner/></Contents>
            <NextContinuationToken>tok&#x2F;1</NextContinuationToken></ListBucketResult>
            """)
        let entries = xml.elements("Contents")
        #expect(entries.map { $0.text("Key") } == ["o/a&b", "o/<x>"])
        #expect(entries.map { $0.text("ETag") } == ["\"764e\"", "\"99-2\""])
        #expect(entries.map { S3Store.unquote($0.text("ETag") ?? "") } == ["764e", "99-2"])
        #expect(entries.map { $0.text("Size") } == ["3", "12"])
        #expect(entries[1].text("Owner") == "")
        #expect(xml.text("IsTruncated") == "true")
        #expect(xml.text("NextContinuationToken") == "tok/1")
        #expect(xml.text("Missing") == nil)
        #expect(S3XML("<a><b>unterminated").text("b") == nil)
        #expect(S3XML("<s3:Error><s3:Code>SlowDown</s3:Code></s3:Error>").text("Code") == "SlowDown")
        #expect(S3XML.escape("a<&>\"'") == "a&lt;&amp;&gt;&quot;&apos;")
    }

    // MARK: config

    @Test func parseURLWithEnvironmentCredentials() throws {
        let env = ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "T",
                   "AWS_DEFAULT_REGION": "eu-central-1"]
        let c = try S3Config.parse(url: "s3://wal/wp/data/?endpoint=http%3A%2F%2F127.0.0.1%3A8333&path_style=true",
                                   environment: env)
        #expect(c.bucket == "wal")
        #expect(c.keyPrefix == "wp/data")
        #expect(c.endpoint == "http://127.0.0.1:8333")
        #expect(c.region == "eu-central-1")
        #expect(c.addressing == .pathStyle)
        #expect(c.credentials == S3Credentials(accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "T"))
        #expect(!"\(c.credentials)".contains("SK"))

        // AWS defaults: regional endpoint, virtual-hosted; AWS_REGION wins over AWS_DEFAULT_REGION.
        let aws = try S3Config.parse(url: "s3://my-bucket", environment: env.merging(["AWS_REGION": "us-west-2"]) { $1 })
        #expect(aws.endpoint == "https://s3.us-west-2.amazonaws.com")
        #expect(aws.addressing == .virtualHosted)
        #expect(aws.keyPrefix == "")
        // AWS_ENDPOINT_URL: path-style unless told otherwise.
        let custom = try S3Config.parse(url: "s3://b12?region=r1&path_style=false",
                                        environment: env.merging(["AWS_ENDPOINT_URL": "http://h:9000/"]) { $1 })
        #expect(custom.endpoint == "http://h:9000")
        #expect(custom.region == "r1")
        #expect(custom.addressing == .virtualHosted)
    }

    @Test func badURLsAndConfigsNameTheProblem() {
        let env = ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"]
        let cases: [(String, [String: String], String)] = [
            ("http://wal", env, "must start with s3://"),
            ("s3:///prefix", env, "bucket is missing"),
            ("s3://wal?colour=red", env, "unknown parameter \"colour\""),
            ("s3://wal?path_style=maybe", env, "path_style must be true or false"),
            ("s3://wal", [:], "AWS_ACCESS_KEY_ID"),
            ("s3://Bad_Bucket", env, "bucket name"),
            ("s3://wal/a//b", env, "invalid object key"),
            ("s3://wal?endpoint=ftp%3A%2F%2Fx", env, "endpoint"),
        ]
        for (url, environment, fragment) in cases {
            let e = #expect(throws: WoodpeckerError.self, "\(url)") { _ = try S3Config.parse(url: url, environment: environment) }
            #expect(e?.code == .invalidArgument)
            #expect(e?.message.contains(fragment) == true, "\(url): \(e?.message ?? "")")
        }
    }

    @Test func backoffGrowsWithJitterAndStaysBounded() {
        let policy = S3RetryPolicy(maxAttempts: 10, initialBackoffMs: 100, maxBackoffMs: 1_000)
        var rng = SplitMix64(seed: 7)
        for retry in 1...40 {
            let cap = min(1_000, 100 << UInt64(min(retry - 1, 20)))
            let samples = (0..<50).map { _ in policy.backoffMs(retry: retry, using: &rng) }
            #expect(samples.allSatisfy { $0 >= cap / 2 && $0 <= cap }, "retry \(retry)")
            #expect(Set(samples).count > 1, "jitter at retry \(retry)")
        }
    }
}
