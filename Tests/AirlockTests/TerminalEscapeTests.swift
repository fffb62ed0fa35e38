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
}
