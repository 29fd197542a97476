//! A computed report as HTML, Markdown, JSON or CSV.
//!
//! JSON and CSV carry every number at full precision; HTML and Markdown round
//! to six significant digits for reading. None of them carries a timestamp
//! except the HTML footer, so JSON, CSV and Markdown of the same store are
//! byte-for-byte reproducible.

use std::fmt::Write as _;

use super::numbers::number;
use super::{FamilyMetric, FamilyReport, Report, ReportFormat, RunRow, chart};
use crate::error::{Error, Result};

/// Renders `report` in `format`.
pub fn render(report: &Report, format: ReportFormat) -> Result<Vec<u8>> {
    Ok(match format {
        ReportFormat::Json => {
            let mut text = serde_json::to_string_pretty(report)
                .map_err(|e| Error::invalid(format!("report JSON: {e}")))?;
            text.push('\n');
            text.into_bytes()
        }
        ReportFormat::Csv => csv(report).into_bytes(),
        ReportFormat::Md => markdown(report).into_bytes(),
        ReportFormat::Html => html(report)?.into_bytes(),
    })
}

fn opt_number(v: Option<f64>) -> String {
    v.map(number).unwrap_or_else(|| "–".into())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
}

const SIGN_NOTE: &str = "Δ and area are child − parent (resolved parent): with goal min a \
negative number means the child is lower (better), with max a positive one means better. \
Area: trapezoid rule over the steps after the fork present in both series. \
Non-finite values (NaN, ±Inf) are ignored.";

// ---------------------------------------------------------------- CSV

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn full<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn csv(report: &Report) -> String {
    let mut out = String::from(
        "project,family,experiment,family_size,family_depth,family_running,metric,goal,\
         run_id,display_id,name,parent,fork_step,depth,status,points,non_finite,last_step,\
         last_value,best_value,best_step,last_common_step,delta_last_common,delta_at_last,\
         area_after_fork,rank,winner\n",
    );
    for family in &report.families {
        for section in &family.metrics {
            for r in &section.runs {
                let s = &r.stats;
                let fields = [
                    csv_field(&report.project),
                    csv_field(&family.root),
                    csv_field(&family.experiment),
                    family.size.to_string(),
                    family.depth.to_string(),
                    (!family.running.is_empty()).to_string(),
                    csv_field(&section.metric),
                    section.goal.as_str().to_string(),
                    r.run_id.to_string(),
                    csv_field(&r.display_id),
                    csv_field(&r.name),
                    csv_field(r.parent.as_deref().unwrap_or("")),
                    full(r.fork_step),
                    r.depth.to_string(),
                    r.status.clone(),
                    s.points.to_string(),
                    s.non_finite.to_string(),
                    full(s.last_step),
                    full(s.last_value),
                    full(s.best_value),
                    full(s.best_step),
                    full(s.last_common_step),
                    full(s.delta_last_common),
                    full(s.delta_at_last),
                    full(s.area_after_fork),
                    full(r.rank),
                    r.winner.to_string(),
                ];
                out.push_str(&fields.join(","));
                out.push('\n');
            }
        }
    }
    out
}

// ----------------------------------------------------------- Markdown

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn best_cell(family: &FamilyReport, metric: &str) -> String {
    family
        .best
        .iter()
        .find(|b| b.metric == metric)
        .and_then(|b| {
            Some(format!(
                "{} ({} @ {})",
                b.run.as_deref()?,
                opt_number(b.value),
                opt(b.step)
            ))
        })
        .unwrap_or_else(|| "–".into())
}

const RUN_COLUMNS: [&str; 12] = [
    "run",
    "parent",
    "fork step",
    "depth",
    "status",
    "last (step)",
    "best (step)",
    "Δ last common (step)",
    "Δ at last step",
    "area after fork",
    "points",
    "rank",
];

fn run_cells(r: &RunRow) -> [String; 12] {
    let s = &r.stats;
    let with_step = |v: Option<f64>, step: Option<u64>| match (v, step) {
        (Some(v), Some(step)) => format!("{} ({step})", number(v)),
        _ => "–".into(),
    };
    [
        r.display_id.clone(),
        r.parent.clone().unwrap_or_else(|| "–".into()),
        opt(r.fork_step),
        r.depth.to_string(),
        r.status.clone(),
        with_step(s.last_value, s.last_step),
        with_step(s.best_value, s.best_step),
        with_step(s.delta_last_common, s.last_common_step),
        opt_number(s.delta_at_last),
        opt_number(s.area_after_fork),
        if s.non_finite > 0 {
            format!("{} (+{} non-finite)", s.points, s.non_finite)
        } else {
            s.points.to_string()
        },
        match (r.rank, r.winner) {
            (Some(rank), true) => format!("{rank} (winner)"),
            (rank, _) => opt(rank),
        },
    ]
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Report: project `{}`\n", md_escape(&report.project));
    let goals: Vec<String> = report
        .metrics
        .iter()
        .map(|m| format!("`{}` ({})", md_escape(&m.name), m.goal.as_str()))
        .collect();
    let _ = writeln!(out, "Metrics: {}.\n", goals.join(", "));
    let _ = writeln!(out, "## Families\n");
    let mut header = vec!["family", "experiment", "runs", "depth", "running"];
    header.extend(report.metrics.iter().map(|m| m.name.as_str()));
    let header: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i >= 5 {
                format!("best {}", md_escape(h))
            } else {
                h.to_string()
            }
        })
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for f in &report.families {
        let mut cells = vec![
            format!("[{}](#{})", md_escape(&f.root), f.anchor),
            md_escape(&f.experiment),
            f.size.to_string(),
            f.depth.to_string(),
            if f.running.is_empty() {
                String::new()
            } else {
                format!("⚠ {}", f.running.join(", "))
            },
        ];
        cells.extend(report.metrics.iter().map(|m| best_cell(f, &m.name)));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(out, "\n{SIGN_NOTE}\n");
    for f in &report.families {
        let _ = writeln!(
            out,
            "## <a id=\"{}\"></a>Family {} — {}\n",
            f.anchor,
            md_escape(&f.root),
            md_escape(&f.experiment)
        );
        let _ = writeln!(out, "{} runs, depth {}.", f.size, f.depth);
        if !f.running.is_empty() {
            let _ = writeln!(
                out,
                "⚠ Still RUNNING: {} (numbers may move).",
                f.running.join(", ")
            );
        }
        out.push('\n');
        for section in &f.metrics {
            let _ = writeln!(
                out,
                "### `{}` ({}) — winner: {}\n",
                md_escape(&section.metric),
                section.goal.as_str(),
                section.winner.as_deref().unwrap_or("none")
            );
            let _ = writeln!(out, "| {} |", RUN_COLUMNS.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(RUN_COLUMNS.len()));
            for r in &section.runs {
                let cells: Vec<String> = run_cells(r).iter().map(|c| md_escape(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
    }
    out
}

// --------------------------------------------------------------- HTML

/// The warning naming a family's RUNNING runs, if it has any.
fn running_flag(f: &FamilyReport, label: &str, tail: &str) -> Option<String> {
    (!f.running.is_empty()).then(|| {
        format!(
            "<span class=\"flag\">⚠ {label}{}{tail}</span>",
            esc(&f.running.join(", "))
        )
    })
}

/// Text escaped for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #222;
       max-width: 1280px; margin: 1.5rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-bottom: .4rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.winner td { background: #fff6d5; font-weight: 600; }
.flag { color: #b35c00; font-weight: 600; }
.note { color: #555; font-size: .85rem; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .3em; vertical-align: -.05em; }
.chart svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.legend { font-size: .8rem; color: #444; margin: .2rem 0 .6rem; }
.legend span { margin-right: 1rem; }
.scroll { overflow-x: auto; }
section.family { page-break-before: auto; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  a { color: inherit; text-decoration: none; }
  section.family { page-break-before: always; }
  .metric { page-break-inside: avoid; }
  tr.winner td { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
";

/// The per-run table of a metric section: `rows` with the colour index of
/// each (the console's compare page shows the same table for its runs).
pub fn html_run_table(out: &mut String, rows: &[(usize, &RunRow)]) {
    out.push_str("<div class=\"scroll\"><table>\n<tr>");
    for (i, h) in RUN_COLUMNS.iter().enumerate() {
        let class = if i == 0 || i == 4 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for &(i, r) in rows {
        let cells = run_cells(r);
        let _ = write!(
            out,
            "<tr{}>",
            if r.winner { " class=\"winner\"" } else { "" }
        );
        for (j, c) in cells.iter().enumerate() {
            if j == 0 {
                let _ = write!(
                    out,
                    "<td class=\"l\"><i class=\"swatch\" style=\"background:{}\"></i>{}</td>",
                    chart::css_color(i),
                    esc(c)
                );
            } else if j == 4 {
                let _ = write!(out, "<td class=\"l\">{}</td>", esc(c));
            } else {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

fn html_metric(out: &mut String, section: &FamilyMetric, svg: Option<String>) -> Result<()> {
    let _ = writeln!(
        out,
        "<div class=\"metric\" data-metric=\"{}\">\n<h3>{} <small>({})</small> — winner: {}</h3>",
        esc(&section.metric),
        esc(&section.metric),
        section.goal.as_str(),
        esc(section.winner.as_deref().unwrap_or("none"))
    );
    match svg {
        Some(svg) => {
            let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
            out.push_str("<div class=\"legend\">");
            for (i, r) in section.runs.iter().enumerate() {
                let _ = write!(
                    out,
                    "<span><i class=\"swatch\" style=\"background:{}\"></i>{}</span>",
                    chart::css_color(i),
                    esc(&r.display_id)
                );
            }
            out.push_str(
                "<span class=\"note\">faint: inherited part · dashed: fork steps</span></div>\n",
            );
        }
        None => out.push_str("<p class=\"note\">No finite points of this metric.</p>\n"),
    }
    let rows: Vec<(usize, &RunRow)> = section.runs.iter().enumerate().collect();
    html_run_table(out, &rows);
    out.push_str("</div>\n");
    Ok(())
}

/// Every chart of the report in order, drawn on every core: the
/// all-metrics report of the scale-1 bench store draws 200, a second's work
/// on one.
fn charts(report: &Report) -> Result<Vec<Option<String>>> {
    let sections: Vec<&FamilyMetric> = report
        .families
        .iter()
        .flat_map(|f| f.metrics.iter())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = sections.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let drawing: Vec<_> = sections
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|s| chart::svg(s))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut svgs = Vec::with_capacity(sections.len());
        for part in drawing {
            let drawn = part
                .join()
                .map_err(|_| Error::invalid("drawing a chart failed"))??;
            svgs.extend(drawn);
        }
        Ok(svgs)
    })
}

fn html(report: &Report) -> Result<String> {
    let mut svgs = charts(report)?.into_iter();
    let mut out = String::new();
    let title = format!("forkline report: {}", report.project);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>",
        esc(&title)
    );
    let _ = writeln!(
        out,
        "<h1>Report: project <code>{}</code></h1>",
        esc(&report.project)
    );
    let goals: Vec<String> = report
        .metrics
        .iter()
        .map(|m| format!("<code>{}</code> ({})", esc(&m.name), m.goal.as_str()))
        .collect();
    let _ = writeln!(out, "<p>Metrics: {}.</p>", goals.join(", "));
    out.push_str("<h2 id=\"families\">Families</h2>\n<table>\n<tr><th class=\"l\">family</th><th class=\"l\">experiment</th><th>runs</th><th>depth</th><th class=\"l\">running</th>");
    for m in &report.metrics {
        let _ = write!(out, "<th class=\"l\">best {}</th>", esc(&m.name));
    }
    out.push_str("</tr>\n");
    for f in &report.families {
        let _ = write!(
            out,
            "<tr><td class=\"l\"><a href=\"#{}\">{}</a></td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td>",
            f.anchor,
            esc(&f.root),
            esc(&f.experiment),
            f.size,
            f.depth,
            running_flag(f, "", "").unwrap_or_default()
        );
        for m in &report.metrics {
            let _ = write!(out, "<td class=\"l\">{}</td>", esc(&best_cell(f, &m.name)));
        }
        out.push_str("</tr>\n");
    }
    let _ = writeln!(out, "</table>\n<p class=\"note\">{}</p>", esc(SIGN_NOTE));
    for f in &report.families {
        let _ = writeln!(
            out,
            "<section class=\"family\" id=\"{}\">\n<h2>Family {} — {}</h2>\n<p>{} runs, depth {}.{}</p>",
            f.anchor,
            esc(&f.root),
            esc(&f.experiment),
            f.size,
            f.depth,
            running_flag(f, "Still RUNNING: ", " (numbers may move).")
                .map(|flag| format!(" {flag}"))
                .unwrap_or_default()
        );
        for section in &f.metrics {
            html_metric(&mut out, section, svgs.next().flatten())?;
        }
        out.push_str("<p class=\"note\"><a href=\"#families\">↑ families</a></p>\n</section>\n");
    }
    let _ = writeln!(
        out,
        "<footer class=\"note\">Generated by forkline {} at {}.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(2.345678912), "2.34568");
        assert_eq!(number(-1234.5), "-1234.5");
        assert_eq!(number(1234567.0), "1.2346e6");
        assert_eq!(number(0.00001234), "1.2340e-5");
        assert_eq!(number(0.5), "0.5");
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("<a&'\">"), "&lt;a&amp;&#39;&quot;&gt;");
        assert_eq!(csv_field("a,b\"c"), "\"a,b\"\"c\"");
        assert_eq!(md_escape("a|b"), "a\\|b");
    }
}
