import Testing

@testable import HVFastCGI

@Suite struct ConfigurationTests {
    private let secret = String(repeating: "k", count: 32)

    private func parse(_ extra: [String: String]) throws(Configuration.Invalid) -> Configuration {
        var env = ["JWT_SECRET_KEY": secret]
        env.merge(extra) { $1 }
        return try Configuration.parse(env, cpuCount: 2)
    }

    private func message(_ extra: [String: String]) -> String? {
        do {
            _ = try parse(extra)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func defaultsFollowOperationsMD() throws {
        let configuration = try parse(["HV_STATE_DIR": "/srv/hv"])
        #expect(configuration.workers == 8)
        #expect(configuration.acceptingWorkers == 2)
        #expect(configuration.maxRequests == 10_000)
        #expect(configuration.requestTimeoutSeconds == 30)
        #expect(configuration.slowRequestMilliseconds == 500)
        #expect(configuration.jwtAlgorithm == .hs256)
        #expect(configuration.accessTokenLifetimeSeconds == 1800)
        #expect(configuration.listen == .unix(path: "/srv/hv/run/hypervisor.sock"))
        #expect(configuration.redis == .unix(path: "/srv/hv/run/redis.sock"))
        #expect(configuration.databaseURL == "postgresql:///hypervisor?host=/srv/hv/run")
        #expect(configuration.logFile == nil)
        #expect(configuration.scryptLogN == nil)
    }

    @Test func badValuesNameTheVariableAndTheValue() {
        #expect(message(["HV_WORKERS": "0"]) == #"HV_WORKERS must be a positive integer (1-512) (got "0")"#)
        #expect(message(["HV_WORKERS": "many"]) == #"HV_WORKERS must be a positive integer (1-512) (got "many")"#)
        #expect(
            message(["HV_ACCEPTING_WORKERS": "0"])
                == #"HV_ACCEPTING_WORKERS must be a positive integer (1-512) (got "0")"#)
        #expect(message(["JWT_ALGORITHM": "none"]) == #"JWT_ALGORITHM must be HS256, HS384 or HS512 (got "none")"#)
        #expect(
            message(["HV_LISTEN": "nowhere"]) == #"HV_LISTEN must be a unix socket path or host:port (got "nowhere")"#)
        #expect(message(["REDIS_PORT": "70000"]) == #"REDIS_PORT must be a TCP port (got "70000")"#)
        #expect(
            message(["HV_REQUEST_TIMEOUT": "-1"])
                == #"HV_REQUEST_TIMEOUT must be seconds between 1 and 86400 (got "-1")"#)
        #expect(
            message(["HV_LOG_LEVEL": "loud"]) == #"HV_LOG_LEVEL must be debug, info, warning or error (got "loud")"#)
        #expect(message(["HV_MAX_REQUESTS": "-5"]) == #"HV_MAX_REQUESTS must be a non-negative integer (got "-5")"#)
    }

    @Test func shortOrMissingSecretStopsTheStartWithoutEchoingIt() {
        #expect(
            message(["JWT_SECRET_KEY": "short-secret"])
                == #"JWT_SECRET_KEY must be at least 32 bytes for HS256 (got "<12 bytes>")"#)
        #expect(throws: Configuration.Invalid.self) { try Configuration.parse([:], cpuCount: 1) }
    }

    @Test func databaseURLPrecedence() throws {
        #expect(try parse(["SQL_DB_URL": "postgresql://u:p@db:5432/x"]).databaseURL == "postgresql://u:p@db:5432/x")
        // The seed's SQLAlchemy form is accepted.
        #expect(try parse(["SQL_DB_URL": "postgresql+psycopg2://u@db/x"]).databaseURL == "postgresql://u@db/x")
        #expect(
            try parse(["POSTGRES_USER": "hv", "POSTGRES_PASSWORD": "p@ss word", "POSTGRES_DB": "app"]).databaseURL
                == "postgresql://hv:p%40ss%20word@localhost:5432/app")
        #expect(
            message(["SQL_DB_URL": "mysql://secret@x"]) == #"SQL_DB_URL must be a postgresql:// URL (got "<redacted>")"#
        )
    }

    @Test func listenAndRedisForms() throws {
        #expect(try parse(["HV_LISTEN": "127.0.0.1:9000"]).listen == .tcp(host: "127.0.0.1", port: 9000))
        #expect(try parse(["HV_LISTEN": "[::1]:9000"]).listen == .tcp(host: "::1", port: 9000))
        #expect(try parse(["HV_LISTEN": ":9000"]).listen == .tcp(host: "127.0.0.1", port: 9000))
        #expect(try parse(["REDIS_HOST": "cache", "REDIS_PORT": "6380"]).redis == .tcp(host: "cache", port: 6380))
        #expect(try parse(["REDIS_HOST": "/run/redis.sock"]).redis == .unix(path: "/run/redis.sock"))
    }

    @Test func dotEnvFormat() {
        let parsed = DotEnv.parse(
            """
            # comment
            export A=1
            B = "two words"
            C='x#y'
            D=plain # trailing comment
            E=a#b

            not a pair
            """)
        #expect(parsed == ["A": "1", "B": "two words", "C": "x#y", "D": "plain", "E": "a#b"])
    }
}
