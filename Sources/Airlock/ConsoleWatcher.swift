import AirlockLog
import Foundation
import Libvirt
import Synchronization

/// Reads a guest's serial console on a thread of its own, keeps it in the
/// job's `console.log`, and tells the job when the guest reports that SSH is
/// ready, or when the console ends because the guest is gone.
final class ConsoleWatcher: @unchecked Sendable {
    // @unchecked: `file` is touched only by the reader thread until `stop()`
    // has joined it; everything shared lives in `state`.
    private struct State {
        var ready = false
        var ended = false
        var guestMessages: [String] = []
        var kernelFailure: String?
        var seedFailure: String?
        var tail: [UInt8] = []
        var partialLine: [UInt8] = []
    }

    /// The line the guest prints once its SSH server listens.
    static let readyLine = "airlock: ready"

    private let stream: ConsoleStream
    private let file: FileHandle?
    private let maxLogBytes: Int
    private let state = Mutex(State())
    private let changed = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private var logged = 0

    /// - Parameters:
    ///   - stream: The domain's console.
    ///   - logURL: Where to keep the console text.
    ///   - maxLogBytes: Console bytes kept on disk; the rest is dropped.
    init(stream: ConsoleStream, logURL: URL, maxLogBytes: Int = 4 << 20) {
        self.stream = stream
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        self.file = try? FileHandle(forWritingTo: logURL)
        self.maxLogBytes = maxLogBytes
    }

    /// Starts the reader thread.
    func start() {
        let thread = Thread { [self] in
            readLoop()
            finished.signal()
        }
        thread.name = "airlock.console"
        thread.start()
    }

    /// Stops reading and closes the log. Waits briefly for the reader thread.
    func stop() {
        stream.close()
        _ = finished.wait(timeout: .now() + 2)
        try? file?.close()
    }

    var isReady: Bool { state.withLock { $0.ready } }
    var hasEnded: Bool { state.withLock { $0.ended } }

    /// Lines the guest's own boot script printed (`airlock: ...`), other than "ready".
    var guestMessages: [String] { state.withLock { $0.guestMessages } }

    /// The first line in which the guest kernel reported a panic or an oops.
    var kernelFailure: String? { state.withLock { $0.kernelFailure } }

    /// The first line in which cloud-init said it could not use the job's
    /// seed: the guest will never take the job's keys, so waiting is futile.
    var seedFailure: String? { state.withLock { $0.seedFailure } }

    /// The last lines of the console, each escaped: the guest wrote them,
    /// and they end up in messages, logs and result.json.
    func tail(lines: Int = 20) -> String {
        let bytes = state.withLock { $0.tail }
        let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
        // Each line is marked as the guest's, so that none can pass for a line of Airlock's own.
        return text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines)
            .map { "  | " + Terminal.escape(String($0)) }.joined(separator: "\n")
    }

    /// Waits until the guest is ready, the console ends, `deadline` passes
    /// or `shouldStop` says so. Returns whether the guest is ready.
    func waitUntilReady(deadline: ContinuousClock.Instant, shouldStop: () -> Bool) -> Bool {
        while true {
            let (ready, ended, futile) = state.withLock { ($0.ready, $0.ended, $0.seedFailure != nil) }
            if ready { return true }
            if ended || futile || shouldStop() || ContinuousClock.now >= deadline { return false }
            _ = changed.wait(timeout: .now() + .milliseconds(50))
        }
    }

    private func readLoop() {
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try stream.read()
            } catch {
                chunk = nil
            }
            guard let chunk else {
                state.withLock { $0.ended = true }
                changed.signal()
                return
            }
            if logged < maxLogBytes {
                let kept = chunk.prefix(maxLogBytes - logged)
                file?.write(Data(kept))
                logged += kept.count
            }
            var becameReady = false
            state.withLock { state in
                state.tail.append(contentsOf: chunk)
                if state.tail.count > 8192 {
                    state.tail.removeFirst(state.tail.count - 8192)
                }
                for byte in chunk {
                    if byte == UInt8(ascii: "\n") {
                        let line = String(decoding: state.partialLine, as: UTF8.self)
                            .trimmingCharacters(in: .whitespacesAndNewlines)
                        state.partialLine.removeAll(keepingCapacity: true)
                        if state.kernelFailure == nil,
                            line.contains("Kernel panic") || line.contains("Oops:") || line.contains("BUG:")
                        {
                            state.kernelFailure = Terminal.escape(String(line.prefix(300)))
                        }
                        if state.seedFailure == nil,
                            line.contains("not a valid seed") || line.contains("Used fallback datasource")
                        {
                            state.seedFailure = Terminal.escape(String(line.prefix(300)))
                            becameReady = true
                        }
                        if let range = line.range(of: "airlock: ") {
                            let message = String(line[range.lowerBound...])
                            if message == Self.readyLine, !state.ready {
                                state.ready = true
                                becameReady = true
                            } else if state.guestMessages.count < 20 {
                                state.guestMessages.append(Terminal.escape(String(message.prefix(300))))
                            }
                        }
                    } else if state.partialLine.count < 4096 {
                        state.partialLine.append(byte)
                    }
                }
            }
            if becameReady {
                changed.signal()
            }
        }
    }
}
