//! The chart panel of the family and compare pages: metric picker (one
//! metric, or several side by side), the raw/stitched and axis toggles, zoom
//! and pan links, the charts and their legend. Every control is a link to
//! the page's URL with other parameters, so each view can be shared.

use std::fmt::Write as _;

use super::chart::Line;
use super::params::{Axis, ChartParams, MAX_METRICS};
use crate::report::chart::css_color;
use crate::report::render::esc;

/// One drawn chart: its metric, its SVG and the step range it shows.
pub struct Drawn {
    pub metric: String,
    pub svg: String,
    pub frame: Option<(u64, u64)>,
}

/// What the panel shows.
pub struct Panel<'a> {
    /// The page's path (`/p/{project}/f/{run}`, `/p/{project}/compare`).
    pub base: &'a str,
    /// The view, with the metrics drawn filled in.
    pub params: &'a ChartParams,
    /// Metrics the runs logged.
    pub metrics: &'a [String],
    pub charts: &'a [Drawn],
    pub lines: &'a [Line<'a>],
}

fn link(out: &mut String, class: &str, href: &str, text: &str) {
    let _ = write!(out, "<a class=\"{class}\" href=\"{href}\">{text}</a>");
}

fn metric_picker(out: &mut String, panel: &Panel) {
    let p = panel.params;
    out.push_str("<div class=\"metrics\">");
    for m in panel.metrics {
        let shown = p.metrics.contains(m);
        let only = ChartParams {
            metrics: vec![m.clone()],
            ..p.clone()
        };
        link(
            out,
            if shown { "metric current" } else { "metric" },
            &only.link(panel.base),
            &esc(m),
        );
        if shown && p.metrics.len() > 1 {
            let without = ChartParams {
                metrics: p.metrics.iter().filter(|x| *x != m).cloned().collect(),
                ..p.clone()
            };
            link(out, "remove-metric", &without.link(panel.base), "−");
        } else if !shown && !p.metrics.is_empty() && p.metrics.len() < MAX_METRICS {
            let mut with = p.clone();
            with.metrics.push(m.clone());
            let _ = write!(
                out,
                "<a class=\"add-metric\" data-metric=\"{}\" href=\"{}\" title=\"side by side\">+</a>",
                esc(m),
                with.link(panel.base)
            );
        }
    }
    out.push_str("</div>");
    if panel.metrics.is_empty() {
        out.push_str("<p class=\"empty\">No run here logged a metric.</p>");
    }
}

fn toggles(out: &mut String, panel: &Panel) {
    let p = panel.params;
    out.push_str("<div class=\"toggles\">");
    let flipped = ChartParams {
        inherited: !p.inherited,
        ..p.clone()
    };
    let _ = write!(
        out,
        "<a class=\"toggle-inherited\" data-on=\"{}\" href=\"{}\">{} show inherited points</a>",
        p.inherited,
        flipped.link(panel.base),
        if p.inherited { "☑" } else { "☐" }
    );
    out.push_str("<span class=\"axis\">y axis:");
    for axis in [Axis::Auto, Axis::Linear, Axis::Log] {
        let to = ChartParams { axis, ..p.clone() };
        let class = format!(
            "axis-{}{}",
            axis.as_str(),
            if axis == p.axis { " current" } else { "" }
        );
        link(out, &class, &to.link(panel.base), axis.as_str());
    }
    out.push_str("</span></div>");
}

fn zoom(out: &mut String, panel: &Panel) {
    let p = panel.params;
    let at = |from: u64, to: u64| p.range(Some(from), Some(to)).link(panel.base);
    out.push_str("<div class=\"zoom\">");
    // The charts share the step range: the first one's frame stands for all.
    if let Some((x0, x1)) = panel.charts.iter().find_map(|c| c.frame) {
        let span = x1.saturating_sub(x0).max(1);
        let mid = x0 + span / 2;
        let quarter = (span / 4).max(1);
        link(
            out,
            "zoom-in",
            &at(mid.saturating_sub(quarter), mid + quarter),
            "zoom in",
        );
        link(
            out,
            "zoom-out",
            &at(x0.saturating_sub(span / 2), x1 + span / 2),
            "zoom out",
        );
        link(
            out,
            "pan-left",
            &at(
                x0.saturating_sub(span / 2),
                x1.saturating_sub(span / 2).max(1),
            ),
            "◀",
        );
        link(out, "pan-right", &at(x0 + span / 2, x1 + span / 2), "▶");
        let _ = write!(out, "<span class=\"range\">steps {x0}–{x1}</span>");
    }
    link(
        out,
        "reset",
        &p.range(None, None).link(panel.base),
        "whole run",
    );
    out.push_str(" <span class=\"hint\">drag on a chart to zoom</span></div>");
}

/// The panel's HTML.
pub fn panel(panel: &Panel) -> String {
    let mut out = String::new();
    metric_picker(&mut out, panel);
    if panel.charts.is_empty() {
        return out;
    }
    toggles(&mut out, panel);
    zoom(&mut out, panel);
    let _ = write!(
        out,
        "<div class=\"charts\" data-count=\"{}\">",
        panel.charts.len()
    );
    for chart in panel.charts {
        let _ = write!(
            out,
            "<figure class=\"chart\"><figcaption>{}</figcaption>{}</figure>",
            esc(&chart.metric),
            chart.svg
        );
    }
    out.push_str("</div><ul class=\"legend\">");
    for line in panel.lines {
        let _ = write!(
            out,
            "<li><svg class=\"sw\" width=\"18\" height=\"4\"><rect width=\"18\" height=\"4\" fill=\"{}\"/></svg>{}</li>",
            css_color(line.color),
            esc(line.label)
        );
    }
    out.push_str("</ul><p class=\"note\">");
    out.push_str(if panel.params.inherited {
        "Stitched: faint is inherited from an ancestor; dashed: fork steps."
    } else {
        "Raw: each run's own points, those it logged at or before its fork step included; dashed: fork steps."
    });
    out.push_str(" One bucket (min–max) per pixel column.</p>");
    out
}
