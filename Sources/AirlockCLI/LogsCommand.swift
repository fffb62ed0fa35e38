import Airlock
import AirlockLog
import Foundation

/// `airlock logs ID [-f]`: a job's stdout and stderr, followed live with `-f`.
struct LogsCommand {
    static let usage = "airlock logs JOB_ID [-f] [--raw] [--state-dir DIR]"

    static let help = """
        Print a job's stdout (on stdout) and stderr (on stderr) as kept so far.
        With -f, keep printing what the command writes until the job ends; a
        queued job is waited for. If an attempt is retried, the new attempt's
        output follows a note. On a terminal, control characters the guest
        wrote (escape sequences, carriage returns) are shown as \\xNN.

        Usage: \(usage)

        Options:
          -f, --follow      follow the output until the job ends
          --raw             pass control characters to the terminal as they are
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var id: String
    var follow = false
    var raw = false
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> LogsCommand {
        var command = LogsCommand(id: "", stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        var id: String?
        while let option = reader.next() {
            guard let name = option.name else {
                try ArgumentReader.single(option.word, into: &id)
                continue
            }
            switch name {
            case "-f", "--follow": command.follow = true
            case "--raw": command.raw = true
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock logs --help'")
            }
        }
        guard let id else { throw UsageError("missing job id", hint: "'airlock ls' lists the jobs") }
        command.id = id
        return command
    }

    func run() throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder)
        let record = try queue.job(id)
        let folder = URL(fileURLWithPath: record.results)
        let streams = [
            FileTail(url: folder.appendingPathComponent("stdout"), fd: STDOUT_FILENO, raw: raw),
            FileTail(url: folder.appendingPathComponent("stderr"), fd: STDERR_FILENO, raw: raw),
        ]
        defer { streams.forEach { $0.finish() } }
        guard follow else {
            streams.forEach { $0.pump() }
            return 0
        }
        var saidWaiting = false
        var attempt = record.attempts
        while true {
            guard let current = try queue.store.record(record.id) else { return 0 }
            if current.state == .queued && !saidWaiting {
                Output.note("airlock: job \(record.id) is queued; waiting for it to start")
                saidWaiting = true
            }
            if current.attempts != attempt && current.state != .queued {
                if attempt > 0 {
                    Output.note("airlock: attempt \(current.attempts) of job \(record.id) started; its output follows")
                }
                attempt = current.attempts
                streams.forEach { $0.restart() }
            }
            streams.forEach { $0.pump() }
            if current.state.isTerminal {
                streams.forEach { $0.pump() }
                return 0
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }
}

/// Copies what a growing file gained since the last call.
final class FileTail {
    let url: URL
    let fd: Int32
    private var handle: Int32 = -1
    private var inode: ino_t = 0
    /// Set when `fd` is a terminal and the guest's control bytes must not reach it.
    private var filter: TerminalFilter?

    init(url: URL, fd: Int32, raw: Bool = false) {
        self.url = url
        self.fd = fd
        if !raw && isatty(fd) == 1 {
            filter = TerminalFilter()
        }
    }

    /// Writes what the filter still holds.
    func finish() {
        if let rest = filter?.finish(), !rest.isEmpty {
            rest.withUnsafeBytes { Output.write($0, to: fd) }
        }
    }

    deinit {
        if handle >= 0 { close(handle) }
    }

    /// Starts again from the beginning of a new file at the same path.
    func restart() {
        if handle >= 0 { close(handle) }
        handle = -1
    }

    /// Writes everything new in the file to `fd`.
    func pump() {
        var info = stat()
        if handle >= 0, stat(url.path, &info) == 0, info.st_ino != inode {
            restart()
        }
        if handle < 0 {
            handle = open(url.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard handle >= 0 else { return }
            if fstat(handle, &info) == 0 { inode = info.st_ino }
        }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(handle, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            buffer.withUnsafeBytes { bytes in
                let chunk = UnsafeRawBufferPointer(rebasing: bytes[0..<count])
                if filter != nil, let safe = filter?.filter(chunk) {
                    safe.withUnsafeBytes { Output.write($0, to: fd) }
                } else {
                    Output.write(chunk, to: fd)
                }
            }
        }
    }
}
