import Testing

@testable import HVFastCGI

@Suite struct HTTPTests {
    @Test func queryIsPercentDecodedWithPlusAsSpace() {
        let request = Request(method: "GET", target: "/clusters/get_cluster/?cluster_name=my+cluster%2Fa&id=7")
        #expect(request.query == ["cluster_name": "my cluster/a", "id": "7"])
        #expect(request.path == "/clusters/get_cluster/")
    }

    @Test func repeatedQueryNameKeepsTheLastValue() {
        #expect(parseQuery("id=1&id=2") == ["id": "2"])
    }

    @Test func emptyAndValuelessPairs() {
        #expect(parseQuery("&&a&b=&=c") == ["a": "", "b": "", "": "c"])
    }

    @Test func malformedEscapesStayAsWritten() {
        #expect(percentDecode("100%", plusIsSpace: false) == "100%")
        #expect(percentDecode("%zz%4", plusIsSpace: false) == "%zz%4")
        #expect(percentDecode("a%20b+c", plusIsSpace: false) == "a b+c")
    }

    @Test func multibyteAndInvalidUTF8() {
        #expect(percentDecode("%C3%A9t%C3%A9", plusIsSpace: true) == "été")
        #expect(percentDecode("%FF", plusIsSpace: true) == "\u{FFFD}")
    }

    @Test func pathIsDecodedButQueryMarkSplitsOnce() {
        let request = Request(method: "GET", target: "/a%3Fb?x=%3F?")
        #expect(request.path == "/a?b")
        #expect(request.query == ["x": "??"])
    }

    @Test func responseEncodingCarriesStatusLengthAndRequestID() {
        let response = Response.detail(404, "Not Found")
        let text = String(decoding: response.encoded(requestID: "abc"), as: UTF8.self)
        #expect(
            text == "Status: 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\n"
                + "Content-Length: 22\r\nX-Request-ID: abc\r\n\r\n{\"detail\":\"Not Found\"}")
    }

    @Test func requestIDTokensAreShortAndSafe() {
        #expect(isToken("abc-123_X.y"))
        #expect(!isToken(""))
        #expect(!isToken(String(repeating: "a", count: 65)))
        #expect(!isToken("a b"))
        #expect(!isToken("a\r\nSet-Cookie: x"))
    }

    @Test func validationFailureIsAFastAPIList() {
        let failure = ValidationFailure([
            .init(location: [.key("body"), .key("cluster_id")], message: "Field required", type: "missing"),
            .init(location: [.key("body"), .index(3)], message: "JSON decode error", type: "json_invalid"),
        ])
        #expect(failure.response.status == 422)
        #expect(
            String(decoding: failure.response.body, as: UTF8.self)
                == #"{"detail":[{"loc":["body","cluster_id"],"msg":"Field required","type":"missing"},"#
                + #"{"loc":["body",3],"msg":"JSON decode error","type":"json_invalid"}]}"#)
    }
}
