import Glibc

/// `hypervisord [--pid-file PATH]`: the FastCGI process manager. Returns the exit status.
public func hypervisord(arguments: [String]) -> Int32 {
    var pidFile: String?
    var arguments = arguments.dropFirst()
    while let argument = arguments.popFirst() {
        switch argument {
        case "--pid-file":
            guard let path = arguments.popFirst() else {
                printError("hypervisord: --pid-file needs a path")
                return 64
            }
            pidFile = path
        case "--help", "-h":
            print("usage: hypervisord [--pid-file PATH]   (configuration: environment and .env; see .env.example)")
            return 0
        default:
            printError("hypervisord: unknown argument \(argument)")
            return 64
        }
    }
    guard let configuration = loadConfiguration(for: "hypervisord") else { return 78 }
    let log = Log(path: configuration.logFile, level: configuration.logLevel, role: "master")
    do {
        let master = try Master(configuration: configuration, log: log, pidFile: pidFile)
        return master.run()
    } catch {
        log.error("cannot start", ["error": String(describing: error)])
        if configuration.logFile != nil { printError("hypervisord: cannot start: \(error)") }
        return 1
    }
}

/// The configuration from the environment and `.env`; nil, having printed why on standard error as
/// `program: …`, when it is invalid.
func loadConfiguration(for program: String) -> Configuration? {
    do {
        return try Configuration.parse(Configuration.environment(), cpuCount: cpuCount())
    } catch {
        printError("\(program): \(error.description)")
        return nil
    }
}

/// One line on standard error (fd 2; Swift 6 rejects the C global `stderr`).
func printError(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = write(2, &bytes, bytes.count)
}
