//! The chart parameters of the family and compare pages, read from the
//! page's query string and written back into the links a page shows, so
//! every view (metrics, step range, axis, inherited points, runs) is a URL.

use std::fmt::Write as _;

use crate::error::{Error, Result};

use super::pages::enc;

/// The y axis asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Axis {
    /// As the report: log when every value is positive and they span a decade.
    #[default]
    Auto,
    Log,
    Linear,
}

impl Axis {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "log" => Ok(Self::Log),
            "linear" => Ok(Self::Linear),
            other => Err(Error::invalid(format!(
                "`axis` must be auto, log or linear, got `{other}`"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Log => "log",
            Self::Linear => "linear",
        }
    }
}

/// Most metrics drawn side by side.
pub const MAX_METRICS: usize = 4;
/// Most runs on a compare page.
pub const MAX_RUNS: usize = 24;

/// What a family or compare page draws.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartParams {
    /// Metrics, one chart each (none: the page picks the first).
    pub metrics: Vec<String>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Page width in CSS pixels the charts share (`None`: the default).
    pub width: Option<u32>,
    pub axis: Axis,
    /// Stitched series with their inherited part (else each run's raw points).
    pub inherited: bool,
    /// Runs of a compare page, as given (display or numeric ids).
    pub runs: Vec<String>,
}

impl ChartParams {
    /// Reads `metric` (repeated), `from`, `to`, `width`, `axis`, `inherited`
    /// and `runs` (comma-separated); other keys, such as the `projectName`
    /// any keyed route accepts, are ignored.
    pub fn parse(query: Option<&str>) -> Result<Self> {
        let mut out = Self {
            inherited: true,
            ..Self::default()
        };
        let number = |key: &str, value: &str| -> Result<u64> {
            value.trim().parse().map_err(|_| {
                Error::invalid(format!(
                    "`{key}` must be a non-negative integer, got `{value}`"
                ))
            })
        };
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_ref() {
                "metric" if !out.metrics.iter().any(|m| m == value) => {
                    out.metrics.push(value.to_string())
                }
                "from" => out.from = Some(number("from", value)?),
                "to" => out.to = Some(number("to", value)?),
                "width" => {
                    out.width = Some(u32::try_from(number("width", value)?).unwrap_or(u32::MAX))
                }
                "axis" => out.axis = Axis::parse(value)?,
                "inherited" => {
                    out.inherited = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        other => {
                            return Err(Error::invalid(format!(
                                "`inherited` must be 0 or 1, got `{other}`"
                            )));
                        }
                    }
                }
                "runs" => out.runs.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
        if let (Some(from), Some(to)) = (out.from, out.to)
            && from >= to
        {
            return Err(Error::invalid(format!(
                "`from` ({from}) must be below `to` ({to})"
            )));
        }
        if out.metrics.len() > MAX_METRICS {
            return Err(Error::invalid(format!(
                "at most {MAX_METRICS} metrics side by side, got {}",
                out.metrics.len()
            )));
        }
        out.runs.dedup();
        if out.runs.len() > MAX_RUNS {
            return Err(Error::invalid(format!(
                "at most {MAX_RUNS} runs on one chart, got {}",
                out.runs.len()
            )));
        }
        Ok(out)
    }

    /// The page link of `base` with these parameters (`&` escaped for an
    /// HTML attribute); the width is the browser's to choose, so it is left out.
    pub fn link(&self, base: &str) -> String {
        let mut parts = Vec::new();
        if !self.runs.is_empty() {
            parts.push(format!("runs={}", enc(&self.runs.join(","))));
        }
        parts.extend(self.metrics.iter().map(|m| format!("metric={}", enc(m))));
        if let Some(from) = self.from {
            parts.push(format!("from={from}"));
        }
        if let Some(to) = self.to {
            parts.push(format!("to={to}"));
        }
        if self.axis != Axis::Auto {
            parts.push(format!("axis={}", self.axis.as_str()));
        }
        if !self.inherited {
            parts.push("inherited=0".into());
        }
        let mut out = base.to_string();
        for (i, part) in parts.iter().enumerate() {
            let _ = write!(out, "{}{part}", if i == 0 { "?" } else { "&amp;" });
        }
        out
    }

    /// These parameters over the steps `from..=to`.
    pub fn range(&self, from: Option<u64>, to: Option<u64>) -> Self {
        Self {
            from,
            to,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_round_trip_through_links() {
        let p = ChartParams::parse(Some(
            "metric=train%2Floss&metric=val%2Facc&from=10&to=500&width=900&axis=log&inherited=0&projectName=x",
        ))
        .unwrap();
        assert_eq!(p.metrics, ["train/loss", "val/acc"]);
        assert_eq!((p.from, p.to, p.width), (Some(10), Some(500), Some(900)));
        assert_eq!((p.axis, p.inherited), (Axis::Log, false));
        let link = p.link("/p/x/f/X-1");
        assert_eq!(
            link,
            "/p/x/f/X-1?metric=train%2Floss&amp;metric=val%2Facc&amp;from=10&amp;to=500&amp;axis=log&amp;inherited=0"
        );
        let again = ChartParams::parse(Some(
            &link[link.find('?').unwrap() + 1..].replace("&amp;", "&"),
        ))
        .unwrap();
        assert_eq!(again, ChartParams { width: None, ..p });
        let runs = ChartParams::parse(Some("runs=VS-1,%20VS-6,&metric=m")).unwrap();
        assert_eq!(runs.runs, ["VS-1", "VS-6"]);
        assert!(runs.inherited);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            "from=5&to=5",
            "from=-1",
            "width=abc",
            "axis=cubic",
            "inherited=maybe",
            "metric=a&metric=b&metric=c&metric=d&metric=e",
        ] {
            assert!(ChartParams::parse(Some(bad)).is_err(), "{bad}");
        }
        let none = ChartParams::parse(None).unwrap();
        assert_eq!((none.metrics.len(), none.from, none.to), (0, None, None));
    }
}
