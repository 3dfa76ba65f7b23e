//! `flint bench density`: the host memory of N instances of one workload running at once, as
//! crun containers, cold-booted flint VMs, clones of one snapshot of the running workload, and
//! flint's default warm starts (clones of its warm snapshot).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::value_parser;
use serde::{Deserialize, Serialize};

use super::environment::Environment;
use super::live::{Line, Live};
use super::measure::{self, StoppedTree};
use super::report::{self, md_table, num, ordered_map, stats_by_metric};
use super::startup::{guest_sizes, tool};
use super::stats::Stats;
use super::svg::{self, Bar, Chart, Group, COLOURS};
use super::system::{self, describe, display_name, CrunContainer, Setup, System};
use super::workload::{
    self, capture_running, expect_sigterm_exit, ArgsRecord, Capture, CaptureRecord, CommonArgs,
    Prepared,
};
use super::{interrupt, BenchError};

/// How much host memory N instances of one workload take, running at once: crun containers,
/// cold-booted flint VMs, clones of one snapshot, and flint's warm starts.
///
/// Per system, starts N instances, waits until each printed a line, and sums the PSS of every
/// instance's processes (PSS counts a page shared by k processes as 1/k in each, so the sum
/// counts shared pages once); for the VMs, guest RAM apart from the VMM's own. Writes
/// density.json, density.md and density.svg to --out and prints the Markdown table.
#[derive(clap::Args, Debug, Clone)]
pub struct DensityArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Instances running at once, per system.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 4,
          value_parser = value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// The systems, comma-separated, measured one after the other in this order.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "crun,flint-cold,flint-clones,flint-restored"
    )]
    pub systems: Vec<DensitySystem>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DensitySystem {
    /// N `crun run` containers.
    Crun,
    /// N `flint run --oci-bundle --cold`: each boots the kernel.
    FlintCold,
    /// N `flint run --restore DIR` of one snapshot of the running workload.
    FlintClones,
    /// N `flint run --oci-bundle`: warm starts, clones of flint's warm snapshot.
    FlintRestored,
}

impl DensitySystem {
    pub fn key(self) -> &'static str {
        match self {
            DensitySystem::Crun => "crun",
            DensitySystem::FlintCold => "flint-cold",
            DensitySystem::FlintClones => "flint-clones",
            DensitySystem::FlintRestored => "flint-restored",
        }
    }
}

/// The systems named, in order, each once.
pub fn selected(systems: &[DensitySystem]) -> Vec<DensitySystem> {
    let mut v: Vec<DensitySystem> = Vec::new();
    for s in systems {
        if !v.contains(s) {
            v.push(*s);
        }
    }
    v
}

/// Everything one `flint bench density` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityReport {
    /// Always "density".
    pub benchmark: String,
    pub flint_version: String,
    /// UTC ISO-8601, when the bench started.
    pub date: String,
    pub environment: Environment,
    pub args: ArgsRecord,
    /// Instances per system.
    pub instances: u32,
    /// The snapshot the clones restore; `None` without flint-clones.
    pub clone_snapshot: Option<CaptureRecord>,
    /// Per system, in the order measured.
    #[serde(with = "ordered_map")]
    pub systems: Vec<(String, DensityResult)>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityResult {
    /// The first instance's command line.
    pub command: Vec<String>,
    pub versions: String,
    pub instances: Vec<InstanceMemory>,
    /// Sums over the instances.
    pub total_pss_kib: u64,
    pub total_rss_kib: u64,
    /// total_pss_kib / N.
    pub per_instance_pss_kib: f64,
    /// The guest RAM part of total_pss_kib (VMs); `None` for crun, or if some instance's
    /// guest RAM mappings could not be told apart.
    pub guest_pss_kib: Option<u64>,
    /// The rest: the VMMs' own.
    pub vmm_pss_kib: Option<u64>,
    /// per_instance_pss_kib relative to flint-cold's (flint rows only).
    pub per_instance_vs_flint_cold: Option<f64>,
    /// per_instance_pss_kib relative to crun's (flint rows only).
    pub per_instance_vs_crun: Option<f64>,
    /// Over the instances (the [`InstanceMemory`] field names).
    pub stats: BTreeMap<String, Stats>,
}

/// One instance's memory, read with its process tree stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMemory {
    /// 1-based.
    pub instance: u32,
    /// Its processes with memory: flint and what it forked, or crun and the container's.
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// flint's mappings of the guest memory's size.
    pub guest_rss_kib: Option<u64>,
    pub guest_pss_kib: Option<u64>,
    /// pss_kib less guest_pss_kib.
    pub vmm_pss_kib: Option<u64>,
}

impl InstanceMemory {
    fn metrics(&self) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("rss_kib", Some(self.rss_kib)),
            ("pss_kib", Some(self.pss_kib)),
            ("guest_rss_kib", self.guest_rss_kib),
            ("guest_pss_kib", self.guest_pss_kib),
            ("vmm_pss_kib", self.vmm_pss_kib),
        ]
    }
}

/// Reads the memory of each instance (its process tree from `roots[i]`), all of them held
/// stopped meanwhile so the picture is consistent. `guest_sizes`: the VMs' guest RAM mapping
/// sizes, to split guest RAM from the VMM's own. `None` for an instance whose root has no
/// memory left (it ended).
pub fn sample(roots: &[i32], guest_sizes: Option<&[u64]>) -> Vec<Option<InstanceMemory>> {
    let stopped: Vec<StoppedTree> = roots.iter().map(|&r| StoppedTree::stop(r)).collect();
    let mut out = Vec::new();
    for (instance, tree) in (1..).zip(&stopped) {
        let pids = tree.pids();
        let root = pids
            .first()
            .and_then(|&p| measure::read_smaps(p))
            .filter(|m| !m.is_empty());
        out.push(root.map(|root| {
            let rest = measure::sum_smaps(&pids[1..]);
            let split = guest_sizes.map(|sizes| measure::split_guest(&root, sizes));
            let pss_kib = split
                .map_or_else(|| root.iter().map(|m| m.pss_kib).sum(), |s| s.total_pss_kib)
                + rest.pss_kib;
            let guest = split.and_then(|s| {
                s.guest
                    .map(|g| (g.guest_rss_kib, s.total_pss_kib - g.vmm_pss_kib))
            });
            InstanceMemory {
                instance,
                processes: 1 + rest.processes,
                rss_kib: root.iter().map(|m| m.rss_kib).sum::<u64>() + rest.rss_kib,
                pss_kib,
                guest_rss_kib: guest.map(|g| g.0),
                guest_pss_kib: guest.map(|g| g.1),
                vmm_pss_kib: guest.map(|g| pss_kib - g.1),
            }
        }));
    }
    drop(stopped);
    out
}

/// Sums the instances into a system's result (ratios filled in later by [`fill_ratios`]).
pub fn summarise(
    command: Vec<String>,
    versions: String,
    instances: Vec<InstanceMemory>,
) -> DensityResult {
    let total_pss_kib = instances.iter().map(|m| m.pss_kib).sum();
    let guest: Option<u64> = instances.iter().map(|m| m.guest_pss_kib).sum();
    DensityResult {
        command,
        versions,
        total_rss_kib: instances.iter().map(|m| m.rss_kib).sum(),
        per_instance_pss_kib: total_pss_kib as f64 / instances.len().max(1) as f64,
        guest_pss_kib: guest,
        vmm_pss_kib: guest.map(|g| total_pss_kib - g),
        total_pss_kib,
        per_instance_vs_flint_cold: None,
        per_instance_vs_crun: None,
        stats: stats_by_metric(instances.iter().map(InstanceMemory::metrics)),
        instances,
    }
}

/// Each flint row's per-instance PSS relative to flint-cold's and crun's.
pub fn fill_ratios(systems: &mut [(String, DensityResult)]) {
    let base = |key: &str| {
        systems
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.per_instance_pss_kib)
            .filter(|v| *v > 0.0)
    };
    let (cold, crun) = (base("flint-cold"), base("crun"));
    for (_, r) in systems.iter_mut().filter(|(k, _)| k.starts_with("flint")) {
        r.per_instance_vs_flint_cold = cold.map(|c| r.per_instance_pss_kib / c);
        r.per_instance_vs_crun = crun.map(|c| r.per_instance_pss_kib / c);
    }
}

/// The goal for clones: each extra one at most this share of a cold VM.
const CLONE_GOAL: f64 = 0.25;

const MIB: f64 = 1024.0;

/// The Markdown report.
pub fn markdown(r: &DensityReport) -> String {
    let n = r.instances;
    let mut md =
        format!("## flint bench density: {n} instances of one workload running at once\n\n");
    let _ = writeln!(md, "{}  ", report::ran_on(&r.environment));
    let _ = writeln!(
        md,
        "Bundle `{}`, {n} instance{} per system, {}; VMs: {} MiB, {} vCPU{}.\n",
        r.args.bundle,
        if n == 1 { "" } else { "s" },
        r.date,
        r.args.memory_mib,
        r.args.cpus,
        if r.args.cpus == 1 { "" } else { "s" },
    );
    let header: Vec<String> = std::iter::once(format!("host memory, {n} running at once"))
        .chain(r.systems.iter().map(|(k, _)| display_name(k).to_string()))
        .collect();
    let per =
        move |v: Option<u64>| v.map_or("–".to_string(), |v| num(v as f64 / f64::from(n) / MIB));
    let ratio = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{}×", num(v)));
    type Cell = dyn Fn(&DensityResult) -> String;
    let rows: [(&str, Box<Cell>); 6] = [
        (
            "sum of PSS (MiB)",
            Box::new(|s| num(s.total_pss_kib as f64 / MIB)),
        ),
        (
            "per instance: sum / N (MiB)",
            Box::new(|s| num(s.per_instance_pss_kib / MIB)),
        ),
        (
            "per instance: guest RAM (MiB)",
            Box::new(move |s| per(s.guest_pss_kib)),
        ),
        (
            "per instance: the VMM's own (MiB)",
            Box::new(move |s| per(s.vmm_pss_kib)),
        ),
        (
            "per instance relative to flint (cold boot)",
            Box::new(move |s| ratio(s.per_instance_vs_flint_cold)),
        ),
        (
            "per instance relative to crun",
            Box::new(move |s| ratio(s.per_instance_vs_crun)),
        ),
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, cell)| {
            std::iter::once(label.to_string())
                .chain(r.systems.iter().map(|(_, s)| cell(s)))
                .collect()
        })
        .collect();
    md.push_str(&md_table(&header, &table));
    if let Some((_, clones)) = r.systems.iter().find(|(k, _)| k == "flint-clones") {
        if let Some(x) = clones.per_instance_vs_flint_cold {
            let _ = writeln!(
                md,
                "\nGoal, each extra clone at most {:.0} % of a cold VM: {} per instance is {}× \
                 {}'s: {}.",
                CLONE_GOAL * 100.0,
                display_name("flint-clones"),
                num(x),
                display_name("flint-cold"),
                if x <= CLONE_GOAL { "met" } else { "not met" }
            );
        }
    }
    if !r.notes.is_empty() {
        md.push_str("\nNotes:\n\n");
        for note in &r.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    md
}

/// The chart: per system, PSS per instance and all N together.
pub fn chart(r: &DensityReport) -> String {
    let series = [
        "per instance (sum of PSS / N)".to_string(),
        format!("all {} together (sum of PSS)", r.instances),
    ];
    let groups = r
        .systems
        .iter()
        .map(|(k, s)| {
            let bars = [
                ("per_instance_pss_kib", s.per_instance_pss_kib),
                ("total_pss_kib", s.total_pss_kib as f64),
            ]
            .iter()
            .enumerate()
            .map(|(i, (metric, kib))| Bar {
                series: i,
                metric: metric.to_string(),
                value: kib / MIB,
                range: None,
            })
            .collect();
            Group::of(k, bars)
        })
        .collect();
    svg::chart(&Chart {
        title: format!(
            "Density: host memory of {} instances running at once",
            r.instances
        ),
        lines: svg::where_lines(&r.environment, r.args.memory_mib, r.args.cpus, &r.date),
        series: series.into_iter().zip(COLOURS).collect(),
        unit: "MiB",
        axis: "MiB of host memory (sum of PSS)".into(),
        groups,
    })
}

/// The command that starts instance `i` of `system`.
fn command(
    setup: &Setup,
    system: DensitySystem,
    i: u32,
    clones_of: Option<&Capture>,
) -> Result<std::process::Command, BenchError> {
    Ok(match system {
        DensitySystem::Crun => setup.command(System::Crun, i)?,
        DensitySystem::FlintCold => setup.command(System::FlintCold, i)?,
        DensitySystem::FlintRestored => setup.command(System::FlintRestored, i)?,
        DensitySystem::FlintClones => clones_of
            .ok_or(BenchError::Internal {
                what: "no snapshot for the clones",
            })?
            .restore_command(setup),
    })
}

/// Starts N instances of `system`, waits for a line from each, reads their memory, and stops
/// them all.
fn measure_system(
    p: &Prepared,
    system: DensitySystem,
    n: u32,
    clones_of: Option<&Capture>,
) -> Result<DensityResult, BenchError> {
    let key = system.key();
    let crun = system == DensitySystem::Crun;
    // Declared before the containers: dropped after them (crun deletes its containers first).
    let mut lives: Vec<Live> = Vec::new();
    let mut containers: Vec<CrunContainer> = Vec::new();
    let mut first_command = Vec::new();
    for i in 1..=n {
        let cmd = command(&p.setup, system, i, clones_of)?;
        if i == 1 {
            first_command = describe(&cmd);
        }
        if crun {
            containers.push(CrunContainer {
                crun: &p.setup.crun,
                id: Setup::crun_id(i),
            });
        }
        lives.push(Live::spawn(format!("density {key} instance {i}"), cmd)?);
    }
    for (i, live) in (1..).zip(lives.iter_mut()) {
        let waited = live.wait_for(p.timeout, "complete line", |l: &[Line]| !l.is_empty());
        if let Err(e) = waited {
            return Err(with_crun_log(e, crun.then(|| p.setup.crun_log(i))));
        }
    }
    let roots: Vec<i32> = lives.iter().map(Live::pid).collect();
    let sizes = (!crun).then(|| guest_sizes(System::FlintCold, p.setup.memory_mib));
    let mut instances = Vec::new();
    for (live, m) in lives.iter().zip(sample(&roots, sizes.as_deref())) {
        instances.push(m.ok_or_else(|| live.error("it ended before its memory was read"))?);
    }
    if crun {
        for c in &containers {
            c.kill();
        }
        for live in &mut lives {
            live.wait_exit(p.timeout)?;
        }
    } else {
        for live in &lives {
            live.signal(libc::SIGTERM);
        }
        for live in &mut lives {
            let exit = live.wait_exit(p.timeout)?;
            expect_sigterm_exit(live, exit)?;
        }
    }
    let versions = if crun {
        system::version(&p.setup.crun, 2)
    } else {
        format!("flint {}", env!("CARGO_PKG_VERSION"))
    };
    Ok(summarise(first_command, versions, instances))
}

/// `e` with crun's own errors from `log` added, if it has any.
fn with_crun_log(e: BenchError, log: Option<std::path::PathBuf>) -> BenchError {
    let errors = log
        .and_then(|l| std::fs::read_to_string(l).ok())
        .map(|t| system::crun_errors(&t))
        .unwrap_or_default();
    match e {
        BenchError::Step { step, what, stderr } if !errors.is_empty() => BenchError::Step {
            step,
            what: format!("{what}; crun's log says: {}", errors.join("; ")),
            stderr,
        },
        e => e,
    }
}

fn notes(systems: &[DensitySystem], n: u32, warm_up_ms: Option<f64>) -> Vec<String> {
    let mut notes = vec![
        format!(
            "For each system in turn the bench started {n} instances at once, waited until \
             each had printed a complete line, then stopped every instance's process tree \
             (SIGSTOP), read each process's /proc/PID/smaps (Pss, Rss) and continued them; \
             then it stopped them all (SIGTERM to flint, which must exit 143; `crun kill ID \
             KILL` and `crun delete -f ID` for crun) before the next system."
        ),
        "PSS counts a page shared by k processes as 1/k in each, so the sum over all \
         instances counts every shared page once: it is the host memory the instances use \
         together (page cache that no process maps is not in it). Per instance is sum / N, \
         which carries 1/N of the shared pages: one more instance costs less than that."
            .into(),
        "An instance is its process and all its descendants: flint and any process it forked; \
         crun and the container's processes. For the VMs, guest RAM is the PSS of flint's \
         mappings of the guest memory's size, and the VMM's own is the rest of the instance's \
         PSS."
            .into(),
    ];
    let mut kinds = Vec::new();
    for s in systems {
        kinds.push(match s {
            DensitySystem::Crun => "crun is `crun run --bundle B ID` per instance, each a child \
                                    of the bench with stdout piped"
                .to_string(),
            DensitySystem::FlintCold => format!(
                "{} is `flint run --oci-bundle --cold`: each boots the kernel",
                display_name("flint-cold")
            ),
            DensitySystem::FlintClones => format!(
                "{} is `flint run --restore DIR` of one snapshot, taken once before (the \
                 workload warm-started with --api-sock, `PUT /snapshot/create \
                 {{\"stop\":true}}` after its third line; see clone_snapshot in the JSON): \
                 every clone maps its memory file copy-on-write and shares its pages through \
                 the page cache",
                display_name("flint-clones")
            ),
            DensitySystem::FlintRestored => format!(
                "{} is `flint run --oci-bundle`, flint's default warm start: clones of flint's \
                 warm snapshot of the booted kernel and init, each given the bundle",
                display_name("flint-restored")
            ),
        });
    }
    notes.push(format!("{}.", kinds.join("; ")));
    if let Some(ms) = warm_up_ms {
        notes.push(format!(
            "Before the first flint system, one untimed `flint run --oci-bundle` (stopped \
             after its first line, {ms:.1} ms in) made flint's warm snapshot in the bench's \
             own image cache; it is not in the results."
        ));
    }
    if systems.contains(&DensitySystem::FlintClones) {
        notes.push(format!(
            "The issue's goal for clones: each extra clone at most {:.0} % of a cold VM's \
             memory, read here as the clones' per-instance PSS relative to {}'s.",
            CLONE_GOAL * 100.0,
            display_name("flint-cold")
        ));
    }
    notes
}

/// Runs the benchmark; writes density.json, density.md and density.svg to --out, prints the
/// Markdown on stdout (and a progress line per system on stderr), and returns the report.
pub fn density(args: &DensityArgs) -> Result<DensityReport, BenchError> {
    let systems = selected(&args.systems);
    if systems.is_empty() {
        return Err(BenchError::Usage(
            "--systems: name at least one of crun, flint-cold, flint-clones, flint-restored".into(),
        ));
    }
    // From here until the end, Ctrl-C stops the bench through its cleanup.
    let _signals = interrupt::Catch::install();
    let has_crun = systems.contains(&DensitySystem::Crun);
    let crun = if has_crun {
        tool(&args.common.crun, "--crun", "apt-get install crun")?
    } else {
        args.common.crun.clone()
    };
    let p = workload::prepare(&args.common, crun)?;
    let mut notes_before = Vec::new();
    if has_crun {
        if let Some(note) = system::ensure_cgroup2()? {
            notes_before.push(note);
        }
    }
    let warm = systems
        .iter()
        .any(|s| matches!(s, DensitySystem::FlintClones | DensitySystem::FlintRestored));
    let warm_up_ms = if warm {
        let d = workload::warm_up(&p)?;
        eprintln!(
            "flint bench density: warm-up: first line after {:.1} ms (not counted)",
            d.as_secs_f64() * 1e3
        );
        Some(d.as_secs_f64() * 1e3)
    } else {
        None
    };
    let clones_of = if systems.contains(&DensitySystem::FlintClones) {
        Some(capture_running(
            &p,
            "density: the clones' snapshot",
            &p.workdir.0.join("api.sock"),
            &p.workdir.0.join("clone-snapshot"),
        )?)
    } else {
        None
    };
    let mut results = Vec::new();
    for &s in &systems {
        let r = measure_system(&p, s, args.instances, clones_of.as_ref())?;
        eprintln!(
            "flint bench density: {}: {} instances, sum of PSS {:.1} MiB ({:.1} MiB each)",
            s.key(),
            args.instances,
            r.total_pss_kib as f64 / MIB,
            r.per_instance_pss_kib / MIB
        );
        results.push((s.key().to_string(), r));
    }
    fill_ratios(&mut results);
    let mut notes = notes_before;
    notes.extend(self::notes(&systems, args.instances, warm_up_ms));
    let report = DensityReport {
        benchmark: "density".into(),
        flint_version: env!("CARGO_PKG_VERSION").into(),
        date: p.date.clone(),
        environment: p.environment.clone(),
        args: p.args.clone(),
        instances: args.instances,
        clone_snapshot: clones_of.map(|c| c.record),
        systems: results,
        notes,
    };
    let md = markdown(&report);
    super::startup::write_outputs("density", &report, &md, &chart(&report), &args.common.out)?;
    print!("{md}");
    drop(p);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::test_support::{args, json, lab};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn parse(args: &[&str]) -> Result<DensityArgs, clap::Error> {
        crate::parse_args(args)
    }

    #[test]
    fn arguments_and_their_defaults() {
        use DensitySystem as D;
        let a = parse(&["--bundle", "b"]).unwrap();
        assert_eq!(a.instances, 4);
        assert_eq!(
            selected(&a.systems),
            [D::Crun, D::FlintCold, D::FlintClones, D::FlintRestored]
        );
        assert_eq!(a.common.timeout, 120);
        let a = parse(&[
            "--bundle",
            "b",
            "-n",
            "2",
            "--systems",
            "flint-clones,flint-cold,flint-clones",
        ])
        .unwrap();
        assert_eq!(a.instances, 2);
        assert_eq!(selected(&a.systems), [D::FlintClones, D::FlintCold]);
        assert!(parse(&["--bundle", "b", "-n", "0"]).is_err());
        assert!(parse(&["--bundle", "b", "-n", "65"]).is_err());
        assert!(parse(&["--bundle", "b", "--systems", "docker"]).is_err());
        assert!(parse(&["-n", "2"]).is_err());
        let keys: Vec<&str> = [D::Crun, D::FlintCold, D::FlintClones, D::FlintRestored]
            .iter()
            .map(|s| s.key())
            .collect();
        assert_eq!(
            keys,
            ["crun", "flint-cold", "flint-clones", "flint-restored"]
        );
    }

    #[test]
    fn every_process_of_each_instance_is_counted() {
        // Two "instances", each a shell with a child.
        let mut kids: Vec<_> = (0..2)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "sleep 5 & wait"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let roots: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while roots.iter().any(|&r| measure::process_tree(r).len() < 2) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let samples = sample(&roots, None);
        let trees: Vec<Vec<i32>> = roots.iter().map(|&r| measure::process_tree(r)).collect();
        for tree in &trees {
            for &p in tree {
                // SAFETY: our children and theirs.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        for k in &mut kids {
            let _ = k.wait();
        }
        assert_eq!(samples.len(), 2);
        for (i, s) in (1..).zip(&samples) {
            let s = s.as_ref().unwrap();
            assert_eq!(s.instance, i);
            assert_eq!(s.processes, 2);
            assert!(s.pss_kib > 0 && s.rss_kib >= s.pss_kib);
            assert_eq!(
                (s.guest_rss_kib, s.guest_pss_kib, s.vmm_pss_kib),
                (None, None, None)
            );
        }
        // A process that is gone has no sample.
        assert_eq!(sample(&[roots[0]], None), [None]);
    }

    fn instance(i: u32, pss: u64, guest: Option<u64>) -> InstanceMemory {
        InstanceMemory {
            instance: i,
            processes: 1,
            rss_kib: pss * 2,
            pss_kib: pss,
            guest_rss_kib: guest.map(|g| g * 2),
            guest_pss_kib: guest,
            vmm_pss_kib: guest.map(|g| pss - g),
        }
    }

    fn result(per: u64, guest: Option<u64>) -> DensityResult {
        summarise(
            vec!["x".into()],
            "v".into(),
            (1..=4).map(|i| instance(i, per, guest)).collect(),
        )
    }

    fn synthetic(with_crun: bool) -> DensityReport {
        let mut systems = vec![
            ("flint-cold".to_string(), result(27 * 1024, Some(24 * 1024))),
            (
                "flint-clones".to_string(),
                result(3 * 1024 + 512, Some(1024)),
            ),
            ("flint-restored".to_string(), result(5 * 1024, Some(2048))),
        ];
        if with_crun {
            systems.insert(0, ("crun".to_string(), result(2 * 1024, None)));
        }
        fill_ratios(&mut systems);
        let kinds: Vec<DensitySystem> = if with_crun {
            vec![
                DensitySystem::Crun,
                DensitySystem::FlintCold,
                DensitySystem::FlintClones,
            ]
        } else {
            vec![DensitySystem::FlintCold, DensitySystem::FlintClones]
        };
        DensityReport {
            benchmark: "density".into(),
            flint_version: "0.1.0".into(),
            date: "2026-12-08T10:00:00Z".into(),
            environment: lab(),
            args: args(),
            instances: 4,
            clone_snapshot: None,
            systems,
            notes: notes(&kinds, 4, Some(900.0)),
        }
    }

    #[test]
    fn sums_per_instance_and_ratios() {
        let r = synthetic(true);
        let cold = &r.systems[1].1;
        assert_eq!(cold.total_pss_kib, 4 * 27 * 1024);
        assert_eq!(cold.per_instance_pss_kib, 27.0 * 1024.0);
        assert_eq!(cold.guest_pss_kib, Some(4 * 24 * 1024));
        assert_eq!(cold.vmm_pss_kib, Some(4 * 3 * 1024));
        assert_eq!(cold.stats["pss_kib"].n, 4);
        assert_eq!(cold.per_instance_vs_flint_cold, Some(1.0));
        let clones = &r.systems[2].1;
        assert_eq!(clones.per_instance_vs_flint_cold, Some(3.5 / 27.0));
        assert_eq!(clones.per_instance_vs_crun, Some(1.75));
        // Only flint rows get ratios.
        assert_eq!(r.systems[0].1.per_instance_vs_crun, None);
        assert_eq!(r.systems[0].1.guest_pss_kib, None);
        // One instance without a split: no split for the system.
        let mixed = summarise(
            vec![],
            "v".into(),
            vec![instance(1, 10, Some(5)), instance(2, 10, None)],
        );
        assert_eq!((mixed.guest_pss_kib, mixed.vmm_pss_kib), (None, None));
    }

    #[test]
    fn the_table_has_every_system_and_the_goal() {
        let md = markdown(&synthetic(true));
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            table[0],
            "| host memory, 4 running at once | crun | flint (cold boot) | flint (clones of one \
             snapshot) | flint (restored) |"
        );
        assert_eq!(table.len(), 8);
        for row in &table {
            assert_eq!(row.matches('|').count(), 6, "{row}");
        }
        assert!(
            md.contains("| sum of PSS (MiB) | 8.00 | 108 | 14.0 | 20.0 |"),
            "{md}"
        );
        assert!(md.contains("| per instance: sum / N (MiB) | 2.00 | 27.0 | 3.50 | 5.00 |"));
        assert!(md.contains("| per instance: guest RAM (MiB) | – | 24.0 | 1.00 | 2.00 |"));
        assert!(md.contains("| per instance: the VMM's own (MiB) | – | 3.00 | 2.50 | 3.00 |"));
        assert!(md.contains(
            "| per instance relative to flint (cold boot) | – | 1.00× | 0.13× | 0.19× |"
        ));
        assert!(md.contains("| per instance relative to crun | – | 13.5× | 1.75× | 2.50× |"));
        assert!(md.contains(
            "Goal, each extra clone at most 25 % of a cold VM: flint (clones of one snapshot) \
             per instance is 0.13× flint (cold boot)'s: met."
        ));
        assert!(md.contains("- PSS counts a page shared by k processes as 1/k in each"));
        assert!(md.contains("software emulation"));
    }

    #[test]
    fn without_crun_there_is_no_crun_column_or_ratio() {
        let md = markdown(&synthetic(false));
        assert!(md.contains(
            "| host memory, 4 running at once | flint (cold boot) | flint (clones of one \
             snapshot) | flint (restored) |"
        ));
        assert!(md.contains("| per instance relative to crun | – | – | – |"));
        assert!(!md.contains("crun is `crun run"));
    }

    #[test]
    fn the_json_keeps_the_order_and_every_instance() {
        let r = synthetic(true);
        let (text, v) = json(&r, "density", &["instances", "clone_snapshot"]);
        let clones = &v["systems"]["flint-clones"];
        assert_eq!(clones["instances"].as_array().unwrap().len(), 4);
        assert_eq!(clones["instances"][3]["instance"], 4);
        assert!(clones["per_instance_vs_flint_cold"].is_number());
        assert!(v["systems"]["crun"]["guest_pss_kib"].is_null());
        let at = |k: &str| text.find(&format!("\"{k}\": {{")).unwrap();
        assert!(at("crun") < at("flint-cold") && at("flint-cold") < at("flint-clones"));
        // It reads back (floats to within their last digit: serde_json parses them fast, not
        // exactly).
        let back: DensityReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.systems.len(), r.systems.len());
        assert_eq!(back.systems[2].1.instances, r.systems[2].1.instances);
        let (a, b) = (
            back.systems[2].1.per_instance_vs_flint_cold.unwrap(),
            r.systems[2].1.per_instance_vs_flint_cold.unwrap(),
        );
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn the_chart_has_two_bars_per_system() {
        let r = synthetic(true);
        let text = chart(&r);
        for (key, _) in &r.systems {
            assert_eq!(crate::svg::count_bars(&text, key), 2, "{key}");
        }
        assert!(!text.contains("whisker"));
        assert!(text.contains("108 MiB"));
    }
}
