//! A small stderr logger for the `log` facade: human lines (level, thread,
//! message) or JSON lines for log collectors.

use std::fmt::Write as _;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `sockwave INFO  [thread] message`.
    Text,
    /// One JSON object per line: `ts` (Unix seconds), `level`, `thread`, `msg`.
    Json,
}

struct Stderr {
    level: log::LevelFilter,
    format: Format,
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("?");
        let line = match self.format {
            Format::Text => format!("sockwave {:5} [{thread}] {}", record.level(), record.args()),
            Format::Json => json_line(record.level(), thread, &record.args().to_string()),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

fn json_line(level: log::Level, thread: &str, msg: &str) -> String {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    format!(
        "{{\"ts\":{ts:.6},\"level\":\"{level}\",\"thread\":\"{}\",\"msg\":\"{}\"}}",
        escape(thread),
        escape(msg)
    )
}

/// A JSON string's contents (RFC 8259 section 7).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub fn init(level: log::LevelFilter, format: Format) {
    if log::set_boxed_logger(Box::new(Stderr { level, format })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_json_must() {
        let line = json_line(log::Level::Warn, "loop-0", "a \"quoted\"\\path\n\u{1}é");
        assert!(line.starts_with("{\"ts\":"), "{line}");
        assert!(
            line.ends_with(
                "\"level\":\"WARN\",\"thread\":\"loop-0\",\"msg\":\"a \\\"quoted\\\"\\\\path\\n\\u0001é\"}"
            ),
            "{line}"
        );
    }
}
