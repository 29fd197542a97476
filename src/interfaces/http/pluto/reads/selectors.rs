//! The query-string parameters several read routes share, described once for
//! the OpenAPI document. The handlers read them through `Params`; these types
//! are never built.

#![allow(dead_code)]

use utoipa::IntoParams;

/// One run, optionally checked against its project.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(in super::super) struct RunSelector {
    /// A run, by numeric or display id.
    #[param(rename = "runId")]
    run_id: String,
    /// The project; it must lie in the key's scope.
    #[param(rename = "projectName")]
    project_name: Option<String>,
}

/// The project a run must lie in, when given.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(in super::super) struct ProjectCheck {
    /// The project; it must lie in the key's scope.
    #[param(rename = "projectName")]
    project_name: Option<String>,
}

/// The project a listing is of.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(in super::super) struct ProjectSelector {
    /// The project; it must lie in the key's scope.
    #[param(rename = "projectName")]
    project_name: String,
}

/// A page of a listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(in super::super) struct Page {
    /// Most items answered.
    limit: Option<u64>,
    /// Items skipped first.
    offset: Option<u64>,
}
