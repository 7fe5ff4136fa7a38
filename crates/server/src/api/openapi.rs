//! The hand-written OpenAPI 3.0 document of `/api/v1` (no code generator: keeps build time
//! low). [`PATHS`] lists every documented path and method; the e2e tests call each one.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::app::AppState;

/// Every documented `(method, path)`.
pub const PATHS: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/devices"),
    ("get", "/api/v1/devices/{sn}"),
    ("delete", "/api/v1/devices/{sn}"),
    ("get", "/api/v1/devices/{sn}/backups"),
    ("get", "/api/v1/devices/{sn}/backups/{name}"),
    ("get", "/api/v1/devices/{sn}/diff"),
    ("get", "/api/v1/devices/{sn}/certificate"),
    ("put", "/api/v1/devices/{sn}/certificate"),
    ("get", "/api/v1/devices/{sn}/csr"),
    ("get", "/api/v1/devices/{sn}/preview"),
    ("post", "/api/v1/devices/{sn}/resync"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/site/reload"),
];

/// Largest `offset` of `GET /api/v1/devices`.
pub const MAX_OFFSET: i64 = 1_000_000_000;
/// Largest `limit` of `GET /api/v1/devices` and `GET /api/v1/audit`.
pub const MAX_LIMIT: i64 = 10_000;

/// The accepted `sort` values of `GET /api/v1/devices`: each column, ascending or descending.
pub fn sort_values() -> Vec<String> {
    crate::admin::service::SORT_COLUMNS
        .iter()
        .flat_map(|c| [c.to_string(), format!("-{c}")])
        .collect()
}

/// The error body every 4xx answer of the API carries.
fn error_content() -> Value {
    json!({"application/json": {"schema": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}})
}

/// The answers every operation may give besides its own.
fn common(mut responses: Value, changes: bool) -> Value {
    let r = responses.as_object_mut().expect("object");
    r.insert("400".into(), json!({"description": "invalid parameter (not a number, out of range, not a valid serial or file name)"}));
    r.insert(
        "401".into(),
        json!({"description": "not logged in / no valid token", "content": error_content()}),
    );
    if changes {
        r.insert("403".into(), json!({"description": "cookie session without a matching X-CSRF-Token or cross-site", "content": error_content()}));
    }
    responses
}

fn op(summary: &str, params: Value, ok: &str) -> Value {
    json!({
        "summary": summary,
        "parameters": params,
        "responses": common(json!({
            "200": {"description": ok},
            "404": {"description": "unknown device or file", "content": error_content()}
        }), false)
    })
}

/// `op` whose 200 response is JSON of the schema `name` (in `components.schemas`).
fn with_schema(mut op: Value, name: &str) -> Value {
    op["responses"]["200"]["content"] =
        json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}});
    op
}

/// The response schemas of the device list and device calls.
fn schemas() -> Value {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    json!({
        "ShowValue": {
            "type": "object",
            "description": "One query show column (seed 003 <show title=...>XPATH</show>): the string value of the XPath 1.0 expression over the device state document (/state/queries/<query-id>/...); empty when the data is missing or the expression is bad",
            "properties": {"title": s, "value": s},
            "required": ["title", "value"]
        },
        "DeviceRow": {
            "type": "object",
            "properties": {
                "sn": s, "vendor": s, "model": s, "name": s, "ip": s, "proxy": s, "phase": s,
                "classes": s, "environments": s, "firmware": s, "firmware_target": s,
                "bootcode": s, "seen": i, "last_backup": {"type": "integer", "nullable": true},
                "certstat": s, "missing": {"type": "boolean"},
                "show": {"type": "array", "items": {"$ref": "#/components/schemas/ShowValue"},
                         "description": "the query show columns, in configuration order"}
            }
        },
        "DevicePage": {
            "type": "object",
            "properties": {
                "total": i, "offset": i, "limit": i,
                "show_titles": {"type": "array", "items": s, "description": "titles of the show columns"},
                "devices": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceRow"}}
            }
        },
        "Device": {
            "type": "object",
            "properties": {
                "summary": {"$ref": "#/components/schemas/DeviceRow"},
                "state": {"type": "object", "description": "the stored device state"}
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let sn = json!({"name": "sn", "in": "path", "required": true, "schema": {"type": "string"}});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let q = |n: &str, t: &str, d: &str| json!({"name": n, "in": "query", "required": false, "schema": {"type": t}, "description": d});
    let int = |n: &str, d: &str, min: i64, max: i64| json!({"name": n, "in": "query", "required": false, "schema": {"type": "integer", "minimum": min, "maximum": max}, "description": d});
    let sort_values = sort_values();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "autoprov operator API", "version": "1"},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "autoprov_session"}
        }, "schemas": schemas()},
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {
            "/api/v1/openapi.json": {"get": op("This document", json!([]), "OpenAPI document")},
            "/api/v1/devices": {"get": with_schema(op("List devices: filter (seed 003 semantics: whole words, case-insensitive, all terms must match, keywords present/missing), sort, page",
                json!([q("filter", "string", "filter terms"),
                       {"name": "sort", "in": "query", "required": false, "schema": {"type": "string", "enum": sort_values}, "description": "column; leading - = descending"},
                       int("offset", "rows to skip", 0, MAX_OFFSET), int("limit", "rows (default 100)", 1, MAX_LIMIT)]), "a page of devices"), "DevicePage")},
            "/api/v1/devices/{sn}": {
                "get": with_schema(op("One device: summary (with the query show values) and stored state", json!([sn.clone()]), "the device"), "Device"),
                "delete": {"summary": "Forget the device (state only)", "parameters": [sn.clone()],
                    "responses": common(json!({"204": {"description": "forgotten"}, "404": {"description": "unknown device", "content": error_content()}}), true)}
            },
            "/api/v1/devices/{sn}/backups": {"get": op("The device's backups, oldest first", json!([sn.clone()]), "list of backups")},
            "/api/v1/devices/{sn}/backups/{name}": {"get": op("Download one backup", json!([sn.clone(), name]), "the backup file")},
            "/api/v1/devices/{sn}/diff": {"get": op("Line diff of two backups", json!([sn.clone(), q("old", "string", "older backup name"), q("new", "string", "newer backup name")]), "diff lines (op: ' ', '-', '+')")},
            "/api/v1/devices/{sn}/certificate": {
                "get": op("Certificate roll-out state (pending CSR, signed certificate)", json!([sn.clone()]), "certificate state"),
                "put": {"summary": "Upload the signed certificate for the pending CSR (PEM or DER body; any content type)", "parameters": [sn.clone()],
                    "requestBody": {"required": true, "content": {"text/plain": {"schema": {"type": "string"}}, "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": common(json!({"200": {"description": "installed"}, "404": {"description": "unknown device", "content": error_content()},
                        "413": {"description": "body larger than 1 MiB", "content": error_content()}}), true)}
            },
            "/api/v1/devices/{sn}/csr": {"get": op("Download the pending CSR (PEM)", json!([sn.clone()]), "the CSR")},
            "/api/v1/devices/{sn}/preview": {"get": op("What the device would receive now (no state written)", json!([sn]), "script body and explanations")},
            "/api/v1/devices/{sn}/resync": {"post": {"summary": "Ask the phone to re-read its configuration now (SIP NOTIFY check-sync; innovaphone devices poll and are skipped)", "parameters": [sn.clone()],
                "responses": common(json!({"200": {"description": "the outcome"}, "404": {"description": "unknown device", "content": error_content()}}), true)}},
            "/api/v1/audit": {"get": op("The audit log of operator actions, newest first", json!([int("limit", "entries (default 100)", 1, MAX_LIMIT)]), "audit entries")},
            "/api/v1/site/reload": {"post": {"summary": "Re-read autoprov.toml, the firmware manifest and the vendor templates, check them like `autoprov check` and swap them in when they have no errors (listeners, TLS files, database and the SIP/mDNS/TFTP side channels need a restart: listed in restart_needed)",
                "parameters": [],
                "responses": common(json!({"200": {"description": "reloaded", "content": {"application/json": {"schema": {"type": "object", "required": ["reloaded", "restart_needed", "warnings"], "properties": {
                        "reloaded": {"type": "boolean"}, "restart_needed": {"type": "array", "items": {"type": "string"}}, "warnings": {"type": "array", "items": {"type": "string"}}}}}}},
                    "422": {"description": "the site has errors (file:line:column: error: ...); the running site stays", "content": error_content()}}), true)}}
        }
    })
}

/// GET /api/v1/openapi.json (login required like every API call).
pub async fn serve(State(app): State<AppState>, req: Request) -> Response {
    let known = crate::admin::auth::operator(&app, req.headers())
        .await
        .is_some();
    if !known {
        return super::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "log in or send Authorization: Bearer <token>"}),
        );
    }
    super::json(StatusCode::OK, &document())
}
