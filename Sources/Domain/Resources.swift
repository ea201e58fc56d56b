/// An amount of each resource the scheduler accounts for: a cluster's capacity or a deployment's request.
///
/// CPU is held in integer millicores (`1.5` CPU is `1500`) so that all accounting is exact integer arithmetic.
/// Amounts are never negative: validation refuses negative input before it becomes a `Resources`.
public struct Resources: Sendable, Hashable {
    public var ram: Int64
    /// CPU in millicores.
    public var cpu: Int64
    public var gpu: Int64

    public init(ram: Int64 = 0, cpu: Int64 = 0, gpu: Int64 = 0) {
        self.ram = ram
        self.cpu = cpu
        self.gpu = gpu
    }

    /// Whether this amount fits in `capacity` in every dimension.
    ///
    /// Comparing against what is left (`capacity - used`) instead of summing (`used + self`) keeps the check free of
    /// overflow even for capacities near `Int64.max`.
    public func fits(in capacity: Resources) -> Bool {
        ram <= capacity.ram && cpu <= capacity.cpu && gpu <= capacity.gpu
    }

    /// The sum in every dimension; traps on overflow like `Int64`, which sums of requests that fit a capacity never do.
    public static func + (lhs: Resources, rhs: Resources) -> Resources {
        Resources(ram: lhs.ram + rhs.ram, cpu: lhs.cpu + rhs.cpu, gpu: lhs.gpu + rhs.gpu)
    }

    /// The difference in every dimension; traps on overflow like `Int64`.
    public static func - (lhs: Resources, rhs: Resources) -> Resources {
        Resources(ram: lhs.ram - rhs.ram, cpu: lhs.cpu - rhs.cpu, gpu: lhs.gpu - rhs.gpu)
    }
}
