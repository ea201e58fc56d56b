/// Fixed-window counters of failed attempts in Redis (logins, invite codes), shared by every worker and host.
///
/// Only failures count, so legitimate use never trips a limit. If Redis is down the limits are skipped with a
/// warning: logging in must keep working.
final class RateLimiter {
    /// A counter and how many failures it allows per window.
    struct Limit {
        let key: String
        let allowed: Int
    }

    static let window = 300

    private let redis: RedisConnection
    private let log: Log

    init(redis: RedisConnection, log: Log) {
        self.redis = redis
        self.log = log
    }

    /// Returns the TTL of the first counter at its limit, or 0.
    private static let checkScript = RedisScript(
        """
        for i, key in ipairs(KEYS) do
          local used = tonumber(redis.call('GET', key) or '0')
          if used >= tonumber(ARGV[i]) then
            local ttl = redis.call('TTL', key)
            if ttl < 1 then ttl = 1 end
            return ttl
          end
        end
        return 0
        """)

    /// Seconds until the first exhausted counter resets, or nil when every counter has room.
    func retryAfter(_ limits: [Limit]) -> Int? {
        do {
            let seconds =
                try redis.evaluate(
                    RateLimiter.checkScript, keys: limits.map { "hv:rl:" + $0.key },
                    arguments: limits.map { String($0.allowed) }
                ).integer ?? 0
            return seconds > 0 ? Int(seconds) : nil
        } catch {
            log.warning("rate limits skipped", ["error": error.description])
            return nil
        }
    }

    /// Increments each counter, starting its window on the first failure.
    private static let recordScript = RedisScript(
        """
        for i, key in ipairs(KEYS) do
          if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ARGV[1]) end
        end
        return 0
        """)

    /// Counts one failure against each key.
    func recordFailure(_ limits: [Limit]) {
        do {
            _ = try redis.evaluate(
                RateLimiter.recordScript, keys: limits.map { "hv:rl:" + $0.key },
                arguments: [String(RateLimiter.window)])
        } catch {
            log.warning("rate limit failure not recorded", ["error": error.description])
        }
    }

    /// `429` with `Retry-After`.
    static func tooManyAttempts(retryAfter seconds: Int) -> HTTPError {
        HTTPError(
            429, "Too many failed attempts; try again in \(seconds) seconds",
            headers: [HTTPError.Header(name: "Retry-After", value: String(seconds))])
    }
}
