import AirlockLog
import Foundation

/// Everything one `airlock run` job needs, already validated by `validate()`.
public struct JobSpec: Sendable {
    /// Which acceleration to use; `auto` probes KVM once per host and remembers the answer.
    public enum AcceleratorChoice: String, Sendable, CaseIterable {
        case auto, kvm, tcg
    }

    public var image: String
    /// The host folder copied to /work in the guest.
    public var workload: URL
    /// When set, the upload sends this frozen copy of `workload` instead of
    /// reading the folder (jobs submitted to the store).
    public var workloadSnapshot: WorkloadSnapshot?
    /// The command and its arguments, run in /work.
    public var command: [String]
    public var environment: [(String, String)] = []
    /// Wall-clock limit for the command alone (not boot or transfer).
    public var timeout: Duration = .seconds(3600)
    /// Limit from domain start until SSH is usable, under KVM.
    public var bootTimeout: Duration = .seconds(60)
    /// How much longer boot may take under TCG emulation, which boots
    /// several times slower than KVM and slower still when guests share cores.
    public var tcgTimeoutFactor = JobSpec.defaultTCGTimeoutFactor
    public static let defaultTCGTimeoutFactor = 3.0
    public var vcpus = 1
    public var memoryMiB = 512
    /// The root disk's size for images with a disk; nil keeps the image's own.
    public var diskBytes: Int64?
    /// The guest folder brought back as `out/`.
    public var collectPath = JobSpec.defaultCollectPath
    /// The guest folder collected unless the job names another.
    public static let defaultCollectPath = "/work/out"
    public var resultsFolder: URL?
    public var accelerator: AcceleratorChoice = .auto
    public var connectURI = "qemu:///system"
    public var stateFolder: URL
    public var imagesFolder: URL?
    /// Bytes of each output stream kept in the result folder.
    public var maxOutputBytes: Int64 = 1 << 30
    public var collectLimits = CollectLimits.default
    /// Limit for pushing the workload, and again for collecting results.
    public var transferTimeout: Duration = .seconds(1800)
    /// What the guest may reach on the network.
    public var egress = Egress.none
    /// Values the command gets in its environment, read when the job starts.
    public var secrets: [Secret] = []
    /// Processes and threads the command may run at once.
    public var maxProcesses = JobSpec.defaultMaxProcesses
    public static let defaultMaxProcesses = 1024

    public init(image: String, workload: URL, command: [String], stateFolder: URL) {
        self.image = image
        self.workload = workload
        self.command = command
        self.stateFolder = stateFolder
    }

    /// The boot limit for a guest on `accelerator`.
    public func bootTimeout(on accelerator: Accelerator) -> Duration {
        accelerator == .tcg ? bootTimeout * tcgTimeoutFactor : bootTimeout
    }

    /// The image catalog this spec reads from.
    public var catalog: ImageCatalog {
        ImageCatalog(root: imagesFolder ?? stateFolder.appendingPathComponent("images"))
    }

    /// Checks what can be checked without a host.
    ///
    /// - Throws: `AirlockError.Code.invalidArgument` naming the bad value.
    public func validate() throws(AirlockError) {
        guard !command.isEmpty, !command[0].isEmpty else {
            throw AirlockError(
                .invalidArgument, "no command given",
                hint: "put the command after '--', for example: airlock run --image tiny --workload DIR -- sh run.sh")
        }
        if let snapshot = workloadSnapshot {
            guard FileManager.default.isReadableFile(atPath: snapshot.file) else {
                throw AirlockError(
                    .invalidArgument, "the workload snapshot '\(snapshot.file)' of '\(workload.path)' is gone",
                    hint: "submit the job again")
            }
        } else {
            try Self.checkWorkloadFolder(workload)
        }
        guard timeout > .zero else {
            throw AirlockError(.invalidArgument, "the timeout must be positive", hint: "for example --timeout 10m")
        }
        guard transferTimeout > .zero else {
            throw AirlockError(
                .invalidArgument, "the transfer timeout must be positive", hint: "for example --transfer-timeout 30m")
        }
        guard bootTimeout > .zero else {
            throw AirlockError(
                .invalidArgument, "the boot timeout must be positive", hint: "for example --boot-timeout 60s")
        }
        guard tcgTimeoutFactor.isFinite, tcgTimeoutFactor >= 1, tcgTimeoutFactor <= 20 else {
            throw AirlockError(
                .invalidArgument, "the TCG timeout factor must be from 1 to 20",
                hint: "for example --tcg-timeout-factor 3")
        }
        guard vcpus >= 1, vcpus <= 64 else {
            throw AirlockError(.invalidArgument, "'\(vcpus)' vCPUs is out of range (1 to 64)")
        }
        guard memoryMiB >= 64 else {
            throw AirlockError(.invalidArgument, "'\(memoryMiB) MiB' of memory is too little (at least 64 MiB)")
        }
        if let diskBytes, diskBytes < 1 << 20 || diskBytes > ImageCatalog.maximumDiskBytes {
            throw AirlockError(
                .invalidArgument,
                "a root disk of \(Sizes.format(diskBytes)) is out of range (1 MiB to "
                    + "\(Sizes.format(ImageCatalog.maximumDiskBytes)))",
                hint: "for example --disk 8G")
        }
        for (name, value) in environment {
            guard GuestScript.isValidEnvironmentName(name) else {
                throw AirlockError(
                    .invalidArgument, "'\(name)' is not a valid environment variable name",
                    hint: "names use letters, digits and '_', and do not start with a digit")
            }
            guard !value.utf8.contains(0) else {
                throw AirlockError(.invalidArgument, "the value of '\(name)' contains a NUL byte")
            }
        }
        guard collectLimits.maxBytes > 0, (1...10_000_000).contains(collectLimits.maxEntries) else {
            throw AirlockError(
                .invalidArgument, "the result limits must be positive (at most 10000000 files)",
                hint: "for example --max-results 4G --max-result-files 50000")
        }
        try egress.validate()
        guard (16...1_000_000).contains(maxProcesses) else {
            throw AirlockError(
                .invalidArgument, "a limit of \(maxProcesses) processes is out of range (16 to 1000000)",
                hint: "for example --max-processes 4096")
        }
        var secretNames: Set<String> = []
        for secret in secrets {
            guard GuestScript.isValidEnvironmentName(secret.name) else {
                throw AirlockError(
                    .invalidArgument, "'\(Terminal.escape(secret.name))' is not a valid name for a secret",
                    hint: "names use letters, digits and '_', and do not start with a digit")
            }
            if let file = secret.file {
                // Checked now, read when the job starts: the value is never kept.
                var info = stat()
                guard stat(file, &info) == 0, info.st_mode & S_IFMT == S_IFREG, access(file, R_OK) == 0 else {
                    throw AirlockError(
                        .invalidArgument, "the file '\(file)' of secret '\(secret.name)' is not a readable file",
                        hint: "name a readable file with --secret-file NAME=PATH")
                }
            }
            guard secretNames.insert(secret.name).inserted,
                !environment.contains(where: { $0.0 == secret.name })
            else {
                throw AirlockError(
                    .invalidArgument, "'\(secret.name)' is given more than once (as a secret and with --env, or twice)")
            }
        }
        guard collectPath.hasPrefix("/"), !collectPath.utf8.contains(0) else {
            throw AirlockError(.invalidArgument, "the collect path '\(collectPath)' must be an absolute guest path")
        }
    }

    /// Checks that the workload is an existing folder whose entries can all be copied.
    static func checkWorkloadFolder(_ workload: URL) throws(AirlockError) {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: workload.path, isDirectory: &isFolder) else {
            throw AirlockError(
                .invalidArgument, "workload folder '\(workload.path)' does not exist",
                hint: "pass an existing folder with --workload; its contents are copied to /work in the guest")
        }
        guard isFolder.boolValue else {
            throw AirlockError(
                .invalidArgument, "workload '\(workload.path)' is a file, not a folder",
                hint: "pass the folder that holds it; the folder's contents are copied to /work in the guest")
        }
        try checkWorkloadEntries(in: workload)
    }

    /// Refuses, before any guest starts, workload entries that cannot be
    /// copied: sockets, FIFOs and device nodes (files, folders and symbolic
    /// links are fine).
    static func checkWorkloadEntries(in folder: URL) throws(AirlockError) {
        guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return }
        while let relative = walker.nextObject() as? String {
            var info = stat()
            guard lstat(folder.appendingPathComponent(relative).path, &info) == 0 else {
                throw AirlockError(
                    .invalidArgument, "cannot read '\(relative)' in workload folder '\(folder.path)'",
                    cause: POSIXFailure())
            }
            let type = info.st_mode & S_IFMT
            guard type == S_IFREG || type == S_IFDIR || type == S_IFLNK else {
                let kind =
                    switch type {
                    case S_IFIFO: "a FIFO"
                    case S_IFSOCK: "a socket"
                    default: "a device node"
                    }
                throw AirlockError(
                    .invalidArgument,
                    "'\(relative)' in workload folder '\(folder.path)' is \(kind), which cannot be copied",
                    hint: "remove it from the folder, or create it in the guest from the command")
            }
        }
    }
}
