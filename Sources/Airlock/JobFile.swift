import AirlockLog
import Foundation

/// One job as a spec file describes it: the run spec, plus what the store
/// keeps beside it (labels, priority, retries).
public struct JobRequest: Sendable {
    public var spec: JobSpec
    public var labels: [String: String] = [:]
    /// Higher runs first; jobs of equal priority run in submission order.
    public var priority = 0
    /// How often an infrastructure failure (no boot, lost SSH, libvirt
    /// error) is retried. The command's own failures never are.
    public var retries = 2
    /// The host the job must run on, by name (`airlock host ls`).
    public var host: String?
    /// A `key=value` label the job's host must carry.
    public var hostLabel: String?

    public init(spec: JobSpec) {
        self.spec = spec
    }

    /// Checks the labels, priority and retries, then the spec itself.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` naming the bad value.
    public func validate() throws(AirlockError) {
        try spec.validate()
        guard labels.count <= 64 else {
            throw AirlockError(.invalidArgument, "a job has \(labels.count) labels; at most 64 are kept")
        }
        for (key, value) in labels {
            guard Self.isValidLabelKey(key) else {
                throw AirlockError(
                    .invalidArgument, "'\(key)' is not a valid label key",
                    hint: "label keys are 1 to 63 letters, digits, '.', '_', '-' or '/'")
            }
            guard value.utf8.count <= 256, !value.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
                throw AirlockError(
                    .invalidArgument, "the value of label '\(key)' is longer than 256 bytes or holds control characters"
                )
            }
        }
        guard (-1000...1000).contains(priority) else {
            throw AirlockError(.invalidArgument, "priority \(priority) is out of range (-1000 to 1000)")
        }
        guard (0...10).contains(retries) else {
            throw AirlockError(.invalidArgument, "retries \(retries) is out of range (0 to 10)")
        }
        if let host, !JobStore.Host.isValidName(host) {
            throw AirlockError(
                .invalidArgument, "'\(Terminal.escape(host))' is not a host name",
                hint: "'airlock host ls' lists the hosts")
        }
        if let hostLabel {
            let parts = hostLabel.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, Self.isValidLabelKey(String(parts[0])) else {
                throw AirlockError(
                    .invalidArgument, "the host label '\(Terminal.escape(hostLabel))' is not key=value",
                    hint: "for example --host-label zone=europe-west4-a")
            }
        }
    }

    static func isValidLabelKey(_ key: String) -> Bool {
        !key.isEmpty && key.count <= 63
            && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-/".contains($0)) }
    }
}

/// Reads job spec files (one JSON object) and batch files (JSON lines, or
/// one JSON array of objects).
///
/// Keys are the long names of `airlock run`'s options in camelCase; an
/// unknown key, a value of the wrong type or an impossible value is an
/// error that names the key and the file (and the line or element of a
/// batch). A relative `workload` is taken from the file's own folder.
public enum JobFile {
    /// Every key a spec may hold, for messages.
    static let keys = [
        "image", "workload", "command", "env", "timeout", "bootTimeout", "tcgTimeoutFactor", "transferTimeout",
        "vcpus", "memory", "disk", "collect", "maxOutput", "maxResults", "maxResultFiles", "maxProcesses", "accel",
        "egress", "secrets", "secretFiles", "labels", "priority", "retries", "host", "hostLabel",
    ]

    /// Reads one job spec file, without validating the values it sets: the
    /// caller may still override some, and then calls `validate()` (with
    /// `source(of:)` as context).
    ///
    /// - Parameters:
    ///   - url: The file.
    ///   - defaults: The job whose values the file's keys replace (state
    ///     folder, host and other per-invocation settings come from here);
    ///     the file's labels are added to its labels.
    ///   - given: Keys the caller sets itself, which the file may then leave out
    ///     (`workload`, `command`).
    /// - Returns: The job the file describes.
    /// - Throws: `AirlockError` `.invalidArgument` naming the file and key.
    public static func load(_ url: URL, defaults: JobRequest, given: Set<String> = []) throws(AirlockError)
        -> JobRequest
    {
        let data = try read(url)
        let source = source(of: url)
        let value: JSONValue
        do {
            value = try JSONValue.parse(data)
        } catch {
            throw AirlockError(.invalidArgument, "\(source) is not valid JSON: \(error)")
        }
        return try request(
            from: value, source: source, folder: url.deletingLastPathComponent(), defaults: defaults, given: given)
    }

    /// How messages name a spec file.
    public static func source(of url: URL) -> String {
        "job spec '\(url.path)'"
    }

    /// Reads a batch file: one spec per line (JSON lines; blank lines and
    /// lines starting with '#' are skipped), or a JSON array of specs. Each
    /// spec starts from `defaults`, as `load` does.
    ///
    /// - Returns: The jobs in file order; nothing is returned unless every
    ///   one of them is valid.
    /// - Throws: `AirlockError` `.invalidArgument` naming the file, the line
    ///   (or element) and the key.
    public static func loadBatch(
        _ url: URL, defaults: JobRequest, given: Set<String> = []
    ) throws(AirlockError) -> [JobRequest] {
        let data = try read(url)
        let folder = url.deletingLastPathComponent()
        let name = "batch '\(url.path)'"
        let firstByte = data.first { !(" \t\r\n" as String).utf8.contains($0) }
        var jobs: [JobRequest] = []
        if firstByte == UInt8(ascii: "[") {
            let value: JSONValue
            do {
                value = try JSONValue.parse(data)
            } catch {
                throw AirlockError(.invalidArgument, "\(name) is not a valid JSON array: \(error)")
            }
            guard case .array(let elements) = value else {
                throw AirlockError(.invalidArgument, "\(name) is not a JSON array")
            }
            for (index, element) in elements.enumerated() {
                let source = "\(name) element \(index + 1)"
                let job = try request(from: element, source: source, folder: folder, defaults: defaults, given: given)
                try validated(job, source: source)
                jobs.append(job)
            }
        } else {
            for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                .enumerated()
            {
                let text = line.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
                if text.isEmpty || text.first == UInt8(ascii: "#") || text.allSatisfy({ $0 == UInt8(ascii: "\r") }) {
                    continue
                }
                let source = "\(name) line \(index + 1)"
                let value: JSONValue
                do {
                    value = try JSONValue.parse(Data(text))
                } catch {
                    throw AirlockError(.invalidArgument, "\(source) is not valid JSON: \(error)")
                }
                let job = try request(from: value, source: source, folder: folder, defaults: defaults, given: given)
                try validated(job, source: source)
                jobs.append(job)
            }
        }
        guard !jobs.isEmpty else {
            throw AirlockError(
                .invalidArgument, "\(name) holds no jobs", hint: "write one JSON object per line, or a JSON array")
        }
        return jobs
    }

    /// The most a spec or batch file may hold: a batch of a million jobs.
    static let maxFileBytes: Int64 = 256 << 20

    private static func read(_ url: URL) throws(AirlockError) -> Data {
        // Opened without blocking and checked by descriptor: a FIFO or device
        // put in the file's place would block or never end.
        let fd = open(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT {
                throw AirlockError(.invalidArgument, "file '\(url.path)' does not exist")
            }
            throw AirlockError(
                .invalidArgument, "cannot read '\(url.path)'", hint: "name a readable JSON file", cause: POSIXFailure())
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw AirlockError(.invalidArgument, "'\(url.path)' is not a regular file", hint: "name a JSON file")
        }
        // At most one byte past the limit is read, however the file grows meanwhile.
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while data.count <= maxFileBytes {
            let count = buffer.withUnsafeMutableBytes {
                Glibc.read(fd, $0.baseAddress, min($0.count, Int(maxFileBytes) + 1 - data.count))
            }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw AirlockError(.invalidArgument, "cannot read '\(url.path)'", cause: POSIXFailure())
            }
            if count == 0 { break }
            data.append(contentsOf: buffer[0..<count])
        }
        guard data.count <= maxFileBytes else {
            throw AirlockError(
                .invalidArgument, "'\(url.path)' holds more than the 256 MiB a spec file may",
                hint: "split the batch into several files")
        }
        return data
    }

    private static func validated(_ job: JobRequest, source: String) throws(AirlockError) {
        do {
            try job.validate()
        } catch {
            throw error.within(source)
        }
    }

    // MARK: - One spec

    /// Builds a request from one decoded spec object, unvalidated.
    static func request(
        from value: JSONValue, source: String, folder: URL, defaults: JobRequest, given: Set<String>
    ) throws(AirlockError) -> JobRequest {
        guard case .object(let fields) = value else {
            throw AirlockError(.invalidArgument, "\(source) must be a JSON object, not \(value.kind)")
        }
        func fail(_ message: String, hint: String? = nil) -> AirlockError {
            AirlockError(.invalidArgument, "\(source): \(message)", hint: hint)
        }

        for key in fields.keys.sorted() where !keys.contains(key) {
            if key == "results" {
                throw fail(
                    "'results' cannot be set in a spec",
                    hint: "choose the result folder with 'airlock run --results DIR' or 'airlock collect --out DIR'")
            }
            let hint = suggestion(for: key).map { "did you mean '\($0)'? " } ?? ""
            throw fail("unknown key '\(key)'", hint: hint + "keys are: " + keys.joined(separator: ", "))
        }

        var request = defaults
        let reader = FieldReader(fields: fields, fail: fail)
        if let image = try reader.string("image") { request.spec.image = image }
        if let workload = try reader.string("workload") {
            request.spec.workload =
                workload.hasPrefix("/")
                ? URL(fileURLWithPath: workload) : folder.appendingPathComponent(workload).standardizedFileURL
        } else if !given.contains("workload") {
            throw fail("'workload' is missing", hint: "name the folder copied to /work, relative to the spec file")
        }
        if let command = try reader.strings("command") {
            guard let first = command.first, !first.isEmpty else {
                throw fail("'command' must name a program", hint: "for example \"command\": [\"sh\", \"run.sh\"]")
            }
            request.spec.command = command
        } else if !given.contains("command") {
            throw fail("'command' is missing", hint: "for example \"command\": [\"sh\", \"run.sh\"]")
        }
        if let env = try reader.map("env") {
            request.spec.environment = env.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
        if let timeout = try reader.duration("timeout") { request.spec.timeout = timeout }
        if let timeout = try reader.duration("bootTimeout") { request.spec.bootTimeout = timeout }
        if let factor = try reader.number("tcgTimeoutFactor") { request.spec.tcgTimeoutFactor = factor }
        if let timeout = try reader.duration("transferTimeout") { request.spec.transferTimeout = timeout }
        if let vcpus = try reader.integer("vcpus") { request.spec.vcpus = vcpus }
        if let bytes = try reader.size("memory", defaultUnit: 1 << 20) { request.spec.memoryMiB = Int(bytes >> 20) }
        if let bytes = try reader.size("disk", defaultUnit: 1 << 20) { request.spec.diskBytes = bytes }
        if let path = try reader.string("collect") { request.spec.collectPath = path }
        if let bytes = try reader.size("maxOutput", defaultUnit: 1) { request.spec.maxOutputBytes = bytes }
        if let bytes = try reader.size("maxResults", defaultUnit: 1) { request.spec.collectLimits.maxBytes = bytes }
        if let files = try reader.integer("maxResultFiles") { request.spec.collectLimits.maxEntries = files }
        if let processes = try reader.integer("maxProcesses") { request.spec.maxProcesses = processes }
        if let egress = try reader.string("egress") {
            do {
                request.spec.egress = try Egress.parse(egress)
            } catch {
                throw fail("'egress': \(error.message)", hint: error.hint)
            }
        }
        // Secrets name where a value is read, never the value itself.
        if let names = try reader.strings("secrets") {
            request.spec.secrets.removeAll { $0.file == nil }
            request.spec.secrets += names.map { Secret(name: $0) }
        }
        if let files = try reader.map("secretFiles") {
            request.spec.secrets.removeAll { $0.file != nil }
            request.spec.secrets += files.sorted { $0.key < $1.key }.map { name, path in
                Secret(
                    name: name,
                    file: path.hasPrefix("/") ? path : folder.appendingPathComponent(path).standardizedFileURL.path)
            }
        }
        if let accel = try reader.string("accel") {
            guard let choice = JobSpec.AcceleratorChoice(rawValue: accel) else {
                throw fail("'accel' is '\(accel)'", hint: "use auto, kvm or tcg")
            }
            request.spec.accelerator = choice
        }
        if let labels = try reader.map("labels") { request.labels.merge(labels) { _, line in line } }
        if let priority = try reader.integer("priority") { request.priority = priority }
        if let retries = try reader.integer("retries") { request.retries = retries }
        if let host = try reader.string("host") { request.host = host }
        if let label = try reader.string("hostLabel") { request.hostLabel = label }
        return request
    }

    /// The known key closest to an unknown one: same letters ignoring case,
    /// '-' and '_', or a common alias.
    static func suggestion(for key: String) -> String? {
        let aliases = ["cpus": "vcpus", "cpu": "vcpus", "mem": "memory", "environment": "env", "cmd": "command"]
        let folded = key.lowercased().filter { $0 != "-" && $0 != "_" }
        if let alias = aliases[folded] { return alias }
        if let same = keys.first(where: { $0.lowercased() == folded }) { return same }
        // A typo: the key within two edits, if exactly one is.
        let near = keys.filter { editDistance(Array($0.lowercased()), Array(folded), limit: 2) <= 2 }
        return near.count == 1 ? near[0] : nil
    }

    /// Levenshtein distance between `a` and `b`, or `limit + 1` once it exceeds `limit`.
    static func editDistance(_ a: [Character], _ b: [Character], limit: Int) -> Int {
        guard abs(a.count - b.count) <= limit else { return limit + 1 }
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, y) in b.enumerated() {
                current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
            }
            guard current.min() ?? 0 <= limit else { return limit + 1 }
            previous = current
        }
        return previous[b.count]
    }
}

/// Reads typed fields out of one spec object, failing with the key's name.
private struct FieldReader {
    let fields: [String: JSONValue]
    let fail: (String, String?) -> AirlockError

    init(fields: [String: JSONValue], fail: @escaping (String, String?) -> AirlockError) {
        self.fields = fields
        self.fail = fail
    }

    private func value(_ key: String) throws(AirlockError) -> JSONValue? {
        guard let value = fields[key] else { return nil }
        if case .null = value {
            throw fail("'\(key)' is null", "leave the key out to use the default")
        }
        return value
    }

    private func wrongType(_ key: String, _ value: JSONValue, _ wanted: String) -> AirlockError {
        fail("'\(key)' must be \(wanted), not \(value.kind)", nil)
    }

    func string(_ key: String) throws(AirlockError) -> String? {
        guard let value = try value(key) else { return nil }
        guard case .string(let text) = value else { throw wrongType(key, value, "a string") }
        return text
    }

    func integer(_ key: String) throws(AirlockError) -> Int? {
        guard let value = try value(key) else { return nil }
        switch value {
        case .integer(let number):
            guard let small = Int(exactly: number), abs(small) < 1 << 31 else {
                throw fail("'\(key)' is out of range", nil)
            }
            return small
        case .number:
            throw fail("'\(key)' must be a whole number", nil)
        default:
            throw wrongType(key, value, "a whole number")
        }
    }

    func number(_ key: String) throws(AirlockError) -> Double? {
        guard let value = try value(key) else { return nil }
        switch value {
        case .integer(let number): return Double(number)
        case .number(let number): return number
        default: throw wrongType(key, value, "a number")
        }
    }

    func strings(_ key: String) throws(AirlockError) -> [String]? {
        guard let value = try value(key) else { return nil }
        guard case .array(let elements) = value else {
            let example = key == "command" ? "[\"sh\", \"-c\", \"make test\"]" : "[\"OPENAI_API_KEY\"]"
            throw fail("'\(key)' must be a list of strings, not \(value.kind)", "for example \(example)")
        }
        var words: [String] = []
        for (index, element) in elements.enumerated() {
            guard case .string(let word) = element else {
                throw fail("element \(index + 1) of '\(key)' must be a string, not \(element.kind)", nil)
            }
            words.append(word)
        }
        return words
    }

    func map(_ key: String) throws(AirlockError) -> [String: String]? {
        guard let value = try value(key) else { return nil }
        guard case .object(let entries) = value else {
            throw fail("'\(key)' must be an object of strings, not \(value.kind)", nil)
        }
        var map: [String: String] = [:]
        for (name, entry) in entries {
            guard case .string(let text) = entry else {
                throw fail("'\(key).\(name)' must be a string, not \(entry.kind)", nil)
            }
            map[name] = text
        }
        return map
    }

    /// A duration as text ("10m") or a number of seconds.
    func duration(_ key: String) throws(AirlockError) -> Duration? {
        guard let value = try value(key) else { return nil }
        let duration: Duration?
        switch value {
        case .integer(let seconds): duration = Durations.seconds(Double(seconds))
        case .number(let seconds): duration = Durations.seconds(seconds)
        case .string(let text): duration = Durations.parse(text)
        default: throw wrongType(key, value, "a duration such as \"10m\" or a number of seconds")
        }
        let limit = "at most \(Durations.maximum.components.seconds / 86400)d"
        guard let duration else {
            throw fail(
                "'\(key)' is not a duration Airlock accepts",
                "use a positive value such as \"90s\", \"10m\" or 600, \(limit)")
        }
        guard duration > .zero else {
            throw fail("'\(key)' must be positive", "for example \"10m\"; there is no unlimited value, \(limit)")
        }
        return duration
    }

    /// A size as text ("512M") or a number of `defaultUnit` bytes.
    func size(_ key: String, defaultUnit: Int64) throws(AirlockError) -> Int64? {
        guard let value = try value(key) else { return nil }
        let bytes: Int64?
        switch value {
        case .integer(let number):
            bytes =
                number < 0
                ? nil : number.multipliedReportingOverflow(by: defaultUnit).overflow ? nil : number * defaultUnit
        case .string(let text): bytes = Sizes.parse(text, defaultUnit: defaultUnit)
        default: throw wrongType(key, value, "a size such as \"512M\"")
        }
        guard let bytes, bytes > 0 else {
            throw fail("'\(key)' is not a positive size", "use forms such as \"512M\", \"2G\" or \"100MiB\"")
        }
        return bytes
    }
}
