import Foundation

/// Starting programs without Foundation's `Process`, which cannot put the
/// child in a process group of its own, passes on descriptors it did not
/// open, and learns of a child's exit only in steps of its run loop.
public enum Spawn {
    /// Starts `path` with `arguments` (the first is argv[0]): standard input
    /// on /dev/null, signals at their defaults and unblocked, and no
    /// descriptor but the standard three. Whatever this process inherited (a
    /// supervisor's pipe, say) must not be held open by children that outlive it.
    ///
    /// - Parameters:
    ///   - path: the program.
    ///   - arguments: its argv, argv[0] first.
    ///   - environment: the child's environment; nil passes this process's.
    ///   - output: the file standard output goes to (created or truncated);
    ///     nil shares this process's.
    ///   - errors: the file standard error goes to; nil shares this process's.
    ///   - newProcessGroup: puts the child in a group of its own, out of reach
    ///     of a terminal's Ctrl-C.
    /// - Returns: The child's PID. The caller reaps it.
    /// - Throws: `AirlockError` `.internalError` when the program cannot be started.
    public static func start(
        _ path: String, _ arguments: [String], environment: [String: String]? = nil, output: String? = "/dev/null",
        errors: String? = nil, newProcessGroup: Bool = true
    ) throws(AirlockError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP] {
            sigaddset(&defaults, number)
        }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if newProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let output {
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        }
        if let errors {
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        }
        closeInherited(&actions)

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let code: Int32
        if let environment {
            var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { envp.forEach { free($0) } }
            code = posix_spawn(&pid, path, &actions, &attributes, &argv, &envp)
        } else {
            code = posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
        }
        guard code == 0 else {
            throw AirlockError(.internalError, "cannot start '\(path)'", cause: POSIXFailure(code: code))
        }
        return pid
    }

    /// Waits for child `pid` to end.
    ///
    /// - Returns: Its exit status, or 128 + the signal that killed it.
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Ending(status: status).exitCode
    }

    /// The child's exit status if it has ended (and is now reaped), else nil.
    public static func poll(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid ? Ending(status: status).exitCode : nil
    }

    /// How a reaped child ended, from its `waitpid` status.
    public enum Ending: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case killed(signal: Int32)

        public init(status: Int32) {
            let signal = status & 0x7f
            self = signal == 0 ? .exited((status >> 8) & 0xff) : .killed(signal: signal)
        }

        /// As a shell reports it: the exit status, or 128 + the signal.
        public var exitCode: Int32 {
            switch self {
            case .exited(let code): return code
            case .killed(let signal): return 128 + signal
            }
        }

        /// "exited with status 3", "was killed by signal 9".
        public var description: String {
            switch self {
            case .exited(let code): return "exited with status \(code)"
            case .killed(let signal): return "was killed by signal \(signal)"
            }
        }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later),
    /// which Swift's Glibc module does not export.
    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let closeFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: CloseFrom.self)
    }

    /// Closes every descriptor above standard error in the child.
    private static func closeInherited(_ actions: inout posix_spawn_file_actions_t) {
        if let closeFrom {
            _ = closeFrom(&actions, 3)
            return
        }
        // Older glibc: close what is open now and not close-on-exec.
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd > 2 && fcntl(fd, F_GETFD) >= 0 {
            if fcntl(fd, F_GETFD) & FD_CLOEXEC == 0 {
                posix_spawn_file_actions_addclose(&actions, fd)
            }
        }
    }
}
