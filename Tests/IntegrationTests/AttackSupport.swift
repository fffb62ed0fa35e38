import AirlockTestSupport
import Foundation
import Synchronization
import Testing

/// A file outside every result folder whose bytes a hostile job must not
/// change, and the host files a guest would most like to reach.
struct Sentinel {
    let file: URL
    private let contents: Data
    private let watched: [(String, Data?)]

    init() throws {
        file = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-sentinel-\(UUID())")
        contents = Data((0..<64).map { _ in UInt8.random(in: 0...255) })
        try contents.write(to: file)
        watched = ["/etc/shadow", "/etc/passwd", "/root/.ssh/authorized_keys"].map {
            ($0, FileManager.default.contents(atPath: $0))
        }
    }

    /// Fails the test when the sentinel or a watched host file changed.
    func expectUnchanged(sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            FileManager.default.contents(atPath: file.path) == contents, "the sentinel changed",
            sourceLocation: sourceLocation)
        for (path, before) in watched {
            #expect(
                FileManager.default.contents(atPath: path) == before, "\(path) changed", sourceLocation: sourceLocation)
        }
    }

    func remove() {
        try? FileManager.default.removeItem(at: file)
    }
}

/// A TCP server on the host's 127.0.0.1 that answers each connection with
/// `reply:` and the first line it received, and counts connections.
final class HostListener: Sendable {
    let port: Int
    private let fd: Int32
    private let accepted = Mutex(0)
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        (fd, port) = try LoopbackSocket.listen()
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    /// Connections accepted so far.
    var connections: Int { accepted.withLock { $0 } }

    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        finished.wait()
    }

    private func serve() {
        defer { finished.signal() }
        while !stopped.load(ordering: .acquiring) {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 200) > 0 else { continue }
            let client = accept(fd, nil, nil)
            guard client >= 0 else { continue }
            accepted.withLock { $0 += 1 }
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = recv(client, &buffer, buffer.count, 0)
            let line = count > 0 ? Array(buffer[0..<count]) : []
            let reply = Array("reply:".utf8) + line
            _ = send(client, reply, reply.count, Int32(MSG_NOSIGNAL))
            close(client)
        }
    }
}

/// Tar archives no honest `tar` writes: names that climb out, absolute
/// names, links to host files and a link followed by a file through it.
enum HostileTar {
    /// One ustar header block (and, for files, the content blocks).
    static func entry(_ name: String, type: Character, link: String = "", content: String = "") -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { header[offset + index] = byte }
        }
        let body = Array(content.utf8)
        put(name, at: 0, width: 100)
        put("0000644", at: 100, width: 7)
        put("0000000", at: 108, width: 7)
        put("0000000", at: 116, width: 7)
        put(String(body.count, radix: 8).leftPadded(to: 11), at: 124, width: 11)
        put("00000000000", at: 136, width: 11)
        header[156] = type.asciiValue ?? UInt8(ascii: "0")
        put(link, at: 157, width: 100)
        put("ustar", at: 257, width: 5)
        put("00", at: 263, width: 2)
        for index in 148..<156 { header[index] = UInt8(ascii: " ") }
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPadded(to: 6), at: 148, width: 6)
        header[154] = 0
        var padded = body
        padded += [UInt8](repeating: 0, count: (512 - body.count % 512) % 512)
        return header + padded
    }

    /// The archive's end: two zero blocks.
    static let end = [UInt8](repeating: 0, count: 1024)
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
