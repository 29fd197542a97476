//! Arrow Flight SQL: the same read-only SQL and API keys as HTTP, for ADBC,
//! JDBC/ODBC bridges and BI tools, with results streamed batch by batch.
//!
//! Statement tickets and prepared-statement handles carry their SQL (and bound
//! parameters), so no query state lives in the server: any process serving the
//! store, or a restarted one, can answer any ticket.

mod catalog_info;
mod incoming;
mod params;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Keys;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::interfaces::request_id::{self, RequestIdLayer};
use crate::observe::request::REQUEST_ID_HEADER;
use crate::observe::{Interface, RequestContext, RequestId};
use crate::query::read_only_sql;
use params::Handle;

type FlightStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// The Flight SQL service of one engine.
pub struct FlightSql {
    engine: Arc<Engine>,
    keys: Arc<Keys>,
    info: SqlInfoData,
}

impl FlightSql {
    /// A service answering over `engine`, checking `keys` once any exists.
    pub fn new(engine: Arc<Engine>, keys: Arc<Keys>) -> Result<Self> {
        Ok(Self {
            engine,
            keys,
            info: catalog_info::sql_info()?,
        })
    }

    /// Refuses the call unless it carries a valid key (or no key exists yet);
    /// returns the key's scope, which restricts everything the call sees.
    async fn authorize(
        &self,
        metadata: &MetadataMap,
    ) -> std::result::Result<RequestContext, Status> {
        let header = metadata
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let scope = self
            .keys
            .scope_for(header.as_deref())
            .await
            .map_err(status)?;
        // Set (and checked) by `RequestIdLayer` before any call gets here.
        let id = RequestId::from_client(
            metadata
                .get(REQUEST_ID_HEADER)
                .map(|v| v.as_encoded_bytes()),
        );
        Ok(RequestContext::new(scope, Interface::Flight, id))
    }

    /// Flight SQL only reads: a write is refused, after the key is checked
    /// like on every other call.
    async fn refuse_write(&self, metadata: &MetadataMap) -> std::result::Result<i64, Status> {
        self.authorize(metadata).await?;
        Err(status(Error::Forbidden(
            "forkline's Flight SQL endpoint is read-only: log through the SDK's HTTP API".into(),
        )))
    }

    /// A FlightInfo whose ticket is the metadata command itself, after the caller is authorized.
    async fn command_info(
        &self,
        schema: &Schema,
        command: Any,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata()).await?;
        let info = flight_info(schema, command.encode_to_vec(), request.into_inner())?;
        Ok(Response::new(info))
    }

    /// A session scoped to the caller's project, after the caller is authorized.
    async fn session_for(
        &self,
        metadata: &MetadataMap,
    ) -> std::result::Result<datafusion::prelude::SessionContext, Status> {
        let scope = self.authorize(metadata).await?;
        self.engine
            .scoped_session(&scope.projects)
            .await
            .map_err(status)
    }

    /// Plans `sql` (read-only rule included) and returns its result schema as
    /// sent on the wire; planning takes a query slot like running does.
    async fn schema_of(&self, sql: &str, request: &RequestContext) -> Result<SchemaRef> {
        let df = self.engine.plan_sql(request, sql).await?;
        Ok(flight_schema(df.schema().as_arrow()))
    }

    /// Executes `sql` as one admitted query (see [`crate::query::admission::gate`]) and
    /// streams its batches as Flight data.
    async fn stream(
        &self,
        sql: &str,
        request: &RequestContext,
    ) -> Result<FlightStream<arrow_flight::FlightData>> {
        let mut schema = None;
        let planned = &mut schema;
        let batches = self
            .engine
            .query_stream(request, sql, |ctx| async move {
                let df = read_only_sql(&ctx, sql).await?;
                *planned = Some(flight_schema(df.schema().as_arrow()));
                Ok(df)
            })
            .await?;
        let schema = schema.expect("set by planning");
        // A timeout or a bad value met mid-stream ends it with its own status.
        let batches = batches.map_err(|e| FlightError::Tonic(Box::new(status(Error::from(e)))));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(|e| match e {
                FlightError::Tonic(status) => *status,
                other => Status::internal(other.to_string()),
            });
        Ok(Box::pin(encoded))
    }
}

/// Dictionary columns are sent hydrated, so the advertised schema says so too.
fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type(*value.clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The one mapping from crate errors to gRPC statuses (HTTP's is `status_of_kind`).
fn status(e: Error) -> Status {
    if e.is_store_failure() {
        crate::observe::metrics::store_error("flight");
    }
    let message = e.to_string();
    match e.kind() {
        ErrorKind::InvalidInput => Status::invalid_argument(message),
        ErrorKind::Unauthenticated => Status::unauthenticated(message),
        ErrorKind::Forbidden => Status::permission_denied(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::Conflict => Status::aborted(message),
        ErrorKind::TooLarge | ErrorKind::ResourcesExhausted => Status::resource_exhausted(message),
        ErrorKind::TimedOut => Status::deadline_exceeded(message),
        ErrorKind::Busy | ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::Internal => {
            tracing::error!(error = %message, "flight request failed");
            Status::internal(message)
        }
    }
}

/// A FlightInfo whose single endpoint's ticket is `ticket`, answerable by this server.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> std::result::Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<FlightStream<HandshakeResponse>>, Status> {
        // Clients that log in with username/password get their key back as the bearer token.
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.authorize(request.metadata()).await?;
        let mut response: Response<FlightStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::once(async {
                Ok(HandshakeResponse::default())
            })));
        if let Some(header) = header {
            let bearer = format!("Bearer {}", crate::auth::key_of(&header).map_err(status)?);
            if let Ok(value) = bearer.parse() {
                response.metadata_mut().insert("authorization", value);
            }
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let scope = self.authorize(request.metadata()).await?;
        let schema = self.schema_of(&query.query, &scope).await.map_err(status)?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let scope = self.authorize(request.metadata()).await?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("statement ticket is not UTF-8"))?;
        Ok(Response::new(
            self.stream(&sql, &scope).await.map_err(status)?,
        ))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> std::result::Result<ActionCreatePreparedStatementResult, Status> {
        let scope = self.authorize(request.metadata()).await?;
        let count = params::placeholder_count(&query.query);
        // With placeholders in table-function arguments the statement only plans once
        // bound; its result schema is then announced when it is executed.
        let (dataset, parameters) =
            match self.engine.scoped_sql(&query.query, &scope.projects).await {
                Ok(df) => {
                    let types = df.logical_plan().get_parameter_types().unwrap_or_default();
                    let fields: Vec<Field> = (1..=count)
                        .map(|i| {
                            let name = format!("${i}");
                            let ty = types
                                .get(&name)
                                .cloned()
                                .flatten()
                                .unwrap_or(DataType::Null);
                            Field::new(name, ty, true)
                        })
                        .collect();
                    (flight_schema(df.schema().as_arrow()), Schema::new(fields))
                }
                Err(e) if count == 0 => return Err(status(e)),
                Err(_) => (
                    Arc::new(Schema::empty()),
                    Schema::new(
                        (1..=count)
                            .map(|i| Field::new(format!("${i}"), DataType::Null, true))
                            .collect::<Vec<_>>(),
                    ),
                ),
            };
        let handle = Handle {
            sql: query.query,
            params: None,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode().into(),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<DoPutPreparedStatementResult, Status> {
        self.authorize(request.metadata()).await?;
        let mut handle = Handle::decode(&query.prepared_statement_handle).map_err(status)?;
        let stream = request.into_inner();
        let batches: Vec<_> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("bad parameter batch: {e}")))?;
        let rows: Vec<_> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let values = match rows.as_slice() {
            [] => Vec::new(),
            [batch] => params::literals_of(batch).map_err(status)?,
            _ => {
                return Err(Status::invalid_argument(
                    "a query binds exactly one row of parameters",
                ));
            }
        };
        handle.params = Some(values);
        // Bind eagerly so a wrong parameter fails here, at bind time.
        handle.bound_sql().map_err(status)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode().into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let scope = self.authorize(request.metadata()).await?;
        let handle = Handle::decode(&query.prepared_statement_handle).map_err(status)?;
        let sql = handle.bound_sql().map_err(status)?;
        let schema = self.schema_of(&sql, &scope).await.map_err(status)?;
        let info = flight_info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let scope = self.authorize(request.metadata()).await?;
        let handle = Handle::decode(&query.prepared_statement_handle).map_err(status)?;
        let sql = handle.bound_sql().map_err(status)?;
        Ok(Response::new(
            self.stream(&sql, &scope).await.map_err(status)?,
        ))
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> std::result::Result<(), Status> {
        // Handles hold their whole state, so there is nothing to release.
        self.authorize(request.metadata()).await.map(|_| ())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.command_info(&schema, query.as_any(), request).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let ctx = self.session_for(request.metadata()).await?;
        let batch = catalog_info::catalogs(&ctx, query).map_err(status)?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query.as_any(), request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let ctx = self.session_for(request.metadata()).await?;
        let batch = catalog_info::schemas(&ctx, query).map_err(status)?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(&schema, query.as_any(), request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let ctx = self.session_for(request.metadata()).await?;
        let batch = catalog_info::tables(&ctx, query).await.map_err(status)?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let batch = catalog_info::table_types().map_err(status)?;
        self.command_info(&batch.schema(), query.as_any(), request)
            .await
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        self.authorize(request.metadata()).await?;
        let batch = catalog_info::table_types().map_err(status)?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        self.command_info(&schema, query.as_any(), request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        self.authorize(request.metadata()).await?;
        let batch = query
            .into_builder(&self.info)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> std::result::Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        Err(Status::unimplemented(format!(
            "forkline does not serve `{}`",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        _command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.refuse_write(request.metadata()).await
    }

    async fn do_put_statement_ingest(
        &self,
        _command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.refuse_write(request.metadata()).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        _command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> std::result::Result<i64, Status> {
        self.refuse_write(request.metadata()).await
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// One already-built batch as a Flight data stream.
fn batch_stream(batch: arrow::array::RecordBatch) -> FlightStream<arrow_flight::FlightData> {
    let schema = batch.schema();
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(|e| Status::internal(e.to_string()));
    Box::pin(encoded)
}

/// A schema as the IPC bytes Flight SQL messages embed.
fn ipc_schema(schema: &Schema) -> std::result::Result<bytes::Bytes, Status> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let message: arrow_flight::IpcMessage = arrow_flight::SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// Serves Flight SQL on `listener` until `shutdown` resolves.
///
/// Connections are capped and must start talking within the header timeout as
/// on HTTP (see [`incoming`]); dead peers are found by HTTP/2 and TCP
/// keepalives; a call's stream is bounded by the query timeout (see
/// [`crate::query::admission::gate`]), and getting to its first response by that plus a margin.
pub async fn serve(
    engine: Arc<Engine>,
    keys: Arc<Keys>,
    listener: tokio::net::TcpListener,
    limits: &crate::interfaces::ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let call_timeout = engine.gate().limits().timeout + CALL_TIMEOUT_MARGIN;
    let service = FlightServiceServer::new(FlightSql::new(engine, keys)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let connections = incoming::capped(
        tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(KEEPALIVE)),
        limits.max_connections,
        limits.header_timeout,
    );
    tracing::info!(%addr, "forkline Flight SQL listening");
    tonic::transport::Server::builder()
        .timeout(call_timeout)
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .max_concurrent_streams(Some(CALLS_PER_CONNECTION as u32))
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(RequestIdLayer)
        .layer(request_id::grpc_trace::<tonic::body::Body>())
        .add_service(service)
        .serve_with_incoming_shutdown(connections, shutdown)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
}

/// Largest Flight message sent or received (a parameter batch, a result batch).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Calls a connection may have in progress at once.
const CALLS_PER_CONNECTION: usize = 32;

/// How often an idle connection's peer is checked (HTTP/2 ping, TCP keepalive) …
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// … and how long its answer may take before the connection is dropped.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Time a call may take to its first response beyond the query timeout
/// (admission waits and planning count against the query's own deadline).
const CALL_TIMEOUT_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_the_documented_code() {
        for (kind, _, documented) in crate::error::documented_error_table() {
            let error = match kind {
                ErrorKind::InvalidInput => Error::invalid("x"),
                ErrorKind::Unauthenticated => Error::Unauthenticated("x".into()),
                ErrorKind::Forbidden => Error::Forbidden("x".into()),
                ErrorKind::NotFound => Error::NotFound("x".into()),
                ErrorKind::Conflict => Error::Conflict("x".into()),
                ErrorKind::TooLarge => Error::TooLarge("x".into()),
                ErrorKind::ResourcesExhausted => Error::Query(
                    datafusion::error::DataFusionError::ResourcesExhausted("x".into()),
                ),
                ErrorKind::TimedOut => Error::TimedOut("x".into()),
                ErrorKind::Busy => Error::Busy("x".into()),
                ErrorKind::Unavailable => Error::Unavailable("x".into()),
                ErrorKind::Internal => Error::Damaged("x".into()),
            };
            assert_eq!(error.kind(), kind);
            // `INVALID_ARGUMENT` is tonic's `InvalidArgument`.
            let camel: String = documented
                .split('_')
                .map(|w| w[..1].to_string() + &w[1..].to_ascii_lowercase())
                .collect();
            assert_eq!(format!("{:?}", status(error).code()), camel, "{kind:?}");
        }
    }
}
