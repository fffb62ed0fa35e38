import Foundation

/// The shell text Airlock sends to a guest over SSH.
///
/// Every user-supplied value is passed as a single-quoted shell word, so
/// spaces, quotes, `$`, backslashes, newlines and non-ASCII bytes arrive
/// exactly as given.
enum GuestScript {
    /// The guest folder a workload is unpacked into.
    static let workFolder = "/work"
    /// The cgroup every job command runs in, so that all of it can be killed.
    static let jobCgroup = "/sys/fs/cgroup/job"

    /// Quotes one word for a POSIX shell.
    static func quote(_ word: String) -> String {
        "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Unpacks a tar stream from standard input into the work folder.
    static func unpack() -> String {
        "mkdir -p \(workFolder) && cd \(workFolder) && tar -x -f -"
    }

    /// Runs the job's command in the work folder, inside the job cgroup.
    ///
    /// The session ends as the command did (see `start`), so the SSH server
    /// reports the command's own exit code or signal. A watcher left
    /// outside the cgroup kills everything the command started once the
    /// command is gone: background processes cannot outlive it and hold the
    /// output streams open.
    ///
    /// The cgroup also bounds the command: at most `maxProcesses` processes
    /// and threads, all the guest's memory but a reserve for its own
    /// services, and the lowest CPU weight, so that a fork bomb or a memory
    /// hog cannot starve the SSH server that Airlock needs to end the job.
    /// Names in `hostAliases` resolve to the guest's 127.0.0.1, where the
    /// job's allowed egress endpoints listen.
    ///
    /// With `readsSecrets`, the script first reads `NAME BASE64` lines from
    /// standard input up to an empty line (see `secretLines`) and exports
    /// them, so that secret values are never part of a command line, not
    /// even in the guest's process list.
    static func run(
        command: [String], environment: [(String, String)], maxProcesses: Int = JobSpec.defaultMaxProcesses,
        hostAliases: [String] = [], readsSecrets: Bool = false
    ) -> String {
        var lines = [
            "cd \(workFolder) || exit 126",
            "airlock_pid=$$",
            "mkdir -p \(jobCgroup) 2>/dev/null",
            "for c in cpu memory pids; do echo +$c >/sys/fs/cgroup/cgroup.subtree_control; done 2>/dev/null",
            "echo \(maxProcesses) >\(jobCgroup)/pids.max 2>/dev/null",
            "echo 1 >\(jobCgroup)/cpu.weight 2>/dev/null",
            "airlock_kib=$(sed -n 's/^MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo)",
            "airlock_keep=$((airlock_kib / 8)); [ \"$airlock_keep\" -ge 49152 ] || airlock_keep=49152",
            "echo $(((airlock_kib - airlock_keep) * 1024)) >\(jobCgroup)/memory.max 2>/dev/null",
            "unset airlock_kib airlock_keep",
            "( exec </dev/null >/dev/null 2>&1; while kill -0 $airlock_pid; do sleep 0.02; done;"
                + " echo 1 >\(jobCgroup)/cgroup.kill ) &",
            "echo $$ >\(jobCgroup)/cgroup.procs",
            "unset airlock_pid",
        ]
        for name in hostAliases {
            lines.append(
                "grep -q \"^127.0.0.1[[:space:]].*[[:space:]]\(name)$\" /etc/hosts"
                    + " || printf '127.0.0.1\\t%s\\n' \(quote(name)) >>/etc/hosts 2>/dev/null")
        }
        for (name, value) in environment {
            lines.append("export \(name)=\(quote(value))")
        }
        if readsSecrets {
            lines.append(secretsReader)
        }
        lines.append(start(command))
        return lines.joined(separator: "\n")
    }

    /// Exports the `NAME BASE64` lines on standard input, up to an empty line.
    static let secretsReader = """
        while IFS=' ' read -r airlock_name airlock_value && [ -n "$airlock_name" ]; do
        airlock_value=$(printf '%s' "$airlock_value" | base64 -d; echo x)
        export "$airlock_name=${airlock_value%x}"; done
        unset airlock_name airlock_value
        """
    // The x above keeps trailing newlines, which $(...) would drop.

    /// Where the run script leaves the command's exit status in the guest.
    static let exitStatusFile = "/tmp/.airlock-exit"

    /// Runs the command and ends the same way it did, or names it plainly
    /// when the guest has no such program (rather than through the shell's
    /// view of the whole script).
    ///
    /// The script waits for the command, leaves its status in
    /// `exitStatusFile`, and then ends as the command did: a death by
    /// signal N (status 128+N) is passed on by killing itself with N, so
    /// that the SSH server reports the signal. Some servers (dropbear) send
    /// nothing at all for signals they cannot name; the status file then
    /// still says how the command ended. Stop signals are never passed on.
    static func start(_ command: [String], statusFile: String = exitStatusFile) -> String {
        var lines: [String] = []
        if !command[0].contains("/") {
            let program = quote(command[0])
            lines.append(
                "command -v \(program) >/dev/null 2>&1 || "
                    + "{ printf 'airlock: %s: command not found in the guest\\n' \(program) >&2; exit 127; }")
        }
        lines += [
            command.map(quote).joined(separator: " "),
            "airlock_status=$?",
            "echo \"$airlock_status\" >\(quote(statusFile)) 2>/dev/null",
            "case $airlock_status in 149|150|151|152) ;; 129|1[3-5][0-9]) trap - $((airlock_status - 128));"
                + " kill -$((airlock_status - 128)) $$;; esac",
            "exit \"$airlock_status\"",
        ]
        return lines.joined(separator: "\n")
    }

    /// What the run script reads on standard input when it `readsSecrets`:
    /// one `NAME BASE64` line per secret, then an empty line.
    static func secretLines(_ secrets: [(String, String)]) -> String {
        secrets.map { "\($0.0) \(Data($0.1.utf8).base64EncodedString())\n" }.joined() + "\n"
    }

    /// Kills every process of the job command.
    static func killJob() -> String {
        "echo 1 >\(jobCgroup)/cgroup.kill"
    }

    /// Streams the collect folder as a tar archive on standard output. A
    /// missing folder is an empty archive, not an error.
    ///
    /// Files larger than `maxFileBytes` are left out in the guest and named
    /// on standard error as `refused SIZE NAME`, so that a huge (or sparse)
    /// file costs nothing to skip. The host still enforces every limit on
    /// what actually arrives: this is an economy, not a defence.
    static func pack(folder: String, maxFileBytes: Int64) -> String {
        // busybox tar has no exclude list, so find names what to pack and
        // xargs may start several tars: the host reads concatenated archives.
        // The trailing zero blocks make an empty folder an empty archive.
        let quoted = quote(folder)
        return """
            \(stats) >&2
            if [ ! -d \(quoted) ]; then echo "missing" >&2
            elif cd \(quoted); then
            find . -type f -size +\(maxFileBytes)c -exec stat -c 'refused %s %n' {} \\; >&2
            find . ! -name . \\( ! -type f -o ! -size +\(maxFileBytes)c \\) -print0 | xargs -0 -r tar -c -f - --no-recursion
            fi
            head -c 1024 /dev/zero
            """
    }

    /// Prints what the job cgroup's limits counted, as `stat NAME VALUE`
    /// lines: the command's exit status, processes the memory limit killed, forks the process limit
    /// refused, and the work folder's file system (type, block size, blocks
    /// available and in all; ext4 holds some free blocks back even from
    /// root, so a full disk shows none available rather than none free).
    static let stats = """
        { echo "stat exit $(cat \(exitStatusFile) 2>/dev/null)"
        echo "stat oom_kill $(sed -n 's/^oom_kill //p' \(jobCgroup)/memory.events 2>/dev/null)"
        echo "stat pids_max $(sed -n 's/^max //p' \(jobCgroup)/pids.events 2>/dev/null)"
        echo "stat disk $(stat -f -c '%T %S %a %b' \(workFolder) 2>/dev/null)"; }
        """

    /// Whether a name can be exported as an environment variable.
    static func isValidEnvironmentName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return name.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0)
        }
    }
}
