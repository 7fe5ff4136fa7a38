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
];

fn op(summary: &str, params: Value, ok: &str) -> Value {
    json!({
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {"description": ok},
            "401": {"description": "not logged in / no valid token"},
            "404": {"description": "unknown device or file"}
        }
    })
}

/// The document.
pub fn document() -> Value {
    let sn = json!({"name": "sn", "in": "path", "required": true, "schema": {"type": "string"}});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let q = |n: &str, t: &str, d: &str| json!({"name": n, "in": "query", "required": false, "schema": {"type": t}, "description": d});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "autoprov operator API", "version": "1"},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "autoprov_session"}
        }},
        "security": [{"bearer": []}, {"cookie": []}],
        "paths": {
            "/api/v1/openapi.json": {"get": op("This document", json!([]), "OpenAPI document")},
            "/api/v1/devices": {"get": op("List devices: filter (seed 003 semantics: whole words, case-insensitive, all terms must match, keywords present/missing), sort, page",
                json!([q("filter", "string", "filter terms"), q("sort", "string", "sn, vendor, model, name, ip, phase, firmware, seen, last_backup; leading - = descending"),
                       q("offset", "integer", "rows to skip"), q("limit", "integer", "rows (default 100, at most 10000)")]), "a page of devices")},
            "/api/v1/devices/{sn}": {
                "get": op("One device: summary and stored state", json!([sn.clone()]), "the device"),
                "delete": {"summary": "Forget the device (state only)", "parameters": [sn.clone()],
                    "responses": {"204": {"description": "forgotten"}, "401": {"description": "not logged in"}, "404": {"description": "unknown device"}}}
            },
            "/api/v1/devices/{sn}/backups": {"get": op("The device's backups, oldest first", json!([sn.clone()]), "list of backups")},
            "/api/v1/devices/{sn}/backups/{name}": {"get": op("Download one backup", json!([sn.clone(), name]), "the backup file")},
            "/api/v1/devices/{sn}/diff": {"get": op("Line diff of two backups", json!([sn.clone(), q("old", "string", "older backup name"), q("new", "string", "newer backup name")]), "diff lines (op: ' ', '-', '+')")},
            "/api/v1/devices/{sn}/certificate": {
                "get": op("Certificate roll-out state (pending CSR, signed certificate)", json!([sn.clone()]), "certificate state"),
                "put": {"summary": "Upload the signed certificate for the pending CSR (PEM or DER body)", "parameters": [sn.clone()],
                    "requestBody": {"content": {"application/x-pem-file": {"schema": {"type": "string"}}}},
                    "responses": {"200": {"description": "installed"}, "400": {"description": "not a certificate for this device's CSR"}, "401": {"description": "not logged in"}}}
            },
            "/api/v1/devices/{sn}/csr": {"get": op("Download the pending CSR (PEM)", json!([sn.clone()]), "the CSR")},
            "/api/v1/devices/{sn}/preview": {"get": op("What the device would receive now (no state written)", json!([sn]), "script body and explanations")},
            "/api/v1/devices/{sn}/resync": {"post": op("Ask the phone to re-read its configuration now (SIP NOTIFY check-sync; innovaphone devices poll and are skipped)", json!([{"name": "sn", "in": "path", "required": true, "schema": {"type": "string"}}]), "the outcome")},
            "/api/v1/audit": {"get": op("The audit log of operator actions, newest first", json!([q("limit", "integer", "entries (default 100)")]), "audit entries")}
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
