//! The startup chart as a standalone SVG, written by hand: per system, a bar for the median time
//! to the first output and one for the exit, each with a min–p95 whisker, on a shared ms axis.

use std::fmt::Write as _;

use super::report::{num, Report};
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
    ("first_output_us", "launch → first output", "#4e79a7"),
    ("exit_us", "launch → exit", "#f28e2b"),
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

/// The chart for `r`.
pub fn svg(r: &Report) -> String {
    // (system, series index, min, median, p95) in ms.
    let mut bars = Vec::new();
    for (key, s) in &r.systems {
        for (i, (metric, _, _)) in SERIES.iter().enumerate() {
            if let Some(st) = s.stats.get(*metric) {
                bars.push((key.as_str(), i, st.min / 1e3, st.median / 1e3, st.p95 / 1e3));
            }
        }
    }
    let max = bars.iter().map(|b| b.4).fold(0.0, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let step = tick_step(max, 6.0);
    let top = (max / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |ms: f64| LEFT + ms.max(0.0) / top * plot_w;
    let group_h = 2.0 * BAR_H + BAR_GAP;
    let axis_y = BARS_TOP + r.systems.len() as f64 * (group_h + GROUP_GAP) - GROUP_GAP / 2.0;
    let height = axis_y + 52.0;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{MARGIN}" y="28" font-size="17" font-weight="bold">Startup: microVM vs container, {} run{} each</text>"#,
        r.runs,
        if r.runs == 1 { "" } else { "s" }
    );
    // Where it ran, on two lines cut to the width (the JSON has it all).
    // Constants: a few dozen characters; dropping the fraction is the point.
    #[allow(clippy::cast_possible_truncation)]
    let max_chars = ((WIDTH - 2.0 * MARGIN) / CHAR_W) as usize;
    let lines = [
        r.environment.summary(),
        format!(
            "Linux {} · {} · VMs: {} MiB, {} vCPU · {}",
            r.environment.kernel_release, r.environment.cpu_model, r.memory_mib, r.cpus, r.date
        ),
    ];
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(
            o,
            r##"<text x="{MARGIN}" y="{}" fill="#555">{}</text>"##,
            48.0 + 16.0 * i as f64,
            escape(&shorten(line, max_chars))
        );
    }
    // Legend: the two series, then how to read a whisker.
    let mut lx = MARGIN;
    let ly = 88.0;
    for (_, label, colour) in SERIES {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 11.0,
            lx + 20.0,
            escape(label)
        );
        lx += 20.0 + label.chars().count() as f64 * CHAR_W + 24.0;
    }
    let _ = writeln!(
        o,
        r##"<path d="M{lx} {a}V{b}M{lx} {c}H{d}M{d} {a}V{b}" stroke="#222" fill="none"/><text x="{}" y="{ly}">bar: median; whisker: min to p95</text>"##,
        lx + 26.0,
        a = ly - 9.0,
        b = ly + 1.0,
        c = ly - 4.0,
        d = lx + 18.0,
    );
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
        r#"<text x="{}" y="{}" text-anchor="middle">milliseconds from launch</text>"#,
        LEFT + plot_w / 2.0,
        axis_y + 38.0
    );
    // Bars.
    for (g, (key, _)) in r.systems.iter().enumerate() {
        let gy = BARS_TOP + g as f64 * (group_h + GROUP_GAP);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text>"#,
            LEFT - 10.0,
            gy + group_h / 2.0 + 4.0,
            escape(display_name(key))
        );
        for &(_, i, min, median, p95) in bars.iter().filter(|b| b.0 == key) {
            let (metric, label, colour) = SERIES[i];
            let y = gy + i as f64 * (BAR_H + BAR_GAP);
            let cy = y + BAR_H / 2.0;
            let tip = format!(
                "{}: {label}: median {} ms, min {} ms, p95 {} ms",
                display_name(key),
                num(median),
                num(min),
                num(p95)
            );
            let _ = writeln!(
                o,
                r#"<rect class="bar" data-system="{}" data-metric="{metric}" x="{LEFT}" y="{y:.1}" width="{:.1}" height="{BAR_H}" fill="{colour}"><title>{}</title></rect>"#,
                escape(key),
                x(median) - LEFT,
                escape(&tip)
            );
            let (x0, x1) = (x(min), x(p95));
            let _ = writeln!(
                o,
                r##"<path class="whisker" d="M{x0:.1} {cy:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}" stroke="#222" fill="none"/>"##,
                cy - 5.0,
                cy + 5.0,
                cy - 5.0,
                cy + 5.0
            );
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}">{} ms</text>"#,
                x(median).max(x1) + 6.0,
                cy + 4.0,
                num(median)
            );
        }
    }
    o.push_str("</svg>\n");
    o
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

    #[test]
    fn four_systems_each_have_their_group_in_order() {
        let r = crate::report::tests::synthetic_four();
        let text = svg(&r);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let names: Vec<&str> = doc
            .descendants()
            // The group names: bold and right-aligned (the title is bold too, not aligned).
            .filter(|n| n.attribute("font-weight") == Some("bold"))
            .filter(|n| n.attribute("text-anchor") == Some("end"))
            .filter_map(|n| n.text())
            .collect();
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
            let bars = doc
                .descendants()
                .filter(|n| n.attribute("data-system") == Some(key.as_str()))
                .count();
            assert_eq!(bars, 2, "{key}");
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
