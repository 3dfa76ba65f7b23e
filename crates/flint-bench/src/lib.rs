//! `flint bench`: benchmarks run by flint itself, on the host it runs on.
//!
//! `flint bench startup` ([`startup()`]) asks how a microVM compares with a container for the
//! same workload: one OCI bundle runs N times each on flint (restoring its warm snapshot, as
//! `flint run --oci-bundle` does by default, and booting cold with `--cold`; on request also
//! with `--live-root`), crun and QEMU's microvm, interleaved round-robin, and the report gives per system the time to the
//! workload's first output and to its exit, host CPU, memory and disk, as JSON, Markdown and
//! SVG.
//!
//! `flint bench snapshot` ([`snapshot()`]) captures a running workload (a bundle printing
//! `tick N` lines forever) through flint's API and continues it with `flint run --restore`,
//! beside crun's checkpoint/restore where crun has CRIU; `flint bench density` ([`density()`])
//! sums the PSS of N instances running at once as crun containers, cold-booted VMs, clones of
//! one snapshot and warm starts.
//!
//! Modules, from the top: [`mod@startup`], [`mod@snapshot`] and [`mod@density`] orchestrate ([`workload`]
//! holds what the last two share: arguments, preparation, warm-up, capture); [`system`] knows
//! how each system is launched; [`run`] runs and measures one process, [`live`] watches a
//! long-running one line by line; [`measure`] reads `/proc` and the filesystem; [`stats`]
//! summarises; [`report`] and [`svg`] write the results; [`environment`] records where it
//! ran; [`interrupt`] turns Ctrl-C into a clean stop.

pub mod density;
pub mod environment;
pub mod interrupt;
pub mod live;
pub mod measure;
pub mod report;
pub mod run;
pub mod snapshot;
pub mod startup;
pub mod stats;
pub mod svg;
pub mod system;
pub mod workload;

use std::path::PathBuf;

pub use density::{density, DensityArgs};
pub use report::Report;
pub use snapshot::{snapshot, SnapshotArgs};
pub use startup::{startup, StartupArgs};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("{tool} not found: install it ({install}) or pass {option} PATH")]
    ToolMissing {
        tool: String,
        install: &'static str,
        option: &'static str,
    },
    #[error(
        "no guest kernel for flint and QEMU: pass --kernel PATH or set FLINT_KERNEL (none of \
         {looked} exists)"
    )]
    NoKernel { looked: String },
    #[error("--kernel {}: not a file", .0.display())]
    Kernel(PathBuf),
    #[error("--bundle {bundle}: {what}")]
    Bundle { bundle: String, what: String },
    #[error(transparent)]
    Oci(#[from] flint_oci::OciError),
    #[error("{what}")]
    Cgroup { what: String },
    #[error("{system} round {round}: {what}{}", tail(.stderr))]
    Run {
        system: &'static str,
        round: u32,
        what: String,
        stderr: Vec<u8>,
    },
    /// The untimed run that makes flint's warm snapshot before the restored row's timed
    /// rounds. On one line: the bench stops here, before any timed round.
    #[error(
        "the {} row's warm-up run (untimed, before round 1, to make flint's snapshot) failed: \
         {what}{}",
        system::display_name(.system), tail_line(.stderr)
    )]
    WarmUp {
        system: &'static str,
        what: String,
        stderr: Vec<u8>,
    },
    /// A step of the snapshot or density bench (a process it started, a request it made)
    /// failed. On one line.
    #[error("{step}: {what}{}", tail_line(.stderr))]
    Step {
        step: String,
        what: String,
        stderr: Vec<u8>,
    },
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    #[error("interrupted by signal {0}: the runs were stopped and the scratch files removed")]
    Interrupted(i32),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {what}")]
    Internal { what: &'static str },
}

/// A run whose exit status or stdout differs from the reference run's.
#[derive(Debug, thiserror::Error)]
#[error(
    "{system} round {round} did not run the same workload as {reference} round 1 (exit status \
     and stdout must be the same on every system):\n  {reference}: exit status \
     {reference_status}, stdout {reference_stdout}\n  {system}: exit status {status}, stdout \
     {stdout}{}{}",
    tail_of(.reference, .reference_stderr), tail_of(.system, .stderr)
)]
pub struct Mismatch {
    pub system: &'static str,
    pub round: u32,
    pub status: i32,
    /// Quoted and shortened for the message.
    pub stdout: String,
    pub stderr: Vec<u8>,
    pub reference: &'static str,
    pub reference_status: i32,
    pub reference_stdout: String,
    pub reference_stderr: Vec<u8>,
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// `err` and its causes on one line (the VMM's one chain printer).
pub(crate) use flint_vmm::exit::error_chain as with_causes;

/// The last lines of a process's stderr, indented, for an error message; empty if it said
/// nothing.
fn tail(stderr: &[u8]) -> String {
    tail_of("its", stderr)
}

fn tail_of(whose: &str, stderr: &[u8]) -> String {
    const LINES: usize = 12;
    const WIDTH: usize = 240;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n  {whose}{} stderr ends with:",
        if whose == "its" { "" } else { "'s" }
    );
    for l in &lines[lines.len().saturating_sub(LINES)..] {
        let l: String = l.chars().take(WIDTH).collect();
        s.push_str("\n    ");
        s.push_str(&l);
    }
    s
}

/// The last lines of a process's stderr on one line (` | ` between them), for a one-line error;
/// empty if it said nothing.
fn tail_line(stderr: &[u8]) -> String {
    const LINES: usize = 4;
    const WIDTH: usize = 200;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.chars().take(WIDTH).collect())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "; its stderr ends with: {}",
        lines[lines.len().saturating_sub(LINES)..].join(" | ")
    )
}

/// Bytes shown in an error message: quoted and escaped, at most `max` characters.
pub(crate) fn quoted(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let shown: String = text.chars().take(max).collect();
    let more = text.chars().count().saturating_sub(max);
    if more > 0 {
        format!("{shown:?} (and {more} more characters)")
    } else {
        format!("{shown:?}")
    }
}

/// Parses a bench's arguments as `flint bench NAME` would, for the tests.
#[cfg(test)]
pub(crate) fn parse_args<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    #[derive(clap::Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    <Cli<A> as clap::Parser>::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
        .map(|c| c.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_stderr_tail() {
        let e = BenchError::Run {
            system: "qemu",
            round: 3,
            what: "no exit within 60 s: killed".into(),
            stderr: b"line 1\n\nqemu: could not open kernel\n".to_vec(),
        };
        assert_eq!(
            e.to_string(),
            "qemu round 3: no exit within 60 s: killed\n  its stderr ends with:\n    line 1\n    \
             qemu: could not open kernel"
        );
    }

    #[test]
    fn a_mismatch_shows_both_outputs() {
        let e = Mismatch {
            system: "flint",
            round: 1,
            status: 0,
            stdout: quoted(b"hello\r\n", 100),
            stderr: Vec::new(),
            reference: "crun",
            reference_status: 0,
            reference_stdout: quoted(b"hello\n", 100),
            reference_stderr: b"warning\n".to_vec(),
        };
        let s = e.to_string();
        assert!(
            s.contains("crun: exit status 0, stdout \"hello\\n\""),
            "{s}"
        );
        assert!(
            s.contains("flint: exit status 0, stdout \"hello\\r\\n\""),
            "{s}"
        );
        assert!(s.contains("crun's stderr ends with:\n    warning"), "{s}");
    }

    #[test]
    fn a_failed_warm_up_is_one_line_with_the_stderr_tail() {
        let e = BenchError::WarmUp {
            system: "flint-restored",
            what: "flint failed (exit code 1)".into(),
            stderr: b"a\nb\n\nc\nflint: error: cannot write the snapshot\n  d  \n".to_vec(),
        };
        assert_eq!(
            e.to_string(),
            "the flint (restored) row's warm-up run (untimed, before round 1, to make flint's \
             snapshot) failed: flint failed (exit code 1); its stderr ends with: b | c | flint: \
             error: cannot write the snapshot | d"
        );
        let quiet = BenchError::WarmUp {
            system: "flint-restored",
            what: "no exit within 60 s: killed".into(),
            stderr: Vec::new(),
        };
        assert!(quiet
            .to_string()
            .ends_with("failed: no exit within 60 s: killed"));
        assert!(!quiet.to_string().contains('\n'));
    }

    #[test]
    fn causes_follow_the_message() {
        let e = BenchError::io("cannot create /x")(std::io::ErrorKind::NotFound.into());
        assert_eq!(with_causes(&e), "cannot create /x: entity not found");
    }

    #[test]
    fn long_output_is_cut() {
        assert_eq!(quoted(b"abcdef", 3), "\"abc\" (and 3 more characters)");
    }
}
