//! The benches' charts as standalone SVG, written by hand: [`chart`] draws per group (a system)
//! a bar per series, optionally with a min–p95 whisker, on a shared axis; [`svg`] is the startup
//! chart (per system, the median time to the first output and to the exit).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::environment::Environment;
use super::report::{num, Report};
use super::stats::Stats;
use super::system::display_name;

const WIDTH: f64 = 880.0;
/// Room for the system names on the left ("flint (cold boot)", bold, is the longest).
const LEFT: f64 = 160.0;
/// Room for the value labels past the longest whisker.
const RIGHT: f64 = 90.0;
/// Where the title, environment lines and legend start.
const MARGIN: f64 = 20.0;
const BARS_TOP: f64 = 116.0;
/// About how wide a character of the 12 px font is, to lay out the legend and cut long lines.
const CHAR_W: f64 = 6.8;
const BAR_H: f64 = 18.0;
const BAR_GAP: f64 = 4.0;
const GROUP_GAP: f64 = 22.0;

/// The two series: (stat name, legend, colour).
const SERIES: [(&str, &str, &str); 2] = [
    ("first_output_us", "launch → first output", COLOURS[0]),
    ("exit_us", "launch → exit", COLOURS[1]),
];

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round step for about `target` ticks up to `max`: 1, 2 or 5 × 10^k.
fn tick_step(max: f64, target: f64) -> f64 {
    let raw = (max / target).max(f64::MIN_POSITIVE);
    let pow = 10f64.powf(raw.log10().floor());
    // The tolerance keeps 5.000000000000001 (from 0.05 / 0.01) a 5.
    let f = raw / pow - 1e-9;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow
}

/// A tick value with as many decimals as the step needs (0, 5, 10 — or 0, 0.5, 1.0).
fn tick_label(t: f64, step: f64) -> String {
    // A whole, non-negative number (floor, max 0), and float-to-int `as` saturates.
    #[allow(clippy::cast_possible_truncation)]
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{t:.decimals$}")
}

/// `s` cut to `max` characters, with an ellipsis if cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// One bar of a [`Chart`]: a value, with a min–p95 whisker if it summarises several runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Index into [`Chart::series`].
    pub series: usize,
    /// The metric's key, written as the bar's `data-metric`.
    pub metric: String,
    /// The median (or the one value), in the chart's unit.
    pub value: f64,
    /// (min, p95), in the chart's unit.
    pub range: Option<(f64, f64)>,
}

/// A group of bars: one system.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Written as each bar's `data-system`.
    pub key: String,
    pub name: String,
    pub bars: Vec<Bar>,
}

impl Group {
    /// The group of the system `key`, titled with its display name.
    pub fn of(key: &str, bars: Vec<Bar>) -> Group {
        Group {
            key: key.to_string(),
            name: display_name(key).to_string(),
            bars,
        }
    }
}

/// A bar per metric of `metrics` that `stats` has (series = its index in `metrics`): the
/// median, with a min–p95 whisker, times `scale`.
pub fn stat_bars(stats: &BTreeMap<String, Stats>, metrics: &[&str], scale: f64) -> Vec<Bar> {
    metrics
        .iter()
        .enumerate()
        .filter_map(|(i, metric)| {
            let st = stats.get(*metric)?;
            Some(Bar {
                series: i,
                metric: metric.to_string(),
                value: st.median * scale,
                range: Some((st.min * scale, st.p95 * scale)),
            })
        })
        .collect()
}

/// A horizontal bar chart: per group, one bar per series that has a value, on a shared axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    /// Where it ran, under the title (each cut to the width).
    pub lines: Vec<String>,
    /// (legend, colour) per series.
    pub series: Vec<(String, &'static str)>,
    /// The unit after each value label ("ms", "MiB").
    pub unit: &'static str,
    /// The axis title.
    pub axis: String,
    pub groups: Vec<Group>,
}

/// The colours of the series, in order.
pub const COLOURS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];

/// The chart for `r`.
pub fn svg(r: &Report) -> String {
    let metrics = SERIES.map(|(metric, _, _)| metric);
    let groups = r
        .systems
        .iter()
        .map(|(key, s)| Group::of(key, stat_bars(&s.stats, &metrics, 1e-3)))
        .collect();
    chart(&Chart {
        title: format!(
            "Startup: microVM vs container, {} run{} each",
            r.runs,
            if r.runs == 1 { "" } else { "s" }
        ),
        lines: where_lines(&r.environment, r.memory_mib, r.cpus, &r.date),
        series: SERIES
            .iter()
            .map(|(_, label, colour)| (label.to_string(), *colour))
            .collect(),
        unit: "ms",
        axis: "milliseconds from launch".into(),
        groups,
    })
}

/// A chart's two lines under its title: where it ran (the virtualization first), and the
/// host, the VMs' size and the date.
pub fn where_lines(env: &Environment, memory_mib: u64, cpus: u32, date: &str) -> Vec<String> {
    vec![
        env.summary(),
        format!(
            "Linux {} · {} · VMs: {memory_mib} MiB, {cpus} vCPU · {date}",
            env.kernel_release, env.cpu_model
        ),
    ]
}

/// Draws `c` as a standalone SVG.
pub fn chart(c: &Chart) -> String {
    let max = c
        .groups
        .iter()
        .flat_map(|g| &g.bars)
        .map(|b| b.range.map_or(b.value, |(_, p95)| p95.max(b.value)))
        .fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let step = tick_step(max, 6.0);
    let top = (max / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |v: f64| LEFT + v.max(0.0) / top * plot_w;
    let per_group = c.series.len().max(1) as f64;
    let group_h = per_group * BAR_H + (per_group - 1.0) * BAR_GAP;
    let axis_y = BARS_TOP + c.groups.len() as f64 * (group_h + GROUP_GAP) - GROUP_GAP / 2.0;
    let height = axis_y + 52.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{MARGIN}" y="28" font-size="17" font-weight="bold">{}</text>"#,
        escape(&c.title)
    );
    // Where it ran, cut to the width (the JSON has it all).
    // Constants: a few dozen characters; dropping the fraction is the point.
    #[allow(clippy::cast_possible_truncation)]
    let max_chars = ((WIDTH - 2.0 * MARGIN) / CHAR_W) as usize;
    for (i, line) in c.lines.iter().take(2).enumerate() {
        let _ = writeln!(
            o,
            r##"<text x="{MARGIN}" y="{}" fill="#555">{}</text>"##,
            48.0 + 16.0 * i as f64,
            escape(&shorten(line, max_chars))
        );
    }
    // Legend: the series, then how to read a whisker if there are any.
    let mut lx = MARGIN;
    let ly = 88.0;
    for (label, colour) in &c.series {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 11.0,
            lx + 20.0,
            escape(label)
        );
        lx += 20.0 + label.chars().count() as f64 * CHAR_W + 24.0;
    }
    if c.groups
        .iter()
        .flat_map(|g| &g.bars)
        .any(|b| b.range.is_some())
    {
        let _ = writeln!(
            o,
            r##"<path d="M{lx} {a}V{b}M{lx} {c}H{d}M{d} {a}V{b}" stroke="#222" fill="none"/><text x="{}" y="{ly}">bar: median; whisker: min to p95</text>"##,
            lx + 26.0,
            a = ly - 9.0,
            b = ly + 1.0,
            c = ly - 4.0,
            d = lx + 18.0,
        );
    }
    // Grid and axis.
    // `top` is a whole number of steps (about ten), rounded; float-to-int `as` saturates.
    #[allow(clippy::cast_possible_truncation)]
    let ticks = (top / step).round() as u32;
    for k in 0..=ticks {
        let t = f64::from(k) * step;
        let tx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{axis_y}" stroke="#ddd"/><text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            BARS_TOP - 8.0,
            axis_y + 16.0,
            tick_label(t, step)
        );
    }
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
        x(top)
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        axis_y + 38.0,
        escape(&c.axis)
    );
    // Bars.
    let unit = c.unit;
    for (g, group) in c.groups.iter().enumerate() {
        let gy = BARS_TOP + g as f64 * (group_h + GROUP_GAP);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text>"#,
            LEFT - 10.0,
            gy + group_h / 2.0 + 4.0,
            escape(&group.name)
        );
        for bar in &group.bars {
            let Some((label, colour)) = c.series.get(bar.series) else {
                continue;
            };
            let y = gy + bar.series as f64 * (BAR_H + BAR_GAP);
            let cy = y + BAR_H / 2.0;
            let value = num(bar.value);
            let tip = match bar.range {
                Some((min, p95)) => format!(
                    "{}: {label}: median {value} {unit}, min {} {unit}, p95 {} {unit}",
                    group.name,
                    num(min),
                    num(p95)
                ),
                None => format!("{}: {label}: {value} {unit}", group.name),
            };
            let _ = writeln!(
                o,
                r#"<rect class="bar" data-system="{}" data-metric="{}" x="{LEFT}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{colour}"><title>{}</title></rect>"#,
                escape(&group.key),
                escape(&bar.metric),
                x(bar.value) - LEFT,
                escape(&tip)
            );
            let mut label_x = x(bar.value);
            if let Some((min, p95)) = bar.range {
                let (x0, x1) = (x(min), x(p95));
                let _ = writeln!(
                    o,
                    r##"<path class="whisker" d="M{x0:.1} {cy:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}" stroke="#222" fill="none"/>"##,
                    cy - 5.0,
                    cy + 5.0,
                    cy - 5.0,
                    cy + 5.0
                );
                label_x = label_x.max(x1);
            }
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}">{value} {unit}</text>"#,
                label_x + 6.0,
                cy + 4.0,
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

/// How many bars of the system `key` the chart `text` has, for the tests.
#[cfg(test)]
pub(crate) fn count_bars(text: &str, key: &str) -> usize {
    let doc = roxmltree::Document::parse(text).expect("the chart is XML");
    doc.descendants()
        .filter(|n| n.attribute("class") == Some("bar"))
        .filter(|n| n.attribute("data-system") == Some(key))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::synthetic;

    #[test]
    fn the_chart_is_well_formed_with_two_bars_per_system() {
        let r = synthetic();
        let text = svg(&r);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        for (key, _) in &r.systems {
            let bars: Vec<_> = doc
                .descendants()
                .filter(|n| n.attribute("data-system") == Some(key.as_str()))
                .collect();
            assert_eq!(bars.len(), 2, "{key}");
            for b in bars {
                assert_eq!(b.tag_name().name(), "rect");
                let w: f64 = b.attribute("width").unwrap().parse().unwrap();
                assert!(w > 0.0 && w <= WIDTH - LEFT - RIGHT);
            }
        }
        let texts: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect();
        // The label's markup characters came through escaped and back.
        assert!(texts.contains("lab <&> \"quoted\""));
        assert!(texts.contains("QEMU microvm"));
        assert!(texts.contains("milliseconds"));
        assert_eq!(
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("whisker"))
                .count(),
            6
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(1000.0, 5.0), 200.0);
        assert_eq!(tick_step(1300.0, 6.0), 500.0);
        assert_eq!(tick_step(9.0, 6.0), 2.0);
        assert!((tick_step(0.3, 6.0) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn tick_labels_and_shortening() {
        assert_eq!(tick_label(10.0, 5.0), "10");
        assert_eq!(tick_label(1.5, 0.5), "1.5");
        assert_eq!(tick_label(0.1, 0.05), "0.10");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos; ");
    }

    #[test]
    fn a_system_without_output_times_has_no_bars() {
        let mut r = synthetic();
        r.systems[1].1.stats.clear();
        let text = svg(&r);
        let doc = roxmltree::Document::parse(&text).unwrap();
        assert!(!doc
            .descendants()
            .any(|n| n.attribute("data-system") == Some("crun")));
    }

    /// The systems' group names, in order: bold and right-aligned (the title is bold too, not
    /// aligned).
    fn group_names(text: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(text).unwrap();
        doc.descendants()
            .filter(|n| n.attribute("font-weight") == Some("bold"))
            .filter(|n| n.attribute("text-anchor") == Some("end"))
            .filter_map(|n| n.text())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_live_row_has_its_group_after_the_cold_boot() {
        let r = crate::report::tests::synthetic_five();
        let text = svg(&r);
        let names = group_names(&text);
        assert_eq!(names[1..3], ["flint (cold boot)", "flint (live root)"]);
        assert_eq!(count_bars(&text, "flint-live"), 2);
    }

    #[test]
    fn four_systems_each_have_their_group_in_order() {
        let r = crate::report::tests::synthetic_four();
        let text = svg(&r);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let names = group_names(&text);
        assert_eq!(
            names,
            [
                "flint (restored)",
                "flint (cold boot)",
                "crun",
                "QEMU microvm"
            ]
        );
        // Right-aligned at LEFT - 10: the longest name, a bold one a tenth wider than the
        // estimate, still starts inside the picture.
        for n in &names {
            assert!(
                LEFT - 10.0 - n.chars().count() as f64 * CHAR_W * 1.1 > 0.0,
                "{n}"
            );
        }
        for (key, _) in &r.systems {
            assert_eq!(count_bars(&text, key), 2, "{key}");
        }
        assert_eq!(
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("whisker"))
                .count(),
            8
        );
        // The groups fit: the axis is below the last one.
        let height: f64 = doc
            .root_element()
            .attribute("height")
            .unwrap()
            .parse()
            .unwrap();
        let last_bar_y = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .filter_map(|n| n.attribute("y")?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        assert!(last_bar_y + BAR_H < height - 52.0);
    }
}
