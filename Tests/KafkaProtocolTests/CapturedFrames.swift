/// Request frames captured from real clients (size prefix included), recorded by a small Python TCP listener on
/// 127.0.0.1 that answered ApiVersions with UNSUPPORTED_VERSION then a v0 list (ApiVersions 0, Metadata 0-1).
enum CapturedFrames {
    /// kcat 1.7.1 (librdkafka 2.0.2) `kcat -L`: ApiVersions v3, correlation 1, client "rdkafka".
    static let kcatApiVersionsV3 =
        "000000240012000300000001000772646b61666b61000b6c696272646b61666b6106322e302e3200"
    /// kcat after UNSUPPORTED_VERSION: ApiVersions v0, correlation 2.
    static let kcatApiVersionsV0 = "000000110012000000000002000772646b61666b61"
    /// kcat `-L -t mytopic` once Metadata 0-1 is advertised: Metadata v1, correlation 3, topics ["mytopic"].
    static let kcatMetadataV1 =
        "0000001e0003000100000003000772646b61666b610000000100076d79746f706963"
    /// kcat `-L` (all topics) brokers-only refresh: Metadata v1 with an empty topic array.
    static let kcatMetadataV1Empty = "000000150003000100000003000772646b61666b6100000000"
    /// confluent-kafka-python 2.16.1 (librdkafka 2.16.0) AdminClient.list_topics: ApiVersions v3.
    static let confluentApiVersionsV3 =
        "000000400012000300000001000772646b61666b610017636f6e666c75656e742d6b61666b612d707974686f6e"
        + "16322e31362e312d72646b61666b612d322e31362e3000"
    /// kafka-python 3.0.12 KafkaConsumer bootstrap: ApiVersions v4, correlation 1.
    static let kafkaPythonApiVersionsV4 =
        "00000033001200040000000100136b61666b612d707974686f6e2d332e302e3132000d6b61666b612d707974686f6e"
        + "07332e302e313200"
}
