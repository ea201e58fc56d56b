/// What a worker process holds for its handlers: connections, crypto contexts and the configuration.
final class Services: HealthProbe {
    let configuration: Configuration
    let log: Log
    let database: Database
    let redis: RedisConnection
    let signer: TokenSigner
    let hasher: PasswordHasher
    let limiter: RateLimiter

    /// - Throws: `CryptoError` when OpenSSL cannot key the token signer.
    init(configuration: Configuration, log: Log) throws {
        self.configuration = configuration
        self.log = log
        database = Database(url: configuration.databaseURL, log: log, planned: SchedulerStatements.planned)
        redis = RedisConnection(endpoint: configuration.redis, database: configuration.redisDatabase)
        signer = try TokenSigner(
            algorithm: configuration.jwtAlgorithm, secret: configuration.jwtSecret, issuer: "hypervisor")
        let parameters = configuration.scryptLogN.flatMap { ScryptParameters(logN: $0, r: 8, p: 1) } ?? .default
        hasher = PasswordHasher(parameters: parameters)
        limiter = RateLimiter(redis: redis, log: log)
    }

    func schemaVersion() throws -> Int {
        try database.run { connection in Int(try connection.execute(Migrations.currentVersion).int(0, 0) ?? 0) }
    }

    func redisIsUp() -> Bool { redis.ping() }
}

/// Every route of the service. Workers and the tests build the router the same way.
func buildRouter(_ services: Services, openAPI: [UInt8], scoreboard: Scoreboard) -> Router {
    buildApplication(services, openAPI: openAPI, scoreboard: scoreboard).router
}

/// The worker's application: the router, and the deployments handler that answers creates together, sharing the
/// router's scheduler.
func buildApplication(_ services: Services, openAPI: [UInt8], scoreboard: Scoreboard) -> Application {
    let authenticator = Authenticator(signer: services.signer)
    let queue = DeploymentQueue(redis: services.redis, log: services.log)
    let scheduler = ClusterScheduler(database: services.database, queue: queue)
    let deployments = DeploymentsHandler(
        database: services.database, authenticator: authenticator, scheduler: scheduler)
    let routes =
        SystemHandler(probe: services).routes
        + UsersHandler(
            database: services.database, hasher: services.hasher, signer: services.signer,
            limiter: services.limiter, tokenLifetime: services.configuration.accessTokenLifetimeSeconds,
            log: services.log
        ).routes
        + OrganizationsHandler(database: services.database, authenticator: authenticator, limiter: services.limiter)
        .routes
        + ClustersHandler(database: services.database, authenticator: authenticator).routes
        + deployments.routes
        + AccountV1Handler(database: services.database, authenticator: authenticator).routes
        + ClustersV1Handler(
            database: services.database, authenticator: authenticator, queue: queue, scheduler: scheduler
        ).routes
        + DeploymentsV1Handler(database: services.database, authenticator: authenticator, scheduler: scheduler).routes
        + [Route("GET", "/openapi.json") { _ in Response(status: 200, body: openAPI) }]
    return Application(
        router: Router(routes + [MetricsHandler(scoreboard: scoreboard, routes: routes).route]),
        deployments: deployments)
}
