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

/// Per (run, part): buckets and vertices.
pub type Lines = BTreeMap<(String, String), (usize, usize)>;

/// The downsampled answer a chart must draw, from `source` (a table
/// expression with `run_id, step, value, inherited`): per (run, part),
/// buckets and vertices.
pub async fn chart_oracle(c: &Console, source: &str, n: u64, range: Option<(u64, u64)>) -> Lines {
    let filter = range
        .map(|(a, b)| format!("WHERE step BETWEEN {a} AND {b}"))
        .unwrap_or_default();
    let rows = c
        .sql(&format!(
            "SELECT r.display_id, d.inherited, d.b['min'] AS min, d.b['max'] AS max \
             FROM (SELECT run_id, inherited, unnest(downsample(step, value, {n})) AS b \
                   FROM {source} {filter} GROUP BY run_id, inherited) d \
             JOIN runs r ON r.id = d.run_id"
        ))
        .await;
    let mut out = Lines::new();
    for row in rows {
        let part = if row["inherited"].as_bool().unwrap() {
            "inherited"
        } else {
            "own"
        };
        let entry = out
            .entry((row["display_id"].as_str().unwrap().to_string(), part.into()))
            .or_default();
        entry.0 += 1;
        let (min, max) = (row["min"].as_f64(), row["max"].as_f64());
        entry.1 += usize::from(min.is_some()) + usize::from(max.is_some() && max != min);
    }
    out
}

/// The charts of a page's DOM: each one's opening tag and its lines.
pub fn charts_of(html: &str) -> Vec<(String, Lines)> {
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
                let vertices = attr(line, "points").unwrap().split_whitespace().count();
                assert!(
                    lines.insert(key, (buckets, vertices)).is_none(),
                    "one line per run part"
                );
            }
            (format!("<svg{}", &chunk[..chunk.find('>').unwrap()]), lines)
        })
        .collect()
}

/// The one chart of a page.
pub fn chart_of(html: &str) -> (String, Lines) {
    let mut charts = charts_of(html);
    assert_eq!(charts.len(), 1, "one chart");
    charts.remove(0)
}

pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
