import Airlock
import AirlockLog
import Foundation

/// `airlock worker`: runs one claimed job for the controller. Not for
/// people; the controller starts it as
/// `airlock worker ID --claimed-by TOKEN --state-dir DIR --connect URI --images DIR`.
struct WorkerCommand {
    static let usage = "airlock worker JOB_ID --claimed-by TOKEN [--state-dir DIR] [--connect URI] [--images DIR]"

    var jobID: String
    var claimant: String
    var stateFolder: URL
    var connectURI = "qemu:///system"
    var imagesFolder: URL?
    var debug = false

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> WorkerCommand {
        var reader = ArgumentReader(arguments)
        var id: String?
        var claimant: String?
        var command = WorkerCommand(jobID: "", claimant: "", stateFolder: Defaults.stateFolder(environment))
        while let option = reader.next() {
            guard let name = option.name else {
                try ArgumentReader.single(option.word, into: &id)
                continue
            }
            switch name {
            case "--claimed-by": claimant = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--connect": command.connectURI = try reader.value(for: name, inline: option.inline)
            case "--images":
                command.imagesFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--debug": command.debug = true
            default: throw UsageError("unknown option '\(name)'")
            }
        }
        guard let id, let claimant else {
            throw UsageError("a job id and --claimed-by are required", hint: "the controller starts workers itself")
        }
        command.jobID = id
        command.claimant = claimant
        return command
    }

    func run(logger: Logger, signals: SignalRelay) throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder, imagesFolder: imagesFolder)
        var base = JobSpec(image: "", workload: URL(fileURLWithPath: "/"), command: [], stateFolder: stateFolder)
        base.connectURI = connectURI
        base.imagesFolder = imagesFolder
        let worker = Worker(queue: queue, base: base, logger: logger)
        _ = try worker.run(id: jobID, claimedBy: claimant) { runner in
            signals.onFirst = { runner.cancel() }
        }
        return 0
    }
}
