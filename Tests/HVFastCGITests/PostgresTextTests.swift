import Testing

@testable import HVFastCGI

@Suite struct PostgresTextTests {
    @Test func timestampsBecomeISO8601WithSixFractionDigits() {
        #expect(iso8601UTC("2026-12-06 04:26:01.37331+00") == "2026-12-06T04:26:01.373310Z")
        #expect(iso8601UTC("2026-12-06 04:26:01.123456+00") == "2026-12-06T04:26:01.123456Z")
        #expect(iso8601UTC("2026-12-06 04:26:01+00") == "2026-12-06T04:26:01.000000Z")
        #expect(iso8601UTC("2026-12-06 04:26:01.5+00") == "2026-12-06T04:26:01.500000Z")
    }

    @Test func otherTextIsLeftAsItIs() {
        for text in ["infinity", "-infinity", "2026-12-06 04:26:01.5-03:30", "06/12/2026 04:26:01.5 UTC", ""] {
            #expect(iso8601UTC(text) == text)
        }
    }
}
