//! Planning SQL text from outside: read-only statements within the limits of
//! [`admission::limits`](super::admission::limits).

use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};

use super::admission::limits;
use crate::error::{Error, Result};

/// Plans `sql`, refusing anything that is not a read-only query or that
/// passes the limits of [`limits`]. Every SQL text from outside (HTTP, Flight
/// SQL, the CLI) and every query forkline writes itself is planned here.
pub async fn read_only_sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    limits::check_text(sql)?;
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = limits::check_statement(state.sql_to_statement(sql, &dialect)?)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let planned = async {
        let plan = state.statement_to_plan(statement).await?;
        options.verify_plan(&plan)?;
        ctx.execute_logical_plan(plan).await
    };
    planned.await.map_err(|e| match e {
        DataFusionError::Plan(msg)
            if ["DDL", "DML", "Statement"]
                .iter()
                .any(|kind| msg.starts_with(&format!("{kind} not supported"))) =>
        {
            Error::invalid(format!("only read-only queries are accepted ({msg})"))
        }
        other => Error::from(other),
    })
}
