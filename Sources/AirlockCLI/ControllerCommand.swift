import Airlock
import AirlockLog
import Foundation

/// `airlock controller`: the long-running process that runs queued jobs.
struct ControllerCommand {
    static let usage = "airlock controller [--concurrency N] [options]"

    static let help = """
        Run queued jobs ('airlock submit') until stopped, each in a fresh guest
        and a worker process of its own. Logs one line per job state change.

        Usage: \(usage)

        Options:
          --concurrency N          guests at most at once (default: the host's CPU count)
          --cpu-overcommit R       guest vCPUs per host CPU (default: 1; under TCG
                                   emulation more starves every guest)
          --memory-overcommit R    guest memory per byte of usable host memory (default: 1)
          --reserve-memory SIZE    host memory never given to guests (default: a tenth, at most 1G)
          --min-free SIZE          start no job while the state folder's disk has less free (default: 2G)
          --connect URI            libvirt URI of the host (default: qemu:///system)
          --state-dir DIR          Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --images DIR             image catalog (default: $AIRLOCK_IMAGES, else STATE_DIR/images)
          --debug                  log every step of every job

        SIGINT or SIGTERM stops taking jobs and exits; running jobs go on in their
        own processes and record their results, and the next controller counts them.
        Several controllers may share a state folder: no job ever runs twice.
        """

    var options: Controller.Options
    var concurrency: Int?
    var stateFolder: URL
    var debug = false

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> ControllerCommand {
        var options = Controller.Options(executable: Executable.path)
        options.imagesFolder = environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) }
        var command = ControllerCommand(options: options, stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError("unexpected argument '\(option.word)'")
            }
            switch name {
            case "--concurrency":
                let value = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
                guard (1...1024).contains(value) else { throw UsageError("--concurrency must be 1 to 1024") }
                command.concurrency = value
            case "--cpu-overcommit":
                command.options.policy.cpuOvercommit = try ratio(
                    try reader.value(for: name, inline: option.inline), name)
            case "--memory-overcommit":
                command.options.policy.memoryOvercommit = try ratio(
                    try reader.value(for: name, inline: option.inline), name)
            case "--reserve-memory":
                let bytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name, defaultUnit: 1 << 20)
                command.options.policy.reservedMemoryMiB = Int(bytes >> 20)
            case "--min-free":
                command.options.minimumFreeBytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name, defaultUnit: 1 << 20)
            case "--connect": command.options.connectURI = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--images":
                command.options.imagesFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--debug":
                command.debug = true
                command.options.debug = true
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock controller --help'")
            }
        }
        return command
    }

    private static func ratio(_ text: String, _ option: String) throws(UsageError) -> Double {
        guard let value = Double(text), value.isFinite, value > 0, value <= 64 else {
            throw UsageError("'\(text)' is not a ratio for \(option)", hint: "use a number above 0, such as 1 or 1.5")
        }
        return value
    }

    func run(logger: Logger, signals: SignalRelay) throws(AirlockError) -> Int32 {
        var options = self.options
        options.concurrency = concurrency ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let queue = try JobQueue(stateFolder: stateFolder, imagesFolder: options.imagesFolder)
        let controller = Controller(queue: queue, options: options, logger: logger)
        signals.onFirst = {
            Output.note("airlock: stopping the controller; running jobs go on in their own processes")
            controller.stop()
        }
        signals.watchChildren { controller.wake() }
        try controller.run()
        return 0
    }
}

/// The running `airlock` binary, which the controller starts again as each job's worker.
enum Executable {
    static var path: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
