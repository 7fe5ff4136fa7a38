//! `POST /api/v1/site/reload`: re-read and check the site, swap it in when it has no errors
//! (see [`crate::app::AppState::reload_site`]).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{caller, error, json};
use crate::app::AppState;

/// POST /api/v1/site/reload: 200 with `restart_needed` and `warnings`, or 422 with the
/// check's diagnostics (`file:line:column: error: ...`) in `error`; the old site stays then.
pub async fn reload(State(app): State<AppState>, req: Request) -> Response {
    let op = match caller(&app, req.headers(), req.method()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let r = app.reload_site().await;
    crate::admin::site_view::audit_reload(&app, &op.user, "api", &r).await;
    match r {
        Ok(rep) => json(
            StatusCode::OK,
            &serde_json::json!({
                "reloaded": true,
                "restart_needed": rep.restart_needed,
                "warnings": rep.warnings,
            }),
        ),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.0),
    }
}
