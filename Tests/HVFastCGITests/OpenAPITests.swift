import Foundation
import Testing

@testable import HVFastCGI

/// The OpenAPI document in the repository and the live routes describe the same endpoints.
@Suite struct OpenAPITests {
    private static let documentPath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/HVFastCGI/openapi.json").path

    private func liveRoutes() throws -> Set<String> {
        let configuration = try Configuration.parse(["JWT_SECRET_KEY": String(repeating: "s", count: 32)], cpuCount: 1)
        let services = try Services(configuration: configuration, log: Log(path: nil, level: .error, role: "test"))
        let router = buildRouter(services, openAPI: [], scoreboard: try Scoreboard())
        return Set(router.routes.map { "\($0.method) \(Router.normalize($0.pattern))" })
    }

    private func documentedRoutes() throws -> Set<String> {
        let data = try Data(contentsOf: URL(fileURLWithPath: OpenAPITests.documentPath))
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var routes = Set<String>()
        for (path, operations) in paths {
            for method in operations.keys where ["get", "post", "put", "patch", "delete"].contains(method) {
                routes.insert("\(method.uppercased()) \(Router.normalize(path))")
            }
        }
        return routes
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedPathIsRouted() throws {
        let live = try liveRoutes()
        let documented = try documentedRoutes()
        #expect(live.subtracting(documented).sorted() == [], "routes without a documented path")
        #expect(documented.subtracting(live).sorted() == [], "documented paths without a route")
    }

    @Test func everyOperationDocumentsItsErrorsAndRequestID() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: OpenAPITests.documentPath))
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: [String: [String: Any]]])
        for (path, operations) in paths {
            for (method, operation) in operations {
                let responses = try #require(operation["responses"] as? [String: Any], "\(method) \(path)")
                // The seed API answers 200; v1 may answer 201 or 204 (API.md).
                #expect(
                    ["200", "201", "204"].contains { responses[$0] != nil }, "\(method) \(path) has no success answer")
                #expect(responses["405"] != nil, "\(method) \(path) does not document 405")
                let secured = (operation["security"] as? [[String: Any]])?.isEmpty == false
                if secured { #expect(responses["401"] != nil, "\(method) \(path) does not document 401") }
            }
        }
    }
}
