import Foundation
import Testing

/// Static checks of the files that cannot run on this machine (no Docker engine, no systemd): they must stay
/// consistent with `.env.example` and with what `hypervisord` reads.
@Suite struct DeploymentFilesTests {
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    private func text(_ path: String) throws -> String {
        try String(contentsOf: DeploymentFilesTests.root.appendingPathComponent(path), encoding: .utf8)
    }

    private func matches(_ pattern: String, in text: String) throws -> [String] {
        let regex = try NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines])
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: 1), in: text).map { String(text[$0]) }
        }
    }

    /// The keys of `.env.example`, each of which must follow a comment line.
    private func exampleKeys() throws -> [String] {
        let lines = try text(".env.example").split(separator: "\n", omittingEmptySubsequences: false)
        var keys: [String] = []
        for (index, line) in lines.enumerated() where line.first?.isUppercase == true && line.contains("=") {
            let key = String(line.prefix { $0 != "=" })
            #expect(index > 0 && lines[index - 1].hasPrefix("#"), "\(key) in .env.example has no comment")
            keys.append(key)
        }
        return keys
    }

    /// The variables `Configuration.swift` reads, found as string literals in its source.
    private func configurationKeys() throws -> Set<String> {
        let source = try text("Sources/HVFastCGI/Configuration.swift")
        return Set(
            try matches(#""((?:JWT|ACCESS|SQL|POSTGRES|REDIS|HV)_[A-Z0-9_]+)""#, in: source)
                .filter { !$0.hasPrefix("HV_TEST_") })
    }

    @Test func envExampleListsExactlyTheVariablesTheServiceReads() throws {
        let example = Set(try exampleKeys())
        // HV_PORT is nginx's port, read by scripts/stack.sh and docker-compose.yml.
        #expect(example.subtracting(try configurationKeys()) == ["HV_PORT"])
        #expect(try configurationKeys().subtracting(example) == [])
    }

    @Test func dockerComposeUsesOnlyDocumentedVariables() throws {
        let compose = try text("docker-compose.yml")
        let example = Set(try exampleKeys())
        let referenced = Set(try matches(#"\$\{([A-Z0-9_]+)"#, in: compose))
        #expect(!referenced.isEmpty)
        #expect(referenced.subtracting(example) == [])
        // Every variable set for hypervisord is one it reads.
        let service = try #require(compose.components(separatedBy: "\n  hypervisord:\n").last)
        let block = service.components(separatedBy: "\n  nginx:\n").first ?? ""
        let environment =
            block.components(separatedBy: "environment:\n").last?.components(separatedBy: "\n    expose:")
            .first ?? ""
        let set = Set(try matches(#"^\s{6}([A-Z0-9_]+):"#, in: environment))
        #expect(set.subtracting(try configurationKeys()) == [])
        #expect(set.contains("JWT_SECRET_KEY") && set.contains("HV_LISTEN"))
    }

    @Test func dockerfileShipsTheBinariesAndTheOpenAPIResource() throws {
        let dockerfile = try text("Dockerfile")
        for product in ["hypervisord", "hvctl"] {
            #expect(dockerfile.contains("--product \(product)"))
            #expect(dockerfile.contains("/out/\(product)"))
        }
        #expect(dockerfile.contains("Hypervisor_HVFastCGI.resources"))
        for package in ["libfcgi0ldbl", "libpq5", "libhiredis0.14", "libssl3"] { #expect(dockerfile.contains(package)) }
    }

    @Test func nginxConfigurationsShareTheParametersAndLimits() throws {
        for path in ["nginx/nginx.conf", "nginx/hypervisor.conf.template", "nginx/docker.conf"] {
            let config = try text(path)
            #expect(config.contains("client_max_body_size 64k"), "\(path)")
            #expect(
                try !matches(#"^\s*include\s+(\S*fastcgi_params\S*|\$\{HV_FASTCGI_PARAMS\});"#, in: config).isEmpty,
                "\(path)")
            // A kept upstream connection pins a worker to one nginx connection (FASTCGI-NOTES.md).
            #expect(try matches(#"^\s*(fastcgi_keep_conn\s+on);"#, in: config).isEmpty, "\(path)")
            // Every error nginx answers itself is in the API's shape (nginx/errors.conf), and the methods nginx
            // refuses before any location go to the application.
            #expect(
                try !matches(#"^\s*include\s+(/etc/nginx/hypervisor/errors\.conf|\$\{HV_NGINX_ERRORS\});"#, in: config)
                    .isEmpty, "\(path)")
            #expect(try !matches(#"^\s*(location @refused_method) \{"#, in: config).isEmpty, "\(path)")
        }
        let errors = try text("nginx/errors.conf")
        for status in [400, 405, 413, 414, 429, 494, 501, 502, 504, 505] {
            #expect(try !matches(#"^(error_page [0-9 ]*\b\#(status)\b)"#, in: errors).isEmpty, "\(status)")
        }
        #expect(errors.contains("error_page 405 = @refused_method;"))
        #expect(try text("docker-compose.yml").contains("./nginx/errors.conf:/etc/nginx/hypervisor/errors.conf:ro"))
        let params = try text("nginx/fastcgi_params")
        for name in ["REQUEST_METHOD", "REQUEST_URI", "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR", "REQUEST_ID"] {
            #expect(params.contains("fastcgi_param  \(name) "), "\(name)")
        }
    }

    @Test func systemdAndLogrotateUseTheMastersSignals() throws {
        let unit = try text("deploy/hypervisord.service")
        #expect(unit.contains("--pid-file"))
        #expect(unit.contains("kill -HUP $MAINPID") || unit.contains("kill -s HUP $MAINPID"))
        let logrotate = try text("deploy/logrotate.conf")
        #expect(logrotate.contains("postrotate"))
        #expect(logrotate.contains("USR1"))
    }
}
