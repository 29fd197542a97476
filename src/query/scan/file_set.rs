//! A table over an explicit list of Parquet files of a Delta snapshot.
//!
//! The read path chooses files itself (by class and by the `run_id` range the
//! Delta statistics give each file), so every scan is a plain DataFusion
//! Parquet scan: the session's Parquet options (page index, filter pushdown),
//! the runtime's footer and page-index cache, and a plan any DataFusion engine
//! can serialize.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, ScalarValue, project_schema};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DFResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::store::DataFile;

/// Longest `run_id IN (…)` list that prunes files value by value: a family or
/// project scan lists every owner. (Row groups and pages keep DataFusion's
/// default limit: expanding a long list there costs more than it saves.)
const MAX_IN_LIST: usize = 100_000;

/// Files of one table snapshot, read as one table.
#[derive(Debug)]
pub struct FileSetTable {
    schema: SchemaRef,
    store: ObjectStoreUrl,
    files: Vec<DataFile>,
}

impl FileSetTable {
    /// A table of `files` (located in the object store known as `store`), all with `schema`.
    pub fn new(schema: SchemaRef, store: ObjectStoreUrl, files: Vec<DataFile>) -> Self {
        // Strings are read as views, as DataFusion's own Parquet tables do:
        // comparisons on `metric` then skip copying the bytes.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            store,
            files,
        }
    }

    /// The files a scan with `filters` may need, by their `run_id` ranges.
    fn candidates(&self, state: &dyn Session, filters: &[Expr]) -> DFResult<Vec<&DataFile>> {
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return Ok(self.files.iter().collect());
        };
        let df_schema = DFSchema::try_from(self.schema.clone())?;
        let physical = state.create_physical_expr(predicate, &df_schema)?;
        let pruning = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .with_max_in_list_size(MAX_IN_LIST)
            .try_build(physical)?;
        let keep = pruning.prune(&RunRanges(&self.files))?;
        Ok(self
            .files
            .iter()
            .zip(keep)
            .filter_map(|(f, keep)| keep.then_some(f))
            .collect())
    }
}

#[async_trait]
impl TableProvider for FileSetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Used to prune files, row groups and pages; the rows are filtered again above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let files = self.candidates(state, filters)?;
        if files.is_empty() {
            let schema = project_schema(&self.schema, projection)?;
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let options = state.default_table_options().parquet.clone();
        let runtime = state.runtime_env();
        let readers = CachedParquetFileReaderFactory::new(
            runtime.object_store(&self.store)?,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        // No predicate here: the filters stay above the scan (inexact) and
        // DataFusion's physical filter pushdown hands them to the Parquet
        // source, which prunes row groups and pages and filters rows with
        // them. Setting them here as well had every row test them twice.
        let mut source = ParquetSource::new(TableSchema::from(self.schema.clone()))
            .with_parquet_file_reader_factory(Arc::new(PageIndexCached(readers)));
        if let Some(hint) = options.global.metadata_size_hint {
            source = source.with_metadata_size_hint(hint);
        }
        let source = source.with_table_parquet_options(options);
        let config = FileScanConfigBuilder::new(self.store.clone(), Arc::new(source))
            .with_file_groups(groups(&files, state.config().target_partitions()))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Readers whose footers enter the metadata cache with their page index.
///
/// DataFusion's opener asks for the footer alone and then reads and decodes
/// the page index itself, outside the cache, on every query. Asking for the
/// index with the footer caches both once per file, and the opener then finds
/// the index already loaded.
#[derive(Debug)]
struct PageIndexCached(CachedParquetFileReaderFactory);

impl ParquetFileReaderFactory for PageIndexCached {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DFResult<Box<dyn AsyncFileReader + Send>> {
        let inner = self
            .0
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(WithPageIndex(inner)))
    }
}

struct WithPageIndex(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for WithPageIndex {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

/// Spreads files over at most `partitions` groups of similar byte size.
fn groups(files: &[&DataFile], partitions: usize) -> Vec<FileGroup> {
    let n = partitions.clamp(1, files.len());
    let mut sized: Vec<&&DataFile> = files.iter().collect();
    sized.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); n];
    for file in sized {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        lightest.0 += file.size;
        lightest
            .1
            .push(PartitionedFile::new(file.location.to_string(), file.size));
    }
    groups
        .into_iter()
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

/// File-level `run_id` statistics for [`PruningPredicate`].
struct RunRanges<'a>(&'a [DataFile]);

impl RunRanges<'_> {
    fn bound(&self, column: &Column, pick: fn((i64, i64)) -> i64) -> Option<ArrayRef> {
        (column.name == "run_id").then(|| {
            Arc::new(
                self.0
                    .iter()
                    .map(|f| f.runs.map(pick))
                    .collect::<Int64Array>(),
            ) as ArrayRef
        })
    }
}

impl PruningStatistics for RunRanges<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |r| r.0)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |r| r.1)
    }

    fn num_containers(&self) -> usize {
        self.0.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}
