import Testing

@testable import HVFastCGI

/// The v1 API's path ids and page parameters: exactly what they accept, and one located issue per problem.
@Suite struct PagingTests {
    private func request(_ target: String, id: String? = nil) -> Request {
        var request = Request(method: "GET", target: target)
        if let id { request.pathParameters["id"] = id }
        return request
    }

    @Test func pathIDsAreDecimalDigitsNamingAPositiveInt64() throws {
        #expect(try pathID(request("/", id: "42")) == 42)
        #expect(try pathID(request("/", id: "9223372036854775807")) == Int64.max)
        for (text, type) in [
            ("", "int_parsing"), ("abc", "int_parsing"), ("1e3", "int_parsing"), ("-1", "int_parsing"),
            ("+1", "int_parsing"), ("1.0", "int_parsing"), (" 1", "int_parsing"), ("0", "greater_than_equal"),
            ("9223372036854775808", "less_than_equal"),
        ] {
            do {
                _ = try pathID(request("/", id: text))
                Issue.record("\(text) was accepted")
            } catch {
                #expect(error.issues.map(\.location) == [[.key("path"), .key("id")]] && error.issues[0].type == type)
            }
        }
    }

    @Test func pageParametersDefaultBoundAndReportEachProblem() {
        var issues: [ValidationFailure.Issue] = []
        let (limit, cursor) = pageParameters(request("/v1/clusters"), cursor: positiveID, issues: &issues)
        #expect(limit == 100 && cursor == nil && issues.isEmpty)
        let (given, after) = pageParameters(
            request("/v1/clusters?limit=1000&cursor=17"), cursor: positiveID, issues: &issues)
        #expect(given == 1000 && after == 17 && issues.isEmpty)
        for target in ["/?limit=0", "/?limit=1001", "/?limit=x", "/?limit=-1", "/?cursor=0", "/?cursor=x", "/?cursor="]
        {
            var problems: [ValidationFailure.Issue] = []
            _ = pageParameters(request(target), cursor: positiveID, issues: &problems)
            #expect(problems.count == 1, "\(target)")
        }
        var both: [ValidationFailure.Issue] = []
        _ = pageParameters(request("/?limit=0&cursor=x"), cursor: positiveID, issues: &both)
        #expect(both.map(\.location) == [[.key("query"), .key("limit")], [.key("query"), .key("cursor")]])
    }
}
