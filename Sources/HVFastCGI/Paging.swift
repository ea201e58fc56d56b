import Domain

/// Pages of the v1 API: the query parameters that ask for one, and the list pages in id order.

/// A page's `limit` (1…1,000, 100 when absent) and `cursor` (parsed by `cursor`; nil when absent) from the query
/// string, adding what is wrong with either to `issues` (for one `422` with the endpoint's other problems).
func pageParameters<Cursor>(
    _ request: Request, cursor parse: (String) -> Cursor?, issues: inout [ValidationFailure.Issue]
) -> (Int, Cursor?) {
    var limit = 100
    if let text = request.query["limit"] {
        if isDecimal(text), let value = Int(text), (1...1000).contains(value) {
            limit = value
        } else {
            issues.append(
                .init(
                    location: [.key("query"), .key("limit")], message: "Input should be an integer from 1 to 1000",
                    type: "int_parsing"))
        }
    }
    var cursor: Cursor?
    if let text = request.query["cursor"] {
        cursor = parse(text)
        if cursor == nil {
            issues.append(
                .init(
                    location: [.key("query"), .key("cursor")],
                    message: "Value error, not a cursor this endpoint returned",
                    type: "value_error"))
        }
    }
    return (limit, cursor)
}

/// Decimal digits naming a positive 64-bit integer (no sign, fraction or exponent); nil otherwise. Also the cursor of
/// a list in id order: the last id of the previous page.
func positiveID(_ text: String) -> Int64? {
    isDecimal(text) ? try? JSONNumber.identifier(text) : nil
}

/// A page of a list in id order as `{"items": [...], "next_cursor"}`: the first `limit` rows of `result` whose column
/// 0 (the id) is not NULL, written by `item`. The statement reads `limit + 1` rows, so that a next page exists
/// exactly when it found more.
func pageResponse(
    _ result: PostgresResult, limit: Int, for caller: Caller, item: (Int, inout JSONWriter) -> Void
) -> Response {
    let rows = (0..<result.rowCount).filter { result.int($0, 0) != nil }
    return .json(for: caller.id) { json in
        json.beginObject()
        json.key("items")
        json.beginArray()
        for row in rows.prefix(limit) {
            json.beginObject()
            item(row, &json)
            json.endObject()
        }
        json.endArray()
        json.key("next_cursor")
        json.value(rows.count > limit ? result.int(rows[limit - 1], 0).map { String($0) } : nil)
        json.endObject()
    }
}
