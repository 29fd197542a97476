//! The console's pages as HTML fragments, from a scoped catalog and the
//! answers of the page's queries. Every text that comes from the store is
//! escaped here; links are built from percent-encoded path segments.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::catalog::{CatalogSnapshot, FamilyMember, Run, RunId, RunStatus};
use crate::error::Result;
use crate::report::chart::css_color;
use crate::report::render::esc;

/// Characters left as they are in a path segment or query value.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one URL path segment or query value.
pub fn enc(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn status_badge(status: RunStatus) -> String {
    let name = status.as_str();
    let mark = if status == RunStatus::Running {
        "● "
    } else {
        ""
    };
    format!(
        "<span class=\"status s-{}\">{mark}{name}</span>",
        name.to_ascii_lowercase()
    )
}

fn run_link(run: &Run) -> String {
    format!(
        "<a class=\"run\" href=\"/p/{}/r/{}\">{}</a>",
        enc(&run.project),
        enc(&run.display_id),
        esc(&run.display_id)
    )
}

fn breadcrumb(parts: &[(String, Option<String>)]) -> String {
    let mut out = String::from("<nav class=\"crumbs\"><a href=\"/\">projects</a>");
    for (label, href) in parts {
        out.push_str(" / ");
        match href {
            Some(h) => {
                let _ = write!(out, "<a href=\"{}\">{}</a>", esc(h), esc(label));
            }
            None => out.push_str(&esc(label)),
        }
    }
    out.push_str("</nav>");
    out
}

/// `/p`: every project of the key, with run and family counts and last activity.
pub fn projects(catalog: &CatalogSnapshot) -> String {
    let mut out = String::from(
        "<h1>Projects</h1><table class=\"grid projects\"><thead><tr><th>project</th>\
         <th>runs</th><th>families</th><th>running</th><th>last activity</th></tr></thead><tbody>",
    );
    let names = catalog.projects();
    for project in &names {
        let runs: Vec<_> = catalog.runs().filter(|r| &r.project == project).collect();
        let families = runs.iter().filter(|r| r.parent_id.is_none()).count();
        let running = runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count();
        let last = runs.iter().map(|r| r.updated_at).max();
        let _ = write!(
            out,
            "<tr data-project=\"{0}\" data-runs=\"{1}\"><td><a href=\"/p/{2}\">{0}</a></td>\
             <td class=\"num\">{1}</td><td class=\"num\">{families}</td><td class=\"num\">{running}</td>\
             <td>{3}</td></tr>",
            esc(project),
            runs.len(),
            enc(project),
            last.as_ref().map(time).unwrap_or_default()
        );
    }
    out.push_str("</tbody></table>");
    if names.is_empty() {
        out.push_str("<p class=\"empty\">No project is visible to this key.</p>");
    }
    out
}

/// `/p/{project}`: its families, root first by id.
pub fn project(catalog: &CatalogSnapshot, project: &str) -> Result<String> {
    let mut out = breadcrumb(&[(project.to_string(), None)]);
    let _ = write!(
        out,
        "<h1>{}</h1><table class=\"grid families\"><thead><tr><th>family</th><th>experiment</th>\
         <th>runs</th><th>depth</th><th>running</th><th>last activity</th></tr></thead><tbody>",
        esc(project)
    );
    let mut roots: Vec<_> = catalog
        .runs()
        .filter(|r| r.project == project && r.parent_id.is_none())
        .collect();
    roots.sort_by_key(|r| r.id);
    for root in roots {
        let family = catalog.family(root.id)?;
        let depth = family.iter().map(|m| m.depth).max().unwrap_or(0);
        let running: Vec<&str> = family
            .iter()
            .filter(|m| m.run.status == RunStatus::Running)
            .map(|m| m.run.display_id.as_str())
            .collect();
        let last = family.iter().map(|m| m.run.updated_at).max();
        let _ = write!(
            out,
            "<tr data-family=\"{0}\" data-size=\"{1}\"><td><a href=\"/p/{2}/f/{3}\">{0}</a></td>\
             <td>{4}</td><td class=\"num\">{1}</td><td class=\"num\">{depth}</td><td>{5}</td><td>{6}</td></tr>",
            esc(&root.display_id),
            family.len(),
            enc(project),
            enc(&root.display_id),
            esc(&root.experiment),
            if running.is_empty() {
                String::new()
            } else {
                format!(
                    "<span class=\"status s-running\">● {}</span>",
                    esc(&running.join(", "))
                )
            },
            last.as_ref().map(time).unwrap_or_default()
        );
    }
    out.push_str("</tbody></table>");
    Ok(out)
}

/// The fork tree of a family as nested lists: each run under its parent,
/// the fork step on the edge, its status coloured.
pub fn tree(family: &[FamilyMember]) -> String {
    let ids: BTreeSet<RunId> = family.iter().map(|m| m.run.id).collect();
    let mut children: HashMap<Option<RunId>, Vec<&FamilyMember>> = HashMap::new();
    for m in family {
        // A parent outside the view (another project's) makes the run a root here.
        let parent = m.run.parent_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(m);
    }
    let index: HashMap<RunId, usize> = family
        .iter()
        .enumerate()
        .map(|(i, m)| (m.run.id, i))
        .collect();
    let display: HashMap<RunId, &str> = family
        .iter()
        .map(|m| (m.run.id, m.run.display_id.as_str()))
        .collect();
    fn node(
        out: &mut String,
        m: &FamilyMember,
        children: &HashMap<Option<RunId>, Vec<&FamilyMember>>,
        index: &HashMap<RunId, usize>,
        display: &HashMap<RunId, &str>,
    ) {
        let run = &m.run;
        let parent = run
            .parent_id
            .and_then(|p| display.get(&p))
            .copied()
            .unwrap_or("");
        let fork = run.fork_step.map(|s| s.to_string()).unwrap_or_default();
        let _ = write!(
            out,
            "<li data-run=\"{}\" data-parent=\"{}\" data-fork-step=\"{fork}\" data-status=\"{}\">\
             <div class=\"node\">",
            esc(&run.display_id),
            esc(parent),
            run.status.as_str()
        );
        if let Some(step) = run.fork_step {
            let _ = write!(out, "<span class=\"edge\">fork @ {step}</span>");
        }
        let _ = write!(
            out,
            "<svg class=\"sw\" width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"{}\"/></svg>{} \
             <span class=\"name\">{}</span> {}</div>",
            css_color(index[&run.id]),
            run_link(run),
            esc(&run.name),
            status_badge(run.status)
        );
        if let Some(kids) = children.get(&Some(run.id)) {
            out.push_str("<ul>");
            for k in kids {
                node(out, k, children, index, display);
            }
            out.push_str("</ul>");
        }
        out.push_str("</li>");
    }
    let mut out = String::from("<ul class=\"tree\">");
    for root in children.get(&None).into_iter().flatten() {
        node(&mut out, root, &children, &index, &display);
    }
    out.push_str("</ul>");
    out
}

/// `/p/{project}/f/{run}`: the fork tree beside the chart panel, and a
/// link that compares the family's runs.
pub fn family(project: &str, family: &[FamilyMember], panel: &str) -> String {
    let root = &family[0].run;
    let mut out = breadcrumb(&[
        (project.to_string(), Some(format!("/p/{}", enc(project)))),
        (root.display_id.clone(), None),
    ]);
    let runs: Vec<&str> = family.iter().map(|m| m.run.display_id.as_str()).collect();
    let _ = write!(
        out,
        "<h1>Family {} <small>{} · {} runs</small></h1><div class=\"family\"><section class=\"tree-box\">\
         <h2>Fork tree</h2>{}<p><a class=\"compare\" href=\"/p/{}/compare?runs={}\">compare runs</a></p></section>\
         <section class=\"chart-box\">{panel}</section></div>",
        esc(&root.display_id),
        esc(&root.experiment),
        family.len(),
        tree(family),
        enc(project),
        enc(&runs.join(",")),
    );
    out
}

/// A config flattened to dotted paths, so nested changes show one per row.
fn flatten(prefix: &str, value: &Map<String, Value>, out: &mut BTreeMap<String, Value>) {
    for (k, v) in value {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) if !inner.is_empty() => flatten(&path, inner, out),
            other => {
                out.insert(path, other.clone());
            }
        }
    }
}

/// How a config entry differs from the parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Changed,
    Added,
    Removed,
}

/// The run's config against its parent's, path by path.
pub fn config_diff(
    run: &Map<String, Value>,
    parent: Option<&Map<String, Value>>,
) -> Vec<(String, Option<Value>, Option<Value>, Change)> {
    let (mut mine, mut theirs) = (BTreeMap::new(), BTreeMap::new());
    flatten("", run, &mut mine);
    if let Some(p) = parent {
        flatten("", p, &mut theirs);
    }
    let keys: BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .map(|k| {
            let (a, b) = (mine.get(k).cloned(), theirs.get(k).cloned());
            let change = match (&a, &b, parent.is_some()) {
                (_, _, false) => Change::Same,
                (Some(a), Some(b), _) if a == b => Change::Same,
                (Some(_), Some(_), _) => Change::Changed,
                (Some(_), None, _) => Change::Added,
                _ => Change::Removed,
            };
            (k.clone(), a, b, change)
        })
        .collect()
}

/// A query's answer as an HTML table.
pub fn table(batches: &[RecordBatch], class: &str) -> Result<String> {
    let Some(first) = batches.first() else {
        return Ok("<p class=\"empty\">None.</p>".into());
    };
    let mut out = format!("<table class=\"grid {class}\"><thead><tr>");
    for f in first.schema().fields() {
        let _ = write!(out, "<th>{}</th>", esc(f.name()));
    }
    out.push_str("</tr></thead><tbody>");
    let options = FormatOptions::default().with_null("");
    let mut rows = 0;
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..batch.num_rows() {
            out.push_str("<tr>");
            for c in &columns {
                let _ = write!(out, "<td>{}</td>", esc(&c.value(i).to_string()));
            }
            out.push_str("</tr>");
            rows += 1;
        }
    }
    out.push_str("</tbody></table>");
    if rows == 0 {
        return Ok("<p class=\"empty\">None.</p>".into());
    }
    Ok(out)
}

/// Everything the run page shows.
pub struct RunPage<'a> {
    pub run: &'a Run,
    pub parent: Option<&'a Run>,
    pub root: &'a Run,
    pub history: String,
    pub logs: String,
    pub log_limit: usize,
    pub files: String,
    /// The forks a deletion would take along, when the key may delete.
    pub deletable: Option<Vec<&'a Run>>,
}

fn json_cell(v: &Option<Value>) -> String {
    v.as_ref().map(|v| esc(&v.to_string())).unwrap_or_default()
}

/// `/p/{project}/r/{run}`: header, tags, config against the parent's, status history, files, logs.
pub fn run(page: &RunPage) -> String {
    let run = page.run;
    let mut out = breadcrumb(&[
        (
            run.project.clone(),
            Some(format!("/p/{}", enc(&run.project))),
        ),
        (
            format!("family {}", page.root.display_id),
            Some(format!(
                "/p/{}/f/{}",
                enc(&page.root.project),
                enc(&page.root.display_id)
            )),
        ),
        (run.display_id.clone(), None),
    ]);
    let _ = write!(
        out,
        "<h1 data-run=\"{}\">{} <small>{}</small> {}</h1><dl class=\"facts\">\
         <dt>experiment</dt><dd>{}</dd><dt>parent</dt><dd>{}</dd><dt>fork step</dt><dd>{}</dd>\
         <dt>created</dt><dd>{}</dd><dt>updated</dt><dd>{}</dd><dt>tags</dt><dd class=\"tags\">{}</dd></dl>",
        esc(&run.display_id),
        esc(&run.display_id),
        esc(&run.name),
        status_badge(run.status),
        esc(&run.experiment),
        page.parent.map(run_link).unwrap_or_else(|| "–".into()),
        run.fork_step
            .map(|s| s.to_string())
            .unwrap_or_else(|| "–".into()),
        time(&run.created_at),
        time(&run.updated_at),
        run.tags
            .iter()
            .map(|t| format!("<span class=\"tag\">{}</span>", esc(t)))
            .collect::<String>()
    );
    let _ = write!(
        out,
        "<h2>Config{}</h2>",
        if page.parent.is_some() {
            " (against the parent's)"
        } else {
            ""
        }
    );
    let diff = config_diff(&run.config, page.parent.map(|p| &p.config));
    if diff.is_empty() {
        out.push_str("<p class=\"empty\">No config.</p>");
    } else {
        out.push_str("<table class=\"grid config\"><thead><tr><th>key</th><th>value</th>");
        if page.parent.is_some() {
            out.push_str("<th>parent</th>");
        }
        out.push_str("</tr></thead><tbody>");
        for (key, mine, theirs, change) in &diff {
            let class = match change {
                Change::Same => "same",
                Change::Changed => "changed",
                Change::Added => "added",
                Change::Removed => "removed",
            };
            let _ = write!(
                out,
                "<tr class=\"{class}\" data-key=\"{}\"><td>{}</td><td>{}</td>",
                esc(key),
                esc(key),
                json_cell(mine)
            );
            if page.parent.is_some() {
                let _ = write!(out, "<td>{}</td>", json_cell(theirs));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    }
    let _ = write!(
        out,
        "<h2>Status history</h2>{}<h2>Files</h2>{}<h2>Logs <small>(first {} lines)</small></h2>{}",
        page.history, page.files, page.log_limit, page.logs
    );
    if let Some(forks) = &page.deletable {
        out.push_str(&delete_section(run, forks));
    }
    out
}

/// The run page's delete control (for keys that may delete): the forks that
/// would go with the run, and the cascade to choose. The script arms the
/// button on a first click and sends `DELETE /api/runs/{id}` on the second.
fn delete_section(run: &Run, forks: &[&Run]) -> String {
    let mut out = format!(
        "<section class=\"delete\" data-run-id=\"{}\" data-project=\"{}\"><h2>Delete</h2>",
        run.id,
        esc(&run.project)
    );
    if forks.is_empty() {
        out.push_str(
            "<p>No run is forked from this one. Deleting it removes it from every view at once; \
             <code>forkline purge</code> then removes its data from the store.</p>",
        );
    } else {
        let _ = write!(
            out,
            "<p>{} run(s) forked from this one inherit its points: {}. It can be deleted only \
             together with them.</p><label><input type=\"checkbox\" name=\"cascade\"> \
             delete the {} fork(s) too</label> ",
            forks.len(),
            forks
                .iter()
                .map(|f| run_link(f))
                .collect::<Vec<_>>()
                .join(", "),
            forks.len()
        );
    }
    let _ = write!(
        out,
        "<button type=\"button\" class=\"delete-run\">Delete {}</button></section>",
        esc(&run.display_id)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_diff_marks_each_path() {
        let parent = json!({"lr": 0.1, "opt": {"name": "adam", "beta": 0.9}, "old": 1});
        let child = json!({"lr": 0.05, "opt": {"name": "adam", "beta": 0.9}, "new": true});
        let diff = config_diff(
            child.as_object().unwrap(),
            Some(parent.as_object().unwrap()),
        );
        let kinds: Vec<(&str, Change)> = diff.iter().map(|d| (d.0.as_str(), d.3)).collect();
        assert_eq!(
            kinds,
            [
                ("lr", Change::Changed),
                ("new", Change::Added),
                ("old", Change::Removed),
                ("opt.beta", Change::Same),
                ("opt.name", Change::Same),
            ]
        );
        let alone = config_diff(child.as_object().unwrap(), None);
        assert!(alone.iter().all(|d| d.3 == Change::Same));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(enc("vision-sweep"), "vision-sweep");
        assert_eq!(enc("a b/c?&<"), "a%20b%2Fc%3F%26%3C");
    }
}
