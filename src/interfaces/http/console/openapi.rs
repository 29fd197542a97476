//! The console's routes in the OpenAPI document: the pages (one HTML shell)
//! and the keyed fragments behind them, with the parameters each reads. The
//! console shares handlers between paths, so these are built from a table
//! here rather than by `#[utoipa::path]` on each handler.

use utoipa::openapi::Required;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{
    Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};

/// A query parameter: name, type, description.
type Query = (&'static str, Type, &'static str);

/// A console route: path, operation id, summary, query parameters.
type Row = (&'static str, &'static str, &'static str, Vec<Query>);

/// The chart parameters of the family and compare fragments.
const CHART: [Query; 6] = [
    (
        "metric",
        Type::String,
        "A metric to draw; repeat it for charts side by side (default: the first non-system metric)",
    ),
    (
        "from",
        Type::Integer,
        "First step shown (default: the first step)",
    ),
    (
        "to",
        Type::Integer,
        "Last step shown (default: the last step)",
    ),
    (
        "width",
        Type::Integer,
        "Chart width in pixels: one downsampling bucket per pixel column",
    ),
    (
        "axis",
        Type::String,
        "`log`, `linear`, or `auto` (log when all values are positive and span a decade)",
    ),
    (
        "inherited",
        Type::String,
        "`0`: raw points of each run instead of stitched series with their inherited part",
    ),
];

/// Every console route.
fn table() -> Vec<Row> {
    let chart = CHART.to_vec();
    let mut compare = vec![(
        "runs",
        Type::String,
        "Runs to compare, comma-separated display ids (any family of the project)",
    )];
    compare.extend(CHART);
    vec![
        (
            "/",
            "consolePage",
            "The console's page shell (projects)",
            vec![],
        ),
        (
            "/sql",
            "consoleSqlPage",
            "The SQL page's shell (`q`: the query, `download`: a format to download)",
            vec![],
        ),
        (
            "/p/{project}",
            "consoleProjectPage",
            "A project page's shell",
            vec![],
        ),
        (
            "/p/{project}/f/{run}",
            "consoleFamilyPage",
            "A family page's shell",
            vec![],
        ),
        (
            "/p/{project}/r/{run}",
            "consoleRunPage",
            "A run page's shell",
            vec![],
        ),
        (
            "/p/{project}/compare",
            "consoleComparePage",
            "The compare page's shell",
            vec![],
        ),
        (
            "/console/console.js",
            "consoleScript",
            "The console's script",
            vec![],
        ),
        (
            "/console/console.css",
            "consoleStyle",
            "The console's style sheet",
            vec![],
        ),
        (
            "/api/console/p",
            "consoleProjects",
            "The key's projects, with run counts and last activity, as HTML",
            vec![],
        ),
        (
            "/api/console/p/{project}",
            "consoleProject",
            "A project's families, as HTML",
            vec![],
        ),
        (
            "/api/console/p/{project}/f/{run}",
            "consoleFamily",
            "A family's fork tree and stitched charts, as HTML",
            chart,
        ),
        (
            "/api/console/p/{project}/r/{run}",
            "consoleRun",
            "A run's config (against its parent's), tags, status history, logs and files, as HTML",
            vec![],
        ),
        (
            "/api/console/p/{project}/compare",
            "consoleCompare",
            "Runs of any families on one chart per metric, with the report's per-run table, as HTML",
            compare,
        ),
    ]
}

fn parameter(name: &str, location: ParameterIn, kind: Type, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location.clone())
        .required(if location == ParameterIn::Path {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(kind)))
        .build()
}

/// Every console route's path and GET operation.
pub(crate) fn operations() -> Vec<(&'static str, Operation)> {
    table()
        .into_iter()
        .map(|(path, id, summary, query)| {
            let content_type = match path.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("css") => "text/css",
                _ => "text/html",
            };
            let mut op = OperationBuilder::new()
                .operation_id(Some(id))
                .summary(Some(summary))
                .tag("console")
                .response(
                    "200",
                    ResponseBuilder::new().description(summary).content(
                        content_type,
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build(),
                    ),
                );
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(['{', '}']);
                op = op.parameter(parameter(
                    name,
                    ParameterIn::Path,
                    Type::String,
                    "From the page's URL",
                ));
            }
            for (name, kind, description) in query {
                op = op.parameter(parameter(name, ParameterIn::Query, kind, description));
            }
            (path, op.build())
        })
        .collect()
}
