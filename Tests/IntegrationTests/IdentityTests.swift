import Foundation
import Testing

@testable import HVFastCGI

/// One stack for the whole suite, started by the first test that needs it and stopped when the process exits.
private enum IdentityStack {
    static let shared = Stack.started(environment: ["HV_WORKERS": "2"])
}

/// Section A of spec/API.md through nginx: users, organizations and clusters, authentication, tenancy, rate limits
/// and input validation.
@Suite(.serialized)
struct IdentityTests {
    let stack: Stack
    let api: APIClient
    var http: HTTPClient { stack.client }

    init() throws {
        stack = try IdentityStack.shared.get()
        api = APIClient(stack.client)
    }

    static let unauthorized: JSONValue = ["detail": "Could not validate credentials"]
    static let invalidCredentials: JSONValue = ["detail": "Invalid credentials"]
    static let invalidInviteCode: JSONValue = ["detail": "Invalid invite code"]

    // MARK: - Register

    @Test func registerReturnsTheUserWithNoOrganizationOnBothSlashForms() throws {
        for path in ["/users/register/", "/users/register"] {
            let username = APIClient.unique("reg")
            let response = try http.post(path, json: ["username": username, "password": "pw"])
            #expect(response.status == 200, "\(path): \(response.text)")
            #expect(response.header("content-type") == "application/json; charset=utf-8")
            let id = try #require(response.jsonObject?["id"] as? Int, "\(path): \(response.text)")
            #expect(id > 0)
            #expect(response.value == ["id": .id(Int64(id)), "username": .string(username), "organization_id": nil])
            #expect(response.text.contains(#""organization_id":null"#))
        }
    }

    @Test func registerAcceptsTheUsernameLimitsExactly() throws {
        let suffix = String(UUID().uuidString.prefix(8)).lowercased()
        let three = String(suffix.prefix(3))
        let sixtyFour = suffix + String(repeating: "x", count: 56)
        let allowedCharacters = "a.b_c-d@e." + suffix
        for username in [three, sixtyFour, allowedCharacters] {
            let response = try api.register(username, password: "pw")
            #expect(response.status == 200, "\(username): \(response.text)")
            #expect(response.value?["username"] == .string(username))
            #expect(try api.login(username, password: "pw").status == 200)
        }
    }

    @Test func registeringATakenUsernameReturns409AndKeepsTheFirstPassword() throws {
        let username = APIClient.unique("taken")
        #expect(try api.register(username, password: "first").status == 200)
        for path in ["/users/register/", "/users/register"] {
            let again = try http.post(path, json: ["username": username, "password": "second"])
            #expect(again.status == 409)
            #expect(again.value == ["detail": "Username already exists"])
        }
        #expect(try api.login(username, password: "first").status == 200)
        #expect(try api.login(username, password: "second").status == 401)
        try resetAddressLimits()
    }

    @Test func usernamesAreCaseSensitive() throws {
        let username = APIClient.unique("Case")
        #expect(try api.register(username, password: "pw").status == 200)
        #expect(try api.register(username.lowercased(), password: "other").status == 200)
        #expect(try api.login(username.uppercased(), password: "pw").status == 401)
        let upper = try api.login(username, password: "pw")
        let lower = try api.login(username.lowercased(), password: "other")
        #expect(upper.value?["username"] == .string(username))
        #expect(lower.value?["username"] == .string(username.lowercased()))
        #expect(upper.value?["id"] != lower.value?["id"])
        try resetAddressLimits()
    }

    // MARK: - Login

    @Test func loginReturnsAWorkingBearerTokenOnBothSlashForms() throws {
        let username = APIClient.unique("login")
        let registered = try api.register(username, password: "s3cret pass")
        let id = try #require(registered.jsonObject?["id"] as? Int)
        for path in ["/users/login/", "/users/login"] {
            let response = try http.post(path, json: ["username": username, "password": "s3cret pass"])
            #expect(response.status == 200, "\(path): \(response.text)")
            #expect(response.header("content-type") == "application/json; charset=utf-8")
            let token = try #require(response.jsonObject?["access_token"] as? String)
            #expect(token.split(separator: ".", omittingEmptySubsequences: false).count == 3)
            #expect(
                response.value == [
                    "id": .id(Int64(id)), "username": .string(username), "access_token": .string(token),
                    "token_type": "bearer",
                ])
            // The token authenticates: a lookup of a missing cluster is 404, not 401.
            let lookup = try http.get(
                "/clusters/get_cluster/?id=999999999", headers: ["Authorization": "Bearer \(token)"])
            #expect(lookup.status == 404, "\(lookup.text)")
        }
    }

    @Test func wrongPasswordAndUnknownUsernameGetByteIdenticalAnswers() throws {
        let user = try api.newUser("same")
        let wrongPassword = try api.login(user.username, password: "not the password")
        let unknownUser = try api.login(APIClient.unique("nobody"), password: "not the password")
        #expect(wrongPassword.status == 401)
        #expect(unknownUser.status == 401)
        #expect(wrongPassword.value == Self.invalidCredentials)
        #expect(wrongPassword.body == unknownUser.body)
        #expect(wrongPassword.header("content-type") == unknownUser.header("content-type"))
        #expect(wrongPassword.header("www-authenticate") == unknownUser.header("www-authenticate"))
        try resetAddressLimits()
    }

    // MARK: - Organizations

    @Test func organizationCreateReturnsAnUnguessableInviteCodeOnBothSlashForms() throws {
        var codes: Set<String> = []
        for path in ["/organizations/create/", "/organizations/create", "/organizations/create/"] {
            let user = try api.newUser("orgc")
            let name = APIClient.unique("Org")
            let response = try http.post(path, json: ["name": name], headers: user.auth)
            #expect(response.status == 200, "\(path): \(response.text)")
            let object = try #require(response.jsonObject)
            let id = try #require(object["id"] as? Int)
            let code = try #require(object["invite_code"] as? String)
            #expect(response.value == ["id": .id(Int64(id)), "name": .string(name), "invite_code": .string(code)])
            #expect(code.utf8.count >= 22, "invite code \(code) is shorter than 128 bits of base64url")
            #expect(
                code.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "_" }, "\(code)")
            #expect(!code.hasPrefix("org-"))
            codes.insert(code)
            // The creator is now in the organization: joining it with its own code is the idempotent 200.
            let join = try api.joinOrganization(inviteCode: code, as: user)
            #expect(join.value == ["message": .string("User \(user.username) joined organization \(name)")])
        }
        #expect(codes.count == 3)
    }

    @Test func organizationNameTakenReturns409() throws {
        let name = APIClient.unique("Dup Org")
        let first = try api.newUser("orgdup")
        let second = try api.newUser("orgdup")
        #expect(try api.createOrganization(name, as: first).status == 200)
        for path in ["/organizations/create/", "/organizations/create"] {
            let again = try http.post(path, json: ["name": name], headers: second.auth)
            #expect(again.status == 409)
            #expect(again.value == ["detail": "Organization with the given name already exists"])
        }
        // The loser is still without an organization: creating another name makes them its admin.
        let other = try api.createOrganization(name.lowercased(), as: second)
        #expect(other.status == 200, "names are case-sensitive: \(other.text)")
        let code = try #require(other.jsonObject?["invite_code"] as? String)
        #expect(try api.joinOrganization(inviteCode: code, as: second).status == 200)
    }

    @Test func joiningByInviteCodeAnswersWithTheMessageAndIsIdempotent() throws {
        let owner = try api.newUser("owner")
        let name = APIClient.unique("Join Org")
        let created = try api.createOrganization(name, as: owner)
        let code = try #require(created.jsonObject?["invite_code"] as? String)

        let member = try api.newUser("member")
        let expected: JSONValue = ["message": .string("User \(member.username) joined organization \(name)")]
        let joined = try api.joinOrganization(inviteCode: code, as: member)
        #expect(joined.status == 200, "\(joined.text)")
        #expect(joined.value == expected)
        // Joining again, by either slash form and either place for the code, is the same 200.
        for path in ["/organizations/join/", "/organizations/join"] {
            let byQuery = try http.request(
                "POST", path + "?invite_code=" + APIClient.queryEncoded(code), headers: member.auth)
            #expect(byQuery.status == 200, "\(path): \(byQuery.text)")
            #expect(byQuery.value == expected)
            let byBody = try http.post(path, json: ["invite_code": code], headers: member.auth)
            #expect(byBody.status == 200, "\(path): \(byBody.text)")
            #expect(byBody.value == expected)
        }
        let ownerRejoins = try api.joinOrganization(inviteCode: code, as: owner)
        #expect(ownerRejoins.value == ["message": .string("User \(owner.username) joined organization \(name)")])

        let bodyJoiner = try api.newUser("bodyjoin")
        let viaBody = try http.post("/organizations/join", json: ["invite_code": code], headers: bodyJoiner.auth)
        #expect(viaBody.value == ["message": .string("User \(bodyJoiner.username) joined organization \(name)")])
    }

    @Test func joiningASecondOrganizationReturns409AndKeepsTheFirst() throws {
        let ownerX = try api.newUser("ownx")
        let ownerY = try api.newUser("owny")
        let nameX = APIClient.unique("X")
        let codeX = try #require(try api.createOrganization(nameX, as: ownerX).jsonObject?["invite_code"] as? String)
        let codeY = try #require(
            try api.createOrganization(APIClient.unique("Y"), as: ownerY).jsonObject?["invite_code"] as? String)
        let clusterX = try #require(
            try api.createCluster(APIClient.unique("x-cluster"), as: ownerX).jsonObject?["id"] as? Int)

        let member = try api.newUser("twice")
        #expect(try api.joinOrganization(inviteCode: codeX, as: member).status == 200)
        let second = try api.joinOrganization(inviteCode: codeY, as: member)
        #expect(second.status == 409)
        #expect(second.header("content-type") == "application/json; charset=utf-8")
        #expect(second.jsonObject?["detail"] is String, "\(second.text)")
        // Still in X: X's clusters are visible and re-joining X is the idempotent 200.
        #expect(try api.getCluster(id: Int64(clusterX), as: member).status == 200)
        #expect(try api.joinOrganization(inviteCode: codeX, as: member).status == 200)
        // An owner cannot hop either.
        #expect(try api.joinOrganization(inviteCode: codeY, as: ownerX).status == 409)
    }

    @Test func unknownInviteCodeReturns400() throws {
        let owner = try api.newUser("codeowner")
        let code = try #require(
            try api.createOrganization(APIClient.unique("Codes"), as: owner).jsonObject?["invite_code"] as? String)
        let user = try api.newUser("badcode")
        for wrong in ["org-1", "nope", code.uppercased() == code ? code.lowercased() : code.uppercased(), code + "x"] {
            let response = try api.joinOrganization(inviteCode: wrong, as: user)
            #expect(response.status == 400, "\(wrong): \(response.text)")
            #expect(response.value == Self.invalidInviteCode)
        }
        let inBody = try http.post("/organizations/join/", json: ["invite_code": "org-2"], headers: user.auth)
        #expect(inBody.status == 400)
        #expect(inBody.value == Self.invalidInviteCode)
        try resetInviteLimits()
    }

    @Test func inviteCodeInTheQueryWinsOverTheBody() throws {
        let owner = try api.newUser("qwin")
        let name = APIClient.unique("Query Wins")
        let code = try #require(try api.createOrganization(name, as: owner).jsonObject?["invite_code"] as? String)

        let first = try api.newUser("qwin")
        let queryValid = try http.post(
            "/organizations/join/?invite_code=" + APIClient.queryEncoded(code), json: ["invite_code": "bogus"],
            headers: first.auth)
        #expect(queryValid.status == 200, "\(queryValid.text)")
        #expect(queryValid.value == ["message": .string("User \(first.username) joined organization \(name)")])

        let second = try api.newUser("qwin")
        let queryBogus = try http.post(
            "/organizations/join/?invite_code=bogus", json: ["invite_code": code], headers: second.auth)
        #expect(queryBogus.status == 400)
        #expect(queryBogus.value == Self.invalidInviteCode)
        try resetInviteLimits()
    }

    @Test func joinWithoutInviteCodeReturns422() throws {
        let user = try api.newUser("nocode")
        for response in [
            try http.request("POST", "/organizations/join/", headers: user.auth),
            try http.post("/organizations/join/", json: [String: String](), headers: user.auth),
            try http.post("/organizations/join", json: ["invite_code": NSNull()], headers: user.auth),
        ] {
            expectValidationError(response, at: ["query", "invite_code"])
        }
    }

    // MARK: - Clusters

    @Test func clusterCreateReturnsExactlyTheEightFieldsWithCPUAsANumber() throws {
        let user = try api.newUser("cl")
        let cases: [(cpu: String, text: String, value: Double)] = [
            ("140", "140.0", 140), ("1.5", "1.5", 1.5), ("0.125", "0.125", 0.125), ("2e3", "2000.0", 2000),
            ("1.234", "1.234", 1.234), ("0", "0.0", 0), ("3.10", "3.1", 3.1),
            (
                "9223372036854775.807",
                "9223372036854775.807", 9223372036854775.807
            ),
        ]
        for (index, (cpu, text, value)) in cases.enumerated() {
            let name = APIClient.unique("cpu")
            let path = index.isMultiple(of: 2) ? "/clusters/create/" : "/clusters/create"
            let body = #"{"name": "\#(name)", "total_ram": 2048, "total_cpu": \#(cpu), "total_gpu": 2}"#
            let response = try postRaw(path, body, as: user)
            #expect(response.status == 200, "\(cpu) on \(path): \(response.text)")
            let id = try #require(response.jsonObject?["id"] as? Int, "\(response.text)")
            let expected = Self.cluster(id: id, name: name, ram: 2048, cpu: value, gpu: 2)
            #expect(response.value == expected)
            #expect(rawNumber("total_cpu", in: response.text) == text, "\(response.text)")
            #expect(rawNumber("available_cpu", in: response.text) == text, "\(response.text)")
            #expect(rawNumber("total_ram", in: response.text) == "2048")
            // get_cluster shows the same object, by id and by name.
            let byID = try api.getCluster(id: Int64(id), as: user)
            #expect(byID.status == 200)
            #expect(byID.value == expected)
            #expect(rawNumber("total_cpu", in: byID.text) == text)
            #expect(try api.getCluster(name: name, as: user).value == expected)
        }
    }

    @Test func clusterCreateAcceptsTheLargestIntegersExactly() throws {
        let user = try api.newUser("big")
        let name = APIClient.unique("big")
        let body = #"{"name":"\#(name)","total_ram":9223372036854775807,"total_cpu":1,"total_gpu":9223372036854775807}"#
        let response = try postRaw("/clusters/create/", body, as: user)
        #expect(response.status == 200, "\(response.text)")
        #expect(rawNumber("total_ram", in: response.text) == "9223372036854775807")
        #expect(rawNumber("available_gpu", in: response.text) == "9223372036854775807")
        let fetched = try api.getCluster(name: name, as: user)
        #expect(rawNumber("available_ram", in: fetched.text) == "9223372036854775807")
    }

    @Test func clusterNamesAreStoredVerbatimAndUnknownFieldsIgnored() throws {
        let user = try api.newUser("verb")
        let suffix = String(UUID().uuidString.prefix(6))
        let names = [
            "x'; DROP TABLE users;-- " + suffix,
            "  spaced  name " + suffix + " ",
            "Ünïcødé ☁️ 集群 " + suffix,
            "quote \" backslash \\ slash / " + suffix,
            suffix + String(repeating: "n", count: 128 - suffix.count),
            "%41+&=?#" + suffix,
        ]
        for name in names {
            let response = try http.post(
                "/clusters/create/",
                json: [
                    "name": name, "total_ram": 10, "total_cpu": 1, "total_gpu": 0, "owner_id": 1,
                    "organization_id": 999, "available_ram": 1_000_000, "id": 5,
                ], headers: user.auth)
            #expect(response.status == 200, "\(name): \(response.text)")
            let id = try #require(response.jsonObject?["id"] as? Int)
            let expected = Self.cluster(id: id, name: name, ram: 10, cpu: 1, gpu: 0)
            #expect(response.value == expected)
            let fetched = try api.getCluster(name: name, as: user)
            #expect(fetched.status == 200, "\(name): \(fetched.text)")
            #expect(fetched.value == expected)
        }
        // The SQL-looking name did nothing to the users table.
        #expect(try api.login(user.username, password: user.password).status == 200)
    }

    @Test func clusterCreateAcceptsAJSONBodyWithoutContentType() throws {
        let user = try api.newUser("noct")
        let name = APIClient.unique("noct")
        let body = #"{"name": "\#(name)", "total_ram": 1, "total_cpu": 1, "total_gpu": 1}"#
        let response = try http.request("POST", "/clusters/create", headers: user.auth, body: Array(body.utf8))
        #expect(response.status == 200, "\(response.text)")
    }

    @Test func duplicateClusterNameInOneScopeReturns409() throws {
        let owner = try api.newUser("dupc")
        let code = try #require(
            try api.createOrganization(APIClient.unique("Dup Scope"), as: owner).jsonObject?["invite_code"] as? String)
        let member = try api.newUser("dupc")
        #expect(try api.joinOrganization(inviteCode: code, as: member).status == 200)
        let loner = try api.newUser("dupc")

        #expect(try api.createCluster("prod", as: owner).status == 200)
        for (who, path) in [(owner, "/clusters/create/"), (member, "/clusters/create")] {
            let again = try http.post(
                path, json: ["name": "prod", "total_ram": 1, "total_cpu": 1, "total_gpu": 1], headers: who.auth)
            #expect(again.status == 409, "\(again.text)")
            #expect(again.jsonObject?["detail"] is String)
        }
        #expect(try api.createCluster("prod", as: loner).status == 200)
        #expect(try api.createCluster("prod", as: loner).status == 409)
        #expect(try api.createCluster("Prod", as: owner).status == 200, "names are case-sensitive")
        #expect(try api.createCluster("prod ", as: owner).status == 200, "names are not trimmed")
    }

    @Test func getClusterAcceptsTheLookupFromQueryOrBodyOnBothSlashForms() throws {
        let user = try api.newUser("look")
        let nameA = APIClient.unique("look a")
        let nameB = APIClient.unique("look b")
        let a = try #require(try api.createCluster(nameA, ram: 1, cpu: 1, gpu: 1, as: user).jsonObject?["id"] as? Int)
        let b = try #require(try api.createCluster(nameB, ram: 2, cpu: 2, gpu: 2, as: user).jsonObject?["id"] as? Int)
        let clusterA = Self.cluster(id: a, name: nameA, ram: 1, cpu: 1, gpu: 1)
        let clusterB = Self.cluster(id: b, name: nameB, ram: 2, cpu: 2, gpu: 2)
        let encodedA = APIClient.queryEncoded(nameA)
        let encodedB = APIClient.queryEncoded(nameB)

        for path in ["/clusters/get_cluster/", "/clusters/get_cluster"] {
            let lookups: [(String, String?, JSONValue)] = [
                ("?id=\(a)", nil, clusterA),
                ("?cluster_name=\(encodedA)", nil, clusterA),
                ("", #"{"id": \#(a)}"#, clusterA),
                ("", #"{"id": "\#(a)"}"#, clusterA),
                ("", #"{"cluster_name": "\#(nameA)"}"#, clusterA),
                ("?id=\(a)&cluster_name=\(encodedA)", nil, clusterA),
                ("", #"{"id": \#(a), "cluster_name": "\#(nameA)"}"#, clusterA),
                // The query wins over the body, field by field.
                ("?id=\(a)", #"{"id": \#(b)}"#, clusterA),
                ("?cluster_name=\(encodedB)", #"{"cluster_name": "\#(nameA)"}"#, clusterB),
                ("?id=\(b)", #"{"id": "not a number"}"#, clusterB),
                ("?id=\(b)", #"{"cluster_name": "\#(nameB)"}"#, clusterB),
            ]
            for (query, body, expected) in lookups {
                let response = try getRaw(path + query, body, as: user)
                #expect(response.status == 200, "\(path)\(query) \(body ?? ""): \(response.text)")
                #expect(response.value == expected, "\(path)\(query) \(body ?? "")")
                #expect(response.header("location") == nil)
            }
        }
    }

    @Test func getClusterWithoutLookupOrWithConflictingLookupsReturns400() throws {
        let user = try api.newUser("conf")
        let nameA = APIClient.unique("conf a")
        let nameB = APIClient.unique("conf b")
        let a = try #require(try api.createCluster(nameA, as: user).jsonObject?["id"] as? Int)
        _ = try #require(try api.createCluster(nameB, as: user).jsonObject?["id"] as? Int)
        let cases: [(String, String?)] = [
            ("", nil), ("", "{}"), ("", #"{"id": null, "cluster_name": null}"#), ("?unrelated=1", nil),
            ("?id=\(a)&cluster_name=\(APIClient.queryEncoded(nameB))", nil),
            ("", #"{"id": \#(a), "cluster_name": "\#(nameB)"}"#),
            ("?id=\(a)", #"{"cluster_name": "\#(nameB)"}"#),
        ]
        for path in ["/clusters/get_cluster/", "/clusters/get_cluster"] {
            for (query, body) in cases {
                let response = try getRaw(path + query, body, as: user)
                #expect(response.status == 400, "\(path)\(query) \(body ?? ""): \(response.text)")
                #expect(response.jsonObject?["detail"] is String, "\(response.text)")
            }
        }
    }

    @Test func getClusterOfAMissingClusterReturns404() throws {
        let user = try api.newUser("miss")
        let missing = try api.getCluster(id: 999_999_999, as: user)
        #expect(missing.status == 404)
        #expect(missing.header("content-type") == "application/json; charset=utf-8")
        #expect(missing.jsonObject?["detail"] is String)
        let byName = try api.getCluster(name: APIClient.unique("never created"), as: user)
        #expect(byName.status == 404)
        #expect(byName.body == missing.body)
        let both = try http.get(
            "/clusters/get_cluster?id=999999998&cluster_name=" + APIClient.queryEncoded(APIClient.unique("nope")),
            headers: user.auth)
        #expect(both.status == 404)
        #expect(both.body == missing.body)
        let maxID = try http.get("/clusters/get_cluster/?id=9223372036854775807", headers: user.auth)
        #expect(maxID.status == 404)
    }

    // MARK: - Tenancy

    @Test func clustersAreVisibleOnlyWithinTheirScope() throws {
        let alice = try api.newUser("alice")
        let bob = try api.newUser("bob")
        let codeX = try #require(
            try api.createOrganization(APIClient.unique("Tenant X"), as: alice).jsonObject?["invite_code"] as? String)
        #expect(try api.createOrganization(APIClient.unique("Tenant Y"), as: bob).status == 200)

        let prodA = try api.createCluster("prod", ram: 100, cpu: 10, gpu: 1, as: alice)
        let prodB = try api.createCluster("prod", ram: 200, cpu: 20, gpu: 2, as: bob)
        #expect(prodA.status == 200, "\(prodA.text)")
        #expect(prodB.status == 200, "same name in another organization: \(prodB.text)")
        let idA = try #require(prodA.jsonObject?["id"] as? Int)
        let idB = try #require(prodB.jsonObject?["id"] as? Int)
        #expect(idA != idB)
        let onlyAName = APIClient.unique("alice only")
        let onlyA = try #require(try api.createCluster(onlyAName, as: alice).jsonObject?["id"] as? Int)

        let notFound = try api.getCluster(id: 999_999_999, as: bob)
        #expect(notFound.status == 404)
        for response in [
            try api.getCluster(id: Int64(idA), as: bob), try api.getCluster(id: Int64(onlyA), as: bob),
            try api.getCluster(name: onlyAName, as: bob),
            try http.get("/clusters/get_cluster/", headers: bob.auth, bodyJSON: ["id": idA]),
        ] {
            #expect(response.status == 404, "\(response.text)")
            #expect(response.body == notFound.body, "another tenant's cluster must read like a missing one")
        }
        #expect(try api.getCluster(name: "prod", as: bob).value?["id"] == .id(Int64(idB)))
        #expect(try api.getCluster(name: "prod", as: alice).value?["id"] == .id(Int64(idA)))

        // A member who joins X by invite sees X's clusters, and not Y's.
        let carol = try api.newUser("carol")
        #expect(try api.joinOrganization(inviteCode: codeX, as: carol).status == 200)
        #expect(try api.getCluster(id: Int64(idA), as: carol).value == prodA.value)
        #expect(try api.getCluster(name: "prod", as: carol).value == prodA.value)
        #expect(try api.getCluster(name: onlyAName, as: carol).status == 200)
        #expect(try api.getCluster(id: Int64(idB), as: carol).body == notFound.body)
        // Clusters a member creates belong to the organization.
        let carolsName = APIClient.unique("carol made")
        let carols = try #require(try api.createCluster(carolsName, as: carol).jsonObject?["id"] as? Int)
        #expect(try api.getCluster(id: Int64(carols), as: alice).status == 200)
        #expect(try api.getCluster(id: Int64(carols), as: bob).body == notFound.body)

        // Users without an organization each have their own scope.
        let dave = try api.newUser("dave")
        let erin = try api.newUser("erin")
        let prodD = try api.createCluster("prod", ram: 300, cpu: 30, gpu: 3, as: dave)
        #expect(prodD.status == 200, "\(prodD.text)")
        let idD = try #require(prodD.jsonObject?["id"] as? Int)
        #expect(try api.getCluster(name: "prod", as: dave).value == prodD.value)
        #expect(try api.getCluster(id: Int64(idD), as: dave).value == prodD.value)
        for (who, id) in [(dave, idA), (dave, idB), (erin, idD), (alice, idD), (bob, idD), (carol, idD)] {
            let response = try api.getCluster(id: Int64(id), as: who)
            #expect(response.status == 404, "\(who.username) reading cluster \(id)")
            #expect(response.body == notFound.body)
        }
        #expect(try api.getCluster(name: "prod", as: erin).body == notFound.body)
        #expect(try api.getCluster(name: onlyAName, as: dave).body == notFound.body)
        // Cross-tenant id with the caller's own name is not a way to confirm an id either.
        let mixed = try http.get("/clusters/get_cluster/?id=\(idA)&cluster_name=prod", headers: dave.auth)
        let unknownID = try http.get("/clusters/get_cluster/?id=999999999&cluster_name=prod", headers: dave.auth)
        #expect(mixed.status != 200)
        #expect(mixed.status == unknownID.status)
        #expect(mixed.body == unknownID.body)
    }

    // MARK: - Authentication

    @Test func everyProtectedEndpointRefusesBadTokens() throws {
        let user = try api.newUser("tok")
        let secret = try jwtSecret()
        let signer = try TokenSigner(algorithm: .hs256, secret: secret, issuer: "hypervisor")
        let now = Int64(Date().timeIntervalSince1970)
        let valid = user.token
        let parts = valid.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        try #require(parts.count == 3)

        let flippedSignature = parts[0] + "." + parts[1] + "." + flip(parts[2])
        let otherPayload = Base64URL.encode(
            Array(#"{"sub":"\#(user.id + 1)","iat":\#(now),"exp":\#(now + 3600),"jti":"x","iss":"hypervisor"}"#.utf8))
        let swappedPayload = parts[0] + "." + otherPayload + "." + parts[2]
        let noneHeader = Base64URL.encode(Array(#"{"alg":"none","typ":"JWT"}"#.utf8))
        let algNone = noneHeader + "." + parts[1] + "."
        let algNoneSigned = noneHeader + "." + parts[1] + "." + parts[2]
        let hs512Header = Base64URL.encode(Array(#"{"alg":"HS512","typ":"JWT"}"#.utf8))
        let wrongAlgorithm = hs512Header + "." + parts[1] + "." + parts[2]
        let expired = try signer.sign(subject: user.id, issuedAt: now - 7200, lifetimeSeconds: 3600)
        let justExpired = try signer.sign(subject: user.id, issuedAt: now - 61, lifetimeSeconds: 60)
        let wrongSecret = try TokenSigner(
            algorithm: .hs256, secret: Array(repeating: UInt8(ascii: "k"), count: 64), issuer: "hypervisor"
        ).sign(subject: user.id, issuedAt: now, lifetimeSeconds: 3600)
        let wrongIssuer = try TokenSigner(algorithm: .hs256, secret: secret, issuer: "someone-else")
            .sign(subject: user.id, issuedAt: now, lifetimeSeconds: 3600)
        let ghost = try signer.sign(subject: 9_000_000_000_000, issuedAt: now, lifetimeSeconds: 3600)
        #expect(try api.getCluster(id: 1, as: user).status != 401, "the harness signs like the service")
        let controlToken = try signer.sign(subject: user.id, issuedAt: now - 5, lifetimeSeconds: 3600)
        #expect(
            try http.get("/clusters/get_cluster/?id=999999999", headers: ["Authorization": "Bearer \(controlToken)"])
                .status == 404, "a token signed here with the stack's secret is accepted")

        let authorizations: [(String, String?)] = [
            ("missing", nil),
            ("empty", ""),
            ("scheme only", "Bearer"),
            ("scheme and space", "Bearer "),
            ("basic", "Basic dXNlcjpwYXNz"),
            ("token without scheme", valid),
            ("garbage", "Bearer garbage"),
            ("three garbage parts", "Bearer a.b.c"),
            ("two parts", "Bearer " + parts[0] + "." + parts[1]),
            ("four parts", "Bearer " + valid + ".x"),
            ("tampered signature", "Bearer " + flippedSignature),
            ("truncated signature", "Bearer " + String(valid.dropLast(2))),
            ("tampered payload", "Bearer " + swappedPayload),
            ("alg none, no signature", "Bearer " + algNone),
            ("alg none, with signature", "Bearer " + algNoneSigned),
            ("alg HS512 header", "Bearer " + wrongAlgorithm),
            ("expired", "Bearer " + expired),
            ("just expired", "Bearer " + justExpired),
            ("wrong secret", "Bearer " + wrongSecret),
            ("wrong issuer", "Bearer " + wrongIssuer),
            ("user does not exist", "Bearer " + ghost),
            ("huge", "Bearer " + String(repeating: "a", count: 5000)),
        ]
        let code = try #require(
            try api.createOrganization(APIClient.unique("Tok Org"), as: try api.newUser("tokorg"))
                .jsonObject?["invite_code"] as? String)
        let before = try rowCounts()
        for (label, authorization) in authorizations {
            let headers = authorization.map { ["Authorization": $0] } ?? [:]
            let requests: [(String, () throws -> HTTPResponse)] = [
                (
                    "organizations/create",
                    {
                        try self.http.post(
                            "/organizations/create/", json: ["name": APIClient.unique("T")], headers: headers)
                    }
                ),
                (
                    "organizations/join",
                    {
                        try self.http.request(
                            "POST", "/organizations/join?invite_code=" + APIClient.queryEncoded(code), headers: headers)
                    }
                ),
                (
                    "clusters/create",
                    {
                        try self.http.post(
                            "/clusters/create",
                            json: ["name": APIClient.unique("t"), "total_ram": 1, "total_cpu": 1, "total_gpu": 1],
                            headers: headers)
                    }
                ),
                ("clusters/get_cluster", { try self.http.get("/clusters/get_cluster/?id=1", headers: headers) }),
            ]
            for (endpoint, send) in requests {
                let response = try send()
                #expect(response.status == 401, "\(label) on \(endpoint): \(response.status) \(response.text)")
                #expect(response.value == Self.unauthorized, "\(label) on \(endpoint)")
                #expect(response.header("www-authenticate") == "Bearer", "\(label) on \(endpoint)")
                #expect(response.header("content-type") == "application/json; charset=utf-8")
            }
        }
        #expect(try rowCounts() == before, "refused requests changed nothing")
        #expect(try memberships(of: user.id) == "")
        // Rejecting bad input comes after authentication: garbage without a token is still 401.
        let garbage = try http.request(
            "POST", "/clusters/create/", headers: ["Content-Type": "application/json"], body: Array("{oops".utf8))
        #expect(garbage.status == 401)
        #expect(garbage.value == Self.unauthorized)
    }

    @Test func publicEndpointsNeedNoToken() throws {
        let username = APIClient.unique("pub")
        let headers = ["Authorization": "Bearer garbage"]
        #expect(
            try http.post("/users/register", json: ["username": username, "password": "pw"], headers: headers).status
                == 200)
        #expect(
            try http.post("/users/login", json: ["username": username, "password": "pw"], headers: headers).status
                == 200)
        let root = try http.get("/")
        #expect(root.status == 200)
        #expect(root.jsonObject?["message"] is String)
    }

    // MARK: - Rate limits

    @Test func repeatedWrongPasswordsAreLimitedPerUsername() throws {
        try resetAddressLimits()
        defer { try? resetAddressLimits() }
        let victim = try api.newUser("victim")
        var statuses: [Int] = []
        var limited: [HTTPResponse] = []
        for _ in 0..<40 {
            let response = try api.login(victim.username, password: "wrong")
            statuses.append(response.status)
            if response.status == 429 { limited.append(response) }
        }
        #expect(statuses.prefix(10).allSatisfy { $0 == 401 }, "\(statuses)")
        #expect(statuses.dropFirst(10).allSatisfy { $0 == 429 }, "\(statuses)")
        for response in limited {
            let retryAfter = response.header("retry-after").flatMap { Int($0) }
            #expect(
                retryAfter.map { (1...300).contains($0) } == true,
                "Retry-After: \(response.header("retry-after") ?? "none")")
            #expect((response.jsonObject?["detail"] as? String)?.isEmpty == false, "\(response.text)")
            #expect(response.jsonObject?.count == 1)
            #expect(response.header("content-type") == "application/json; charset=utf-8")
        }
        // Even the right password is refused while the username is limited...
        let correct = try api.login(victim.username, password: victim.password)
        #expect(correct.status == 429)
        #expect(correct.header("retry-after") != nil)
        // ...but only for that username, and the victim's existing token still works.
        let bystander = try api.newUser("bystander")
        #expect(try api.login(bystander.username, password: bystander.password).status == 200)
        #expect(try api.getCluster(id: 999_999_999, as: victim).status == 404)
    }

    @Test func failedLoginsAreLimitedPerClientAddressAcrossUsernames() throws {
        try resetAddressLimits()
        defer { try? resetAddressLimits() }
        let user = try api.newUser("addr")
        // 10 unknown usernames, 10 failures each: no username reaches its own limit early, the address does.
        var statuses: [Int] = []
        for round in 0..<10 {
            let username = APIClient.unique("spray\(round)")
            for _ in 0..<10 { statuses.append(try api.login(username, password: "guess").status) }
        }
        #expect(statuses.allSatisfy { $0 == 401 }, "\(statuses)")
        let blocked = try api.login(user.username, password: user.password)
        #expect(blocked.status == 429, "the 101st failure from one address: \(blocked.text)")
        #expect(blocked.header("retry-after") != nil)
        try resetAddressLimits()
        #expect(try api.login(user.username, password: user.password).status == 200)
    }

    @Test func repeatedWrongInviteCodesAreLimitedPerUser() throws {
        try resetInviteLimits()
        defer { try? resetInviteLimits() }
        let owner = try api.newUser("invowner")
        let name = APIClient.unique("Inv")
        let code = try #require(try api.createOrganization(name, as: owner).jsonObject?["invite_code"] as? String)
        let guesser = try api.newUser("guesser")
        var statuses: [Int] = []
        var limited: [HTTPResponse] = []
        for attempt in 0..<40 {
            let response = try api.joinOrganization(inviteCode: "guess-\(attempt)", as: guesser)
            statuses.append(response.status)
            if response.status == 429 { limited.append(response) }
        }
        #expect(statuses.prefix(10).allSatisfy { $0 == 400 }, "\(statuses)")
        #expect(statuses.dropFirst(10).allSatisfy { $0 == 429 }, "\(statuses)")
        for response in limited {
            let retryAfter = response.header("retry-after").flatMap { Int($0) }
            #expect(retryAfter.map { (1...300).contains($0) } == true)
            #expect((response.jsonObject?["detail"] as? String)?.isEmpty == false)
        }
        // A guessing user cannot slip the real code in either; another user joins normally.
        #expect(try api.joinOrganization(inviteCode: code, as: guesser).status == 429)
        let honest = try api.newUser("honest")
        let joined = try api.joinOrganization(inviteCode: code, as: honest)
        #expect(joined.value == ["message": .string("User \(honest.username) joined organization \(name)")])
    }

    // MARK: - Bad input

    @Test func structurallyBadBodiesAreRefusedOnEveryEndpoint() throws {
        let user = try api.newUser("struct")
        let deep = String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000)
        let deepObject = String(repeating: #"{"a":"#, count: 3000) + "1" + String(repeating: "}", count: 3000)
        let bodies: [(String, [UInt8])] = [
            ("malformed", Array(#"{"name": "x","#.utf8)),
            ("trailing garbage", Array(#"{"name": "x"} x"#.utf8)),
            ("single quotes", Array("{'name': 'x'}".utf8)),
            ("array", Array("[]".utf8)),
            ("array of object", Array(#"[{"name": "x"}]"#.utf8)),
            ("null", Array("null".utf8)),
            ("string", Array(#""name""#.utf8)),
            ("number", Array("42".utf8)),
            ("true", Array("true".utf8)),
            ("NaN", Array("NaN".utf8)),
            ("NUL byte", Array("{\"name\": \"a\u{0}b\"}".utf8)),
            ("deeply nested array", Array(deep.utf8)),
            ("deeply nested object", Array(deepObject.utf8)),
        ]
        let endpoints: [(method: String, path: String)] = [
            ("POST", "/users/register/"), ("POST", "/users/login/"), ("POST", "/organizations/create/"),
            ("POST", "/organizations/join/"), ("POST", "/clusters/create/"), ("GET", "/clusters/get_cluster/"),
        ]
        let before = try rowCounts()
        for endpoint in endpoints {
            for (label, body) in bodies {
                let response = try http.request(
                    endpoint.method, endpoint.path,
                    headers: user.auth.merging(["Content-Type": "application/json"]) { $1 },
                    body: body)
                expectValidationError(response, first: "body", "\(label) on \(endpoint.path)")
            }
        }
        // Bodies over 64 KiB are 413 everywhere, from nginx or the app.
        let huge = Array(#"{"name": ""#.utf8) + Array(repeating: UInt8(ascii: "a"), count: 70_000) + Array(#""}"#.utf8)
        for endpoint in endpoints {
            let response = try http.request(
                endpoint.method, endpoint.path, headers: user.auth.merging(["Content-Type": "application/json"]) { $1 },
                body: huge)
            #expect(response.status == 413, "\(endpoint.path): \(response.status)")
        }
        #expect(try rowCounts() == before)
        #expect(try memberships(of: user.id) == "")
        // The workers survived all of it.
        #expect(try api.login(user.username, password: user.password).status == 200)
    }

    @Test func registerAndLoginRefuseBadFieldsAndRegisterNothing() throws {
        let before = try rowCounts()
        var rejectedUsernames: [String] = []
        func username() -> String {
            let name = APIClient.unique("bad")
            rejectedUsernames.append(name)
            return name
        }
        let cases: [(String, String, [String]?)] = [
            ("empty object", "{}", ["body", "username"]),
            ("password missing", #"{"username": "\#(username())"}"#, ["body", "password"]),
            ("username missing", #"{"password": "pw"}"#, ["body", "username"]),
            ("username number", #"{"username": 12345, "password": "pw"}"#, ["body", "username"]),
            ("password number", #"{"username": "\#(username())", "password": 123456}"#, ["body", "password"]),
            ("password bool", #"{"username": "\#(username())", "password": true}"#, ["body", "password"]),
            ("password null", #"{"username": "\#(username())", "password": null}"#, ["body", "password"]),
            ("username array", #"{"username": ["a"], "password": "pw"}"#, ["body", "username"]),
            ("username object", #"{"username": {"a": 1}, "password": "pw"}"#, ["body", "username"]),
            ("username too short", #"{"username": "ab", "password": "pw"}"#, ["body", "username"]),
            (
                "username 65", #"{"username": "\#(String(repeating: "u", count: 65))", "password": "pw"}"#,
                ["body", "username"]
            ),
            ("username empty", #"{"username": "", "password": "pw"}"#, ["body", "username"]),
            ("username space", #"{"username": "a b c", "password": "pw"}"#, ["body", "username"]),
            ("username unicode", #"{"username": "jürgen", "password": "pw"}"#, ["body", "username"]),
            ("username control", #"{"username": "ab\u0001c", "password": "pw"}"#, ["body", "username"]),
            ("username SQL", #"{"username": "x'; DROP TABLE users;--", "password": "pw"}"#, ["body", "username"]),
            ("password empty", #"{"username": "\#(username())", "password": ""}"#, ["body", "password"]),
            (
                "password 1025",
                #"{"username": "\#(username())", "password": "\#(String(repeating: "p", count: 1025))"}"#,
                ["body", "password"]
            ),
        ]
        for path in ["/users/register/", "/users/register", "/users/login/", "/users/login"] {
            for (label, body, location) in cases {
                let response = try http.request(
                    "POST", path, headers: ["Content-Type": "application/json"], body: Array(body.utf8))
                expectValidationError(response, at: location, "\(label) on \(path)")
            }
        }
        let allMissing = try http.post("/users/register", json: [String: String]())
        expectValidationError(allMissing, at: ["body", "username"])
        expectValidationError(allMissing, at: ["body", "password"])
        expectValidationError(try http.request("POST", "/users/register/"), at: ["body"], "no body")
        #expect(try rowCounts() == before, "no user was stored")
        // The rejected usernames are still free: not loggable-into, and registrable now.
        for name in rejectedUsernames {
            #expect(try api.login(name, password: "pw").status == 401)
            #expect(try api.register(name, password: "pw").status == 200)
        }
        try resetAddressLimits()
    }

    @Test func organizationCreateAndJoinRefuseBadFieldsAndChangeNothing() throws {
        let user = try api.newUser("orgbad")
        let cases: [(String, String, [String]?)] = [
            ("empty object", "{}", ["body", "name"]),
            ("name number", #"{"name": 42}"#, ["body", "name"]),
            ("name bool", #"{"name": true}"#, ["body", "name"]),
            ("name null", #"{"name": null}"#, ["body", "name"]),
            ("name array", #"{"name": ["x"]}"#, ["body", "name"]),
            ("name empty", #"{"name": ""}"#, ["body", "name"]),
            ("name 129", #"{"name": "\#(String(repeating: "o", count: 129))"}"#, ["body", "name"]),
            ("name control", #"{"name": "a\u0001b"}"#, ["body", "name"]),
            ("name newline", #"{"name": "a\nb"}"#, ["body", "name"]),
            ("name tab", #"{"name": "a\tb"}"#, ["body", "name"]),
            ("name DEL", #"{"name": "a\u007fb"}"#, ["body", "name"]),
            ("name zero-width space", #"{"name": "a\u200bb"}"#, ["body", "name"]),
            ("name line separator", #"{"name": "a\u2028b"}"#, ["body", "name"]),
            ("name NUL", #"{"name": "a\u0000b"}"#, ["body", "name"]),
        ]
        let before = try rowCounts()
        for path in ["/organizations/create/", "/organizations/create"] {
            for (label, body, location) in cases {
                expectValidationError(try postRaw(path, body, as: user), at: location, "\(label) on \(path)")
            }
        }
        let joinCases: [(String, String, String, [String]?)] = [
            ("code number", "", #"{"invite_code": 42}"#, ["body", "invite_code"]),
            ("code bool", "", #"{"invite_code": true}"#, ["body", "invite_code"]),
            ("code array", "", #"{"invite_code": ["x"]}"#, ["body", "invite_code"]),
            ("code empty", "", #"{"invite_code": ""}"#, ["body", "invite_code"]),
            ("code 257", "", #"{"invite_code": "\#(String(repeating: "c", count: 257))"}"#, ["body", "invite_code"]),
            ("query code empty", "?invite_code=", "", ["query", "invite_code"]),
            ("query code 257", "?invite_code=" + String(repeating: "c", count: 257), "", ["query", "invite_code"]),
        ]
        for path in ["/organizations/join/", "/organizations/join"] {
            for (label, query, body, location) in joinCases {
                let response = try http.request(
                    "POST", path + query, headers: user.auth.merging(["Content-Type": "application/json"]) { $1 },
                    body: Array(body.utf8))
                expectValidationError(response, at: location, "\(label) on \(path)")
            }
        }
        #expect(try rowCounts() == before)
        #expect(try memberships(of: user.id) == "")
        // The user is still free to create an organization (and become its admin).
        #expect(try api.createOrganization(APIClient.unique("After Bad"), as: user).status == 200)
    }

    @Test func clusterCreateRefusesBadFieldsAndCreatesNothing() throws {
        let user = try api.newUser("clbad")
        var validNames: [String] = []
        func body(name: String? = nil, ram: String = "1024", cpu: String = "4", gpu: String = "1") -> String {
            let chosen =
                name
                ?? {
                    let fresh = APIClient.unique("bad cluster")
                    validNames.append(fresh)
                    return #""\#(fresh)""#
                }()
            return #"{"name": \#(chosen), "total_ram": \#(ram), "total_cpu": \#(cpu), "total_gpu": \#(gpu)}"#
        }
        let cases: [(String, String, [String]?)] = [
            ("empty object", "{}", ["body", "name"]),
            ("ram missing", #"{"name": "m", "total_cpu": 1, "total_gpu": 1}"#, ["body", "total_ram"]),
            ("cpu missing", #"{"name": "m", "total_ram": 1, "total_gpu": 1}"#, ["body", "total_cpu"]),
            ("gpu missing", #"{"name": "m", "total_ram": 1, "total_cpu": 1}"#, ["body", "total_gpu"]),
            ("name number", body(name: "123"), ["body", "name"]),
            ("name bool", body(name: "false"), ["body", "name"]),
            ("name null", body(name: "null"), ["body", "name"]),
            ("name empty", body(name: #""""#), ["body", "name"]),
            ("name 129", body(name: #""\#(String(repeating: "c", count: 129))""#), ["body", "name"]),
            ("name control", body(name: #""a\u0001b""#), ["body", "name"]),
            ("name escape char", body(name: #""a\u001b[31mred""#), ["body", "name"]),
            ("name newline", body(name: #""line\nbreak""#), ["body", "name"]),
            ("name carriage return", body(name: #""a\rb""#), ["body", "name"]),
            ("name NUL", body(name: #""a\u0000b""#), ["body", "name"]),
            ("name bidi override", body(name: #""a\u202eb""#), ["body", "name"]),
            ("ram string", body(ram: #""1024""#), ["body", "total_ram"]),
            ("cpu string", body(cpu: #""4""#), ["body", "total_cpu"]),
            ("gpu string", body(gpu: #""1""#), ["body", "total_gpu"]),
            ("ram true", body(ram: "true"), ["body", "total_ram"]),
            ("cpu true", body(cpu: "true"), ["body", "total_cpu"]),
            ("gpu false", body(gpu: "false"), ["body", "total_gpu"]),
            ("ram null", body(ram: "null"), ["body", "total_ram"]),
            ("cpu null", body(cpu: "null"), ["body", "total_cpu"]),
            ("gpu array", body(gpu: "[1]"), ["body", "total_gpu"]),
            ("cpu object", body(cpu: #"{"v": 1}"#), ["body", "total_cpu"]),
            ("ram negative", body(ram: "-1"), ["body", "total_ram"]),
            ("cpu negative", body(cpu: "-0.5"), ["body", "total_cpu"]),
            ("gpu negative", body(gpu: "-1"), ["body", "total_gpu"]),
            ("ram 2^63", body(ram: "9223372036854775808"), ["body", "total_ram"]),
            ("gpu 2^64", body(gpu: "18446744073709551616"), ["body", "total_gpu"]),
            ("ram -2^63-1", body(ram: "-9223372036854775809"), ["body", "total_ram"]),
            ("ram 1e400", body(ram: "1e400"), ["body", "total_ram"]),
            ("cpu 1e400", body(cpu: "1e400"), ["body", "total_cpu"]),
            ("gpu 1e400", body(gpu: "1e400"), ["body", "total_gpu"]),
            ("cpu beyond millicores", body(cpu: "9223372036854776"), ["body", "total_cpu"]),
            ("cpu 1e-400", body(cpu: "1e-400"), ["body", "total_cpu"]),
            ("cpu 4 decimals", body(cpu: "1.2345"), ["body", "total_cpu"]),
            ("cpu 1e-4", body(cpu: "1e-4"), ["body", "total_cpu"]),
            ("ram fractional", body(ram: "2.5"), ["body", "total_ram"]),
            ("gpu fractional", body(gpu: "0.5"), ["body", "total_gpu"]),
            ("cpu NaN", body(cpu: "NaN"), nil),
            ("cpu Infinity", body(cpu: "Infinity"), nil),
            ("ram -Infinity", body(ram: "-Infinity"), nil),
            ("cpu hex", body(cpu: "0x10"), nil),
            ("ram leading zero", body(ram: "0123"), nil),
            ("cpu leading dot", body(cpu: ".5"), nil),
            ("cpu plus sign", body(cpu: "+1"), nil),
        ]
        let before = try rowCounts()
        for path in ["/clusters/create/", "/clusters/create"] {
            for (label, text, location) in cases {
                let response = try postRaw(path, text, as: user)
                expectValidationError(response, at: location, first: "body", "\(label) on \(path): \(text)")
            }
        }
        #expect(try rowCounts() == before, "no cluster was stored")
        for name in validNames {
            #expect(try api.getCluster(name: name, as: user).status == 404, "\(name) was not created")
        }
        // Every problem is reported at once.
        let many = try postRaw(
            "/clusters/create", #"{"name": 1, "total_ram": -1, "total_cpu": 1.00001, "total_gpu": "x"}"#, as: user)
        for field in ["name", "total_ram", "total_cpu", "total_gpu"] {
            expectValidationError(many, at: ["body", field])
        }
        #expect(many.jsonObject.flatMap { $0["detail"] as? [Any] }?.count == 4)
    }

    @Test func loneSurrogateInANameIsRefusedNotAltered() throws {
        let user = try api.newUser("surr")
        let name = APIClient.unique("surrogate")
        let response = try postRaw(
            "/clusters/create/",
            #"{"name": "\#(name)\ud800", "total_ram": 1, "total_cpu": 1, "total_gpu": 1}"#, as: user)
        // A lone surrogate is not a printable character (Validation.name); storing U+FFFD instead would not be the
        // name "exactly as sent", and "\ud800" and "\udc00" would name the same cluster.
        expectValidationError(response, first: "body")
        #expect(try api.getCluster(name: name + "\u{FFFD}", as: user).status == 404)
    }

    @Test func invalidUTF8InABodyIsRefusedNotReplaced() throws {
        let user = try api.newUser("utf")
        let json = ["Content-Type": "application/json"]
        func bytes(_ prefix: String, _ invalid: [UInt8], _ suffix: String) -> [UInt8] {
            Array(prefix.utf8) + invalid + Array(suffix.utf8)
        }
        let before = try rowCounts()
        let username = APIClient.unique("utf")
        let register = try http.request(
            "POST", "/users/register/", headers: json,
            body: bytes(#"{"username": "\#(username)", "password": "pw"#, [0xFF], #""}"#))
        #expect([400, 422].contains(register.status), "password with byte 0xFF: \(register.status) \(register.text)")
        if register.status == 200 {
            // Accepted: then a different invalid byte must not be the same password.
            let other = try http.request(
                "POST", "/users/login/", headers: json,
                body: bytes(#"{"username": "\#(username)", "password": "pw"#, [0xFE], #""}"#))
            #expect(other.status == 401, "password bytes 0xFE log in to an account registered with 0xFF")
        }
        let login = try http.request(
            "POST", "/users/login/", headers: json,
            body: bytes(#"{"username": "\#(user.username)", "password": "x"#, [0xC3, 0x28], #""}"#))
        #expect([400, 401, 422].contains(login.status), "\(login.status) \(login.text)")

        let authorized = user.auth.merging(json) { $1 }
        let orgName = APIClient.unique("utf org")
        let organization = try http.request(
            "POST", "/organizations/create/", headers: authorized,
            body: bytes(#"{"name": "\#(orgName)"#, [0xFF], #""}"#))
        #expect([400, 422].contains(organization.status), "\(organization.status) \(organization.text)")
        let clusterName = APIClient.unique("utf cluster")
        let cluster = try http.request(
            "POST", "/clusters/create/", headers: authorized,
            body: bytes(
                #"{"name": "\#(clusterName)"#, [0xED, 0xA0, 0x80],
                #"", "total_ram": 1, "total_cpu": 1, "total_gpu": 1}"#))
        #expect([400, 422].contains(cluster.status), "\(cluster.status) \(cluster.text)")
        let lookup = try http.request(
            "GET", "/clusters/get_cluster/", headers: authorized,
            body: bytes(#"{"cluster_name": "\#(clusterName)"#, [0xFF], #""}"#))
        #expect([400, 422].contains(lookup.status), "\(lookup.status) \(lookup.text)")
        let join = try http.request(
            "POST", "/organizations/join/", headers: authorized, body: bytes(#"{"invite_code": "abc"#, [0xFF], #""}"#))
        #expect([400, 422].contains(join.status), "\(join.status) \(join.text)")
        #expect(try rowCounts() == before, "nothing was stored")
        #expect(try api.getCluster(name: clusterName + "\u{FFFD}", as: user).status == 404)
        try resetAddressLimits()
        try resetInviteLimits()
    }

    @Test func getClusterRefusesBadLookupsWith422() throws {
        let user = try api.newUser("lookbad")
        let queries: [(String, [String])] = [
            ("?id=abc", ["query", "id"]),
            ("?id=", ["query", "id"]),
            ("?id=-1", ["query", "id"]),
            ("?id=0", ["query", "id"]),
            ("?id=1.5", ["query", "id"]),
            ("?id=9223372036854775808", ["query", "id"]),
            ("?id=1e400", ["query", "id"]),
            ("?id=true", ["query", "id"]),
            ("?id=%00", ["query", "id"]),
            ("?cluster_name=", ["query", "cluster_name"]),
            ("?cluster_name=" + String(repeating: "n", count: 129), ["query", "cluster_name"]),
            ("?cluster_name=a%01b", ["query", "cluster_name"]),
            ("?cluster_name=a%0Ab", ["query", "cluster_name"]),
        ]
        let bodies: [(String, [String])] = [
            (#"{"id": true}"#, ["body", "id"]),
            (#"{"id": "abc"}"#, ["body", "id"]),
            (#"{"id": -1}"#, ["body", "id"]),
            (#"{"id": 0}"#, ["body", "id"]),
            (#"{"id": 1.5}"#, ["body", "id"]),
            (#"{"id": 1e400}"#, ["body", "id"]),
            (#"{"id": 9223372036854775808}"#, ["body", "id"]),
            (#"{"id": [1]}"#, ["body", "id"]),
            (#"{"cluster_name": 5}"#, ["body", "cluster_name"]),
            (#"{"cluster_name": ""}"#, ["body", "cluster_name"]),
            (#"{"cluster_name": false}"#, ["body", "cluster_name"]),
            (#"{"cluster_name": "a\u0001b"}"#, ["body", "cluster_name"]),
        ]
        for path in ["/clusters/get_cluster/", "/clusters/get_cluster"] {
            for (query, location) in queries {
                expectValidationError(try getRaw(path + query, nil, as: user), at: location, "\(path)\(query)")
            }
            for (body, location) in bodies {
                expectValidationError(try getRaw(path, body, as: user), at: location, "\(path) \(body)")
            }
            // Percent-encoded bytes that are not UTF-8 are a client error either way, never a 500.
            let notUTF8 = try getRaw(path + "?cluster_name=a%FFb", nil, as: user)
            #expect((400..<500).contains(notUTF8.status), "\(notUTF8.status) \(notUTF8.text)")
        }
    }

    // MARK: - Redis outage (last: the other rate-limit tests need every worker's Redis connection healthy)

    @Test func loginWorksWhileRedisIsDown() throws {
        let user = try api.newUser("noredis")
        try resetAddressLimits()
        try stack.stopRedis()
        defer {
            try? stack.startRedis()
            waitForRedis()
        }
        let login = try api.login(user.username, password: user.password)
        #expect(login.status == 200, "\(login.text)")
        #expect(login.jsonObject?["access_token"] is String)
        let wrong = try api.login(user.username, password: "wrong")
        #expect(wrong.status == 401)
        #expect(wrong.value == Self.invalidCredentials)
        let unknown = try api.login(APIClient.unique("ghost"), password: "wrong")
        #expect(unknown.status == 401)
        #expect(try api.register(APIClient.unique("nr"), password: "pw").status == 200)
        #expect(stack.waitForLog(containing: "rate limits skipped", timeout: 5))
    }

    // MARK: - Helpers

    /// The seed API's cluster object, with every resource still available.
    static func cluster(id: Int, name: String, ram: Int64, cpu: Double, gpu: Int64) -> JSONValue {
        [
            "id": .id(Int64(id)), "name": .string(name), "total_ram": .number(Double(ram)), "total_cpu": .number(cpu),
            "total_gpu": .number(Double(gpu)), "available_ram": .number(Double(ram)), "available_cpu": .number(cpu),
            "available_gpu": .number(Double(gpu)),
        ]
    }

    /// POSTs `body` as it is, with `Content-Type: application/json` and the user's token.
    func postRaw(_ path: String, _ body: String, as user: APIClient.User) throws -> HTTPResponse {
        try http.request(
            "POST", path, headers: user.auth.merging(["Content-Type": "application/json"]) { $1 },
            body: Array(body.utf8))
    }

    /// GETs `path`, with `body` as a JSON body when given.
    func getRaw(_ path: String, _ body: String?, as user: APIClient.User) throws -> HTTPResponse {
        guard let body else { return try http.get(path, headers: user.auth) }
        return try http.request(
            "GET", path, headers: user.auth.merging(["Content-Type": "application/json"]) { $1 }, body: Array(body.utf8)
        )
    }

    /// The raw JSON text of the number after `"key":` in `text` (the service writes compact JSON).
    func rawNumber(_ key: String, in text: String) -> String? {
        guard let range = text.range(of: "\"\(key)\":") else { return nil }
        let rest = text[range.upperBound...].drop { $0 == " " }
        return String(rest.prefix { "0123456789.-+eE".contains($0) })
    }

    /// Checks a FastAPI-style 422: `detail` is a non-empty list of `{loc, msg, type}` whose `loc` starts with
    /// `body` or `query` (or `first` when given), and, when `location` is given, one entry is at exactly it.
    func expectValidationError(
        _ response: HTTPResponse, at location: [String]? = nil, first: String? = nil, _ comment: String = "",
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            response.status == 422, "\(comment): \(response.status) \(response.text)", sourceLocation: sourceLocation)
        #expect(
            response.header("content-type") == "application/json; charset=utf-8", "\(comment)",
            sourceLocation: sourceLocation)
        guard case .object(let top)? = response.value, top.count == 1, case .array(let entries)? = top["detail"],
            !entries.isEmpty
        else {
            Issue.record("\(comment): not a FastAPI 422 body: \(response.text)", sourceLocation: sourceLocation)
            return
        }
        var locations: [[JSONValue]] = []
        for entry in entries {
            guard case .object(let members) = entry, case .array(let loc)? = members["loc"],
                case .string(let message)? = members["msg"], case .string(let type)? = members["type"],
                !message.isEmpty, !type.isEmpty, let head = loc.first
            else {
                Issue.record("\(comment): malformed 422 entry \(entry)", sourceLocation: sourceLocation)
                continue
            }
            #expect(head == "body" || head == "query", "\(comment): loc \(loc)", sourceLocation: sourceLocation)
            if let first { #expect(head == .string(first), "\(comment): loc \(loc)", sourceLocation: sourceLocation) }
            locations.append(loc)
        }
        if let location {
            let wanted = location.map { JSONValue.string($0) }
            #expect(
                locations.contains(wanted), "\(comment): no entry at \(location) in \(response.text)",
                sourceLocation: sourceLocation)
        }
    }

    /// Flips one character in the middle of a base64url string (the last one may carry unused bits).
    func flip(_ text: String) -> String {
        var characters = Array(text)
        let index = characters.count / 2
        characters[index] = characters[index] == "A" ? "B" : "A"
        return String(characters)
    }

    /// The stack's JWT secret, as hypervisord reads `JWT_SECRET_KEY`.
    func jwtSecret() throws -> [UInt8] {
        let text = try String(contentsOfFile: stack.stateDir + "/jwt_secret", encoding: .utf8)
        return Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
    }

    /// Users, organizations and clusters rows, as one string to compare before and after.
    func rowCounts() throws -> String {
        try psql(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM organizations), (SELECT count(*) FROM clusters)"
        )
    }

    /// The user's organization id ("" when none).
    func memberships(of userID: Int64) throws -> String {
        try psql("SELECT organization_id FROM users WHERE id = \(userID)")
    }

    func psql(_ sql: String) throws -> String {
        try run("/usr/bin/psql", ["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", stack.databaseURL, "-c", sql])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Deletes the per-address counters of failed logins and invite codes (every test comes from 127.0.0.1).
    func resetAddressLimits() throws {
        _ = try redis(["DEL", "hv:rl:login:addr:127.0.0.1", "hv:rl:invite:addr:127.0.0.1"])
    }

    /// Deletes every invite-code counter, so no user stays limited for later tests.
    func resetInviteLimits() throws {
        _ = try redis([
            "EVAL", "for _, k in ipairs(redis.call('KEYS', 'hv:rl:invite:*')) do redis.call('DEL', k) end return 0",
            "0",
        ])
    }

    func redis(_ arguments: [String]) throws -> String {
        let host = stack.redisHost
        var target: [String]
        if host.hasPrefix("/") {
            target = ["-s", host]
        } else {
            let parts = host.split(separator: ":")
            target = ["-h", String(parts.first ?? "127.0.0.1")]
            if parts.count > 1 { target += ["-p", String(parts[1])] }
        }
        return try run("/usr/bin/redis-cli", target + arguments)
    }

    /// Waits until Redis is back for every worker: past the workers' one-second reconnect back-off, /readyz reports it
    /// up many times in a row.
    func waitForRedis(timeout: TimeInterval = 15) {
        usleep(1_100_000)
        let deadline = Date().addingTimeInterval(timeout)
        var streak = 0
        while streak < 20, Date() < deadline {
            let up = (try? http.get("/readyz").jsonObject?["redis"] as? String) == "up"
            streak = up ? streak + 1 : 0
            usleep(up ? 20_000 : 200_000)
        }
    }

    /// Runs a command and returns its stdout. Throws when it exits with a non-zero status.
    func run(_ path: String, _ arguments: [String]) throws -> String {
        let output = NSTemporaryDirectory() + "hvt-identity-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: output)
            try? FileManager.default.removeItem(atPath: output + ".err")
        }
        let pid = try Spawn.spawn(
            path, arguments, environment: ProcessInfo.processInfo.environment, directory: "/", output: output,
            error: output + ".err")
        let status = Spawn.wait(pid)
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let error = (try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? ""
            throw APIClient.SetupFailure(description: "\(path) \(arguments.first ?? "") exited \(status): \(error)")
        }
        return text
    }
}

extension HTTPClient {
    /// A GET with a JSON body (the seed's clients send lookups that way).
    fileprivate func get(_ path: String, headers: [String: String], bodyJSON: Any) throws -> HTTPResponse {
        try request("GET", path, json: bodyJSON, headers: headers)
    }
}
