import AirlockLog
import Testing

@Suite("Terminal.escape")
struct TerminalEscapeTests {
    @Test(
        "control, C1 and bidi characters become visible escapes; text stays",
        arguments: [
            ("plain ünï ✓", "plain ünï ✓"), ("a\u{1b}[2Jb", "a\\x1b[2Jb"), ("csi\u{9b}2J", "csi\\x9b2J"),
            ("line\nbreak", "line\\nbreak"), ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"), ("del\u{7f}", "del\\x7f"),
            ("zero\u{200b}width", "zero\\u{200b}width"), ("bom\u{feff}", "bom\\u{feff}"), ("ls\u{2028}", "ls\\u{2028}"),
        ])
    func escapes(_ input: String, _ expected: String) {
        #expect(Terminal.escape(input) == expected)
    }

    @Test("bytes that are not UTF-8 are shown as hex")
    func invalidUTF8() {
        #expect(Terminal.escapeBytes([0x61, 0xff, 0x62]) == "a\\xffb")
    }

    private func filtered(_ chunks: [[UInt8]]) -> String {
        var filter = TerminalFilter()
        var out: [UInt8] = []
        for chunk in chunks {
            out += chunk.withUnsafeBytes { filter.filter($0) }
        }
        out += filter.finish()
        return String(decoding: out, as: UTF8.self)
    }

    @Test("a stream keeps newlines, tabs and UTF-8; escapes, CR and C1 become visible, even split across chunks")
    func streamFilter() {
        #expect(filtered([Array("ok\tünï\n".utf8)]) == "ok\tünï\n")
        #expect(filtered([Array("\u{1b}]0;pwned\u{07}\r".utf8)]) == "\\x1b]0;pwned\\x07\\x0d")
        // U+009B (CSI) is C2 9B in UTF-8; a chunk boundary may fall between the two.
        #expect(filtered([[0x61, 0xc2], [0x9b, 0x32, 0x4a]]) == "a\\xc2\\x9b2J")
        #expect(filtered([[0xc2], [0xa9]]) == "©")
        #expect(filtered([[0xe2, 0x9c], [0x93]]) == "✓")
        #expect(filtered([Array("😀".utf8)]) == "😀")
        // Not UTF-8: a lone 8-bit CSI or OSC, overlong forms, a surrogate, a stray continuation, a cut-off end.
        #expect(filtered([[0x9b, 0x32, 0x4a]]) == "\\x9b2J")
        #expect(filtered([[0x9d, 0x35, 0x32, 0x9c]]) == "\\x9d52\\x9c")
        #expect(filtered([[0xc0, 0x9b]]) == "\\xc0\\x9b")
        #expect(filtered([[0xe0, 0x82, 0x9b]]) == "\\xe0\\x82\\x9b")
        #expect(filtered([[0xed, 0xa0, 0x80]]) == "\\xed\\xa0\\x80")
        #expect(filtered([[0x62, 0xc2]]) == "b\\xc2")
        #expect(filtered([[0xe2, 0x9c, 0x41]]) == "\\xe2\\x9cA")
    }
}
