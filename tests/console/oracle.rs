//! The console tests' client of the server and readers of the pages' HTML:
//! SQL answers over `/api/sql` (the oracle), and the tree, charts and links
//! a page shows.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde_json::{Value, json};

pub struct Console {
    pub base: String,
    pub key: String,
}

impl Console {
    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post_sql(&self, sql: &str, accept: &str) -> reqwest::Response {
        let response = reqwest::Client::new()
            .post(format!("{}/api/sql", self.base))
            .bearer_auth(&self.key)
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{sql}");
        response
    }

    pub async fn sql(&self, sql: &str) -> Vec<Value> {
        let response = self.post_sql(sql, "application/json").await;
        response.json::<Vec<Value>>().await.unwrap()
    }

    /// The answer as Arrow record batches (the IPC stream format).
    pub async fn sql_arrow(&self, sql: &str) -> Vec<arrow::array::RecordBatch> {
        let response = self
            .post_sql(sql, "application/vnd.apache.arrow.stream")
            .await;
        let bytes = response.bytes().await.unwrap();
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The page at `path` in the browser, with the key handed over in the fragment.
    pub fn page(&self, bin: &Path, path: &str) -> String {
        super::browser::dom(bin, &self.url(path))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}#key={}", self.base, self.key)
    }
}

/// The demo store, a server on it, an installation key and a key of `lm-pretrain` only.
pub async fn demo() -> (tempfile::TempDir, crate::common::Server, Console, String) {
    let (dir, store) = crate::common::temp_store();
    {
        let engine = forkline::engine::Engine::open(&store).await.unwrap();
        forkline::fixtures::demo::build(&engine, 7).await.unwrap();
    }
    let key_of = |args: &[&str]| {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(args);
        let (ok, out, err) = crate::common::cli(&store, &all);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let key = key_of(&[]);
    let lm_key = key_of(&["--project", "lm-pretrain"]);
    let server = crate::common::spawn_server(&store);
    let c = Console {
        base: server.base.clone(),
        key,
    };
    (dir, server, c, lm_key)
}

pub fn attr(tag: &str, name: &str) -> Option<String> {
    let re = Regex::new(&format!(r#"\s{name}="([^"]*)""#)).unwrap();
    re.captures(tag).map(|c| c[1].replace("&amp;", "&"))
}

pub fn tags<'a>(html: &'a str, open: &str) -> Vec<&'a str> {
    html.match_indices(open)
        .map(|(i, _)| &html[i..i + html[i..].find('>').unwrap()])
        .collect()
}

pub fn href(html: &str, class_or_text: &str) -> String {
    let re = Regex::new(r#"<a [^>]*href="([^"]*)"[^>]*>([^<]*)</a>"#).unwrap();
    re.captures_iter(html)
        .find(|c| c[0].contains(class_or_text))
        .map(|c| c[1].replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("no link {class_or_text}"))
}

pub fn number(tag: &str, name: &str) -> u64 {
    attr(tag, name).unwrap().parse().unwrap()
}

/// One bucket of a line as the test computes it: its first step and the
/// lowest and highest value in it (`None` where no finite value is: a chart
/// cannot draw NaN or an infinity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub step: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Per (run, part): the buckets of the line the chart must draw.
pub type Expected = BTreeMap<(String, String), Vec<Bucket>>;

/// The buckets a chart of `source` (a table expression with `run_id, step,
/// value, inherited`) in `n` buckets must draw, per (run, part), computed
/// here in plain SQL rather than by the server's `downsample`: per (run,
/// part), over the points in `range`, buckets of
/// `width = max(1, ceil((last - first + 1) / n))` steps from the first
/// step, each with the lowest and highest value that is not NaN.
pub async fn chart_oracle(
    c: &Console,
    source: &str,
    n: u64,
    range: Option<(u64, u64)>,
) -> Expected {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    let filter = range
        .map(|(a, b)| format!("WHERE step BETWEEN {a} AND {b}"))
        .unwrap_or_default();
    let batches = c
        .sql_arrow(&format!(
            "WITH s AS (SELECT run_id, step, value, inherited FROM {source} AS src {filter}), \
             w AS (SELECT run_id, inherited, min(step) AS lo, \
                          greatest(1, (max(step) - min(step) + {n}) / {n}) AS width \
                   FROM s GROUP BY run_id, inherited) \
             SELECT r.display_id, s.inherited, w.lo + (s.step - w.lo) / w.width * w.width AS bucket, \
                    min(CASE WHEN isnan(s.value) THEN NULL ELSE s.value END) AS lowest, \
                    max(CASE WHEN isnan(s.value) THEN NULL ELSE s.value END) AS highest \
             FROM s JOIN w ON s.run_id = w.run_id AND s.inherited = w.inherited \
             JOIN runs r ON r.id = s.run_id \
             GROUP BY 1, 2, 3"
        ))
        .await;
    let mut out = Expected::new();
    for batch in &batches {
        let column = |i: usize, to: &DataType| arrow::compute::cast(batch.column(i), to).unwrap();
        let runs = column(0, &DataType::Utf8);
        let parts = column(1, &DataType::Boolean);
        let steps = column(2, &DataType::Int64);
        let (lows, highs) = (column(3, &DataType::Float64), column(4, &DataType::Float64));
        let (runs, parts) = (runs.as_string::<i32>(), parts.as_boolean());
        let steps = steps.as_primitive::<Int64Type>();
        let (lows, highs) = (
            lows.as_primitive::<Float64Type>(),
            highs.as_primitive::<Float64Type>(),
        );
        let finite = |a: &arrow::array::Float64Array, i: usize| {
            (!a.is_null(i) && a.value(i).is_finite()).then(|| a.value(i))
        };
        for i in 0..batch.num_rows() {
            let part = if parts.value(i) { "inherited" } else { "own" };
            out.entry((runs.value(i).to_string(), part.to_string()))
                .or_default()
                .push(Bucket {
                    step: steps.value(i) as u64,
                    min: finite(lows, i),
                    max: finite(highs, i),
                });
        }
    }
    for buckets in out.values_mut() {
        buckets.sort_by_key(|b| b.step);
    }
    out
}

/// A line as a chart draws it: its `data-buckets` and the (x, y) of its vertices.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub buckets: usize,
    pub points: Vec<(f64, f64)>,
}

/// Per (run, part): the line drawn.
pub type Lines = BTreeMap<(String, String), Drawn>;

/// A chart of a page's DOM: its opening `<svg>` tag, its plot area's
/// `<rect>` and its lines.
#[derive(Debug)]
pub struct Chart {
    pub svg: String,
    pub plot: String,
    pub lines: Lines,
}

/// The vertices of a bucket: its lowest value, then its highest when it differs.
fn vertices(b: &Bucket) -> impl Iterator<Item = (u64, f64)> + use<> {
    let (step, max) = (b.step, b.max.filter(|m| Some(*m) != b.min));
    b.min.into_iter().chain(max).map(move |v| (step, v))
}

fn float(tag: &str, name: &str) -> f64 {
    attr(tag, name).unwrap().parse().unwrap()
}

impl Chart {
    /// Asserts that the chart draws `expected` (from [`chart_oracle`]) and
    /// nothing else: a line per (run, part) with its buckets, each bucket's
    /// lowest value then its highest (when it differs) at the bucket's first
    /// step, at the pixel the chart's frame puts them. The frame is the one
    /// the console's charts use (`chart.rs`): steps across the plot's width
    /// from the asked range (or the first to the last step drawn); values
    /// between the lowest and highest drawn, 5% padded, or on a log axis
    /// (every value positive and spanning more than a decade) 0.02 decades
    /// padded. Coordinates are written to 0.1 px.
    pub fn assert_draws(&self, expected: &Expected, range: Option<(u64, u64)>) {
        let drawn: Vec<&(String, String)> = self.lines.keys().collect();
        let wanted: Vec<&(String, String)> = expected.keys().collect();
        assert_eq!(drawn, wanted, "the lines drawn");
        let all: Vec<(u64, f64)> = expected
            .values()
            .flat_map(|buckets| buckets.iter().flat_map(vertices))
            .collect();
        assert!(!all.is_empty(), "nothing to draw");
        let steps = || all.iter().map(|(s, _)| *s);
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
                (lo.min(*v), hi.max(*v))
            });
        let x0 = range.map_or_else(|| steps().min().unwrap(), |(a, _)| a);
        let x1 = range
            .map_or_else(|| steps().max().unwrap(), |(_, b)| b)
            .max(x0 + 1);
        assert_eq!(number(&self.svg, "data-from"), x0, "{}", self.svg);
        assert_eq!(number(&self.svg, "data-to"), x1, "{}", self.svg);
        let log = lo > 0.0 && hi / lo > 10.0;
        assert_eq!(
            attr(&self.svg, "data-log").as_deref(),
            Some(if log { "true" } else { "false" }),
            "values {lo}..{hi}: {}",
            self.svg
        );
        let ty = |v: f64| if log { v.log10() } else { v };
        let (y0, y1) = if log {
            (ty(lo) - 0.02, ty(hi) + 0.02)
        } else {
            let pad = if hi > lo {
                (hi - lo) * 0.05
            } else {
                lo.abs().max(1.0) * 0.05
            };
            (lo - pad, hi + pad)
        };
        let (left, width) = (float(&self.plot, "x"), float(&self.plot, "width"));
        let (top, height) = (float(&self.plot, "y"), float(&self.plot, "height"));
        assert_eq!(left, float(&self.svg, "data-left"));
        assert_eq!(width, float(&self.svg, "data-plot-width"));
        let px = |s: u64| left + (s as f64 - x0 as f64) / (x1 - x0) as f64 * width;
        let py = |v: f64| top + (1.0 - (ty(v) - y0) / (y1 - y0)) * height;
        for (key, buckets) in expected {
            let drawn = &self.lines[key];
            assert_eq!(drawn.buckets, buckets.len(), "{key:?}: buckets");
            let want: Vec<(u64, f64)> = buckets.iter().flat_map(vertices).collect();
            assert_eq!(drawn.points.len(), want.len(), "{key:?}: vertices");
            for (i, ((x, y), (step, value))) in drawn.points.iter().zip(&want).enumerate() {
                let (ex, ey) = (px(*step), py(*value));
                // Half a written digit each way, and the rounding of ties.
                assert!(
                    (x - ex).abs() <= 0.1 + 1e-9 && (y - ey).abs() <= 0.1 + 1e-9,
                    "{key:?} vertex {i}: drawn at ({x}, {y}), step {step} value {value} is at ({ex:.3}, {ey:.3})"
                );
            }
        }
    }
}

/// The charts of a page's DOM.
pub fn charts_of(html: &str) -> Vec<Chart> {
    html.split("<svg class=\"chart\"")
        .skip(1)
        .map(|chunk| {
            let chunk = &chunk[..chunk.find("</svg>").unwrap()];
            let mut lines = Lines::new();
            for line in tags(chunk, "<polyline") {
                let key = (
                    attr(line, "data-run").unwrap(),
                    attr(line, "data-part").unwrap(),
                );
                let buckets: usize = number(line, "data-buckets") as usize;
                let points = attr(line, "points")
                    .unwrap()
                    .split_whitespace()
                    .map(|xy| {
                        let (x, y) = xy.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                assert!(
                    lines.insert(key, Drawn { buckets, points }).is_none(),
                    "one line per run part"
                );
            }
            let plot = tags(chunk, "<rect class=\"plot\"")
                .first()
                .expect("a plot area")
                .to_string();
            Chart {
                svg: format!("<svg{}", &chunk[..chunk.find('>').unwrap()]),
                plot,
                lines,
            }
        })
        .collect()
}

/// The one chart of a page.
pub fn chart_of(html: &str) -> Chart {
    let mut charts = charts_of(html);
    assert_eq!(charts.len(), 1, "one chart");
    charts.remove(0)
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
