//! The route table: one file per resource, thin handlers.

pub mod agent;
pub mod audit;
pub mod credentials;
pub mod deployments;
pub mod domains;
pub mod hosts;
pub mod logs;
pub mod mesh;
pub mod meta;
pub mod services;
pub mod session;
pub mod tokens;
pub mod ui;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;
use crate::error::ApiError;

/// Largest request body accepted (keys, env sets). Webhooks have their own limit.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(meta::openapi))
        .route("/setup", post(session::setup))
        .route("/auth/login", post(session::login))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/servers", get(hosts::list_servers).post(hosts::create_server))
        .route("/servers/{id}", get(hosts::get_server).delete(hosts::delete_server))
        .route("/servers/{id}/fingerprint/reset", post(hosts::reset_server_fingerprint))
        .route("/servers/{id}/check", post(hosts::check_server))
        .route("/servers/{id}/proxy", get(domains::proxy_status))
        .route("/builders", get(hosts::list_builders).post(hosts::create_builder))
        .route("/builders/{id}", get(hosts::get_builder).delete(hosts::delete_builder))
        .route("/builders/{id}/fingerprint/reset", post(hosts::reset_builder_fingerprint))
        .route("/builders/{id}/check", post(hosts::check_builder))
        .route("/registries", get(credentials::list_registries).post(credentials::create_registry))
        .route("/registries/{id}", get(credentials::get_registry).delete(credentials::delete_registry))
        .route("/git-credentials", get(credentials::list_git).post(credentials::create_git))
        .route("/git-credentials/{id}", get(credentials::get_git).delete(credentials::delete_git))
        .route("/services", get(services::list).post(services::create))
        .route("/services/{id}", get(services::get).delete(services::delete))
        .route("/services/{id}/env", get(services::get_env).put(services::put_env).patch(services::patch_env))
        .route("/services/{id}/webhook-secret/rotate", post(services::rotate_webhook_secret))
        .route("/services/{id}/domains", get(domains::list).post(domains::add))
        .route("/services/{id}/domains/{domain}", axum::routing::delete(domains::remove))
        .route("/services/{id}/webhooks", get(webhooks::settings))
        .route("/webhooks/{forge}/{service_id}", post(webhooks::receive))
        .route("/services/{id}/deployments", get(deployments::list).post(deployments::create))
        .route("/services/{id}/rollback", post(deployments::rollback))
        .route("/services/{id}/stop", post(deployments::stop))
        .route("/services/{id}/start", post(deployments::start))
        .route("/services/{id}/restart", post(deployments::restart))
        .route("/services/{id}/logs", get(logs::logs))
        .route("/deployments/{id}", get(deployments::get))
        .route("/deployments/{id}/logs", get(deployments::logs))
        .route("/servers/{id}/agent", get(agent::get_agent))
        .route("/servers/{id}/agent/enrolment", post(agent::issue_enrolment))
        .route("/servers/{id}/agent/install", post(agent::install))
        .route("/mesh/policy", get(mesh::policy).post(agent::add_rule))
        .route("/mesh/grants", get(mesh::all_grants))
        .route("/services/{id}/publish", axum::routing::put(mesh::set_publish))
        .route("/services/{id}/grants", get(mesh::list_grants).post(mesh::add_grant))
        .route("/services/{id}/grants/{from}", axum::routing::delete(mesh::delete_grant))
        .route("/servers/{id}/agent/mesh-address", axum::routing::put(agent::set_mesh_address))
        .route("/mesh/policy/{id}", axum::routing::delete(agent::delete_rule))
        .route("/agent/enroll", post(agent::enroll))
        .route("/agent/config", get(agent::config))
        .route("/agent/heartbeat", post(agent::heartbeat))
        .route("/audit", get(audit::list))
        .route("/audit/verify", get(audit::verify))
        .fallback(not_found);
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every answer: no sniffing, no framing, a same-origin-only CSP, and no
/// caching of API answers (they may carry a freshly shown token).
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    if is_api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
