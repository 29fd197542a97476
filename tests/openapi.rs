//! The OpenAPI document the real server serves at `/api/openapi.json`
//! describes exactly the routes of the router, with the access each has.
//! (tests/python/test_openapi.py validates it and checks the HTTP examples of
//! the README and `docs/` against it.)

mod common;

use std::collections::BTreeSet;

use common::{spawn_server, temp_store};
use forkline::interfaces::http::{RouteAccess, route_specs};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `$ref` under `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_route_and_no_other() {
    let (_dir, store) = temp_store();
    let server = spawn_server(&store);
    let response = reqwest::get(format!("{}/api/openapi.json", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0", "{doc}");

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            METHODS
                .iter()
                .filter(|m| item.contains_key(**m))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let specs = route_specs();
    // axum 0.8 writes path parameters as OpenAPI does (`{id}`), so paths compare as they are.
    let routed: BTreeSet<(String, String)> = specs
        .iter()
        .map(|s| (s.method.to_string(), s.path.to_string()))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "routes the document lacks: {missing:?}");
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(
        stale.is_empty(),
        "documented routes the router lacks: {stale:?}"
    );

    // What each route's access means, as the document says it.
    assert_eq!(doc["security"], serde_json::json!([{"apiKey": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["scheme"],
        "bearer"
    );
    for spec in &specs {
        let method = spec.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][spec.path][&method];
        let cell = format!("{} {}", spec.method, spec.path);
        let responses = op["responses"].as_object().expect("responses");
        assert!(responses.contains_key("200"), "{cell}: {op}");
        let header_named = |name: &str| {
            op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "header"))
        };
        match spec.access {
            RouteAccess::Public | RouteAccess::Signed => {
                assert_eq!(op["security"], serde_json::json!([]), "{cell}");
                assert!(!responses.contains_key("401"), "{cell}");
            }
            // No key on a loopback listener, any key otherwise.
            RouteAccess::Monitoring => {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{}, {"apiKey": []}]),
                    "{cell}"
                );
                assert!(responses.contains_key("401"), "{cell}");
            }
            RouteAccess::Read | RouteAccess::Write => {
                assert!(
                    op.get("security").is_none(),
                    "{cell}: the global key applies"
                );
                for status in ["400", "401", "403", "404", "503"] {
                    assert!(responses.contains_key(status), "{cell} lacks {status}");
                }
                assert!(header_named("X-Project-Name"), "{cell}");
            }
        }
        if spec.access != RouteAccess::Public && spec.method != axum::http::Method::GET {
            assert!(responses.contains_key("413"), "{cell} lacks 413");
        }
        if spec.path.starts_with("/ingest/") || spec.path == "/files" {
            assert!(header_named("X-Run-Id"), "{cell}");
        }
        for param in spec.path.split('/').filter(|s| s.starts_with('{')) {
            let name = param.trim_matches(['{', '}']);
            let declared = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
            assert!(declared, "{cell}: path parameter {name} undeclared");
        }
    }

    // Operation ids name one operation each (the validators require it).
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for method in METHODS {
            if let Some(id) = item.get(method).and_then(|op| op["operationId"].as_str()) {
                assert!(ids.insert(id), "operationId {id} is used twice");
            }
        }
    }

    // Every reference resolves inside the document.
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(targets.len() > 50, "{}", targets.len());
    for target in targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} points outside the document"));
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}
