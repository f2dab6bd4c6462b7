import Testing
import WoodpeckerCore
@testable import WoodpeckerIO

/// Runs `body` with a fresh loop, client and Python server, then checks that nothing is left open.
func withHTTP(_ config: HTTPClient.Configuration = HTTPClient.Configuration(),
              _ body: (HTTPClient, PythonHTTPServer) async throws -> Void) async throws
{
    let server = try await PythonHTTPServer.start()
    defer { server.stop() }
    let loop = EventLoop(name: "http")
    let client = HTTPClient(loop: loop, configuration: config)
    try await body(client, server)
    await client.close()
    #expect(await loop.openHandleCount() == 0)
    #expect(loop.shutdown() == 0)
}

@Suite(.timeLimit(.minutes(1))) struct HTTPClientTests {
    @Test func getReturnsStatusBodyAndCaseInsensitiveHeaders() async throws {
        try await withHTTP { client, server in
            let r = try await client.execute(HTTPRequest(url: server.baseURL + "/hello"))
            #expect(r.status == 200)
            #expect(r.body == ByteBuffer(string: "hello world"))
            #expect(r.headers["x-test"] == "yes")
            #expect(r.headers["CONTENT-LENGTH"] == "11")
            #expect(r.headers["X-Missing"] == nil)
        }
    }

    @Test func putAndPostSendTheBodyByteExact() async throws {
        try await withHTTP { client, server in
            let payload = patternBytes(1024 * 1024 + 3, seed: 5)
            let r = try await client.execute(HTTPRequest(method: "PUT", url: server.baseURL + "/echo",
                                                         body: ByteBuffer(bytes: payload)))
            #expect(r.status == 200)
            #expect(r.headers["x-method"] == "PUT")
            #expect(r.headers["x-content-type"] == "application/octet-stream")
            #expect(r.body.readableBytesArray == payload)

            let post = try await client.execute(HTTPRequest(method: "POST", url: server.baseURL + "/echo",
                                                            headers: ["Content-Type": "application/json"],
                                                            body: ByteBuffer(string: #"{"key":"Zm9v"}"#)))
            #expect(post.headers["X-Method"] == "POST")
            #expect(post.headers["X-Content-Type"] == "application/json")
            #expect(post.body == ByteBuffer(string: #"{"key":"Zm9v"}"#))

            let empty = try await client.execute(HTTPRequest(method: "PUT", url: server.baseURL + "/echo",
                                                             body: ByteBuffer()))
            #expect(empty.status == 200)
            #expect(empty.body.readableBytes == 0)

            let del = try await client.execute(HTTPRequest(method: "DELETE", url: server.baseURL + "/x"))
            #expect(del.status == 204)
        }
    }

    @Test func notFoundIsAStatusNotAnError() async throws {
        try await withHTTP { client, server in
            let r = try await client.execute(HTTPRequest(url: server.baseURL + "/nope"))
            #expect(r.status == 404)
            #expect(r.body == ByteBuffer(string: "not found: /nope"))
        }
    }

    @Test func keepAliveReusesTheConnection() async throws {
        try await withHTTP { client, server in
            var ports = Set<String>()
            for _ in 0..<5 {
                let r = try await client.execute(HTTPRequest(url: server.baseURL + "/port"))
                ports.insert(String(decoding: r.body.readableBytesArray, as: UTF8.self))
            }
            #expect(ports.count == 1)
        }
    }

    @Test func timeoutAgainstAServerThatNeverAnswers() async throws {
        try await withHTTP { client, server in
            let url = server.baseURL + "/hang"
            let start = nowMs()
            do {
                _ = try await client.execute(HTTPRequest(url: url, timeoutMs: 300))
                Issue.record("request to a hanging server succeeded")
            } catch let e as WoodpeckerError {
                #expect(e.code == .timeout)
                #expect(e.isRetryable)
                #expect(e.message.contains("GET \(url)"))
            }
            let elapsed = nowMs() - start
            #expect(elapsed >= 250 && elapsed < 5_000)
        }
    }

    @Test func connectionRefusedNamesTheURL() async throws {
        let loop = EventLoop(name: "refused-http")
        let probe = try await TCPServer.bind(loop: loop, host: "127.0.0.1", port: 0) { _ in EchoHandler() }
        let port = probe.port
        await probe.close()
        let client = HTTPClient(loop: loop)
        let url = "http://127.0.0.1:\(port)/x"
        do {
            _ = try await client.execute(HTTPRequest(url: url))
            Issue.record("request to a closed port succeeded")
        } catch let e as WoodpeckerError {
            #expect(e.code == .ioFailure)
            #expect(e.isRetryable)
            #expect(e.message.contains(url))
            #expect(e.message.contains("could not connect"))
        }
        await client.close()
        await #expect(throws: WoodpeckerError.self) { _ = try await client.execute(HTTPRequest(url: url)) }
        #expect(await loop.openHandleCount() == 0)
        #expect(loop.shutdown() == 0)
    }

    @Test func thirtyTwoConcurrentRequestsWithACapOfFour() async throws {
        var config = HTTPClient.Configuration()
        config.maxConcurrentTransfers = 4
        try await withHTTP(config) { client, server in
            let start = nowMs()
            let ids = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for i in 0..<32 {
                    group.addTask(executorPreference: client.loop) {
                        let r = try await client.execute(HTTPRequest(url: server.baseURL + "/slow?ms=50&id=\(i)"))
                        #expect(r.status == 200)
                        return (i, String(decoding: r.body.readableBytesArray, as: UTF8.self))
                    }
                }
                var out: [(Int, String)] = []
                for try await x in group { out.append(x) }
                return out
            }
            #expect(ids.count == 32)
            #expect(ids.allSatisfy { String($0.0) == $0.1 })
            #expect(nowMs() - start >= 8 * 50 - 10)  // 32 requests / 4 slots * 50 ms
            let stats = await client.stats()
            #expect(stats.peakActive == 4)
            #expect(stats.active == 0 && stats.queued == 0)
            let peak = try await client.execute(HTTPRequest(url: server.baseURL + "/peak"))
            let serverPeak = Int(String(decoding: peak.body.readableBytesArray, as: UTF8.self)) ?? -1
            #expect(serverPeak >= 1 && serverPeak <= 4)
        }
    }

    @Test func queueBoundRejectsExcessRequests() async throws {
        var config = HTTPClient.Configuration()
        config.maxConcurrentTransfers = 1
        config.maxQueuedRequests = 2
        try await withHTTP(config) { client, server in
            let results = await withTaskGroup(of: WoodpeckerError.Code?.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        do {
                            _ = try await client.execute(HTTPRequest(url: server.baseURL + "/slow?ms=100"))
                            return nil
                        } catch let e as WoodpeckerError {
                            return e.code
                        } catch {
                            return .internalError
                        }
                    }
                }
                var out: [WoodpeckerError.Code?] = []
                for await r in group { out.append(r) }
                return out
            }
            #expect(results.filter { $0 == nil }.count == 3)
            #expect(results.filter { $0 == .bufferFull }.count == 3)
        }
    }

    @Test func responseBodyBound() async throws {
        var config = HTTPClient.Configuration()
        config.maxResponseBodyBytes = 1000
        try await withHTTP(config) { client, server in
            do {
                _ = try await client.execute(HTTPRequest(url: server.baseURL + "/big?bytes=5000"))
                Issue.record("oversized body accepted")
            } catch let e as WoodpeckerError {
                #expect(e.code == .bufferFull)
            }
            // The client still works afterwards.
            #expect(try await client.execute(HTTPRequest(url: server.baseURL + "/hello")).status == 200)
        }
    }

    @Test func streamingChunkedResponse() async throws {
        try await withHTTP { client, server in
            let start = nowMs()
            let r = try await client.stream(HTTPRequest(url: server.baseURL + "/chunked?n=5&ms=40"))
            let headAt = nowMs() - start
            #expect(r.status == 200)
            #expect(r.headers["transfer-encoding"] == "chunked")
            var text = ""
            var chunks = 0
            for try await c in r.body {
                text += String(decoding: c.readableBytesArray, as: UTF8.self)
                chunks += 1
            }
            let total = nowMs() - start
            #expect(text == (0..<5).map { "chunk-\($0)\n" }.joined())
            #expect(chunks >= 2)
            #expect(headAt + 100 < total)  // the head came before the body was complete
        }
    }

    @Test func streamingBackpressureDeliversEveryByte() async throws {
        var config = HTTPClient.Configuration()
        config.maxStreamBufferedBytes = 8 * 1024
        try await withHTTP(config) { client, server in
            let n = 1024 * 1024
            let r = try await client.stream(HTTPRequest(url: server.baseURL + "/big?bytes=\(n)"))
            #expect(r.status == 200)
            try await Task.sleep(nanoseconds: 100_000_000)  // let the transfer hit the buffer bound and pause
            var got = 0
            var ok = true
            for try await c in r.body {
                c.withUnsafeReadableBytes { p in
                    for (i, b) in p.enumerated() where b != UInt8((got + i) % 251) { ok = false }
                }
                got += c.readableBytes
            }
            #expect(got == n)
            #expect(ok)
        }
    }

    @Test func cancellingAnEndlessStream() async throws {
        try await withHTTP { client, server in
            let r = try await client.stream(HTTPRequest(url: server.baseURL + "/chunked?n=100000&ms=10", timeoutMs: 0))
            var it = r.body.makeAsyncIterator()
            let first = try await it.next()
            #expect(first != nil)
            await r.body.cancel()
            var rest = 0
            while try await it.next() != nil { rest += 1 }
            #expect(rest < 5)
            #expect(await client.stats().active == 0)
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct HTTPClientCancellationTests {
    @Test func cancellingTheTaskEndsTheRequest() async throws {
        try await withHTTP { client, server in
            let url = server.baseURL + "/hang"
            let task = Task(executorPreference: client.loop) { () -> WoodpeckerError.Code? in
                do {
                    _ = try await client.execute(HTTPRequest(url: url, timeoutMs: 20_000))
                    return nil
                } catch let e as WoodpeckerError {
                    return e.code
                } catch {
                    return .internalError
                }
            }
            try await Task.sleep(nanoseconds: 100_000_000)
            let start = nowMs()
            task.cancel()
            #expect(await task.value == .clientClosed)
            #expect(nowMs() - start < 2_000)
            #expect(await client.stats().active == 0)
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct HTTPClientQueueDeadlineTests {
    @Test func queuedRequestTimesOutWhileWaitingForASlot() async throws {
        var config = HTTPClient.Configuration()
        config.maxConcurrentTransfers = 1
        try await withHTTP(config) { client, server in
            let long = Task(executorPreference: client.loop) {
                try await client.execute(HTTPRequest(url: server.baseURL + "/slow?ms=1500")).status
            }
            try await Task.sleep(nanoseconds: 100_000_000)
            let start = nowMs()
            do {
                _ = try await client.execute(HTTPRequest(url: server.baseURL + "/hello", timeoutMs: 200))
                Issue.record("queued request did not time out")
            } catch let e as WoodpeckerError {
                #expect(e.code == .timeout)
                #expect(e.message.contains("waiting for a transfer slot"))
            }
            let waited = nowMs() - start
            #expect(waited >= 190 && waited < 1_200)
            #expect(try await long.value == 200)
        }
    }
}
