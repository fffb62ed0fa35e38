import Foundation

/// What the store keeps of a `JobSpec`: what the job is, not where it
/// runs. The state folder, image catalog and host come from the process
/// that runs it; the result folder from the store.
struct StoredSpec: Codable, Equatable {
    var image: String
    /// The folder as submitted, for display; the job runs `snapshot`.
    var workload: String
    var snapshot: WorkloadSnapshot?
    var command: [String]
    /// (name, value) pairs, in order.
    var environment: [[String]]
    var timeoutMilliseconds: Int64
    var bootTimeoutMilliseconds: Int64
    var tcgTimeoutFactor: Double
    var transferTimeoutMilliseconds: Int64
    var vcpus: Int
    var memoryMiB: Int
    var diskBytes: Int64?
    var collectPath: String
    var maxOutputBytes: Int64
    var collectLimits: CollectLimits
    var accelerator: String
    var egress: Egress
    /// Names and files only: a secret's value is read when the job starts.
    var secrets: [Secret]
    var maxProcesses: Int

    init(_ spec: JobSpec) {
        image = spec.image
        workload = spec.workload.path
        snapshot = spec.workloadSnapshot
        command = spec.command
        environment = spec.environment.map { [$0.0, $0.1] }
        timeoutMilliseconds = spec.timeout.inMilliseconds
        bootTimeoutMilliseconds = spec.bootTimeout.inMilliseconds
        tcgTimeoutFactor = spec.tcgTimeoutFactor
        transferTimeoutMilliseconds = spec.transferTimeout.inMilliseconds
        vcpus = spec.vcpus
        memoryMiB = spec.memoryMiB
        diskBytes = spec.diskBytes
        collectPath = spec.collectPath
        maxOutputBytes = spec.maxOutputBytes
        collectLimits = spec.collectLimits
        accelerator = spec.accelerator.rawValue
        egress = spec.egress
        secrets = spec.secrets
        maxProcesses = spec.maxProcesses
    }

    /// Reads a stored spec; keys added since a job was stored take their defaults.
    init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        image = try values.decode(String.self, forKey: .image)
        workload = try values.decode(String.self, forKey: .workload)
        snapshot = try values.decodeIfPresent(WorkloadSnapshot.self, forKey: .snapshot)
        command = try values.decode([String].self, forKey: .command)
        environment = try values.decode([[String]].self, forKey: .environment)
        timeoutMilliseconds = try values.decode(Int64.self, forKey: .timeoutMilliseconds)
        bootTimeoutMilliseconds = try values.decode(Int64.self, forKey: .bootTimeoutMilliseconds)
        tcgTimeoutFactor =
            try values.decodeIfPresent(Double.self, forKey: .tcgTimeoutFactor) ?? JobSpec.defaultTCGTimeoutFactor
        transferTimeoutMilliseconds = try values.decode(Int64.self, forKey: .transferTimeoutMilliseconds)
        vcpus = try values.decode(Int.self, forKey: .vcpus)
        memoryMiB = try values.decode(Int.self, forKey: .memoryMiB)
        diskBytes = try values.decodeIfPresent(Int64.self, forKey: .diskBytes)
        collectPath = try values.decode(String.self, forKey: .collectPath)
        maxOutputBytes = try values.decode(Int64.self, forKey: .maxOutputBytes)
        collectLimits = try values.decode(CollectLimits.self, forKey: .collectLimits)
        accelerator = try values.decode(String.self, forKey: .accelerator)
        egress = try values.decodeIfPresent(Egress.self, forKey: .egress) ?? .none
        secrets = try values.decodeIfPresent([Secret].self, forKey: .secrets) ?? []
        maxProcesses = try values.decodeIfPresent(Int.self, forKey: .maxProcesses) ?? JobSpec.defaultMaxProcesses
    }

    /// The spec to run, with the per-process settings of `base`.
    func spec(base: JobSpec) -> JobSpec {
        var spec = base
        spec.image = image
        spec.workload = URL(fileURLWithPath: workload)
        spec.workloadSnapshot = snapshot
        spec.command = command
        spec.environment = environment.compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
        spec.timeout = .milliseconds(timeoutMilliseconds)
        spec.bootTimeout = .milliseconds(bootTimeoutMilliseconds)
        spec.tcgTimeoutFactor = tcgTimeoutFactor
        spec.transferTimeout = .milliseconds(transferTimeoutMilliseconds)
        spec.vcpus = vcpus
        spec.memoryMiB = memoryMiB
        spec.diskBytes = diskBytes
        spec.collectPath = collectPath
        spec.maxOutputBytes = maxOutputBytes
        spec.collectLimits = collectLimits
        spec.accelerator = JobSpec.AcceleratorChoice(rawValue: accelerator) ?? .auto
        spec.egress = egress
        spec.secrets = secrets
        spec.maxProcesses = maxProcesses
        return spec
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// Reads a stored spec.
    ///
    /// - Throws: `AirlockError` `.internalError` when the text is not one.
    static func decode(_ text: String, job: String) throws(AirlockError) -> StoredSpec {
        do {
            return try JSONDecoder().decode(StoredSpec.self, from: Data(text.utf8))
        } catch {
            throw AirlockError(
                .internalError, "the stored spec of job '\(job)' cannot be read",
                cause: ManifestError(description: "\(error)"))
        }
    }
}
