//! The startup benchmark's report: its data model (serialised as the JSON file) and the
//! Markdown rendering. The SVG chart is in [`super::svg`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::environment::Environment;
use super::stats::Stats;
use super::system::display_name;

/// Everything one `flint bench startup` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always "startup".
    pub benchmark: String,
    pub flint_version: String,
    /// UTC ISO-8601, when the runs started.
    pub date: String,
    pub environment: Environment,
    pub bundle: String,
    /// The guest kernel both VMMs booted; `None` if no VM system ran.
    pub kernel: Option<String>,
    /// Runs per system.
    pub runs: u32,
    pub memory_mib: u64,
    pub cpus: u32,
    pub timeout_s: u64,
    /// What every run produced (they all must agree).
    pub workload: Workload,
    /// Per system, in the order they ran in each round.
    #[serde(with = "ordered_map")]
    pub systems: Vec<(String, SystemReport)>,
    pub notes: Vec<String>,
}

/// The workload's observable result, identical on every system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub exit_status: i32,
    pub stdout_bytes: usize,
    /// The start of its stdout (lossy UTF-8, at most [`Workload::SHOWN`] bytes).
    pub stdout: String,
}

impl Workload {
    pub const SHOWN: usize = 4096;

    pub fn new(exit_status: i32, stdout: &[u8]) -> Workload {
        Workload {
            exit_status,
            stdout_bytes: stdout.len(),
            stdout: String::from_utf8_lossy(&stdout[..stdout.len().min(Self::SHOWN)]).into_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    /// The first round's command line (`VAR=value` first for its environment).
    pub command: Vec<String>,
    /// What the tools say about their version.
    pub versions: String,
    /// Allocated bytes of what all instances share (image and kernel, the kernel alone for a
    /// live root, or the rootfs tree for crun).
    pub disk_shared_bytes: u64,
    /// Per metric (the [`RunRecord`] field names, plus `cpu_us` = user + sys).
    pub stats: BTreeMap<String, Stats>,
    pub runs: Vec<RunRecord>,
}

/// One run. Times in µs from the launch (the moment before the spawn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 1-based round.
    pub round: u32,
    /// The workload's exit status (QEMU's decoded).
    pub exit_status: i32,
    /// To the first byte on stdout; `None` if the workload printed nothing.
    pub first_output_us: Option<u64>,
    /// To the exit as `wait4` saw it, minus `paused_us`.
    pub exit_us: u64,
    /// How long the tree was stopped for the memory snapshot.
    pub paused_us: u64,
    /// `wait4`'s rusage: the process and the children it reaped.
    pub cpu_user_us: u64,
    pub cpu_sys_us: u64,
    /// `ru_maxrss`: the largest of the process and the children it reaped.
    pub peak_rss_kib: u64,
    /// flint's boot timer (launch → guest init's first action); `None` for the others, and
    /// for a restored flint that did not print it (its guest does not boot).
    pub boot_us: Option<u64>,
    /// At the first output; `None` if the process had already exited by then.
    pub memory_at_first_output: Option<MemoryRecord>,
    /// Bytes allocated on disk for this instance alone; `None` if it could not be sampled.
    pub disk_per_instance_bytes: Option<u64>,
}

/// Memory at the first output, from /proc/PID/smaps of the stopped tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemoryRecord {
    /// A VMM process. The split is `None` when its guest RAM mappings could not be found.
    Vmm {
        total_rss_kib: u64,
        total_pss_kib: u64,
        vmm_rss_kib: Option<u64>,
        vmm_pss_kib: Option<u64>,
        guest_rss_kib: Option<u64>,
        /// The virtiofsd processes flint started (a live root), without their mappings of the
        /// guest RAM; not in the totals above. `None` for VMs without one (and if none was
        /// found).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        virtiofsd_pss_kib: Option<u64>,
    },
    /// The container runtime and the container's processes, summed.
    Container {
        rss_kib: u64,
        pss_kib: u64,
        processes: usize,
    },
}

impl RunRecord {
    /// Every numeric metric of this run by name; `None` where it has no value.
    pub fn metrics(&self) -> Vec<(&'static str, Option<u64>)> {
        let mut m = vec![
            ("first_output_us", self.first_output_us),
            ("exit_us", Some(self.exit_us)),
            ("paused_us", Some(self.paused_us)),
            ("cpu_user_us", Some(self.cpu_user_us)),
            ("cpu_sys_us", Some(self.cpu_sys_us)),
            ("cpu_us", Some(self.cpu_user_us + self.cpu_sys_us)),
            ("peak_rss_kib", Some(self.peak_rss_kib)),
            ("boot_us", self.boot_us),
            ("disk_per_instance_bytes", self.disk_per_instance_bytes),
        ];
        match &self.memory_at_first_output {
            Some(MemoryRecord::Vmm {
                vmm_rss_kib,
                vmm_pss_kib,
                guest_rss_kib,
                virtiofsd_pss_kib,
                ..
            }) => m.extend([
                ("vmm_rss_kib", *vmm_rss_kib),
                ("vmm_pss_kib", *vmm_pss_kib),
                ("guest_rss_kib", *guest_rss_kib),
                ("virtiofsd_pss_kib", *virtiofsd_pss_kib),
                // What the table shows for a VM with a virtiofsd: the VMM's and its together.
                (
                    "vmm_virtiofsd_pss_kib",
                    vmm_pss_kib.zip(*virtiofsd_pss_kib).map(|(v, d)| v + d),
                ),
            ]),
            Some(MemoryRecord::Container {
                rss_kib, pss_kib, ..
            }) => m.extend([("rss_kib", Some(*rss_kib)), ("pss_kib", Some(*pss_kib))]),
            None => {}
        }
        m
    }
}

/// Statistics per metric over the runs that have it.
pub fn stats_of(runs: &[RunRecord]) -> BTreeMap<String, Stats> {
    stats_by_metric(runs.iter().map(RunRecord::metrics))
}

/// Statistics per metric name over rows of (metric, value), each row one run or instance;
/// `None` values are left out.
pub fn stats_by_metric(
    rows: impl Iterator<Item = Vec<(&'static str, Option<u64>)>>,
) -> BTreeMap<String, Stats> {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for row in rows {
        for (name, v) in row {
            if let Some(v) = v {
                values.entry(name).or_default().push(v as f64);
            }
        }
    }
    values
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), Stats::of(&v)?)))
        .collect()
}

/// `Vec<(key, value)>` as a JSON object, keeping the order (serde_json's own map sorts).
pub(crate) mod ordered_map {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, Serializer};
    use std::marker::PhantomData;

    pub fn serialize<S: Serializer, V: Serialize>(
        v: &[(String, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, V)>, D::Error> {
        struct Ordered<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Ordered<V> {
            type Value = Vec<(String, V)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(v)
            }
        }
        d.deserialize_map(Ordered(PhantomData))
    }
}

/// Where a table row's numbers come from.
enum Source {
    /// The first of these stats present for a system (a VMM and a container name the same
    /// quantity differently), scaled.
    Stat(&'static [&'static str], f64),
    /// The system's shared disk, in MiB.
    DiskShared,
}

/// The table's rows, in order.
const ROWS: &[(&str, Source)] = &[
    (
        "launch → first output (ms)",
        Source::Stat(&["first_output_us"], 1e-3),
    ),
    ("launch → exit (ms)", Source::Stat(&["exit_us"], 1e-3)),
    (
        "guest boot, flint's boot timer (ms)",
        Source::Stat(&["boot_us"], 1e-3),
    ),
    ("host CPU, user + sys (ms)", Source::Stat(&["cpu_us"], 1e-3)),
    (
        "peak RSS (MiB)",
        Source::Stat(&["peak_rss_kib"], 1.0 / 1024.0),
    ),
    // A live root's virtiofsd is counted with its VMM (see the notes), as crun's container is
    // with crun.
    (
        "PSS at first output: VMM / runtime + container (MiB)",
        Source::Stat(
            &["vmm_virtiofsd_pss_kib", "vmm_pss_kib", "pss_kib"],
            1.0 / 1024.0,
        ),
    ),
    (
        "guest RAM resident at first output (MiB)",
        Source::Stat(&["guest_rss_kib"], 1.0 / 1024.0),
    ),
    ("disk shared by all instances (MiB)", Source::DiskShared),
    (
        "disk per instance (KiB)",
        Source::Stat(&["disk_per_instance_bytes"], 1.0 / 1024.0),
    ),
];

/// How many rows the Markdown table has (one per metric).
pub const TABLE_ROWS: usize = ROWS.len();

/// A number with a precision that suits its size.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A table cell: median (min–p95) over the runs that have the metric, "–" if none has it (not
/// applicable, e.g. a boot time for crun or for a restore), and how many runs it covers if not
/// all of the `runs`.
fn cell(s: &SystemReport, source: &Source, runs: u32) -> String {
    match source {
        Source::DiskShared => num(s.disk_shared_bytes as f64 / (1024.0 * 1024.0)),
        Source::Stat(keys, scale) => stat_cell(&s.stats, keys, *scale, runs),
    }
}

/// A table cell from the first of `keys` in `stats`, scaled: median (min–p95), "–" if none
/// is there (not applicable), and how many runs it covers if not all of the `runs`.
pub fn stat_cell(stats: &BTreeMap<String, Stats>, keys: &[&str], scale: f64, runs: u32) -> String {
    let Some(st) = keys.iter().find_map(|k| stats.get(*k)) else {
        return "–".into();
    };
    let (median, min, p95) = (
        num(st.median * scale),
        num(st.min * scale),
        num(st.p95 * scale),
    );
    let mut c = if min == p95 {
        median
    } else {
        format!("{median} ({min}–{p95})")
    };
    if u64::try_from(st.n).is_ok_and(|n| n < u64::from(runs)) {
        let _ = write!(c, " [{} of {runs} runs]", st.n);
    }
    c
}

/// The "Ran on:" line every report starts with: the virtualization (software emulation where
/// detected), the host kernel and the CPU.
pub fn ran_on(env: &Environment) -> String {
    format!(
        "Ran on: {} (Linux {}, {}).",
        env.summary(),
        env.kernel_release,
        env.cpu_model
    )
}

/// A Markdown table: `header` (its first cell titles the row labels) and rows of cells, the
/// value columns right-aligned.
pub fn md_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut md = format!("| {} |\n|---|", header.join(" | "));
    for _ in 1..header.len() {
        md.push_str("---:|");
    }
    md.push('\n');
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md
}

/// The median of `metric` for the system with key `key`, if it has one.
fn median_of(r: &Report, key: &str, metric: &str) -> Option<f64> {
    r.systems
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, s)| s.stats.get(metric))
        .map(|st| st.median)
}

/// Medians of `metric` relative to crun's, for the systems other than crun; `None` without
/// crun (or with a zero median there).
fn ratios_vs_crun(r: &Report, metric: &str) -> Option<String> {
    let base = median_of(r, "crun", metric).filter(|b| *b > 0.0)?;
    let parts: Vec<String> = r
        .systems
        .iter()
        .filter(|(k, _)| k != "crun")
        .filter_map(|(k, s)| {
            let m = s.stats.get(metric)?.median;
            Some(format!("{} {}×", display_name(k), num(m / base)))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The line comparing another of flint's rows (`key`: restored, live root) with its cold boot,
/// medians of `key` / cold boot; `None` unless the report has both with values.
fn vs_cold(r: &Report, key: &str) -> Option<String> {
    let cold = "flint-cold";
    let parts: Vec<String> = [
        ("first output", "first_output_us"),
        ("exit", "exit_us"),
        ("host CPU", "cpu_us"),
        ("peak RSS", "peak_rss_kib"),
    ]
    .iter()
    .filter_map(|(what, m)| {
        let base = median_of(r, cold, m).filter(|b| *b > 0.0)?;
        Some(format!("{what} {}×", num(median_of(r, key, m)? / base)))
    })
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "Medians of {} relative to {}: {}.",
            display_name(key),
            display_name(cold),
            parts.join(", ")
        )
    })
}

/// The Markdown report: where it ran, the table, ratios against crun (and of flint restored
/// and flint with a live root against its cold boot), and the notes.
pub fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## flint bench startup: microVM vs container\n");
    let _ = writeln!(md, "{}  ", ran_on(&r.environment));
    let _ = writeln!(
        md,
        "Bundle `{}`, {} run{} per system interleaved round-robin, {}; VMs: {} MiB, {} vCPU{}.\n",
        r.bundle,
        r.runs,
        if r.runs == 1 { "" } else { "s" },
        r.date,
        r.memory_mib,
        r.cpus,
        if r.cpus == 1 { "" } else { "s" },
    );
    let header: Vec<String> = std::iter::once("median (min–p95)".to_string())
        .chain(r.systems.iter().map(|(k, _)| display_name(k).to_string()))
        .collect();
    let rows: Vec<Vec<String>> = ROWS
        .iter()
        .map(|(label, source)| {
            std::iter::once(label.to_string())
                .chain(r.systems.iter().map(|(_, s)| cell(s, source, r.runs)))
                .collect()
        })
        .collect();
    md.push_str(&md_table(&header, &rows));
    let ratios: Vec<String> = [("first output", "first_output_us"), ("exit", "exit_us")]
        .iter()
        .filter_map(|(what, m)| Some(format!("{what}: {}", ratios_vs_crun(r, m)?)))
        .collect();
    if !ratios.is_empty() {
        let _ = writeln!(md, "\nMedians relative to crun: {}.", ratios.join("; "));
    }
    for key in ["flint-restored", "flint-live"] {
        if let Some(line) = vs_cold(r, key) {
            let _ = writeln!(md, "\n{line}");
        }
    }
    if !r.notes.is_empty() {
        md.push_str("\nNotes:\n\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn run(round: u32, scale: u64, vm: bool, flint: bool) -> RunRecord {
        RunRecord {
            round,
            exit_status: 0,
            first_output_us: Some(100_000 * scale + u64::from(round) * 1000),
            exit_us: 150_000 * scale + u64::from(round) * 2000,
            paused_us: 900,
            cpu_user_us: 20_000 * scale,
            cpu_sys_us: 10_000 * scale,
            peak_rss_kib: 30_000 * scale,
            boot_us: flint.then_some(80_000 * scale),
            memory_at_first_output: Some(if vm {
                MemoryRecord::Vmm {
                    total_rss_kib: 40_000,
                    total_pss_kib: 38_000,
                    vmm_rss_kib: Some(10_000),
                    vmm_pss_kib: Some(8_000),
                    guest_rss_kib: Some(30_000),
                    virtiofsd_pss_kib: None,
                }
            } else {
                MemoryRecord::Container {
                    rss_kib: 5_000,
                    pss_kib: 2_500,
                    processes: 2,
                }
            }),
            disk_per_instance_bytes: Some(if vm { 0 } else { 8192 }),
        }
    }

    fn system(scale: u64, vm: bool, cmd: &str) -> SystemReport {
        let flint = cmd == "flint";
        let runs = vec![run(1, scale, vm, flint), run(2, scale, vm, flint)];
        SystemReport {
            command: vec![cmd.into(), "run".into()],
            versions: format!("{cmd} 1.0"),
            disk_shared_bytes: 64 << 20,
            stats: stats_of(&runs),
            runs,
        }
    }

    /// A two-run report for flint, crun and QEMU (flint with one row, keyed "flint", as before
    /// the warm start), with text that needs escaping.
    pub(crate) fn synthetic() -> Report {
        Report {
            benchmark: "startup".into(),
            flint_version: "0.1.0".into(),
            date: "2026-11-22T10:00:00Z".into(),
            environment: Environment {
                label: Some("lab <&> \"quoted\"".into()),
                kernel_release: "6.1.0".into(),
                cpu_model: "Test CPU".into(),
                kvm_module: Some("kvm_amd".into()),
                virtualization: "software emulation: QEMU TCG lab, nested kvm-amd".into(),
            },
            bundle: "/tmp/bundle".into(),
            kernel: Some("/k/vmlinux".into()),
            runs: 2,
            memory_mib: 128,
            cpus: 1,
            timeout_s: 60,
            workload: Workload::new(0, b"hello\n"),
            systems: vec![
                ("flint".into(), system(8, true, "flint")),
                ("crun".into(), system(1, false, "crun")),
                ("qemu".into(), system(10, true, "qemu-system-x86_64")),
            ],
            notes: vec!["a note".into()],
        }
    }

    /// The default four rows, restored first: flint restoring its warm snapshot (no boot time
    /// printed except in round 2), flint booting cold, crun and QEMU.
    pub(crate) fn synthetic_four() -> Report {
        let mut r = synthetic();
        let mut restored = system(2, true, "flint");
        restored.runs[0].boot_us = None;
        restored.disk_shared_bytes = 80 << 20;
        restored.stats = stats_of(&restored.runs);
        let cold = system(8, true, "flint");
        let crun = system(1, false, "crun");
        let qemu = system(10, true, "qemu-system-x86_64");
        r.systems = vec![
            ("flint-restored".into(), restored),
            ("flint-cold".into(), cold),
            ("crun".into(), crun),
            ("qemu".into(), qemu),
        ];
        r
    }

    /// The default four rows and flint with a live root after flint-cold: slower than the cold
    /// boot, no image on disk (the kernel alone), and a virtiofsd of 4000 KiB PSS.
    pub(crate) fn synthetic_five() -> Report {
        let mut r = synthetic_four();
        let mut live = system(12, true, "flint");
        live.disk_shared_bytes = 8 << 20;
        for run in &mut live.runs {
            if let Some(MemoryRecord::Vmm {
                virtiofsd_pss_kib, ..
            }) = &mut run.memory_at_first_output
            {
                *virtiofsd_pss_kib = Some(4_000);
            }
        }
        live.stats = stats_of(&live.runs);
        r.systems.insert(2, ("flint-live".into(), live));
        r
    }

    #[test]
    fn stats_cover_each_metric_a_system_has() {
        let r = synthetic();
        let flint = &r.systems[0].1.stats;
        assert_eq!(flint["first_output_us"].median, 801_500.0);
        assert_eq!(flint["cpu_us"].min, 240_000.0);
        assert!(flint.contains_key("guest_rss_kib"));
        assert!(!flint.contains_key("pss_kib"));
        let crun = &r.systems[1].1.stats;
        assert!(!crun.contains_key("boot_us"));
        assert_eq!(crun["pss_kib"].n, 2);
    }

    #[test]
    fn json_round_trips_and_keeps_the_system_order() {
        let r = synthetic();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "benchmark",
            "flint_version",
            "date",
            "environment",
            "bundle",
            "runs",
            "memory_mib",
            "cpus",
            "systems",
            "notes",
        ] {
            assert!(v.get(field).is_some(), "no {field}");
        }
        assert_eq!(v["benchmark"], "startup");
        assert_eq!(v["environment"]["kvm_module"], "kvm_amd");
        let flint = &v["systems"]["flint"];
        assert_eq!(flint["runs"].as_array().unwrap().len(), 2);
        assert!(flint["stats"]["exit_us"]["p95"].is_number());
        assert!(flint["runs"][0]["memory_at_first_output"]["guest_rss_kib"].is_number());
        assert!(v["systems"]["crun"]["runs"][0]["boot_us"].is_null());
        // In the file, the systems are in the order they ran.
        let (f, c, q) = (
            text.find("\"flint\": {").unwrap(),
            text.find("\"crun\": {").unwrap(),
            text.find("\"qemu\": {").unwrap(),
        );
        assert!(f < c && c < q);
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn markdown_has_a_row_per_metric_and_a_column_per_system() {
        let md = markdown(&synthetic());
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            table[0],
            "| median (min–p95) | flint | crun | QEMU microvm |"
        );
        assert_eq!(table.len(), 2 + TABLE_ROWS);
        for row in &table {
            assert_eq!(row.matches('|').count(), 5, "{row}");
        }
        assert!(md.contains("| launch → first output (ms) | 802 (801–802) | 102 (101–102) |"));
        // Not applicable: a dash.
        assert!(md.contains("| guest boot, flint's boot timer (ms) | 640 | – | – |"));
        assert!(md.contains("| disk per instance (KiB) | 0 | 8.00 | 0 |"));
        assert!(md.contains("Medians relative to crun: first output: flint 7.90×"));
        assert!(md.contains("software emulation: QEMU TCG lab, nested kvm-amd"));
        assert!(md.contains("- a note"));
    }

    #[test]
    fn without_crun_there_are_no_ratios() {
        let mut r = synthetic();
        r.systems.retain(|(k, _)| k != "crun");
        let md = markdown(&r);
        assert!(!md.contains("relative to crun"));
        assert!(md.contains("| median (min–p95) | flint | QEMU microvm |"));
    }

    #[test]
    fn four_systems_in_order_with_display_names() {
        let r = synthetic_four();
        let md = markdown(&r);
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            table[0],
            "| median (min–p95) | flint (restored) | flint (cold boot) | crun | QEMU microvm |"
        );
        assert_eq!(table.len(), 2 + TABLE_ROWS);
        for row in &table {
            assert_eq!(row.matches('|').count(), 6, "{row}");
        }
        assert!(md.contains(
            "| launch → first output (ms) | 202 (201–202) | 802 (801–802) | 102 (101–102) | \
             1002 (1001–1002) |"
        ));
        assert!(md.contains("| disk shared by all instances (MiB) | 80.0 | 64.0 | 64.0 | 64.0 |"));
        let text = serde_json::to_string_pretty(&r).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\": {{")).unwrap();
        assert!(at("flint-restored") < at("flint-cold"));
        assert!(at("flint-cold") < at("crun") && at("crun") < at("qemu"));
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
    }

    #[test]
    fn a_boot_time_is_optional_for_the_restored_row() {
        let mut r = synthetic_four();
        // Printed in one of the two runs: the cell says over how many.
        let md = markdown(&r);
        assert!(
            md.contains(
                "| guest boot, flint's boot timer (ms) | 160 [1 of 2 runs] | 640 | – | – |"
            ),
            "{md}"
        );
        // Printed in none: not applicable, like crun's.
        r.systems[0].1.runs[1].boot_us = None;
        r.systems[0].1.stats = stats_of(&r.systems[0].1.runs);
        assert!(!r.systems[0].1.stats.contains_key("boot_us"));
        let md = markdown(&r);
        assert!(md.contains("| guest boot, flint's boot timer (ms) | – | 640 | – | – |"));
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["systems"]["flint-restored"]["runs"][1]["boot_us"].is_null());
    }

    #[test]
    fn ratios_include_the_restored_row_and_compare_it_with_the_cold_boot() {
        let md = markdown(&synthetic_four());
        // Computed from the medians: first output 201500 / 101500, 801500 / 101500, ...
        assert!(
            md.contains(
                "Medians relative to crun: first output: flint (restored) 1.99×, flint (cold \
                 boot) 7.90×, QEMU microvm 9.87×; exit: flint (restored) 1.98×"
            ),
            "{md}"
        );
        // 201500 / 801500, 303000 / 1203000, 60 / 240 ms, 60000 / 240000 KiB.
        assert!(
            md.contains(
                "Medians of flint (restored) relative to flint (cold boot): first output 0.25×, \
                 exit 0.25×, host CPU 0.25×, peak RSS 0.25×."
            ),
            "{md}"
        );
        // Without the cold row there is nothing to compare the restored one with.
        let mut r = synthetic_four();
        r.systems.retain(|(k, _)| k != "flint-cold");
        assert!(!markdown(&r).contains("relative to flint (cold boot)"));
        assert!(!markdown(&synthetic()).contains("relative to flint (cold boot)"));
        // No live row in the default four.
        assert!(!markdown(&synthetic_four()).contains("flint (live root)"));
    }

    #[test]
    fn the_live_row_is_compared_with_crun_and_the_cold_boot() {
        let r = synthetic_five();
        let md = markdown(&r);
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            table[0],
            "| median (min–p95) | flint (restored) | flint (cold boot) | flint (live root) | crun \
             | QEMU microvm |"
        );
        assert_eq!(table.len(), 2 + TABLE_ROWS);
        // Its shared disk is the kernel alone; its PSS is flint's 8000 KiB and virtiofsd's 4000.
        assert!(md
            .contains("| disk shared by all instances (MiB) | 80.0 | 64.0 | 8.00 | 64.0 | 64.0 |"));
        assert!(
            md.contains(
                "| PSS at first output: VMM / runtime + container (MiB) | 7.81 | 7.81 | 11.7 | \
                 2.44 | 7.81 |"
            ),
            "{md}"
        );
        // 1201500 / 101500.
        assert!(
            md.contains("flint (cold boot) 7.90×, flint (live root) 11.8×, QEMU microvm"),
            "{md}"
        );
        // 1201500 / 801500, 1803000 / 1203000, 360 / 240 ms, 360000 / 240000 KiB.
        assert!(
            md.contains(
                "Medians of flint (live root) relative to flint (cold boot): first output 1.50×, \
                 exit 1.50×, host CPU 1.50×, peak RSS 1.50×."
            ),
            "{md}"
        );
        // The restored row's line is still there, first.
        let restored = md.find("Medians of flint (restored) relative").unwrap();
        assert!(restored < md.find("Medians of flint (live root) relative").unwrap());
        // virtiofsd's part is in the JSON apart, and read back.
        let v = serde_json::to_value(&r).unwrap();
        let live = &v["systems"]["flint-live"];
        assert_eq!(
            live["runs"][0]["memory_at_first_output"]["virtiofsd_pss_kib"],
            4000
        );
        assert_eq!(live["stats"]["vmm_virtiofsd_pss_kib"]["median"], 12000.0);
        assert!(
            v["systems"]["flint-cold"]["runs"][0]["memory_at_first_output"]
                .get("virtiofsd_pss_kib")
                .is_none()
        );
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&text).unwrap(), r);
        // Without the cold row there is nothing to compare it with.
        let mut r = r;
        r.systems.retain(|(k, _)| k != "flint-cold");
        assert!(!markdown(&r).contains("relative to flint (cold boot)"));
    }
}
