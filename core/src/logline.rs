//! One log line, safe to print: `"{prefix} {level}: {msg}\n"` where every control character
//! of the message is written as `\xNN`. Names and other input from programs, DNS packets or
//! proxies end up in messages; escaped, they can never end a line early (CR, LF), forge a
//! second line, truncate a C consumer (NUL) or drive a terminal (ESC, C1 CSI).
use crate::config::LogLevel;
use std::fmt::{self, Write};

/// The level's word in a line.
pub fn level_word(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Off => "off",
        LogLevel::Error => "error",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

/// Does `c` get escaped? C0 controls (< 0x20, including CR, LF, NUL, ESC, TAB), DEL (0x7f)
/// and the C1 controls U+0080..U+009F (some terminals act on U+009B as CSI).
pub fn is_escaped(c: char) -> bool {
    (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32))
}

/// Writes into a String, escaping as it goes.
struct Escaper<'a>(&'a mut String);

impl Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if is_escaped(c) {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                self.0.push(c);
            }
        }
        Ok(())
    }
}

/// The line for `args` (ends with exactly one `\n`, the only control character in it unless
/// `prefix` has some: the prefix is ours, never input).
pub fn format(prefix: &str, level: LogLevel, args: fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(prefix.len() + 64);
    line.push_str(prefix);
    line.push(' ');
    line.push_str(level_word(level));
    line.push_str(": ");
    // Writing into a String cannot fail; a Display impl that errors leaves the line shorter.
    let _ = Escaper(&mut line).write_fmt(args);
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line() {
        assert_eq!(format("tsproxy[1]", LogLevel::Info, format_args!("connect {} -> ok", "peer:80")), "tsproxy[1] info: connect peer:80 -> ok\n");
        assert_eq!(format("p", LogLevel::Error, format_args!("")), "p error: \n");
        assert_eq!(format("p", LogLevel::Debug, format_args!("ünïcode ✓ \\ \"q\"")), "p debug: ünïcode ✓ \\ \"q\"\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        let evil = "a\r\nb\0c\x1b[31md\te\x7ff\u{9b}g\u{1f}";
        let line = format("p", LogLevel::Info, format_args!("dns {evil} type 1"));
        assert_eq!(line, "p info: dns a\\x0d\\x0ab\\x00c\\x1b[31md\\x09e\\x7ff\\x9bg\\x1f type 1\n");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert!(!line[..line.len() - 1].chars().any(is_escaped), "{line:?}");
        // Every one of the 0..0x20 and 0x7f..0xa0 range.
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let l = format("p", LogLevel::Info, format_args!("{c}"));
            assert_eq!(l, std::format!("p info: \\x{:02x}\n", c as u32));
        }
    }
}
