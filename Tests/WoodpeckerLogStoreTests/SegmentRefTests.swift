import Testing
import WoodpeckerLogStore

@Suite struct SegmentRefTests {
    @Test func blockKeysMatchTheObjectSegmentLayout() {
        let ref = SegmentRef(objectPrefix: "wal/", logId: 7, segmentId: 3)
        #expect(ref.directory == "wal/7/3/")
        #expect(ref.blockKey(12) == "wal/7/3/12.blk")
    }
}
