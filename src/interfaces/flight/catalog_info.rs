//! What Flight SQL clients ask before querying: server facts, catalogs, schemas, tables.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, SqlInfo, SqlSupportedTransaction,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// The facts `GetSqlInfo` reports (ADBC's `adbc_get_info` reads the server name and version).
pub fn sql_info() -> Result<SqlInfoData> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "forkline");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(SqlInfo::SqlSchemaTerm, "schema");
    info.append(SqlInfo::SqlCatalogTerm, "catalog");
    info.build().map_err(internal)
}

/// Every catalog of the session.
pub fn catalogs(ctx: &SessionContext, query: CommandGetCatalogs) -> Result<RecordBatch> {
    let mut builder: GetCatalogsBuilder = query.into_builder();
    for name in ctx.catalog_names() {
        builder.append(name);
    }
    builder.build().map_err(internal)
}

/// Every schema of the session; the builder applies the client's filters.
pub fn schemas(ctx: &SessionContext, query: CommandGetDbSchemas) -> Result<RecordBatch> {
    let mut builder: GetDbSchemasBuilder = query.into_builder();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            builder.append(&catalog_name, schema_name);
        }
    }
    builder.build().map_err(internal)
}

/// Every table and view of the session, with its Arrow schema when asked for.
pub async fn tables(ctx: &SessionContext, query: CommandGetTables) -> Result<RecordBatch> {
    let mut builder: GetTablesBuilder = query.into_builder();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for table_name in names {
                let Some(table) = schema.table(&table_name).await? else {
                    continue;
                };
                builder
                    .append(
                        &catalog_name,
                        &schema_name,
                        &table_name,
                        type_name(table.table_type()),
                        table.schema().as_ref(),
                    )
                    .map_err(internal)?;
            }
        }
    }
    builder.build().map_err(internal)
}

/// Building these small batches fails only on a bug.
fn internal(e: arrow_flight::error::FlightError) -> Error {
    Error::Query(datafusion::error::DataFusionError::External(Box::new(e)))
}

fn type_name(kind: TableType) -> &'static str {
    match kind {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The table types `tables` can report.
pub fn table_types() -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "table_type",
        DataType::Utf8,
        false,
    )]));
    let types = StringArray::from(vec!["LOCAL TEMPORARY", "TABLE", "VIEW"]);
    Ok(RecordBatch::try_new(schema, vec![Arc::new(types)])?)
}
