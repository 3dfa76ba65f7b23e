//! The test helpers themselves (tests/common): the watchdog that ends a stuck child, the skip
//! and rerun records, and the lab's hang handling (`logged` run by a local shell, and the
//! parsing of its output). No VM and no lab: these run in seconds anywhere.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use common::*;

/// A scratch directory under cargo's target tmp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("harness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of the `reruns.log` in `dir`, which must be one per prefix in `starts`, in order.
fn reruns(dir: &Scratch, starts: &[&str]) -> Vec<String> {
    let log = dir.read(RERUNS_LOG);
    let lines: Vec<String> = log.lines().map(String::from).collect();
    assert_eq!(lines.len(), starts.len(), "{log}");
    for (line, start) in lines.iter().zip(starts) {
        assert!(line.starts_with(start), "{start:?} expected: {log}");
    }
    lines
}

/// The diagnostics file a `reruns.log` line points to, read.
fn diagnostics(line: &str) -> String {
    let path = line
        .rsplit_once("; diagnostics: ")
        .unwrap_or_else(|| panic!("no diagnostics in {line:?}"))
        .1;
    std::fs::read_to_string(path).unwrap()
}

/// The message of the panic `f` ends with, if it panics.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> Option<String> {
    let payload = std::panic::catch_unwind(f).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

#[test]
fn a_stuck_child_is_killed_at_its_deadline() {
    let start = Instant::now();
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let r = run_command(cmd, b"", Duration::from_millis(300));
    assert_eq!(r.code, None, "killed by a signal");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_child_that_ends_is_waited_for_not_killed() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "cat; echo to-stderr >&2; exit 7"]);
    let r = run_command(cmd, b"from stdin\n", Duration::from_secs(60));
    assert_eq!(r.code, Some(7));
    assert_eq!(r.stdout, "from stdin\n");
    assert_eq!(r.stderr, "to-stderr\n");
}

#[test]
fn full_pipes_do_not_block() {
    // More than a pipe holds, each way, and the child never reads its input.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2",
    ]);
    let r = run_command(cmd, &vec![b'x'; 1_000_000], Duration::from_secs(60));
    assert_eq!(r.code, Some(0));
    assert_eq!((r.stdout.len(), r.stderr.len()), (1_000_000, 1_000_000));
}

#[test]
fn skips_are_shown_and_logged() {
    let dir = Scratch::new("skips");
    let report = Report::quiet_at(&dir.0);
    let line = report.skip("some_test", "no /dev/kvm");
    assert_eq!(line, "flint-test: SKIPPED harness::some_test: no /dev/kvm");
    report.skip("other_test", "no ip");
    assert_eq!(
        dir.read(SKIPS_LOG),
        "flint-test: SKIPPED harness::some_test: no /dev/kvm\n\
         flint-test: SKIPPED harness::other_test: no ip\n"
    );
}

fn exited(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(code << 8),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

#[test]
fn failed_labs_are_run_again_and_each_rerun_is_recorded() {
    let dir = Scratch::new("stalls");
    let report = Report::quiet_at(&dir.0);
    let mut runs = vec![
        exited(125, "console line\nsoft lockup\n", "lab: error: stalled\n"),
        exited(125, "", "lab: error: died\n"),
        exited(0, "=== begin a\n=== end a 0\n", ""),
    ]
    .into_iter();
    let out = rerun_failed_labs(&report, || runs.next().unwrap());
    assert_eq!(out.status.code(), Some(0));
    let log = dir.read(RERUNS_LOG);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].starts_with(
            "lab-stall harness: the lab failed (exit 125), run 2 of 3 follows; diagnostics: "
        ),
        "{log}"
    );
    assert!(lines[1].contains("run 3 of 3 follows"), "{log}");
    let first = diagnostics(lines[0]);
    assert!(first.contains("lab: error: stalled"), "{first}");
    assert!(first.contains("soft lockup"), "{first}");
    assert!(diagnostics(lines[1]).contains("lab: error: died"));

    // Three failures: no fourth run, and the last failure is returned.
    let dir = Scratch::new("stalls-3");
    let report = Report::quiet_at(&dir.0);
    let mut n = 0;
    let out = rerun_failed_labs(&report, || {
        n += 1;
        exited(125, "", "")
    });
    assert_eq!((n, out.status.code()), (3, Some(125)));
    assert_eq!(dir.read(RERUNS_LOG).lines().count(), 2);

    // A failure of the command in the lab is not the lab's: no rerun.
    let dir = Scratch::new("stalls-none");
    let report = Report::quiet_at(&dir.0);
    let out = rerun_failed_labs(&report, || exited(1, "", ""));
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.0.join(RERUNS_LOG).exists());
}

fn list(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), format!("body of {n}")))
        .collect()
}

#[test]
fn a_lab_that_fails_midway_resumes_with_the_scenarios_it_did_not_finish() {
    let dir = Scratch::new("resume");
    let report = Report::quiet_at(&dir.0);
    let mut asked: Vec<Vec<String>> = Vec::new();
    let mut runs = vec![
        exited(
            125,
            "boot\n=== begin a\na ran\n=== end a 0\n=== begin b\nb cut short\n",
            "lab: error: died\n",
        ),
        exited(
            125,
            "=== begin b\nlab died again\n",
            "lab: error: stalled\n",
        ),
        exited(
            0,
            "=== begin b\nb ran\n=== end b 3\n=== begin c\nc ran\n=== end c 0\n",
            "",
        ),
    ]
    .into_iter();
    let (out, finished) = resume_failed_labs(&report, &list(&["a", "b", "c"]), |left| {
        asked.push(left.iter().map(|(n, _)| n.clone()).collect());
        runs.next().unwrap()
    });
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(asked, [vec!["a", "b", "c"], vec!["b", "c"], vec!["b", "c"]]);
    let results = scenarios(&finished);
    assert_eq!(scenario(&results, "a"), &("a ran\n".into(), 0));
    // Only the try that finished counts: the cut-short ones are in the diagnostics.
    assert_eq!(scenario(&results, "b"), &("b ran\n".into(), 3));
    assert_eq!(scenario(&results, "c"), &("c ran\n".into(), 0));
    let lines = reruns(
        &dir,
        &[
            "lab-stall harness: the lab failed (exit 125) in scenario b (1 of 3 done); a new lab run takes up there; diagnostics: ",
            "lab-stall harness: the lab failed (exit 125) in scenario b (1 of 3 done)",
        ],
    );
    let first = diagnostics(&lines[0]);
    assert!(
        first.contains("lab: error: died") && first.contains("b cut short"),
        "{first}"
    );
    assert!(diagnostics(&lines[1]).contains("lab: error: stalled"));
}

#[test]
fn a_lab_that_keeps_failing_without_progress_is_given_up() {
    // Four failures in a row that finish nothing end it, and the last one is returned...
    let dir = Scratch::new("resume-stuck");
    let report = Report::quiet_at(&dir.0);
    let mut n = 0;
    let (out, finished) = resume_failed_labs(&report, &list(&["a"]), |_| {
        n += 1;
        exited(125, "=== begin a\n", "")
    });
    assert_eq!(
        (n, out.status.code(), finished.as_str()),
        (4, Some(125), "")
    );
    assert_eq!(dir.read(RERUNS_LOG).lines().count(), 3);

    // ...but a run that finishes a scenario starts the count again.
    let dir = Scratch::new("resume-progress");
    let report = Report::quiet_at(&dir.0);
    let mut n = 0;
    let (out, finished) = resume_failed_labs(&report, &list(&["a", "b", "c"]), |left| {
        n += 1;
        match (n, left[0].0.as_str()) {
            (4, "a") => exited(125, "=== begin a\n=== end a 0\n", ""),
            (8, "b") => exited(125, "=== begin b\n=== end b 0\n", ""),
            (_, name) if n > 8 => exited(0, &format!("=== begin {name}\n=== end {name} 0\n"), ""),
            _ => exited(125, "", ""),
        }
    });
    assert_eq!((n, out.status.code()), (9, Some(0)));
    assert_eq!(scenarios(&finished).len(), 3);
    assert_eq!(dir.read(RERUNS_LOG).lines().count(), 8);

    // A failure of the command in the lab is not the lab's: no rerun.
    let dir = Scratch::new("resume-none");
    let report = Report::quiet_at(&dir.0);
    let (out, _) = resume_failed_labs(&report, &list(&["a", "b"]), |_| exited(1, "", ""));
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.0.join(RERUNS_LOG).exists());
}

#[test]
fn a_group_cut_short_runs_again_whole() {
    // b and c are a group (c reads what b left): the lab fails in c, so the next run begins
    // at b, and only that run's b and c count.
    let dir = Scratch::new("resume-group");
    let report = Report::quiet_at(&dir.0);
    let groups = vec![list(&["a"]), list(&["b", "c"]), list(&["d"])];
    let mut asked: Vec<Vec<String>> = Vec::new();
    let mut runs = vec![
        exited(
            125,
            "=== begin a\na ran\n=== end a 0\n=== begin b\nb first\n=== end b 0\n=== begin c\n",
            "lab: error: stalled\n",
        ),
        exited(
            0,
            "=== begin b\nb again\n=== end b 0\n=== begin c\nc ran\n=== end c 0\n\
             === begin d\nd ran\n=== end d 0\n",
            "",
        ),
    ]
    .into_iter();
    let (out, finished) = resume_failed_lab_groups(&report, &groups, |left| {
        asked.push(left.iter().map(|(n, _)| n.clone()).collect());
        runs.next().unwrap()
    });
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(asked, [vec!["a", "b", "c", "d"], vec!["b", "c", "d"]]);
    let results = scenarios(&finished);
    assert_eq!(scenario(&results, "b"), &("b again\n".into(), 0));
    assert_eq!(
        finished_sections(&finished)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    reruns(
        &dir,
        &["lab-stall harness: the lab failed (exit 125) in scenario c (1 of 4 done); a new lab run takes up at b, the first of its group; diagnostics: "],
    );
}

const HUNG_ONCE: &str = "\
=== begin fine
all good
=== end fine 0
=== begin flaky
lab: HUNG: still running after 300 s: sh -c flint run ...; its output so far:
half a li
lab: HUNG: flint 42 thread vcpu0: state/utime/stime R 100 5 wchan 0 syscall 16
lab: HUNG: kvm exits=7
lab: HUNG: once more
flint-guest: done
=== end flaky 0
";

#[test]
fn a_scenario_that_hung_once_is_counted_and_passes() {
    let dir = Scratch::new("hung-once");
    let results = scenarios_reported(HUNG_ONCE, &Report::quiet_at(&dir.0));
    // Tests see the second try alone (a count of some line must not include the killed
    // try's); the rerun's diagnostics keep both.
    assert_eq!(succeeded(&results, "flaky"), "flint-guest: done\n");
    assert_eq!(succeeded(&results, "fine"), "all good\n");
    let lines = reruns(
        &dir,
        &["scenario-hang harness/flaky: hung, ran once more and ended with status 0; diagnostics: "],
    );
    let kept = diagnostics(&lines[0]);
    assert!(kept.contains("lab: HUNG: kvm exits=7"), "{kept}");
    assert!(kept.contains("thread vcpu0"), "{kept}");
    assert!(kept.contains("half a li"), "{kept}");
    assert!(kept.ends_with("flint-guest: done\n"), "{kept}");
}

#[test]
fn a_scenario_that_hung_twice_fails() {
    // Whatever status the end line carries: the old `logged` gave 255 here, which a test
    // expecting some failure could have taken for flint's.
    for code in [HUNG_TWICE, 255] {
        let out = format!(
            "=== begin stuck\n\
             lab: HUNG: still running after 300 s: x; its output so far:\n\
             lab: HUNG: once more\n\
             lab: HUNG: still running after 300 s: x; its output so far:\n\
             lab: HUNG: again, giving up\n\
             === end stuck {code}\n"
        );
        let dir = Scratch::new("hung-twice");
        let results = scenarios_reported(&out, &Report::quiet_at(&dir.0));
        let log = dir.read(RERUNS_LOG);
        assert_eq!(log.lines().count(), 1, "one rerun: {log}");
        assert!(log.contains("hung again: the scenario fails"), "{log}");
        let msg = panic_message(|| {
            scenario(&results, "stuck");
        })
        .expect("a scenario that hung twice fails");
        assert!(msg.contains("stuck hung on both tries"), "{msg}");
    }
    // The end marker alone is enough.
    let results = scenarios_reported(
        &format!("=== begin s\n=== end s {HUNG_TWICE}\n"),
        &Report::quiet_at(&Scratch::new("hung-code").0),
    );
    assert!(panic_message(|| {
        succeeded(&results, "s");
    })
    .is_some());
}

/// Runs a lab script built by `lab_script` in a local shell, with a `hung_report` that only
/// says it ran (the real one mounts debugfs and reads KVM's counters).
fn run_script_locally(scenarios: &[(&str, &str)], dir: &Scratch) -> String {
    let list: Vec<(String, String)> = scenarios
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_string()))
        .collect();
    let script = lab_script("", &list, 1);
    assert!(script.contains(LAB_HUNG_REPORT_FN));
    let script = script.replacen(
        LAB_HUNG_REPORT_FN,
        "\nhung_report() { echo 'lab: HUNG: (report)'; }\n",
        1,
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env("TMPDIR", &dir.0);
    let r = run_command(cmd, b"", Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    r.stdout
}

#[test]
fn logged_runs_a_hung_command_once_more_and_gives_up_on_a_second_hang() {
    let dir = Scratch::new("logged");
    let out = run_script_locally(
        &[
            ("exit-3", "echo three; exit 3"),
            // 255 was once how a hang was told apart: a command exiting 255 was run again.
            ("exit-255", "echo once >> \"$TMPDIR/255\"; exit 255"),
            (
                "hangs-once",
                "if [ -e \"$TMPDIR/tried\" ]; then echo second; else touch \"$TMPDIR/tried\"; echo first; sleep 30; fi",
            ),
            ("hangs-always", "echo trying; sleep 30"),
        ],
        &dir,
    );
    let report = Scratch::new("logged-report");
    let results = scenarios_reported(&out, &Report::quiet_at(&report.0));

    assert_eq!(scenario(&results, "exit-3"), &("three\n".into(), 3));
    assert_eq!(scenario(&results, "exit-255"), &("".into(), 255));
    assert_eq!(dir.read("255"), "once\n", "run once");

    let (once, code) = scenario(&results, "hangs-once");
    assert_eq!(*code, 0, "{once}");
    assert_eq!(once, "second\n", "the second try alone");

    let (always, code) = &results["hangs-always"];
    assert_eq!(*code, HUNG_TWICE, "{always}");
    assert_eq!(hung_tries(always), 2, "{always}");
    assert!(hung_twice(always));
    assert!(panic_message(|| {
        scenario(&results, "hangs-always");
    })
    .is_some());

    let lines = reruns(
        &report,
        &[
            "scenario-hang harness/hangs-always: hung, ran once more and hung again",
            "scenario-hang harness/hangs-once: hung, ran once more and ended with status 0",
        ],
    );
    let kept = diagnostics(&lines[1]);
    assert!(kept.contains("first\n"), "{kept}");
    assert!(kept.contains("lab: HUNG: (report)"), "{kept}");
}

#[test]
fn a_scenario_whose_guest_triple_faulted_runs_once_more_and_is_counted() {
    let dir = Scratch::new("crash");
    let crash =
        format!("echo 'flint: the VM failed: vCPU 0: {TRIPLE_FAULT} at RIP 0xfff0'; exit 1");
    let out = run_script_locally(
        &[
            (
                "crashes-once",
                &format!(
                    "if [ -e \"$TMPDIR/crashed\" ]; then echo second; else touch \"$TMPDIR/crashed\"; echo first; {crash}; fi"
                ),
            ),
            ("crashes-always", &crash),
            ("fails-otherwise", "echo 'some other failure'; exit 1"),
        ],
        &dir,
    );
    let report = Scratch::new("crash-report");
    let results = scenarios_reported(&out, &Report::quiet_at(&report.0));
    // The second try alone is the result.
    assert_eq!(scenario(&results, "crashes-once"), &("second\n".into(), 0));
    let (always, code) = scenario(&results, "crashes-always");
    assert_eq!(*code, 1);
    assert!(always.contains(TRIPLE_FAULT), "{always}");
    assert!(!always.contains(GUEST_CRASH_ONCE_MORE), "{always}");
    // Any other failure is not run again.
    assert_eq!(
        scenario(&results, "fails-otherwise"),
        &("some other failure\n".into(), 1)
    );
    let lines = reruns(
        &report,
        &[
            "guest-crash harness/crashes-always: its guest triple-faulted, ran once more and crashed again (status 1)",
            "guest-crash harness/crashes-once: its guest triple-faulted, ran once more and ended with status 0",
        ],
    );
    let kept = diagnostics(&lines[1]);
    assert!(kept.contains("first\n"), "{kept}");
    assert!(kept.contains(TRIPLE_FAULT), "{kept}");
}
