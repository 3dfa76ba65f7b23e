//! Lab tier: `resources/bench/io`, VM vs container I/O, on its smallest settings. flint, QEMU's
//! microvm and a crun container each move data on a disk and over TCP; the run writes JSON,
//! Markdown and SVG with every system's numbers and leaves nothing else; a run in which a
//! system's data comes back wrong is refused. The benchmark boots its own lab: two lab runs,
//! one after the other.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

/// One lab at a time: the two tests' benchmark runs must not overlap.
static LAB: Mutex<()> = Mutex::new(());

struct OutDir(PathBuf);

impl OutDir {
    fn new(tag: &str) -> OutDir {
        let dir = std::env::temp_dir().join(format!("flint-lab-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        OutDir(dir)
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `resources/bench/io ARGS --out OUT` on the smallest settings, run again if the lab itself
/// failed (see [`common::rerun_failed_labs`]).
fn io(args: &[&str], out: &Path) -> Output {
    let _one = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let small = [
        "--rounds",
        "1",
        "--seq-mib",
        "4",
        "--rand-ops",
        "50",
        "--depth",
        "2",
        "--mib",
        "2",
        "--pings",
        "50",
    ];
    common::rerun_failed_labs(&common::Report::default(), || {
        let tail = ["--out", out.to_str().unwrap()];
        let all = small.iter().chain(args).chain(&tail);
        common::resource_script("bench/io", all.copied())
    })
}

const SYSTEMS: [&str; 3] = ["flint", "qemu", "crun"];

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn flint_qemu_and_a_container_move_data_on_disk_and_network_side_by_side() {
    let out = OutDir::new("run");
    let run = io(&[], &out.0);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{}", common::tail(&stderr, 60));

    // Only its results: one stem, three files.
    let mut files: Vec<String> = std::fs::read_dir(&out.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let stem = files[0]
        .strip_suffix(".json")
        .expect("a JSON file")
        .to_string();
    assert!(stem.starts_with("io-"), "{files:?}");
    assert_eq!(files[1], format!("{stem}.md"));
    assert_eq!(files[2], format!("{stem}.svg"));
    let read = |ext: &str| std::fs::read_to_string(out.0.join(format!("{stem}.{ext}"))).unwrap();

    let json: serde_json::Value = serde_json::from_str(&read("json")).expect("valid JSON");
    assert_eq!(json["benchmark"], "io");
    assert_eq!(json["rounds"], 1);
    for system in SYSTEMS {
        assert!(json["systems"][system].is_object(), "{}", json["systems"]);
    }
    let results = json["results"].as_array().expect("results");
    let row = |test: &str, metric: &str| {
        results
            .iter()
            .find(|r| r["test"] == test && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no {test} {metric}: {json}"))
    };
    let value = |test: &str, metric: &str, system: &str| row(test, metric)[system].as_f64();
    let tests = [
        ("seq-write-1m", "mib_s", "cpu_s_per_gib"),
        ("seq-read-1m", "mib_s", "cpu_s_per_gib"),
        ("rand-read-4k", "mib_s", "cpu_s_per_gib"),
        ("rand-write-4k", "mib_s", "cpu_s_per_gib"),
        ("rand-read-4k-qd2", "mib_s", "cpu_s_per_gib"),
        ("rand-write-4k-qd2", "mib_s", "cpu_s_per_gib"),
        ("tx", "mib_s", "cpu_s_per_gib"),
        ("rx", "mib_s", "cpu_s_per_gib"),
        ("rr", "rr_s", "cpu_us_per_op"),
    ];
    for (test, rate, cpu) in tests {
        for system in SYSTEMS {
            let r = value(test, rate, system);
            assert!(r.is_some_and(|r| r > 0.0), "{test} {rate} {system}: {json}");
            let c = value(test, cpu, system);
            assert!(c.is_some_and(|c| c >= 0.0), "{test} {cpu} {system}: {json}");
        }
        let row = row(test, rate);
        for other in ["qemu", "crun"] {
            let ratio = row[format!("flint_over_{other}")].as_f64();
            assert!(ratio.is_some_and(|r| r > 0.0), "{row}");
        }
    }

    // The Markdown table is the JSON's: a row per result, a column per system and ratio.
    let md = read("md");
    assert!(
        md.contains("| test | metric | flint | qemu | crun | flint/qemu | flint/crun |"),
        "{md}"
    );
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| test"))
        .count();
    assert_eq!(rows, results.len(), "{md}");

    // The chart: an SVG with a row for every test.
    let svg = read("svg");
    let doc = roxmltree::Document::parse(&svg).expect("valid SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for (test, _, _) in tests {
        assert!(
            texts.iter().any(|t| t.starts_with(&format!("{test} ("))),
            "{test}: {svg}"
        );
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_run_whose_data_comes_back_wrong_is_refused() {
    // flint's guest writes one disk page wrong and sends one wrong byte over TCP.
    let out = OutDir::new("corrupt");
    let run = io(&["--corrupt", "flint"], &out.0);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{}", common::tail(&stderr, 60));
    let refusal = stderr
        .lines()
        .find(|l| l.starts_with("io: error: refused: "))
        .unwrap_or_else(|| panic!("no refusal: {}", common::tail(&stderr, 60)));
    assert!(
        refusal.contains("flint (round 1): blkbench: data mismatch at offset 0"),
        "{refusal}"
    );
    assert!(
        refusal.contains("flint (round 1): netbench: tx: data mismatch"),
        "{refusal}"
    );
    // Only flint's: QEMU and crun moved their data right.
    assert!(
        !refusal.contains("qemu") && !refusal.contains("crun"),
        "{refusal}"
    );
    assert!(!out.0.exists(), "a refused run wrote results");
}
