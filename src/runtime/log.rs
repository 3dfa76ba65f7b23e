//! The runtime's `--log FILE --log-format text|json`: where podman's conmon and containerd's
//! shim read why a runtime command failed. Every error also goes to stderr as one line.

use std::io::Write;
use std::path::Path;

use super::state::rfc3339_now;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// logrus's text lines, as runc writes them: `time="…" level=error msg="…"`.
    #[default]
    Text,
    /// One JSON object per line: `{"level":"error","msg":"…","time":"…"}`.
    Json,
}

/// One log line in `format`.
pub fn line(format: LogFormat, level: &str, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            let value = serde_json::json!({ "level": level, "msg": msg, "time": time });
            format!("{value}\n")
        }
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={}\n", quote(msg)),
    }
}

/// logrus quotes a value with Go's %q: backslash escapes for quotes, backslashes and control
/// characters.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reports an error: one line on stderr, and appended to the log file if there is one (a log
/// that cannot be written is said on stderr, not fatal: the error itself matters more).
pub fn error(log: Option<&Path>, format: LogFormat, msg: &str) {
    eprintln!("flint: error: {msg}");
    if let Some(path) = log {
        let text = line(format, "error", msg, &rfc3339_now());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            eprintln!("flint: cannot write the log {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_one_object_each() {
        let l = line(LogFormat::Json, "error", "a \"b\"\nc", "T");
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "a \"b\"\nc");
        assert_eq!(v["time"], "T");
    }

    #[test]
    fn text_lines_quote_like_logrus() {
        assert_eq!(
            line(LogFormat::Text, "error", "bad \"x\"\\\n\u{1}", "T"),
            "time=\"T\" level=error msg=\"bad \\\"x\\\"\\\\\\n\\x01\"\n"
        );
    }

    #[test]
    fn errors_are_appended_to_the_log() {
        let path = std::env::temp_dir().join(format!("flint-log-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        error(Some(&path), LogFormat::Json, "first");
        error(Some(&path), LogFormat::Json, "second");
        let text = std::fs::read_to_string(&path).unwrap();
        let msgs: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["msg"].to_string())
            .collect();
        assert_eq!(msgs, ["\"first\"", "\"second\""]);
        std::fs::remove_file(&path).unwrap();
    }
}
