/// The worker's connections, shared by every handler of the process.
final class Services: HealthProbe {
    let database: Database
    let redis: RedisConnection

    init(database: Database, redis: RedisConnection) {
        self.database = database
        self.redis = redis
    }

    func schemaVersion() throws -> Int {
        try database.run { connection in Int(try connection.execute(Migrations.currentVersion).int(0, 0) ?? 0) }
    }

    func redisIsUp() -> Bool { redis.ping() }
}

/// Every route of the service. `main` and the tests build the router the same way.
func buildRouter(_ services: Services) -> Router {
    Router(SystemHandler(probe: services).routes)
}
