//! Lab tier: OCI bundles as containers (crun) and as microVMs (`flint run --oci-bundle`) in one
//! lab run. The same bundle must give the same stdout, stderr and exit code under crun and
//! flint, restored from the warm snapshot (the default; the first run makes it) and booted
//! cold; the startup benchmark must produce well-formed JSON, Markdown and SVG. One lab boot
//! runs every scenario (with QEMU in it, for the benchmark).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workload that shows what a runtime gave the process. Every line must be the same under
/// crun and flint.
const PROBE: &str = r#"echo "args: $0 $*"
echo "cwd: $(pwd)"
echo "greeting: $GREETING"
echo "pid: $$"
echo "uid: $(id -u) gid: $(id -g)"
echo "hostname: $(hostname)"
env | sort
if read -r line; then echo "stdin: $line"; else echo "stdin: at its end"; fi
touch /tmp/written && echo "rootfs writable: yes"
echo "to stderr" >&2
exit 3"#;

struct Bundles {
    dir: PathBuf,
}

impl Drop for Bundles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_bundle(dir: &Path, args: &[&str]) {
    let args = std::iter::once(dir.as_os_str()).chain(args.iter().map(|a| a.as_ref()));
    common::resource_stdout("oci/make-bundle", args);
}

/// The bind-mount workload: reads each bind, writes the read-write one, tries the read-only
/// one, and shows the mount table's view of them (mount point and ro/rw, which containers and
/// microVMs share; the source and type differ by design).
const BINDS: &str = r#"echo "vol: $(cat /vol/in.txt)"
echo "ro: $(cat /ro/in.txt)"
echo "file: $(cat /etc/hostfile)"
echo "written by the workload" > /vol/out.txt && echo "vol write: ok"
(echo x > /ro/new.txt) 2>/dev/null && echo "ro write: allowed" || echo "ro write: refused"
(echo x > /etc/hostfile) 2>/dev/null && echo "file write: allowed" || echo "file write: refused"
ls -1 /vol /ro
awk '$2 ~ /^\/(vol|ro|etc\/hostfile)$/ { split($4, o, ","); print "mount:", $2, o[1] }' /proc/mounts"#;

/// Adds bind mounts (destination, source, options) to a bundle's config.json.
fn add_mounts(bundle: &Path, mounts: &[(&str, &str, &[&str])]) {
    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let list = config["mounts"].as_array_mut().unwrap();
    for (destination, source, options) in mounts {
        list.push(serde_json::json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": options,
        }));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn lab() -> &'static common::LabResults {
    static RESULTS: OnceLock<common::LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let bundles = Bundles {
            dir: std::env::temp_dir().join(format!("flint-lab-bundles-{}", std::process::id())),
        };
        let probe = bundles.dir.join("probe");
        make_bundle(
            &probe,
            &[
                "--cwd",
                "/tmp",
                "--env",
                "GREETING=hello, world",
                "--hostname",
                "probe",
                "--",
                "/bin/sh",
                "-c",
                PROBE,
                "zero",
                "one two",
                "three",
            ],
        );
        // An executable whose interpreter is missing: flint's check on the host passes, the
        // guest's exec fails.
        let badexec = bundles.dir.join("badexec");
        make_bundle(&badexec, &["--", "/bin/bad"]);
        // The snapshot and density benchmarks' workload: a count, a line every 10 ms.
        let ticker = bundles.dir.join("ticker");
        make_bundle(
            &ticker,
            &[
                "--",
                "/bin/sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo \"tick $i\"; usleep 10000; done",
            ],
        );
        // What must differ between two runs restored from one snapshot: entropy and time.
        let clone = bundles.dir.join("clone");
        make_bundle(
            &clone,
            &[
                "--",
                "/bin/sh",
                "-c",
                "echo \"random: $(od -An -tx1 -N16 /dev/urandom | tr -d ' ')\"; echo \"time: $(date +%s)\"",
            ],
        );
        // Host directories and a file bind-mounted into the container (virtio-fs shares in
        // flint), one of each read-only; the lab makes the sources before the runs.
        let binds = bundles.dir.join("binds");
        make_bundle(&binds, &["--", "/bin/sh", "-c", BINDS]);
        add_mounts(
            &binds,
            &[
                ("/vol", "/tmp/vol", &["rbind", "rw"]),
                ("/ro", "/tmp/vol-ro", &["rbind", "ro"]),
                ("/etc/hostfile", "/tmp/hostfile", &["bind", "ro"]),
            ],
        );
        // What a workload writes into its root, with --live-root.
        let live = bundles.dir.join("live");
        make_bundle(
            &live,
            &["--", "/bin/sh", "-c", "echo 'from the workload' > /written-by-workload && echo written"],
        );
        std::fs::write(badexec.join("rootfs/bin/bad"), "#!/no/such/interpreter\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            badexec.join("rootfs/bin/bad"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();

        let setup = format!("{}{SETUP}", common::LAB_USER_SETUP);
        common::run_scenario_groups_in_lab(
            &setup,
            &groups(),
            300,
            &[
                "--with-qemu".into(),
                "--add".into(),
                format!("{}:/bundles", bundles.dir.display()),
            ],
        )
    })
}

/// Every lab run's setup: `run_in BUNDLE RUNTIME [STDIN]` (in /tmp/oci.sh, for scenarios run in
/// shells of their own) runs a bundle with crun or flint (`flint`, `flint-cold`, `flint-user`,
/// `flint-jail`, `flint-live`) and stdin from STDIN (default /dev/null), prints its stdout and
/// stderr, each after a line with its checksum, and returns its exit code; and the host files
/// the scenarios read.
const SETUP: &str = r#"
cat >/tmp/oci.sh <<'EOF'
run_in() {
    in=${3:-/dev/null}
    case $2 in
        crun)  crun run --bundle "$1" "t-$$" <"$in" >/tmp/out 2>/tmp/err; code=$?
               crun delete --force "t-$$" >/dev/null 2>&1 ;;
        flint) flint run --oci-bundle "$1" <"$in" >/tmp/out 2>/tmp/err; code=$? ;;
        flint-cold) flint run --cold --oci-bundle "$1" <"$in" >/tmp/out 2>/tmp/err; code=$? ;;
        flint-user) su flint -c "flint run --oci-bundle $1" <"$in" >/tmp/out 2>/tmp/err; code=$? ;;
        flint-jail) flint run --jail --uid 1000 --gid 1000 --oci-bundle "$1" <"$in" >/tmp/out 2>/tmp/err; code=$? ;;
        flint-live) flint run --live-root --oci-bundle "$1" <"$in" >/tmp/out 2>/tmp/err; code=$? ;;
    esac
    echo "--- stdout $(md5sum </tmp/out)"; cat /tmp/out
    echo "--- stderr $(md5sum </tmp/err)"; cat /tmp/err
    return $code
}
EOF
printf 'a typed line\nand more\n' >/tmp/typed
mkdir -p /tmp/vol /tmp/vol-ro && echo host-vol > /tmp/vol/in.txt && echo host-ro > /tmp/vol-ro/in.txt
echo host-file > /tmp/hostfile
"#;

/// A scenario that runs `bundle` (under /bundles, or a path) with `runtime` and `stdin`.
fn run(name: &str, bundle: &str, runtime: &str, stdin: &str) -> (String, String) {
    let bundle = if bundle.starts_with('/') {
        bundle.to_string()
    } else {
        format!("/bundles/{bundle}")
    };
    (
        name.to_string(),
        format!(". /tmp/oci.sh; run_in {bundle} {runtime} {stdin}"),
    )
}

/// A scenario of shell commands.
fn sh(name: &str, body: &str) -> (String, String) {
    (name.to_string(), body.to_string())
}

/// The lab's scenarios, in order, grouped where a later one reads what an earlier one left in
/// the lab: a lab run that fails in a group is followed by one that runs the group again whole.
fn groups() -> Vec<Vec<(String, String)>> {
    // The lab's boot, which warm-made and warm-after print: their keys must match when they
    // ran in one lab run.
    let boot = "echo \"boot: $(cat /proc/sys/kernel/random/boot_id)\"";
    let warm_made = format!(
        "for d in /var/cache/flint/images/warm /var/cache/flint/images/warm/*; do \
         stat -c '%n %a' \"$d\"; ls -A1 \"$d\"; done; {boot}"
    );
    let mut groups = vec![
        vec![run("probe-crun", "probe", "crun", "")],
        // The first flint run makes the warm snapshot, privately.
        vec![
            sh(
                "warm-before",
                "ls -A /var/cache/flint/images/warm 2>&1; true",
            ),
            run("probe-flint", "probe", "flint", ""),
            sh("warm-made", &warm_made),
        ],
    ];
    for (name, bundle, runtime, stdin) in [
        ("probe-flint-restored", "probe", "flint", ""),
        ("probe-flint-cold", "probe", "flint-cold", ""),
        ("stdin-crun", "probe", "crun", "/tmp/typed"),
        ("stdin-flint", "probe", "flint", "/tmp/typed"),
        ("stdin-flint-cold", "probe", "flint-cold", "/tmp/typed"),
        ("default-crun", "/guest/bundle", "crun", ""),
        ("default-flint", "/guest/bundle", "flint", ""),
        ("default-flint-cold", "/guest/bundle", "flint-cold", ""),
        ("badexec-flint", "badexec", "flint", ""),
    ] {
        groups.push(vec![run(name, bundle, runtime, stdin)]);
    }
    // Each binds run starts with no out.txt, and what it left on the host is looked at next.
    for runtime in ["crun", "flint"] {
        let host = if runtime == "flint" {
            "; echo \"virtiofsd left: $(for c in /proc/[0-9]*/comm; do cat \"$c\" 2>/dev/null; \
             done | grep -cx virtiofsd)\""
        } else {
            ""
        };
        groups.push(vec![
            sh(&format!("binds-{runtime}-clean"), "rm -f /tmp/vol/out.txt"),
            run(&format!("binds-{runtime}"), "binds", runtime, ""),
            sh(
                &format!("binds-{runtime}-host"),
                &format!("cat /tmp/vol/out.txt; ls -A /tmp/vol /tmp/vol-ro{host}"),
            ),
        ]);
    }
    groups.extend([
        // The crun runs wrote /tmp/written into the probe's root themselves.
        vec![
            sh("probe-live-clean", "rm -f /bundles/probe/rootfs/tmp/written"),
            run("probe-flint-live", "probe", "flint-live", ""),
            sh("probe-live-host", "ls /bundles/probe/rootfs/tmp"),
        ],
        vec![
            run("live-flint", "live", "flint-live", ""),
            sh("live-host", "cat /bundles/live/rootfs/written-by-workload"),
        ],
        vec![run("badexec-flint-cold", "badexec", "flint-cold", "")],
        vec![
            sh(
                "clones",
                "date +%s; for i in 1 2; do flint run --oci-bundle /bundles/clone </dev/null; \
                 done; c=$?; date +%s; exit $c",
            ),
            sh(
                "warm-after",
                &format!("ls -A /var/cache/flint/images/warm; {boot}"),
            ),
        ],
        vec![
            run("probe-flint-rootless", "probe", "flint-user", ""),
            sh(
                "rootless-cache",
                "stat -c 'cache %a %U' /home/flint/.cache/flint/images; \
                 for f in /home/flint/.cache/flint/images/*; do stat -c 'entry %F %a %U' \"$f\"; done",
            ),
        ],
        vec![run("probe-flint-jailed", "probe", "flint-jail", "")],
    ]);
    // Each benchmark's files, then what is left of it: its results, no scratch directory, no
    // container state.
    for (name, bench, bundle, out) in [
        ("bench", "startup", "/guest/bundle", "/tmp/bench"),
        (
            "bench-snapshot",
            "snapshot",
            "/bundles/ticker",
            "/tmp/bench-snapshot",
        ),
        (
            "bench-density",
            "density",
            "/bundles/ticker",
            "/tmp/bench-density",
        ),
    ] {
        let body = format!(
            "flint bench {bench} --bundle {bundle} -n 2 --out {out} >{out}.out 2>&1; code=$?; \
             for f in {out}.out {out}/{bench}.json {out}/{bench}.md {out}/{bench}.svg; do \
             echo \"--- file $f\"; cat \"$f\"; done; \
             echo '--- file left'; ls -1 {out}; ls -d /tmp/flint-bench-* /run/crun/* 2>/dev/null; \
             exit $code"
        );
        groups.push(vec![sh(name, &body)]);
    }
    groups
}

fn scenario(name: &str) -> &'static (String, i32) {
    common::scenario(lab(), name)
}

/// (stdout, stderr) of a scenario, each with its checksum line.
fn streams(name: &str) -> (String, String) {
    let (out, _) = scenario(name);
    let (stdout, stderr) = out
        .split_once("--- stderr ")
        .unwrap_or_else(|| panic!("{name}: {out}"));
    (stdout.to_string(), format!("--- stderr {stderr}"))
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn same_bundle_same_output_and_exit_code_as_a_container() {
    let (flint_out, flint_err) = ran_as_under_crun("probe-crun", "probe-flint", 3);
    // And it is the output the probe was meant to give.
    for line in [
        "args: zero one two three",
        "cwd: /tmp",
        "greeting: hello, world",
        "pid: 1",
        "uid: 0 gid: 0",
        "hostname: probe",
        "stdin: at its end",
        "rootfs writable: yes",
    ] {
        assert!(common::has_line(&flint_out, line), "{line}: {flint_out}");
    }
    assert!(common::has_line(&flint_err, "to stderr"), "{flint_err}");
    // Restored from the warm snapshot the run above made, and booted cold: the same again.
    probe_ran_as_under_crun("probe-flint-restored");
    probe_ran_as_under_crun("probe-flint-cold");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn bind_mounts_of_host_paths_work_as_under_crun() {
    let (flint_out, _) = ran_as_under_crun("binds-crun", "binds-flint", 0);
    for line in [
        "vol: host-vol",
        "ro: host-ro",
        "file: host-file",
        "vol write: ok",
        "ro write: refused",
        "file write: refused",
        "mount: /vol rw",
        "mount: /ro ro",
        "mount: /etc/hostfile ro",
    ] {
        assert!(common::has_line(&flint_out, line), "{line}: {flint_out}");
    }
    // What the workload wrote is on the host, and nothing more, either way.
    let (crun_host, _) = scenario("binds-crun-host");
    let (flint_host, _) = scenario("binds-flint-host");
    assert!(
        common::has_line(flint_host, "written by the workload"),
        "{flint_host}"
    );
    assert!(
        flint_host.starts_with(crun_host.as_str()),
        "{crun_host}\n{flint_host}"
    );
    assert!(
        common::has_line(flint_host, "virtiofsd left: 0"),
        "{flint_host}"
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_live_root_keeps_the_workloads_writes_in_the_bundle() {
    probe_ran_as_under_crun("probe-flint-live");
    let (host, _) = scenario("probe-live-host");
    assert!(common::has_line(host, "written"), "{host}");
    let (live, code) = scenario("live-flint");
    assert_eq!(*code, 0, "{live}");
    let (host, _) = scenario("live-host");
    assert!(common::has_line(host, "from the workload"), "{host}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn the_warm_snapshot_is_made_on_first_use_privately_and_once() {
    let (before, _) = scenario("warm-before");
    assert!(!before.lines().any(|l| l.len() == 32), "{before}");
    let (made, _) = scenario("warm-made");
    let (lines, made_boot) = without_boot(made);
    // The directory, 0700, holding one snapshot (named by its key), 0700, complete.
    assert_eq!(
        lines.first(),
        Some(&"/var/cache/flint/images/warm 700"),
        "{made}"
    );
    let key = lines.get(1).copied().unwrap_or_default();
    assert_eq!(key.len(), 32, "{made}");
    assert!(
        common::has_line(made, &format!("/var/cache/flint/images/warm/{key} 700")),
        "{made}"
    );
    let mut files: Vec<&str> = lines[3..].to_vec();
    files.sort();
    assert_eq!(files, ["empty", "memory", "state"], "{made}");
    // Every later run used it: no second snapshot, nothing half-made left. (After a failed
    // lab run, a new one made its own, under another key: the kernel's inode is the lab's.)
    let (after, _) = scenario("warm-after");
    let (after_lines, after_boot) = without_boot(after);
    assert_eq!(after_lines.len(), 1, "{after}");
    assert_eq!(after_lines[0].len(), 32, "{after}");
    if after_boot == made_boot {
        assert_eq!(after_lines[0], key, "{after}");
    }
}

/// A scenario's lines without its `boot: ID` line, and the lab boot's ID.
fn without_boot(out: &str) -> (Vec<&str>, Option<&str>) {
    let boot = common::value(out, "boot: ");
    let lines = out.lines().filter(|l| !l.starts_with("boot: ")).collect();
    (lines, boot)
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn stdin_reaches_the_workload_restored_or_cold_as_under_crun() {
    let (crun_out, _) = streams("stdin-crun");
    assert!(
        common::has_line(&crun_out, "stdin: a typed line"),
        "{crun_out}"
    );
    for name in ["stdin-flint", "stdin-flint-cold"] {
        let (out, err) = streams(name);
        assert_eq!(scenario(name).1, 3, "{}", scenario(name).0);
        assert_eq!(
            (&out, &err),
            (&crun_out, &streams("stdin-crun").1),
            "{name}"
        );
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn clones_of_the_warm_snapshot_differ_in_entropy_and_have_the_hosts_time() {
    let (out, code) = scenario("clones");
    assert_eq!(*code, 0, "{out}");
    let numbers: Vec<i64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let randoms: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("random: "))
        .collect();
    let times: Vec<i64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("time: ")?.trim().parse().ok())
        .collect();
    assert_eq!(
        (numbers.len(), randoms.len(), times.len()),
        (2, 2, 2),
        "{out}"
    );
    assert_eq!(randoms[0].len(), 32, "{out}");
    assert_ne!(
        randoms[0], randoms[1],
        "two restores read the same random bytes: {out}"
    );
    for t in times {
        assert!(
            numbers[0] - 2 <= t && t <= numbers[1] + 2,
            "guest time {t} outside the host's {numbers:?} (2 s slack): {out}"
        );
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn default_bundle_both_ways() {
    let (crun, flint) = (scenario("default-crun"), scenario("default-flint"));
    assert_eq!((crun.1, flint.1), (0, 0), "{}\n{}", crun.0, flint.0);
    assert_eq!(flint.0, crun.0);
    assert_eq!(scenario("default-flint-cold"), crun);
    assert!(
        common::has_line(&flint.0, "hello from the workload"),
        "{}",
        flint.0
    );
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn exec_failure_in_the_guest_is_127_with_a_message() {
    for name in ["badexec-flint", "badexec-flint-cold"] {
        let (out, code) = scenario(name);
        assert_eq!(*code, 127, "{name}: {out}");
        assert!(
            out.contains("flint-init: error: exec /bin/bad: No such file or directory"),
            "{name}: {out}"
        );
    }
}

/// The files the benchmark wrote, by path.
fn bench_files() -> HashMap<String, String> {
    files_of("bench")
}

/// The files a benchmark scenario printed (`--- file PATH` sections), by path.
fn files_of(name: &str) -> HashMap<String, String> {
    let (out, _) = scenario(name);
    let mut files = HashMap::new();
    for part in out.split("--- file ").skip(1) {
        let (name, body) = part.split_once('\n').unwrap_or((part, ""));
        files.insert(name.to_string(), body.to_string());
    }
    files
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn startup_benchmark_writes_json_markdown_and_svg() {
    let (out, code) = scenario("bench");
    assert_eq!(*code, 0, "{out}");
    let files = bench_files();
    let json: serde_json::Value =
        serde_json::from_str(&files["/tmp/bench/startup.json"]).expect("valid JSON");
    assert_eq!(json["benchmark"], "startup");
    assert_eq!(json["runs"], 2);
    assert!(
        json["environment"]["virtualization"]
            .as_str()
            .is_some_and(|s| s.contains("software emulation")),
        "{}",
        json["environment"]
    );
    for system in ["flint-restored", "flint-cold", "crun", "qemu"] {
        let s = &json["systems"][system];
        assert_eq!(s["runs"].as_array().map(Vec::len), Some(2), "{system}: {s}");
        let median = s["stats"]["first_output_us"]["median"].as_f64();
        assert!(median.is_some_and(|m| m > 0.0), "{system}: {s}");
    }
    let md = &files["/tmp/bench/startup.md"];
    assert!(md.contains("| flint") || md.contains("flint |"), "{md}");
    assert!(md.contains("crun") && md.contains("qemu"), "{md}");
    // The table is what the benchmark printed.
    let table_line = md.lines().find(|l| l.starts_with('|')).expect("a table");
    assert!(files["/tmp/bench.out"].contains(table_line));
    let svg = roxmltree::Document::parse(&files["/tmp/bench/startup.svg"]).expect("valid SVG");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    assert_left_only_results("bench", "startup");
}

/// Benchmark scenario `name` left only its results behind: no scratch directory, no container
/// state.
fn assert_left_only_results(name: &str, bench: &str) {
    let left = &files_of(name)["left"];
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    let results = ["json", "md", "svg"].map(|ext| format!("{bench}.{ext}"));
    assert_eq!(left, results, "{name}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_jailed_flint_runs_a_bundle_as_crun_does() {
    probe_ran_as_under_crun("probe-flint-jailed");
}

/// Scenario `name` ran the probe bundle with crun's stdout, stderr and exit status.
fn probe_ran_as_under_crun(name: &str) {
    ran_as_under_crun("probe-crun", name, 3);
}

/// Scenario `flint` ran as scenario `crun` did: both exit with `code`, with byte-identical
/// stdout and stderr. Returns flint's (stdout, stderr).
fn ran_as_under_crun(crun: &str, flint: &str, code: i32) -> (String, String) {
    let (crun_out, crun_err) = streams(crun);
    let (out, err) = streams(flint);
    assert_eq!(scenario(crun).1, code, "{}", scenario(crun).0);
    assert_eq!(scenario(flint).1, code, "{}", scenario(flint).0);
    assert_eq!(out, crun_out, "stdout differs");
    assert_eq!(err, crun_err, "stderr differs");
    (out, err)
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_user_in_the_kvm_group_runs_a_bundle_with_a_cache_of_its_own() {
    probe_ran_as_under_crun("probe-flint-rootless");
    let (cache, _) = scenario("rootless-cache");
    assert!(common::has_line(cache, "cache 700 flint"), "{cache}");
    let entries: Vec<&str> = cache.lines().filter(|l| l.starts_with("entry ")).collect();
    assert!(!entries.is_empty(), "{cache}");
    for e in entries {
        assert!(e.ends_with(" flint"), "{cache}");
        assert!(
            e == "entry directory 700 flint" || e == "entry regular file 600 flint",
            "{cache}"
        );
    }
}

/// A benchmark's JSON, Markdown and SVG, checked for shape; returns the JSON.
fn bench_output(name: &str) -> serde_json::Value {
    let scenario_name = format!("bench-{name}");
    let (out, code) = scenario(&scenario_name);
    assert_eq!(*code, 0, "{out}");
    let files = files_of(&scenario_name);
    let json: serde_json::Value =
        serde_json::from_str(&files[&format!("/tmp/bench-{name}/{name}.json")])
            .expect("valid JSON");
    assert_eq!(json["benchmark"], name);
    let md = &files[&format!("/tmp/bench-{name}/{name}.md")];
    let table_line = md.lines().find(|l| l.starts_with('|')).expect("a table");
    assert!(files[&format!("/tmp/bench-{name}.out")].contains(table_line));
    let svg = roxmltree::Document::parse(&files[&format!("/tmp/bench-{name}/{name}.svg")])
        .expect("valid SVG");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    assert_left_only_results(&scenario_name, name);
    json
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn snapshot_benchmark_captures_and_restores_a_running_workload() {
    let json = bench_output("snapshot");
    let flint = &json["systems"]["flint-snapshot"];
    let rounds = flint["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{flint}");
    for r in rounds {
        // The restore continued the count, and the capture wrote touched pages only.
        assert!(
            r["first_tick_after"].as_u64() > r["last_tick_before"].as_u64(),
            "{r}"
        );
        assert!(
            r["restore_to_next_line_us"].as_u64().is_some_and(|u| u > 0),
            "{r}"
        );
        let written = r["memory_bytes_written"].as_u64().unwrap_or(u64::MAX);
        let on_disk = r["on_disk_bytes"].as_u64().unwrap_or(u64::MAX);
        assert!(written < 64 << 20 && on_disk <= written + (1 << 20), "{r}");
    }
    // The lab's crun has no CRIU: the column says why rather than staying silent.
    let crun = &json["systems"]["crun-checkpoint"];
    let why = crun["unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("CRIU"), "{crun}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn density_benchmark_measures_every_system_running_at_once() {
    let json = bench_output("density");
    assert_eq!(json["instances"], 2);
    for system in ["crun", "flint-cold", "flint-clones"] {
        let s = &json["systems"][system];
        let instances = s["instances"].as_array().map(Vec::len);
        assert_eq!(instances, Some(2), "{system}: {s}");
        assert!(
            s["total_pss_kib"].as_f64().is_some_and(|k| k > 0.0),
            "{system}: {s}"
        );
    }
}
