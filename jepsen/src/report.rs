//! The HTML report of a run: verdicts, then three inline SVG plots sharing
//! one time axis, with the nemesis windows shaded behind each:
//!
//! - **timeline**: one lane per client (processes that never overlap share a
//!   lane, so a client that got a fresh process id after an `info` stays on
//!   its lane), one bar per operation from invocation to completion,
//!   green `ok`, red `fail`, orange `info`;
//! - **latency**: every completed operation at its invocation time, latency
//!   on a log scale;
//! - **throughput**: completions per second by outcome.
//!
//! Pure: it turns a history, a nemesis log and a summary into a string.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::history::{History, Operation, Outcome};
use crate::recorder::{NemesisPhase, NemesisRecord};
use crate::verdict::Summary;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 60.0;
const MAX_BARS: usize = 30_000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "#2ca02c",
        Outcome::Fail => "#d62728",
        Outcome::Info => "#ff9900",
    }
}

fn fault_colour(fault: &str) -> &'static str {
    match fault {
        "partition" => "#9467bd",
        "kill" => "#d62728",
        "pause" => "#1f77b4",
        "membership" => "#8c564b",
        "compaction" => "#7f7f7f",
        _ => "#bcbd22",
    }
}

/// A fault's window: `(start ns, end ns, fault, description)`.
pub type Window = (u64, u64, String, String);

/// Pairs start and stop records into windows (a start without stop lasts
/// to `end`).
pub fn windows(nemesis: &[NemesisRecord], end: u64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut open: Option<&NemesisRecord> = None;
    for r in nemesis {
        match r.phase {
            NemesisPhase::Start => {
                if let Some(s) = open.take() {
                    out.push((s.time, r.time, s.fault.clone(), s.description.clone()));
                }
                open = Some(r);
            }
            NemesisPhase::Stop => {
                if let Some(s) = open.take() {
                    out.push((
                        s.time,
                        r.time.max(s.time),
                        s.fault.clone(),
                        s.description.clone(),
                    ));
                }
            }
        }
    }
    if let Some(s) = open {
        out.push((
            s.time,
            end.max(s.time),
            s.fault.clone(),
            s.description.clone(),
        ));
    }
    out
}

/// Lanes: processes that never overlap in time share one.
fn lanes(ops: &[Operation], end: u64) -> (BTreeMap<u64, usize>, usize) {
    let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for op in ops {
        let e = spans
            .entry(op.process)
            .or_insert((op.invoke_time, op.invoke_time));
        e.0 = e.0.min(op.invoke_time);
        e.1 = e.1.max(op.complete_time.unwrap_or(end));
    }
    let mut order: Vec<(u64, (u64, u64))> = spans.into_iter().collect();
    order.sort_by_key(|&(p, (s, _))| (s, p));
    let mut lane_end: Vec<u64> = Vec::new();
    let mut map = BTreeMap::new();
    for (p, (s, e)) in order {
        let lane = match lane_end.iter().position(|&le| le < s) {
            Some(l) => l,
            None => {
                lane_end.push(0);
                lane_end.len() - 1
            }
        };
        lane_end[lane] = e;
        map.insert(p, lane);
    }
    (map, lane_end.len())
}

struct Axis {
    end: u64,
}

impl Axis {
    fn x(&self, t: u64) -> f64 {
        LEFT + (t as f64 / self.end.max(1) as f64) * (WIDTH - LEFT - 10.0)
    }

    fn ticks(&self, svg: &mut String, top: f64, bottom: f64) {
        let secs = self.end as f64 / 1e9;
        let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0]
            .into_iter()
            .find(|s| secs / s <= 12.0)
            .unwrap_or(600.0);
        let mut t = 0.0;
        while t <= secs {
            let x = self.x((t * 1e9) as u64);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{}" font-size="10" text-anchor="middle">{t}s</text>"##,
                bottom + 12.0
            );
            t += step;
        }
    }

    fn shade(&self, svg: &mut String, windows: &[Window], top: f64, bottom: f64, labels: bool) {
        for (s, e, fault, desc) in windows {
            let (x1, x2) = (self.x(*s), self.x(*e));
            let _ = write!(
                svg,
                r#"<rect x="{x1:.1}" y="{top}" width="{:.1}" height="{}" fill="{}" fill-opacity="0.2"><title>{}</title></rect>"#,
                (x2 - x1).max(1.0),
                bottom - top,
                fault_colour(fault),
                esc(&format!("{fault}: {desc}"))
            );
            if labels {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{}" font-size="9" fill="{}">{}</text>"#,
                    x1 + 2.0,
                    top + 9.0,
                    fault_colour(fault),
                    esc(fault)
                );
            }
        }
    }
}

fn timeline(ops: &[Operation], windows: &[Window], axis: &Axis) -> String {
    let (lane_of, n_lanes) = lanes(ops, axis.end);
    let lane_h = (400.0 / n_lanes.max(1) as f64).clamp(3.0, 14.0);
    let top = 27.0;
    let bottom = top + lane_h * n_lanes as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}">"#,
        bottom + 20.0
    );
    axis.ticks(&mut svg, top, bottom);
    let stride = ops.len().div_ceil(MAX_BARS).max(1);
    let titles = ops.len() <= 5000;
    for op in ops.iter().step_by(stride) {
        let lane = lane_of.get(&op.process).copied().unwrap_or(0);
        let y = top + lane as f64 * lane_h;
        let x1 = axis.x(op.invoke_time);
        let x2 = axis.x(op.complete_time.unwrap_or(axis.end));
        let _ = write!(
            svg,
            r#"<rect x="{x1:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}">"#,
            (x2 - x1).max(0.8),
            (lane_h - 1.0).max(1.0),
            colour(op.outcome)
        );
        if titles {
            let result = op
                .completion
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok())
                .unwrap_or_default();
            let _ = write!(
                svg,
                "<title>{}</title>",
                esc(&format!(
                    "p{} {} {} {:?} {} {}",
                    op.process,
                    op.key.as_deref().unwrap_or(""),
                    op.f(),
                    op.outcome,
                    result,
                    op.error.as_deref().unwrap_or("")
                ))
            );
        }
        svg.push_str("</rect>");
    }
    // Over the bars: dense bars would hide it underneath.
    axis.shade(&mut svg, windows, top - 12.0, bottom, true);
    let _ = write!(
        svg,
        r#"<text x="2" y="{}" font-size="10">{n_lanes} clients</text></svg>"#,
        top + 10.0
    );
    svg
}

fn latency(ops: &[Operation], windows: &[Window], axis: &Axis) -> String {
    let (top, bottom) = (10.0, 260.0);
    let points: Vec<(u64, f64, Outcome)> = ops
        .iter()
        .filter_map(|op| {
            let c = op.complete_time?;
            Some((
                op.invoke_time,
                (c.saturating_sub(op.invoke_time) as f64 / 1e6).max(0.01),
                op.outcome,
            ))
        })
        .collect();
    let max = points.iter().map(|p| p.1).fold(1.0_f64, f64::max);
    let (lo, hi) = (0.1_f64.log10(), max.log10().ceil().max(1.0));
    let y = |ms: f64| bottom - (ms.max(0.1).log10() - lo) / (hi - lo) * (bottom - top);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}">"#,
        bottom + 20.0
    );
    axis.ticks(&mut svg, top, bottom);
    axis.shade(&mut svg, windows, top, bottom, false);
    let mut decade = lo.ceil() as i32;
    while f64::from(decade) <= hi {
        let ms = 10f64.powi(decade);
        let yy = y(ms);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{WIDTH}" y2="{yy:.1}" stroke="#eee"/><text x="2" y="{:.1}" font-size="10">{ms} ms</text>"##,
            yy + 3.0
        );
        decade += 1;
    }
    let stride = points.len().div_ceil(MAX_BARS).max(1);
    for (t, ms, outcome) in points.iter().step_by(stride) {
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{}" fill-opacity="0.6"/>"#,
            axis.x(*t),
            y(*ms),
            colour(*outcome)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn throughput(ops: &[Operation], windows: &[Window], axis: &Axis) -> String {
    let (top, bottom) = (10.0, 200.0);
    let buckets = (axis.end / 1_000_000_000 + 1) as usize;
    let mut counts = vec![[0u64; 3]; buckets];
    for op in ops {
        let Some(c) = op.complete_time else { continue };
        let b = ((c / 1_000_000_000) as usize).min(buckets - 1);
        let k = match op.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info => 2,
        };
        counts[b][k] += 1;
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}">"#,
        bottom + 20.0
    );
    axis.ticks(&mut svg, top, bottom);
    axis.shade(&mut svg, windows, top, bottom, false);
    let _ = write!(
        svg,
        r#"<text x="2" y="{}" font-size="10">{max} /s</text><text x="2" y="{bottom}" font-size="10">0</text>"#,
        top + 8.0
    );
    for (k, outcome) in [Outcome::Ok, Outcome::Fail, Outcome::Info]
        .into_iter()
        .enumerate()
    {
        let pts: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(b, c)| {
                let x = axis.x(b as u64 * 1_000_000_000 + 500_000_000);
                let y = bottom - c[k] as f64 / max * (bottom - top);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            pts.join(" "),
            colour(outcome)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole report.
pub fn render(
    title: &str,
    history: &History,
    nemesis: &[NemesisRecord],
    summary: &Summary,
) -> String {
    // A malformed history still gets plots of what pairs.
    let ops = history.operations().unwrap_or_default();
    let end = history
        .events()
        .last()
        .map(|e| e.time)
        .into_iter()
        .chain(nemesis.last().map(|n| n.time))
        .max()
        .unwrap_or(1);
    let axis = Axis { end };
    let windows = windows(nemesis, end);
    let (ok, fail, info) = ops
        .iter()
        .fold((0, 0, 0), |(o, f, i), op| match op.outcome {
            Outcome::Ok => (o + 1, f, i),
            Outcome::Fail => (o, f + 1, i),
            Outcome::Info => (o, f, i + 1),
        });
    let verdict = format!("{:?}", summary.verdict).to_uppercase();
    let vcolour = match summary.verdict {
        crate::verdict::Verdict::Valid => "#2ca02c",
        crate::verdict::Verdict::Unknown => "#ff9900",
        crate::verdict::Verdict::Invalid => "#d62728",
    };
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:20px}}td,th{{padding:2px 8px;text-align:left;vertical-align:top}}\
         .v{{font-weight:bold;color:{vcolour}}}svg{{border:1px solid #ccc;margin:4px 0}}</style></head><body>\
         <h1>{t}</h1><p class=\"v\">{verdict}</p><p>{n} operations: {ok} ok, {fail} fail, {info} info; {w} nemesis windows</p>",
        t = esc(title),
        n = ops.len(),
        w = windows.len(),
    );
    html.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>counts</th><th>anomalies</th></tr>");
    for r in &summary.results {
        let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut anomalies: Vec<String> = r
            .anomalies
            .iter()
            .take(20)
            .map(|a| {
                esc(&format!(
                    "[{}] {} {}",
                    a.kind,
                    a.key.as_deref().unwrap_or(""),
                    a.message
                ))
            })
            .collect();
        anomalies.extend(r.notes.iter().map(|n| format!("<i>{}</i>", esc(n))));
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.checker),
            r.verdict,
            esc(&counts.join(", ")),
            anomalies.join("<br>")
        );
    }
    html.push_str("</table>");
    html.push_str("<h2>Timeline</h2><p>One lane per client; bars from invocation to completion: <span style=\"color:#2ca02c\">ok</span>, <span style=\"color:#d62728\">fail</span>, <span style=\"color:#ff9900\">info</span>. Shaded: nemesis windows.</p>");
    html.push_str(&timeline(&ops, &windows, &axis));
    html.push_str("<h2>Latency</h2>");
    html.push_str(&latency(&ops, &windows, &axis));
    html.push_str("<h2>Throughput</h2><p>Completions per second by outcome.</p>");
    html.push_str(&throughput(&ops, &windows, &axis));
    html.push_str(
        "<h2>Nemesis</h2><table><tr><th>from</th><th>to</th><th>fault</th><th>what</th></tr>",
    );
    for (s, e, fault, desc) in &windows {
        let _ = write!(
            html,
            "<tr><td>{:.1}s</td><td>{:.1}s</td><td>{}</td><td>{}</td></tr>",
            *s as f64 / 1e9,
            *e as f64 / 1e9,
            esc(fault),
            esc(desc)
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Op};
    use crate::verdict::{CheckResult, Verdict};

    #[test]
    fn renders_bars_windows_and_verdict() {
        let mut h = History::new();
        h.push(0, 1, EventType::Invoke, Some("k"), Op::Write(1));
        h.push(5_000_000, 1, EventType::Ok, Some("k"), Op::Write(1));
        h.push(6_000_000, 2, EventType::Invoke, Some("k"), Op::Read(None));
        h.push(2_000_000_000, 2, EventType::Info, Some("k"), Op::Read(None));
        let nemesis = vec![
            NemesisRecord {
                time: 1_000_000,
                phase: NemesisPhase::Start,
                fault: "partition".into(),
                description: "isolate leader n1 & co".into(),
                nodes: vec!["n1".into()],
            },
            NemesisRecord {
                time: 1_500_000_000,
                phase: NemesisPhase::Stop,
                fault: "partition".into(),
                description: "heal".into(),
                nodes: vec![],
            },
        ];
        let summary = Summary::new(vec![CheckResult::new("linearizable", Verdict::Valid)]);
        let html = render("register", &h, &nemesis, &summary);
        assert!(html.contains("VALID"));
        assert!(html.contains("isolate leader n1 &amp; co"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("#ff9900"), "the info op is drawn");
        assert_eq!(windows(&nemesis, 10).len(), 1);
    }

    #[test]
    fn non_overlapping_processes_share_a_lane() {
        let mut h = History::new();
        h.push(0, 1, EventType::Invoke, Some("k"), Op::Write(1));
        h.push(1, 1, EventType::Info, Some("k"), Op::Write(1));
        h.push(2, 2, EventType::Invoke, Some("k"), Op::Write(2));
        h.push(3, 3, EventType::Invoke, Some("k"), Op::Write(3));
        h.push(4, 2, EventType::Ok, Some("k"), Op::Write(2));
        h.push(5, 3, EventType::Ok, Some("k"), Op::Write(3));
        let ops = h.operations().unwrap();
        let (map, n) = lanes(&ops, 10);
        assert_eq!(n, 2);
        assert_eq!(map[&1], map[&2]);
    }
}
