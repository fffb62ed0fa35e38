import Airlock
import AirlockLog
import Foundation

/// `airlock gc`: removes what dead jobs left behind and says what it removed.
struct GCCommand {
    static let usage = "airlock gc [--connect URI] [--state-dir DIR]"

    static let help = """
        Remove what jobs left behind when the process running them died
        (SIGKILL, a crash): their guests, their disk overlays and their folders
        under STATE_DIR/run.
        Stored jobs whose process died are queued again, or end as lost when
        no attempt is left; workload snapshots no unfinished job uses are
        removed. Jobs whose airlock process still runs are left alone. A
        running controller does all of this by itself.

        Usage: \(usage)

        Options:
          --connect URI     libvirt URI (default: qemu:///system)
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var connectURI = "qemu:///system"
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> GCCommand {
        var command = GCCommand(stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError("unexpected argument '\(option.word)'")
            }
            switch name {
            case "--connect": command.connectURI = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock gc --help'")
            }
        }
        return command
    }

    func run(logger: Logger) throws(AirlockError) -> Int32 {
        var report = try GarbageCollector(connectURI: connectURI, stateFolder: stateFolder, logger: logger).run()
        // Every added host too: jobs that ran there left their guests and files there.
        let hosts =
            FileManager.default.fileExists(atPath: JobStore.file(in: stateFolder).path)
            ? ((try? JobQueue(stateFolder: stateFolder).store.hosts()) ?? []) : []
        for host in hosts where host.uri != connectURI {
            do {
                let swept = try GarbageCollector(connectURI: host.uri, stateFolder: stateFolder, logger: logger).sweep()
                report.domains += swept.domains
                report.disks += swept.disks
                report.folders += swept.folders
            } catch {
                Output.note("airlock: host \(host.name) was not cleaned: \(error)")
            }
        }
        for job in report.requeued {
            print("queued again job \(job)")
        }
        for job in report.ended {
            print("ended job \(job)")
        }
        for snapshot in report.snapshots {
            print("removed workload snapshot \(snapshot)")
        }
        for domain in report.domains {
            print("destroyed domain \(domain)")
        }
        for disk in report.disks {
            print("removed disk overlay \(disk)")
        }
        for folder in report.folders {
            print("removed folder \(folder)")
        }
        for pool in report.pools {
            print("stopped storage pool \(pool) (its folder is gone)")
        }
        if report.domains.isEmpty && report.folders.isEmpty && report.disks.isEmpty && report.pools.isEmpty
            && report.requeued.isEmpty
            && report.ended.isEmpty
            && report.snapshots.isEmpty
        {
            Output.note("airlock: nothing to remove")
        }
        return 0
    }
}
