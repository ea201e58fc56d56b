import Glibc

/// The OpenAPI document (`Sources/HVFastCGI/openapi.json`), shipped as a SwiftPM resource next to the binary and
/// read once by the master, before it forks.
enum OpenAPI {
    /// `<binary's folder>/Hypervisor_HVFastCGI.resources/openapi.json`, where SwiftPM puts the resource.
    static var defaultPath: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let executable =
            length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "."
        let folder = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(
            separator: "/")
        return folder + "/Hypervisor_HVFastCGI.resources/openapi.json"
    }

    /// Reads the document.
    ///
    /// - Throws: `SystemError` when the file is missing or unreadable.
    static func load(from path: String = defaultPath) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("read \(path)", errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 { throw SystemError("read \(path)", errno) }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return bytes
    }
}
