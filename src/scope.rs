//! What one request may see and do, derived from its API key alone.
//!
//! Every interface (HTTP, Flight SQL) turns the caller's key into a [`Scope`]
//! before any handler runs, and reaches runs, points, logs and files only
//! through views restricted by it: a run of a project outside the scope does
//! not exist for the request (404), a project it names outside the scope is
//! refused (403), and a read-only scope writes nothing (403).

use std::sync::Arc;

use crate::catalog::CatalogSnapshot;
use crate::error::{Error, Result};

/// The projects a key opens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Projects {
    /// Every project of the installation, existing or not yet created (Pluto's
    /// organization keys: `init(project="new")` creates the project).
    All,
    /// Projects whose names match one of these patterns: a plain name, or a
    /// glob where `*` matches any text and `?` one character.
    Matching(Vec<String>),
}

impl Projects {
    /// The projects of a `--project` list: all of them when the list is empty.
    pub fn from_patterns(patterns: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.trim();
            if p.is_empty() {
                return Err(Error::invalid("a project pattern must not be empty"));
            }
            if p == "*" {
                return Ok(Projects::All);
            }
            if !out.iter().any(|q: &String| q == p) {
                out.push(p.to_string());
            }
        }
        Ok(if out.is_empty() {
            Projects::All
        } else {
            Projects::Matching(out)
        })
    }

    /// Whether `project` lies inside.
    pub fn allows(&self, project: &str) -> bool {
        match self {
            Projects::All => true,
            Projects::Matching(patterns) => patterns.iter().any(|p| glob_match(p, project)),
        }
    }

    /// `snapshot` with only the runs of these projects (the same snapshot when all are open).
    pub fn restrict(&self, snapshot: Arc<CatalogSnapshot>) -> Arc<CatalogSnapshot> {
        match self {
            Projects::All => snapshot,
            Projects::Matching(_) => Arc::new(snapshot.restricted(|p| self.allows(p))),
        }
    }

    /// How the scope is written in `keys list`.
    pub fn describe(&self) -> String {
        match self {
            Projects::All => "all projects".into(),
            Projects::Matching(p) => p.join(","),
        }
    }
}

/// The scope of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Projects the request can see (and, unless `read_only`, change).
    pub projects: Projects,
    /// Reads only: SQL, exports, reports and the SDK's read API.
    pub read_only: bool,
    /// Which key it came from (a hash prefix), for logs; `None` without keys.
    pub key_id: Option<String>,
    /// May delete runs and projects (a key issued with `--can-delete`, or no
    /// key on a loopback server, as every other write).
    pub can_delete: bool,
}

impl Scope {
    /// The scope of a caller on a server without keys (loopback only), or of the CLI.
    pub fn unrestricted() -> Self {
        Self {
            projects: Projects::All,
            read_only: false,
            key_id: None,
            can_delete: true,
        }
    }

    /// Refuses a project the request names but its key does not open.
    pub fn require_project(&self, project: &str) -> Result<()> {
        if self.projects.allows(project) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this API key does not open project `{project}`"
            )))
        }
    }

    /// Refuses a change through a read-only key.
    pub fn require_write(&self) -> Result<()> {
        if self.read_only {
            Err(Error::Forbidden(
                "this API key is read-only: it cannot change runs, log or upload".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Scope {
    /// Refuses a deletion through a key without the delete right.
    pub fn require_delete(&self) -> Result<()> {
        self.require_write()?;
        if self.can_delete {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "this API key may not delete runs or projects (issue one with `keys create --can-delete`)"
                    .into(),
            ))
        }
    }
}

/// Glob match of `text` against `pattern` (`*` any text, `?` one character),
/// iterative with one backtrack point, so any input costs O(len²) at worst.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("vision-*", "vision-sweep"));
        assert!(glob_match("vision-*", "vision-"));
        assert!(!glob_match("vision-*", "vision"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*-b-*", "a-b-c"));
    }

    #[test]
    fn patterns() {
        assert_eq!(Projects::from_patterns(&[]).unwrap(), Projects::All);
        assert_eq!(
            Projects::from_patterns(&["a".into(), "*".into()]).unwrap(),
            Projects::All
        );
        let p = Projects::from_patterns(&["a".into(), "b-*".into()]).unwrap();
        assert!(p.allows("a") && p.allows("b-1") && !p.allows("c"));
        assert!(Projects::from_patterns(&[" ".into()]).is_err());
    }
}
