//! `flint bench snapshot`: capture a running workload and continue it in a new process, with
//! flint's snapshot (`PUT /snapshot/create`, `flint run --restore`) beside crun's
//! checkpoint/restore (CRIU) where this crun has it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use clap::value_parser;
use serde::{Deserialize, Serialize};

use super::environment::Environment;
use super::live::Live;
use super::report::{self, md_table, num, ordered_map, stat_cell, stats_by_metric};
use super::run::{self, Measure, MemoryKind, RunError, WaitStatus};
use super::startup::micros;
use super::stats::Stats;
use super::svg::{self, Chart, Group, COLOURS};
use super::system::{self, describe, display_name, CrunContainer};
use super::workload::{
    self, capture_running, last_tick, next_line, stop_flint, ArgsRecord, CommonArgs, Prepared,
};
use super::{interrupt, BenchError};

/// Capture a running workload and continue it in a new process: flint's snapshot vs crun's
/// checkpoint/restore.
///
/// Per round, a warm-started flint runs the bundle until it printed 3 lines, is snapshotted
/// through its API with stop=true (timed, with the files' sizes), and `flint run --restore`
/// continues it (timed to the workload's next line, which must continue the count). crun does
/// the same with `crun checkpoint` / `crun restore` if it is built with CRIU; otherwise its
/// column says why not. Writes snapshot.json, snapshot.md and snapshot.svg to --out and prints
/// the Markdown table.
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Rounds: each captures and restores once per system.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 5,
          value_parser = value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
}

/// The column keys.
const FLINT: &str = "flint-snapshot";
const CRUN: &str = "crun-checkpoint";

/// Everything one `flint bench snapshot` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// Always "snapshot".
    pub benchmark: String,
    pub flint_version: String,
    /// UTC ISO-8601, when the bench started.
    pub date: String,
    pub environment: Environment,
    pub args: ArgsRecord,
    pub rounds: u32,
    /// flint-snapshot, then crun-checkpoint.
    #[serde(with = "ordered_map")]
    pub systems: Vec<(String, SystemResult)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemResult {
    /// Why this system has no numbers; `None` if it ran.
    pub unavailable: Option<String>,
    pub versions: String,
    /// Round 1's command lines: what was captured, and what continued it.
    pub commands: Vec<Vec<String>>,
    pub rounds: Vec<RoundRecord>,
    /// Per metric (the [`RoundRecord`] field names).
    pub stats: BTreeMap<String, Stats>,
}

/// One round of one system. Times in µs, sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based.
    pub round: u32,
    /// flint's own measure (pause → both files durable); `None` for crun.
    pub capture_us: Option<u64>,
    /// The API request's round trip, or `crun checkpoint` from spawn to exit.
    pub capture_wall_us: u64,
    /// flint's state file; `None` for crun.
    pub state_bytes: Option<u64>,
    /// Guest pages flint wrote; `None` for crun.
    pub memory_bytes_written: Option<u64>,
    /// The memory file's length (the guest's RAM); `None` for crun.
    pub memory_len: Option<u64>,
    /// Allocated bytes: flint's memory file, or crun's whole image directory.
    pub on_disk_bytes: u64,
    /// The highest `tick N` printed before the capture stopped the workload.
    pub last_tick_before: u64,
    /// The restored workload's first `tick N`.
    pub first_tick_after: u64,
    /// Complete lines before it that were not `tick N`.
    pub lines_skipped: usize,
    /// Launch of the restore → its first `tick N` line read.
    pub restore_to_next_line_us: u64,
    /// `ru_maxrss` of the restored flint (stopped soon after that line); `None` for crun,
    /// whose restored container is not its child.
    pub restored_peak_rss_kib: Option<u64>,
}

impl RoundRecord {
    fn metrics(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("capture_us", self.capture_us),
            ("capture_wall_us", Some(self.capture_wall_us)),
            ("state_bytes", self.state_bytes),
            ("memory_bytes_written", self.memory_bytes_written),
            ("memory_len", self.memory_len),
            ("on_disk_bytes", Some(self.on_disk_bytes)),
            (
                "restore_to_next_line_us",
                Some(self.restore_to_next_line_us),
            ),
            ("restored_peak_rss_kib", self.restored_peak_rss_kib),
        ]
    }
}

/// Whether crun can checkpoint, from `crun --version`: `Ok` if its feature line has `+CRIU`,
/// else why not, in the words the report uses.
pub fn crun_criu_support(version_text: &str) -> Result<(), String> {
    if version_text
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == "+CRIU"))
    {
        return Ok(());
    }
    let version = version_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("crun version "))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("version unknown");
    Err(format!(
        "this crun ({version}) is built without CRIU support (`crun checkpoint` is not a \
         command in it); what it would need: a crun built with libcriu (e.g. Debian 13's \
         crun), or runc plus the criu package (Debian 12 has runc 1.1.5 and criu 3.17.1)"
    ))
}

/// `crun --version`'s text, or why there is none.
fn crun_version_text(crun: &Path) -> Result<String, String> {
    let Some(path) = system::find_program(crun) else {
        return Err(format!(
            "{} not found: install crun (apt-get install crun) or pass --crun PATH",
            crun.display()
        ));
    };
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --version failed ({})",
            path.display(),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The table's rows: label, metric, scale.
const ROWS: &[(&str, &str, f64)] = &[
    (
        "capture, flint's own measure: pause → files durable (ms)",
        "capture_us",
        1e-3,
    ),
    (
        "capture, wall time of the request / `crun checkpoint` (ms)",
        "capture_wall_us",
        1e-3,
    ),
    ("state file (KiB)", "state_bytes", 1.0 / 1024.0),
    (
        "guest memory written (MiB)",
        "memory_bytes_written",
        1.0 / (1024.0 * 1024.0),
    ),
    (
        "memory file / checkpoint images on disk (MiB)",
        "on_disk_bytes",
        1.0 / (1024.0 * 1024.0),
    ),
    (
        "restore → the workload's next line (ms)",
        "restore_to_next_line_us",
        1e-3,
    ),
    (
        "peak RSS of the restored process (MiB)",
        "restored_peak_rss_kib",
        1.0 / 1024.0,
    ),
];

/// The Markdown report.
pub fn markdown(r: &SnapshotReport) -> String {
    let mut md = String::from(
        "## flint bench snapshot: capture a running workload, continue it in a new process\n\n",
    );
    let _ = writeln!(md, "{}  ", report::ran_on(&r.environment));
    let _ = writeln!(
        md,
        "Bundle `{}`, {} round{}, {}; VM: {} MiB, {} vCPU{}.\n",
        r.args.bundle,
        r.rounds,
        if r.rounds == 1 { "" } else { "s" },
        r.date,
        r.args.memory_mib,
        r.args.cpus,
        if r.args.cpus == 1 { "" } else { "s" },
    );
    let header: Vec<String> = std::iter::once("median (min–p95)".to_string())
        .chain(r.systems.iter().map(|(k, _)| display_name(k).to_string()))
        .collect();
    let rows: Vec<Vec<String>> = ROWS
        .iter()
        .map(|(label, metric, scale)| {
            std::iter::once(label.to_string())
                .chain(r.systems.iter().map(|(_, s)| match &s.unavailable {
                    Some(_) => "unavailable".to_string(),
                    None => stat_cell(&s.stats, &[metric], *scale, r.rounds),
                }))
                .collect()
        })
        .collect();
    md.push_str(&md_table(&header, &rows));
    for (k, s) in &r.systems {
        if let Some(why) = &s.unavailable {
            let _ = writeln!(md, "\n{} unavailable: {why}.", display_name(k));
        }
    }
    if let (Some(f), Some(c)) = (median(r, FLINT), median(r, CRUN)) {
        let _ = writeln!(
            md,
            "\nMedians of flint relative to crun: capture (wall) {}×, restore → next line {}×.",
            num(f.0 / c.0),
            num(f.1 / c.1)
        );
    }
    if !r.notes.is_empty() {
        md.push_str("\nNotes:\n\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// (capture wall, restore → next line) medians of a system that ran, if both are positive.
fn median(r: &SnapshotReport, key: &str) -> Option<(f64, f64)> {
    let s = &r.systems.iter().find(|(k, _)| k == key)?.1;
    let capture = s.stats.get("capture_wall_us")?.median;
    let restore = s.stats.get("restore_to_next_line_us")?.median;
    (capture > 0.0 && restore > 0.0).then_some((capture, restore))
}

/// The chart: per system that ran, the capture's wall time and restore → next line.
pub fn chart(r: &SnapshotReport) -> String {
    let series = [
        ("capture_wall_us", "capture (wall time)"),
        ("restore_to_next_line_us", "restore → next line"),
    ];
    let groups = r
        .systems
        .iter()
        .filter(|(_, s)| s.unavailable.is_none())
        .map(|(k, s)| Group::of(k, svg::stat_bars(&s.stats, &series.map(|(m, _)| m), 1e-3)))
        .collect();
    let unavailable: Vec<String> = r
        .systems
        .iter()
        .filter(|(_, s)| s.unavailable.is_some())
        .map(|(k, _)| format!("{}: unavailable", display_name(k)))
        .collect();
    svg::chart(&Chart {
        title: format!(
            "Snapshot: capture and restore of a running workload, {} round{}",
            r.rounds,
            if r.rounds == 1 { "" } else { "s" }
        ),
        lines: {
            let mut lines =
                svg::where_lines(&r.environment, r.args.memory_mib, r.args.cpus, &r.date);
            for u in unavailable {
                lines[1].push_str(&format!(" · {u}"));
            }
            lines
        },
        series: series
            .iter()
            .zip(COLOURS)
            .map(|((_, label), colour)| (label.to_string(), colour))
            .collect(),
        unit: "ms",
        axis: "milliseconds".into(),
        groups,
    })
}

/// One flint round: capture the running workload, continue it with `flint run --restore`.
fn flint_round(
    p: &Prepared,
    round: u32,
    commands: &mut Vec<Vec<String>>,
) -> Result<RoundRecord, BenchError> {
    let step = format!("snapshot round {round}");
    let dir = p.workdir.0.join(format!("snap-{round}"));
    let sock = p.workdir.0.join(format!("api-{round}.sock"));
    let c = capture_running(p, &step, &sock, &dir)?;
    let cmd = c.restore_command(&p.setup);
    if commands.is_empty() {
        commands.extend([c.command, describe(&cmd)]);
    }
    let mut restored = Live::spawn(format!("{step}: flint run --restore"), cmd)?;
    let next = next_line(&mut restored, c.record.last_tick_before, p.timeout)?;
    let exit = stop_flint(&mut restored, p.timeout)?;
    drop(restored);
    // ~the guest's touched pages per round: not kept for the whole bench.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RoundRecord {
        round,
        capture_us: Some(c.record.capture_us),
        capture_wall_us: c.record.capture_wall_us,
        state_bytes: Some(c.record.state_bytes),
        memory_bytes_written: Some(c.record.memory_bytes_written),
        memory_len: Some(c.record.memory_len),
        on_disk_bytes: c.record.memory_allocated_bytes,
        last_tick_before: c.record.last_tick_before,
        first_tick_after: next.tick,
        lines_skipped: next.skipped,
        restore_to_next_line_us: next.after_us,
        restored_peak_rss_kib: Some(exit.peak_rss_kib),
    })
}

/// One crun round: `crun run -d`, `crun checkpoint` after 3 lines, `crun restore -d`.
/// Not run by its authors (no crun with CRIU on their hosts): see the notes.
fn crun_round(
    p: &Prepared,
    round: u32,
    commands: &mut Vec<Vec<String>>,
) -> Result<RoundRecord, BenchError> {
    let s = &p.setup;
    let step = |what: &str| format!("snapshot round {round}: crun {what}");
    let log = p.workdir.0.join(format!("crun-snapshot-{round}.log"));
    let crun_failed = |live: &Live, what: &str, status: WaitStatus| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let errors = system::crun_errors(&text);
        live.error(format!(
            "crun {what} failed ({status}){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        ))
    };
    let id = system::crun_id(format!("snapshot-{round}"));
    let _container = CrunContainer {
        crun: &s.crun,
        id: id.clone(),
    };
    let mut run_cmd = s.crun_command(&log);
    run_cmd
        .args(["run", "-d", "--bundle"])
        .arg(&s.bundle)
        .arg(&id);
    let run_line = describe(&run_cmd);
    // The container keeps crun's stdout, this pipe, after `crun run -d` has returned.
    let mut workload = Live::spawn(step("run -d"), run_cmd)?;
    let started = workload.wait_exit(p.timeout)?;
    if started.status != WaitStatus::Exited(0) {
        return Err(crun_failed(&workload, "run -d", started.status));
    }
    workload.wait_for(p.timeout, "3 complete lines", |l| l.len() >= 3)?;

    let images = p.workdir.0.join(format!("crun-images-{round}"));
    let mut ck = s.crun_command(&log);
    ck.arg("checkpoint")
        .arg("--image-path")
        .arg(&images)
        .arg(&id);
    let m = Measure {
        timeout: p.timeout,
        memory: MemoryKind::Tree,
        state_dir: None,
    };
    let o = run::run(ck, &m).map_err(|e| match e {
        RunError::Interrupted(sig) => BenchError::Interrupted(sig),
        e => workload.error(format!("crun checkpoint: {}", crate::with_causes(&e))),
    })?;
    if o.status != WaitStatus::Exited(0) {
        return Err(BenchError::Step {
            step: step("checkpoint"),
            what: format!("crun checkpoint failed ({})", o.status),
            stderr: o.stderr,
        });
    }
    // The checkpoint ends the container: the rest of its output comes out.
    workload.read_to_end(p.timeout)?;
    let Some(last_before) = last_tick(workload.lines()) else {
        return Err(workload.error(
            "the workload printed no `tick N` line: the bench needs a bundle that prints \
             `tick 1`, `tick 2`, …",
        ));
    };
    let on_disk_bytes = super::measure::tree_allocated_bytes(&images).map_err(BenchError::io(
        format!("cannot measure {}", images.display()),
    ))?;

    let id2 = system::crun_id(format!("snapshot-{round}-restored"));
    let restored_container = CrunContainer {
        crun: &s.crun,
        id: id2.clone(),
    };
    let mut rs = s.crun_command(&log);
    rs.args(["restore", "-d", "--image-path"])
        .arg(&images)
        .arg("--bundle")
        .arg(&s.bundle)
        .arg(&id2);
    if commands.is_empty() {
        commands.extend([run_line, describe(&rs)]);
    }
    // crun reconnects the checkpointed stdout pipe to its own stdout (descriptors.json).
    let mut restored = Live::spawn(step("restore -d"), rs)?;
    let next = next_line(&mut restored, last_before, p.timeout)?;
    let done = restored.wait_exit(p.timeout)?;
    if done.status != WaitStatus::Exited(0) {
        return Err(crun_failed(&restored, "restore -d", done.status));
    }
    restored_container.kill();
    drop(restored_container);
    let _ = std::fs::remove_dir_all(&images);
    Ok(RoundRecord {
        round,
        capture_us: None,
        capture_wall_us: micros(o.exit),
        state_bytes: None,
        memory_bytes_written: None,
        memory_len: None,
        on_disk_bytes,
        last_tick_before: last_before,
        first_tick_after: next.tick,
        lines_skipped: next.skipped,
        restore_to_next_line_us: next.after_us,
        restored_peak_rss_kib: None,
    })
}

/// What every reader needs to know about how the numbers were taken.
fn notes(warm_up_ms: f64, memory_mib: u64, crun_ran: bool) -> Vec<String> {
    let mut n = vec![
        format!(
            "Before round 1, one untimed `flint run --oci-bundle` (stopped after its first \
             line, {warm_up_ms:.1} ms in) made flint's warm snapshot of the booted kernel and \
             init in the bench's own image cache: every round's workload VM is then a warm \
             start (a restore of that snapshot), as `flint run --oci-bundle` runs by default. \
             It is not in the results."
        ),
        "Each round: the workload's VM ran with --api-sock until it had printed 3 complete \
         lines; then `PUT /snapshot/create {\"stop\":true}` wrote DIR/state and DIR/memory \
         and ended it (flint must exit 0). flint's own measure is the capture_us it answers \
         (pause → both files durable); the wall time is the request's round trip from the \
         bench."
            .into(),
        format!(
            "Guest memory written is the bytes of guest pages flint wrote (touched, non-zero \
             pages only); the memory file is {memory_mib} MiB long (the guest's RAM) and its \
             size on disk is its allocated blocks (st_blocks × 512), holes not counted."
        ),
        "Restore → next line runs from just before spawning `flint run --restore DIR` to the \
         read that completed its first `tick N` line. N must be greater than the last tick \
         the captured VM printed (read until its stdout closed), or the bench fails: the \
         workload continued instead of starting over. Complete lines that are not `tick N` \
         (the tail of a line the capture cut) are skipped (lines_skipped in the JSON). The \
         snapshot's files were just written, so the restore finds them in the page cache."
            .into(),
        "The restored flint is stopped with SIGTERM (it must exit 143) right after that \
         line; its peak RSS is ru_maxrss, which counts the guest pages it touched, mapped \
         from the snapshot's file. Each round's snapshot is deleted after its restore."
            .into(),
    ];
    if crun_ran {
        n.push(
            "crun: `crun run -d` with stdout on a pipe, `crun checkpoint --image-path D` \
             after 3 lines (CRIU; it ends the container; timed from spawn to exit), the \
             checkpoint's size on disk is all of D, then `crun restore -d --image-path D` \
             under a new ID, timed to its first `tick N` line as for flint, then `crun kill` \
             and `crun delete -f`. This path of the bench had not been run by its authors \
             (their hosts' crun has no CRIU): check a surprising number by hand."
                .into(),
        );
    }
    n
}

/// Runs the benchmark; writes snapshot.json, snapshot.md and snapshot.svg to --out, prints
/// the Markdown on stdout (and one progress line per round on stderr), and returns the report.
pub fn snapshot(args: &SnapshotArgs) -> Result<SnapshotReport, BenchError> {
    // From here until the end, Ctrl-C stops the bench through its cleanup.
    let _signals = interrupt::Catch::install();
    let crun_text = crun_version_text(&args.common.crun);
    let mut crun_unavailable = crun_text
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|t| crun_criu_support(t))
        .err();
    let crun = system::find_program(&args.common.crun).unwrap_or(args.common.crun.clone());
    let p = workload::prepare(&args.common, crun)?;
    let mut notes_before = Vec::new();
    if crun_unavailable.is_none() {
        match system::ensure_cgroup2() {
            Ok(Some(note)) => notes_before.push(note),
            Ok(None) => {}
            Err(e) => crun_unavailable = Some(e.to_string()),
        }
    }
    let warm = workload::warm_up(&p)?;
    eprintln!(
        "flint bench snapshot: warm-up: first line after {:.1} ms (not counted)",
        warm.as_secs_f64() * 1e3
    );
    let (mut flint_rounds, mut crun_rounds) = (Vec::new(), Vec::new());
    let (mut flint_commands, mut crun_commands) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let f = flint_round(&p, round, &mut flint_commands)?;
        let mut progress = format!(
            "flint capture {:.1} ms (flint: {:.1} ms), restore → next line {:.1} ms",
            f.capture_wall_us as f64 / 1e3,
            f.capture_us.unwrap_or(0) as f64 / 1e3,
            f.restore_to_next_line_us as f64 / 1e3
        );
        flint_rounds.push(f);
        if crun_unavailable.is_none() {
            match crun_round(&p, round, &mut crun_commands) {
                Ok(c) => {
                    let _ = write!(
                        progress,
                        "; crun checkpoint {:.1} ms, restore → next line {:.1} ms",
                        c.capture_wall_us as f64 / 1e3,
                        c.restore_to_next_line_us as f64 / 1e3
                    );
                    crun_rounds.push(c);
                }
                Err(e @ BenchError::Interrupted(_)) => return Err(e),
                // flint's results stand; crun's column says what went wrong.
                Err(e) => {
                    let why = format!("it failed in round {round}: {}", crate::with_causes(&e));
                    eprintln!("flint bench snapshot: crun checkpoint/restore: {why}");
                    crun_unavailable = Some(why);
                    crun_rounds.clear();
                }
            }
        }
        eprintln!(
            "flint bench snapshot: round {round}/{}: {progress}",
            args.rounds
        );
    }
    let mut notes = notes_before;
    notes.extend(self::notes(
        warm.as_secs_f64() * 1e3,
        args.common.memory,
        crun_unavailable.is_none(),
    ));
    let report = SnapshotReport {
        benchmark: "snapshot".into(),
        flint_version: env!("CARGO_PKG_VERSION").into(),
        date: p.date.clone(),
        environment: p.environment.clone(),
        args: p.args.clone(),
        rounds: args.rounds,
        systems: vec![
            (
                FLINT.into(),
                result(
                    None,
                    format!("flint {}", env!("CARGO_PKG_VERSION")),
                    flint_commands,
                    flint_rounds,
                ),
            ),
            (
                CRUN.into(),
                result(
                    crun_unavailable,
                    crun_text
                        .map(|t| t.lines().take(2).collect::<Vec<_>>().join("; "))
                        .unwrap_or_else(|_| "unknown".into()),
                    crun_commands,
                    crun_rounds,
                ),
            ),
        ],
        notes,
    };
    let md = markdown(&report);
    super::startup::write_outputs("snapshot", &report, &md, &chart(&report), &args.common.out)?;
    print!("{md}");
    drop(p);
    Ok(report)
}

fn result(
    unavailable: Option<String>,
    versions: String,
    commands: Vec<Vec<String>>,
    rounds: Vec<RoundRecord>,
) -> SystemResult {
    SystemResult {
        stats: stats_by_metric(rounds.iter().map(RoundRecord::metrics)),
        unavailable,
        versions,
        commands,
        rounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::test_support::{args, json, lab};
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Result<SnapshotArgs, clap::Error> {
        crate::parse_args(args)
    }

    #[test]
    fn arguments_and_their_defaults() {
        let a = parse(&["--bundle", "b"]).unwrap();
        assert_eq!(a.rounds, 5);
        let c = &a.common;
        assert_eq!((c.memory, c.cpus, c.timeout), (128, 1, 120));
        assert_eq!(c.out, PathBuf::from("results"));
        assert_eq!(c.crun, PathBuf::from("crun"));
        assert_eq!(c.kernel, None);
        let a = parse(&["--bundle", "b", "-n", "2", "--memory", "256", "--cpus", "2"]).unwrap();
        assert_eq!((a.rounds, a.common.memory, a.common.cpus), (2, 256, 2));
        for bad in [
            &["--bundle", "b", "-n", "0"][..],
            &["--bundle", "b", "--memory", "0"],
            &["--bundle", "b", "--cpus", "0"],
            &["--bundle", "b", "--timeout", "0"],
            &["--bundle", "b", "--memory", "lots"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    const DEBIAN_12: &str =
        "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n\
        rundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n";

    #[test]
    fn crun_without_criu_is_unavailable_with_the_reason() {
        assert_eq!(
            crun_criu_support(DEBIAN_12).unwrap_err(),
            "this crun (1.8.1) is built without CRIU support (`crun checkpoint` is not a \
             command in it); what it would need: a crun built with libcriu (e.g. Debian 13's \
             crun), or runc plus the criu package (Debian 12 has runc 1.1.5 and criu 3.17.1)"
        );
        let with = DEBIAN_12.replace("+YAJL", "+CRIU +YAJL");
        assert_eq!(crun_criu_support(&with), Ok(()));
        // -CRIU, or CRIU as part of another word, is not support.
        assert!(crun_criu_support(&DEBIAN_12.replace("+YAJL", "-CRIU")).is_err());
        assert!(crun_criu_support(&DEBIAN_12.replace("+YAJL", "+CRIUX")).is_err());
        assert!(crun_criu_support("")
            .unwrap_err()
            .contains("(version unknown)"));
    }

    #[test]
    fn a_missing_crun_is_a_reason_not_an_error() {
        let e = crun_version_text(Path::new("flint-bench-no-such-crun")).unwrap_err();
        assert_eq!(
            e,
            "flint-bench-no-such-crun not found: install crun (apt-get install crun) or pass \
             --crun PATH"
        );
    }

    fn round(r: u32, flint: bool) -> RoundRecord {
        let k = u64::from(r);
        RoundRecord {
            round: r,
            capture_us: flint.then_some(400_000 + k * 1000),
            capture_wall_us: 450_000 + k * 1000,
            state_bytes: flint.then_some(25 * 1024),
            memory_bytes_written: flint.then_some(18 << 20),
            memory_len: flint.then_some(128 << 20),
            on_disk_bytes: 19 << 20,
            last_tick_before: 10 * k,
            first_tick_after: 10 * k + 1,
            lines_skipped: 0,
            restore_to_next_line_us: 500_000 + k * 1000,
            restored_peak_rss_kib: flint.then_some(11 * 1024),
        }
    }

    fn synthetic(crun: bool) -> SnapshotReport {
        let flint_rounds: Vec<_> = (1..=3).map(|r| round(r, true)).collect();
        let crun_result = if crun {
            let rounds: Vec<_> = (1..=3).map(|r| round(r, false)).collect();
            result(None, "crun version 1.19".into(), vec![], rounds)
        } else {
            result(
                crun_criu_support(DEBIAN_12).err(),
                "crun version 1.8.1".into(),
                vec![],
                vec![],
            )
        };
        SnapshotReport {
            benchmark: "snapshot".into(),
            flint_version: "0.1.0".into(),
            date: "2026-12-08T10:00:00Z".into(),
            environment: lab(),
            args: args(),
            rounds: 3,
            systems: vec![
                (
                    FLINT.into(),
                    result(
                        None,
                        "flint 0.1.0".into(),
                        vec![vec!["flint".into()]],
                        flint_rounds,
                    ),
                ),
                (CRUN.into(), crun_result),
            ],
            notes: notes(812.5, 128, crun),
        }
    }

    #[test]
    fn the_table_without_crun_says_unavailable_and_why() {
        let md = markdown(&synthetic(false));
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            table[0],
            "| median (min–p95) | flint snapshot | crun checkpoint/restore |"
        );
        assert_eq!(table.len(), 2 + ROWS.len());
        assert!(md.contains(
            "| capture, flint's own measure: pause → files durable (ms) | 402 (401–403) | \
             unavailable |"
        ));
        assert!(md.contains("| state file (KiB) | 25.0 | unavailable |"));
        assert!(md.contains("| guest memory written (MiB) | 18.0 | unavailable |"));
        assert!(md.contains("| peak RSS of the restored process (MiB) | 11.0 | unavailable |"));
        assert!(md.contains(
            "\ncrun checkpoint/restore unavailable: this crun (1.8.1) is built without CRIU \
             support (`crun checkpoint` is not a command in it); what it would need:"
        ));
        assert!(md.contains("software emulation: QEMU TCG lab"));
        assert!(!md.contains("relative to crun"));
        assert!(!md.contains("had not been run"));
        assert!(md.contains("- Before round 1, one untimed `flint run --oci-bundle`"));
    }

    #[test]
    fn the_table_with_crun_has_its_numbers_and_ratios() {
        let md = markdown(&synthetic(true));
        assert!(md.contains(
            "| capture, wall time of the request / `crun checkpoint` (ms) | 452 (451–453) | \
             452 (451–453) |"
        ));
        // Not applicable to crun: a dash.
        assert!(md.contains("| state file (KiB) | 25.0 | – |"));
        assert!(md.contains("| memory file / checkpoint images on disk (MiB) | 19.0 | 19.0 |"));
        assert!(md.contains(
            "Medians of flint relative to crun: capture (wall) 1.00×, restore → next line \
             1.00×."
        ));
        assert!(md.contains("had not been run by its authors"));
    }

    #[test]
    fn the_json_has_every_round_and_the_reason() {
        let r = synthetic(false);
        let (text, v) = json(&r, "snapshot", &["rounds"]);
        assert_eq!(v["args"]["memory_mib"], 128);
        let f = &v["systems"]["flint-snapshot"];
        assert!(f["unavailable"].is_null());
        assert_eq!(f["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(f["rounds"][0]["first_tick_after"], 11);
        assert_eq!(f["stats"]["capture_us"]["median"], 402_000.0);
        let c = &v["systems"]["crun-checkpoint"];
        assert!(c["unavailable"]
            .as_str()
            .unwrap()
            .starts_with("this crun (1.8.1) is built without CRIU support"));
        assert_eq!(c["rounds"].as_array().unwrap().len(), 0);
        assert!(
            text.find("\"flint-snapshot\"").unwrap() < text.find("\"crun-checkpoint\"").unwrap()
        );
        assert_eq!(serde_json::from_str::<SnapshotReport>(&text).unwrap(), r);
    }

    #[test]
    fn the_chart_has_bars_for_the_systems_that_ran() {
        for crun in [false, true] {
            let text = chart(&synthetic(crun));
            assert_eq!(svg::count_bars(&text, FLINT), 2);
            assert_eq!(svg::count_bars(&text, CRUN), if crun { 2 } else { 0 });
            assert_eq!(text.contains("crun checkpoint/restore: unavailable"), !crun);
        }
    }
}
