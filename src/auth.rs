//! API keys: issued for all projects (the default, as Pluto's organization
//! keys), for a list of project names or globs, and optionally read-only;
//! stored as SHA-256 hashes in the `keys` table, revoked by appending a
//! revocation, and checked on every request once any key has been issued.
//!
//! A presented key costs one hash and one map lookup, valid or not: the key
//! table is re-read only when its Delta version moves (checked at most every
//! refresh interval), never because an unknown key was presented.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::scope::{Projects, Scope};
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamp_type, timestamps};

/// Prefix of every issued key, so leaked keys are recognisable.
const KEY_PREFIX: &str = "fk_";
/// Hex digits of the hash that name a key in `keys list` and `keys revoke`.
const KEY_ID_LEN: usize = 12;
/// Shortest key id prefix `keys revoke` accepts.
const MIN_KEY_ID_PREFIX: usize = 6;
/// Where the last use of each key is recorded, under the store root.
const LAST_USED_DIR: &str = "_forkline/keys/last-used";
/// A key's last use is written at most this often per process.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Longest `Authorization` value looked at; a key is 51 characters.
const MAX_AUTHORIZATION_LEN: usize = 1024;

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One issued key as `keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The first hex digits of the key's hash.
    pub id: String,
    /// Projects it opens.
    pub projects: Projects,
    /// Whether it only reads.
    pub read_only: bool,
    /// Whether it may delete runs and projects.
    pub can_delete: bool,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When a server last accepted it (recorded at most once a minute).
    pub last_used: Option<DateTime<Utc>>,
}

/// The keys of one version of the `keys` table, by hash.
#[derive(Debug, Default)]
struct KeySet {
    version: Option<u64>,
    by_hash: HashMap<String, KeyInfo>,
}

/// The key hashes of a store, reloaded when the `keys` table moves.
#[derive(Debug)]
pub struct Keys {
    engine: Arc<Engine>,
    set: RwLock<Arc<KeySet>>,
    /// Last time this process recorded each key's use.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Keys {
    /// Loads the keys of `engine`'s store.
    pub async fn load(engine: Arc<Engine>) -> Result<Self> {
        let keys = Self {
            engine,
            set: RwLock::new(Arc::new(KeySet::default())),
            touched: Mutex::new(HashMap::new()),
        };
        keys.current().await?;
        Ok(keys)
    }

    /// The key set as of a `keys` state at most one refresh interval old.
    async fn current(&self) -> Result<Arc<KeySet>> {
        let table = self
            .engine
            .store()
            .refresh_within(TableKind::Keys, self.engine.options().refresh_interval)
            .await?;
        let loaded = self.set.read().expect("keys lock").clone();
        if loaded.version == table.version() && loaded.version.is_some() {
            return Ok(loaded);
        }
        let (version, batches) = self.engine.read_table(TableKind::Keys).await?;
        let set = Arc::new(KeySet {
            version,
            by_hash: parse_keys(&batches)?,
        });
        let mut slot = self.set.write().expect("keys lock");
        if slot.version.is_none_or(|v| version.is_some_and(|n| n >= v)) {
            *slot = set.clone();
        }
        Ok(set)
    }

    /// Whether any key has ever been issued (revoked ones count: revoking
    /// every key must not open the server to unauthenticated callers).
    pub async fn any(&self) -> Result<bool> {
        Ok(!self.current().await?.by_hash.is_empty())
    }

    /// The scope of a request from its `Authorization` header value
    /// (`Bearer <key>`, or `Basic` with the key as password). Without any
    /// issued key every request is unrestricted (the server is then bound to
    /// loopback, see `serve`).
    pub async fn scope_for(&self, authorization: Option<&str>) -> Result<Scope> {
        let set = self.current().await?;
        if set.by_hash.is_empty() {
            return Ok(Scope::unrestricted());
        }
        let header = authorization.ok_or_else(|| {
            Error::Unauthenticated("Missing API key: send Authorization: Bearer <key>".into())
        })?;
        let key = key_of(header)?;
        let info = set
            .by_hash
            .get(&hash(&key))
            .filter(|k| k.revoked_at.is_none())
            .ok_or_else(|| Error::Unauthenticated("Invalid API key".into()))?;
        self.touch(&info.id);
        Ok(Scope {
            projects: info.projects.clone(),
            read_only: info.read_only,
            key_id: Some(info.id.clone()),
            can_delete: info.can_delete && !info.read_only,
        })
    }

    /// Records that key `id` was used, at most once a minute per process and
    /// off the request's path; a failure only costs the record.
    fn touch(&self, id: &str) {
        if self.engine.store().is_read_only() {
            return;
        }
        {
            let mut touched = self.touched.lock().expect("touch lock");
            if touched
                .get(id)
                .is_some_and(|t| t.elapsed() < LAST_USED_EVERY)
            {
                return;
            }
            touched.insert(id.to_string(), Instant::now());
        }
        let engine = self.engine.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let location = engine.store().location();
            let Ok(path) = location.path(&format!("{LAST_USED_DIR}/{id}")) else {
                return;
            };
            let now = Utc::now().to_rfc3339();
            if let Err(e) = location
                .object_store
                .put(&path, PutPayload::from(now))
                .await
            {
                tracing::debug!(error = %e, key = %id, "could not record the key's last use");
            }
        });
    }
}

/// The key in an `Authorization` value.
pub fn key_of(header: &str) -> Result<String> {
    let bad = |what: &str| Error::Unauthenticated(what.to_string());
    if header.len() > MAX_AUTHORIZATION_LEN {
        return Err(bad("Invalid API key"));
    }
    if let Some(key) = header.strip_prefix("Bearer ") {
        return Ok(key.trim().to_string());
    }
    if let Some(encoded) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("malformed basic credentials"))?;
        let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
        return Ok(password.trim().to_string());
    }
    Err(bad(
        "unsupported authorization scheme: send `Authorization: Bearer <key>`",
    ))
}

/// A string column of `batch`, or `None` where the table predates it.
fn strings(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    batch
        .column_by_name(name)
        .map(|c| Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()))
        .transpose()
}

fn micros(batch: &RecordBatch, name: &str) -> Result<Option<TimestampMicrosecondArray>> {
    batch
        .column_by_name(name)
        .map(|c| {
            Ok(cast(c, &timestamp_type())?
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone())
        })
        .transpose()
}

fn at(micros: &TimestampMicrosecondArray, row: usize) -> Option<DateTime<Utc>> {
    micros
        .is_valid(row)
        .then(|| DateTime::from_timestamp_micros(micros.value(row)))
        .flatten()
}

/// Keys by hash from the rows of the `keys` table: an issue row per key, and
/// a revocation row (same hash, `revoked_at` set) per revoked key. Rows
/// written before scopes existed have only `project`: one project, read-write.
fn parse_keys(batches: &[RecordBatch]) -> Result<HashMap<String, KeyInfo>> {
    let mut keys: HashMap<String, KeyInfo> = HashMap::new();
    let mut revoked: Vec<(String, DateTime<Utc>)> = Vec::new();
    for batch in batches {
        let hashes = strings(batch, "key_hash")?
            .ok_or_else(|| Error::Damaged("the keys table lacks `key_hash`".into()))?;
        let project = strings(batch, "project")?;
        let scopes = strings(batch, "projects")?;
        let flag = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<BooleanArray>().cloned())
        };
        let (read_only, can_delete) = (flag("read_only"), flag("can_delete"));
        let created = micros(batch, "created_at")?;
        let revoked_at = micros(batch, "revoked_at")?;
        for row in 0..batch.num_rows() {
            let h = hashes.value(row).to_string();
            if let Some(when) = revoked_at.as_ref().and_then(|r| at(r, row)) {
                revoked.push((h, when));
                continue;
            }
            let patterns: Vec<String> = match scopes.as_ref().filter(|s| s.is_valid(row)) {
                Some(s) => serde_json::from_str(s.value(row)).map_err(|e| {
                    Error::Damaged(format!("a key's project list is not JSON: {e}"))
                })?,
                None => project
                    .as_ref()
                    .filter(|p| p.is_valid(row))
                    .map(|p| vec![p.value(row).to_string()])
                    .unwrap_or_default(),
            };
            keys.insert(
                h.clone(),
                KeyInfo {
                    id: h[..KEY_ID_LEN.min(h.len())].to_string(),
                    projects: Projects::from_patterns(&patterns)?,
                    read_only: read_only
                        .as_ref()
                        .is_some_and(|r| r.is_valid(row) && r.value(row)),
                    can_delete: can_delete
                        .as_ref()
                        .is_some_and(|r| r.is_valid(row) && r.value(row)),
                    created_at: created
                        .as_ref()
                        .and_then(|c| at(c, row))
                        .unwrap_or_default(),
                    revoked_at: None,
                    last_used: None,
                },
            );
        }
    }
    for (h, when) in revoked {
        if let Some(k) = keys.get_mut(&h) {
            k.revoked_at = Some(k.revoked_at.map_or(when, |w| w.min(when)));
        }
    }
    Ok(keys)
}

/// One row of the `keys` table.
fn key_row(hash: &str, projects: &Projects, access: Access, revoked: bool) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let patterns = match projects {
        Projects::All => vec!["*".to_string()],
        Projects::Matching(p) => p.clone(),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![hash.to_string()])),
        Arc::new(StringArray::from(vec![patterns.join(",")])),
        Arc::new(timestamps(vec![now])),
        Arc::new(StringArray::from(vec![
            serde_json::to_string(&patterns).expect("strings serialize"),
        ])),
        Arc::new(BooleanArray::from(vec![access.read_only])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![revoked.then_some(now)]).with_timezone("UTC"),
        ),
        Arc::new(BooleanArray::from(vec![access.can_delete])),
    ];
    Ok(RecordBatch::try_new(
        arrow_schema(TableKind::Keys),
        columns,
    )?)
}

/// What a key may do in the projects it opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// Reads only.
    pub read_only: bool,
    /// May delete runs and projects.
    pub can_delete: bool,
}

/// Issues a new key for `projects` with `access`; only its hash is stored,
/// so print it now or lose it. Returns the key and its id.
pub async fn create_key(
    engine: &Engine,
    projects: &Projects,
    access: Access,
) -> Result<(String, String)> {
    if access.read_only && access.can_delete {
        return Err(Error::invalid(
            "a read-only key cannot delete: choose --read-only or --can-delete",
        ));
    }
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let h = hash(&key);
    let batch = key_row(&h, projects, access, false)?;
    engine.append_records(TableKind::Keys, vec![batch]).await?;
    Ok((key, h[..KEY_ID_LEN].to_string()))
}

/// Every issued key, oldest first, with its last use.
pub async fn list_keys(engine: &Engine) -> Result<Vec<KeyInfo>> {
    let (_, batches) = engine.read_table(TableKind::Keys).await?;
    let mut keys: Vec<KeyInfo> = parse_keys(&batches)?.into_values().collect();
    keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let location = engine.store().location();
    for k in &mut keys {
        let path = location.path(&format!("{LAST_USED_DIR}/{}", k.id))?;
        k.last_used = match location.object_store.get(&path).await {
            Ok(found) => {
                let bytes = found.bytes().await?;
                DateTime::parse_from_rfc3339(String::from_utf8_lossy(&bytes).trim())
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
    }
    Ok(keys)
}

/// Revokes the one key whose id starts with `id_prefix`; servers refuse it
/// within their refresh interval. Returns the revoked key's id.
pub async fn revoke_key(engine: &Engine, id_prefix: &str) -> Result<String> {
    let prefix = id_prefix.trim().to_ascii_lowercase();
    if prefix.len() < MIN_KEY_ID_PREFIX || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "give at least {MIN_KEY_ID_PREFIX} hex digits of a key id (see `keys list`)"
        )));
    }
    let (_, batches) = engine.read_table(TableKind::Keys).await?;
    let keys = parse_keys(&batches)?;
    let matching: Vec<(&String, &KeyInfo)> = keys
        .iter()
        .filter(|(h, _)| h.starts_with(&prefix))
        .collect();
    let (h, info) = match matching.as_slice() {
        [one] => *one,
        [] => return Err(Error::NotFound(format!("no key with id `{prefix}`"))),
        _ => {
            return Err(Error::invalid(format!(
                "`{prefix}` names {} keys; give more digits",
                matching.len()
            )));
        }
    };
    if info.revoked_at.is_some() {
        return Ok(info.id.clone());
    }
    let access = Access {
        read_only: info.read_only,
        can_delete: info.can_delete,
    };
    let batch = key_row(h, &info.projects, access, true)?;
    engine.append_records(TableKind::Keys, vec![batch]).await?;
    Ok(info.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_forms() {
        assert_eq!(key_of("Bearer fk_1 ").unwrap(), "fk_1");
        let basic = base64::engine::general_purpose::STANDARD.encode("user:fk_2");
        assert_eq!(key_of(&format!("Basic {basic}")).unwrap(), "fk_2");
        assert!(matches!(key_of("Token x"), Err(Error::Unauthenticated(_))));
        assert!(key_of(&format!("Bearer {}", "x".repeat(5000))).is_err());
    }
}
