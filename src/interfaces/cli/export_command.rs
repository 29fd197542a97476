//! `forkline export`: a run's or a family's series to a file, local or in object storage.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::interfaces::format::{Format, encode_stream};
use crate::query::lineage::SeriesExport;
use crate::store::location::{StoreLocation, StoreOptions};

/// What one export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Where an export's bytes go; nothing is visible under the target name until `finish`.
enum Sink {
    /// A local file, written beside the target and renamed into place.
    File {
        partial: std::path::PathBuf,
        target: std::path::PathBuf,
        file: tokio::fs::File,
    },
    /// An object, uploaded when finished.
    Object(BufWriter),
}

impl Sink {
    /// Opens `target`: a local path, or a URL such as `s3://bucket/key`.
    async fn open(target: &str, options: &StoreOptions) -> Result<Self> {
        let is_url = url::Url::parse(target).is_ok_and(|u| u.scheme().len() > 1);
        if !is_url {
            let target = std::path::PathBuf::from(target);
            if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            let mut partial = target.clone().into_os_string();
            partial.push(format!(".partial-{}", std::process::id()));
            let partial = std::path::PathBuf::from(partial);
            let file = tokio::fs::File::create(&partial).await?;
            return Ok(Sink::File {
                partial,
                target,
                file,
            });
        }
        let (dir, name) = target
            .rsplit_once('/')
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| Error::invalid(format!("{target} names no file")))?;
        let location = StoreLocation::parse_with(dir, options)?;
        let path = ObjectPath::from(format!("{}{name}", location.root.path()));
        Ok(Sink::Object(BufWriter::new(location.object_store, path)))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::File { file, .. } => file.write_all(bytes).await?,
            Sink::Object(writer) => writer.write_all(bytes).await?,
        }
        Ok(())
    }

    async fn finish(self) -> Result<()> {
        match self {
            Sink::File {
                partial,
                target,
                file,
            } => {
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&partial, &target).await?;
            }
            Sink::Object(mut writer) => writer.shutdown().await?,
        }
        Ok(())
    }

    async fn abort(self) {
        match self {
            Sink::File { partial, file, .. } => {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
            }
            Sink::Object(mut writer) => {
                let _ = writer.abort().await;
            }
        }
    }
}

/// Runs `export` and writes it in `format` to `target`, with a progress line on a terminal.
pub async fn export_to(
    engine: &Engine,
    export: &SeriesExport,
    format: Format,
    target: &str,
) -> Result<Written> {
    if format == Format::Table {
        return Err(Error::invalid(
            "export formats are parquet, arrow, csv and json",
        ));
    }
    let (df, _) = export
        .plan(&*engine.catalog().await?, &engine.session().await?)
        .await?;
    let batches = engine.gate().execute(df).await?;
    let schema = batches.schema();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} exporting: {msg} [{elapsed_precise}]")
            .expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let rows = Arc::new(AtomicU64::new(0));
    let counted = batches.inspect({
        let (bar, rows) = (bar.clone(), rows.clone());
        move |batch| {
            if let Ok(b) = batch {
                let n =
                    rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed) + b.num_rows() as u64;
                bar.set_message(format!("{n} rows"));
            }
        }
    });
    let stream: SendableRecordBatchStream =
        Box::pin(RecordBatchStreamAdapter::new(schema, counted));
    let mut sink = Sink::open(target, &engine.options().store).await?;
    let mut chunks = std::pin::pin!(encode_stream(format, stream)?);
    let mut written = Written { rows: 0, bytes: 0 };
    let copied: Result<()> = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            written.bytes += chunk.len() as u64;
            sink.write(&chunk).await?;
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    match copied {
        Ok(()) => sink.finish().await?,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    }
    written.rows = rows.load(Ordering::Relaxed);
    Ok(written)
}
