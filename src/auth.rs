//! API keys: issued per project, stored as SHA-256 hashes in the `keys` table,
//! checked on every request once any key exists.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::TableKind;
use crate::store::schema::{arrow_schema, timestamps};

/// Prefix of every issued key, so leaked keys are recognisable.
const KEY_PREFIX: &str = "fk_";

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What a valid key grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The project the key opens.
    pub project: String,
}

/// The key hashes of a store, reloaded when an unknown key is presented.
#[derive(Debug)]
pub struct Keys {
    engine: Arc<Engine>,
    by_hash: RwLock<(Option<u64>, HashMap<String, Grant>)>,
}

impl Keys {
    /// Loads the keys of `engine`'s store.
    pub async fn load(engine: Arc<Engine>) -> Result<Self> {
        let keys = Self {
            engine,
            by_hash: RwLock::new((None, HashMap::new())),
        };
        keys.reload().await?;
        Ok(keys)
    }

    async fn reload(&self) -> Result<()> {
        let (version, batches) = self.engine.read_table(TableKind::Keys).await?;
        if self.by_hash.read().expect("keys lock").0 == version {
            return Ok(());
        }
        let mut map = HashMap::new();
        for batch in &batches {
            let column = |name: &str| -> Result<StringArray> {
                let c = batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::invalid(format!("keys table lacks `{name}`")))?;
                Ok(arrow::array::AsArray::as_string::<i32>(&cast(c, &DataType::Utf8)?).clone())
            };
            let (hashes, projects) = (column("key_hash")?, column("project")?);
            for i in 0..hashes.len() {
                map.insert(
                    hashes.value(i).to_string(),
                    Grant {
                        project: projects.value(i).to_string(),
                    },
                );
            }
        }
        *self.by_hash.write().expect("keys lock") = (version, map);
        Ok(())
    }

    /// Whether any key has been issued (if not, the server runs unauthenticated on loopback).
    pub async fn any(&self) -> Result<bool> {
        if self.by_hash.read().expect("keys lock").1.is_empty() {
            self.reload().await?;
        }
        Ok(!self.by_hash.read().expect("keys lock").1.is_empty())
    }

    /// The grant of `key`, if it is a valid key.
    pub async fn check(&self, key: &str) -> Result<Option<Grant>> {
        let h = hash(key.trim());
        if let Some(g) = self.by_hash.read().expect("keys lock").1.get(&h) {
            return Ok(Some(g.clone()));
        }
        self.reload().await?;
        Ok(self.by_hash.read().expect("keys lock").1.get(&h).cloned())
    }
}

/// Issues a new key for `project`; only its hash is stored, so print it now or lose it.
pub async fn create_key(engine: &Engine, project: &str) -> Result<String> {
    if project.trim().is_empty() {
        return Err(Error::invalid("project must not be empty"));
    }
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![hash(&key)])),
        Arc::new(StringArray::from(vec![project.trim().to_string()])),
        Arc::new(timestamps(vec![chrono::Utc::now().timestamp_micros()])),
    ];
    let batch = RecordBatch::try_new(arrow_schema(TableKind::Keys), columns)?;
    engine.store().append(TableKind::Keys, vec![batch]).await?;
    Ok(key)
}
