//! Result encodings shared by the CLI and HTTP: table, CSV, JSON, Arrow IPC, Parquet.
//!
//! Every encoder except `table` is incremental: each batch yields the bytes it
//! produced, so results stream instead of being held whole in memory. The
//! text formats render dates and times themselves (see [`temporal`]), so any
//! stored value renders and no answer stops half-way over one.

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use arrow_json_writer::{ArrayWriter, JsonArray};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

mod temporal;

mod arrow_json_writer {
    pub use arrow::json::writer::{JsonArray, WriterBuilder};
    pub type ArrayWriter<W> = arrow::json::Writer<W, JsonArray>;
}

/// Encoded size at which a streamed Parquet row group is closed and sent.
const STREAM_ROW_GROUP_BYTES: usize = 8 << 20;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text table (CLI only; buffers the result).
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
    /// Parquet file.
    Parquet,
    /// Arrow IPC stream.
    Arrow,
}

impl Format {
    /// The HTTP media type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The usual file extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
            Format::Arrow => "arrows",
        }
    }

    /// Whether the format is binary (must go to a file, not a terminal).
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }

    /// Picks the format from an HTTP `Accept` header; JSON when nothing matches.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Json;
        };
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "text/csv" => return Format::Csv,
                "application/vnd.apache.arrow.stream" | "application/vnd.apache.arrow" => {
                    return Format::Arrow;
                }
                "application/vnd.apache.parquet"
                | "application/parquet"
                | "application/x-parquet" => {
                    return Format::Parquet;
                }
                "application/json" => return Format::Json,
                "text/plain" => return Format::Table,
                _ => {}
            }
        }
        Format::Json
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        <Format as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            Error::invalid(format!(
                "unknown format `{s}` (table, csv, json, parquet, arrow)"
            ))
        })
    }
}

/// A `Write` whose bytes can be taken out while the writer that owns it lives on.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("buffer lock")))
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Table(Vec<RecordBatch>),
    Csv(arrow::csv::Writer<SharedBuf>),
    Json(ArrayWriter<SharedBuf>),
    Parquet(ArrowWriter<SharedBuf>),
    Arrow(StreamWriter<SharedBuf>),
}

/// Incremental encoder of a result stream in one [`Format`].
pub struct Encoder {
    inner: Inner,
    buf: SharedBuf,
    rows: usize,
    schema: SchemaRef,
}

/// CSV has no nested values: lists, structs and maps are written as their display text.
fn flat_for_csv(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = arrow::util::display::FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<arrow::array::ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = arrow::util::display::ArrayFormatter::try_new(column, &options)?;
            let text: arrow::array::StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(arrow::datatypes::Field::new(
                field.name(),
                arrow::datatypes::DataType::Utf8,
                true,
            ));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

impl Encoder {
    /// Starts an encoding of results with `schema`.
    pub fn new(format: Format, schema: &SchemaRef) -> Result<Self> {
        let buf = SharedBuf::default();
        let inner = match format {
            Format::Table => Inner::Table(Vec::new()),
            Format::Csv => Inner::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(buf.clone()),
            ),
            Format::Json => Inner::Json(
                arrow_json_writer::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, JsonArray>(buf.clone()),
            ),
            Format::Parquet => {
                // Row groups bound what the encoder holds before bytes leave.
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_bytes(Some(STREAM_ROW_GROUP_BYTES))
                    .build();
                Inner::Parquet(ArrowWriter::try_new(
                    buf.clone(),
                    schema.clone(),
                    Some(props),
                )?)
            }
            Format::Arrow => Inner::Arrow(StreamWriter::try_new(buf.clone(), schema)?),
        };
        Ok(Self {
            inner,
            buf,
            rows: 0,
            schema: schema.clone(),
        })
    }

    /// Encodes one batch and returns the bytes ready so far.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        self.rows += batch.num_rows();
        match &mut self.inner {
            Inner::Table(batches) => batches.push(temporal::render_batch(batch)?),
            Inner::Csv(w) => w.write(&flat_for_csv(&temporal::render_batch(batch)?)?)?,
            Inner::Json(w) => w.write(&temporal::render_batch(batch)?)?,
            Inner::Parquet(w) => {
                w.write(batch)?;
            }
            Inner::Arrow(w) => w.write(batch)?,
        }
        Ok(self.buf.take())
    }

    /// Finishes the encoding and returns the remaining bytes.
    pub fn finish(self) -> Result<Bytes> {
        match self.inner {
            Inner::Table(batches) => {
                let text = arrow::util::pretty::pretty_format_batches(&batches)?;
                let mut out = text.to_string();
                out.push('\n');
                out.push_str(&format!("{} row(s)\n", self.rows));
                return Ok(Bytes::from(out));
            }
            Inner::Csv(mut w) => {
                // An empty result still gets its header row.
                if self.rows == 0 {
                    w.write(&flat_for_csv(&RecordBatch::new_empty(self.schema))?)?;
                }
                drop(w)
            }
            Inner::Json(mut w) => w.finish()?,
            Inner::Parquet(w) => {
                w.close()?;
            }
            Inner::Arrow(mut w) => w.finish()?,
        }
        Ok(self.buf.take())
    }
}

/// The encoded bytes of a result stream, chunk by chunk as batches arrive; the
/// stream's schema is written even when it yields no rows.
pub fn encode_stream(
    format: Format,
    mut batches: SendableRecordBatchStream,
) -> Result<impl Stream<Item = Result<Bytes>> + Send> {
    let mut encoder = Encoder::new(format, &batches.schema())?;
    Ok(async_stream::stream! {
        while let Some(batch) = batches.next().await {
            let bytes = batch
                .map_err(Error::from)
                .and_then(|b| encoder.write(&b));
            match bytes {
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => yield Ok(bytes),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        yield encoder.finish();
    })
}
