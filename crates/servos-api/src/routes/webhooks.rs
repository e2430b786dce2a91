//! Webhooks from forges (GitHub, GitLab, Gitea/Forgejo): a verified push to a service's
//! branch queues a build and deploy of the pushed commit.
//!
//! The order of checks is what keeps forged deliveries cheap and uninformative:
//! 1. the body is refused above [`WEBHOOK_BODY_LIMIT`] (413) before more is read;
//! 2. the signature is checked against the service's secret (cached in memory, dropped on
//!    rotation and deletion). An unknown service id is checked against a dummy secret and
//!    fails the same way, so "no such service" and "bad signature" are one answer (401)
//!    at a similar cost;
//! 3. rejections are audited, coalesced per service and time window (see [`Rejections`]):
//!    a flood of forged deliveries writes two audit events per service per window, not
//!    one per request;
//! 4. only then is anything else looked at (delivery id, event, payload), so the details
//!    of 400/200 answers are only ever shown to holders of the secret.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use servos_core::Secret;
use servos_core::validate;
use servos_store::webhooks::{DeliveryOutcome, Rejections as RejectionRecord};
use servos_store::{Actor, Store, StoreError};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Largest webhook body accepted. GitHub caps payloads at 25 MB but push payloads are
/// far smaller; anything above this is refused before it is read.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Default length of a rejection-audit window.
const AUDIT_WINDOW: Duration = Duration::from_secs(60);
/// How long a decrypted secret stays cached (rotation and deletion drop it at once).
const SECRET_TTL: Duration = Duration::from_secs(600);
/// How long "no such service" stays cached.
const MISSING_TTL: Duration = Duration::from_secs(60);
/// Cache entries beyond which the caches start over.
const MAX_ENTRIES: usize = 10_000;
/// Stands in for the secret of an unknown service so that its check costs the same.
/// Its result is always discarded, so it need not be secret; it has a real secret's shape.
const DUMMY_SECRET: &str = "whsec_0000000000000000000000000000000000000000000";

/// A forge, as named in the webhook URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    pub const ALL: [Forge; 3] = [Forge::GitHub, Forge::GitLab, Forge::Gitea];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "github" => Some(Forge::GitHub),
            "gitlab" => Some(Forge::GitLab),
            "gitea" => Some(Forge::Gitea),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    /// The header carrying the signature (or, for GitLab, the token).
    pub fn secret_header(self) -> &'static str {
        match self {
            Forge::GitHub => "X-Hub-Signature-256",
            Forge::GitLab => "X-Gitlab-Token",
            Forge::Gitea => "X-Gitea-Signature",
        }
    }

    /// Checks the delivery's signature or token against `secret`.
    fn verify(self, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Verdict {
        use servos_core::webhook::{hmac_sha256_matches, token_matches};
        let given = match self {
            Forge::GitHub => header_str(headers, "x-hub-signature-256"),
            Forge::GitLab => header_str(headers, "x-gitlab-token"),
            Forge::Gitea => header_str(headers, "x-gitea-signature").or_else(|| header_str(headers, "x-forgejo-signature")),
        };
        // The check runs even when the header is missing, so every rejection costs alike.
        let ok = match self {
            Forge::GitHub => {
                let hex = given.and_then(|g| g.strip_prefix("sha256=")).unwrap_or("");
                hmac_sha256_matches(secret, body, hex)
            }
            Forge::Gitea => hmac_sha256_matches(secret, body, given.unwrap_or("")),
            Forge::GitLab => token_matches(secret, given.unwrap_or("").as_bytes()),
        };
        match (given, ok) {
            (None, _) => Verdict::Missing,
            (Some(_), false) => Verdict::Bad,
            (Some(_), true) => Verdict::Good,
        }
    }

    /// The delivery id: GitHub's and Gitea's per-delivery ids; for GitLab the
    /// `Idempotency-Key` (the same on retries), else `X-Gitlab-Event-UUID`.
    fn delivery_id(self, headers: &HeaderMap) -> Option<&str> {
        match self {
            Forge::GitHub => header_str(headers, "x-github-delivery"),
            Forge::GitLab => header_str(headers, "idempotency-key").or_else(|| header_str(headers, "x-gitlab-event-uuid")),
            Forge::Gitea => header_str(headers, "x-gitea-delivery").or_else(|| header_str(headers, "x-forgejo-delivery")),
        }
    }

    fn event(self, headers: &HeaderMap) -> Event {
        let name = match self {
            Forge::GitHub => header_str(headers, "x-github-event"),
            Forge::GitLab => header_str(headers, "x-gitlab-event"),
            Forge::Gitea => header_str(headers, "x-gitea-event").or_else(|| header_str(headers, "x-forgejo-event")),
        };
        match (self, name) {
            (Forge::GitHub | Forge::Gitea, Some("push")) | (Forge::GitLab, Some("Push Hook")) => Event::Push,
            (Forge::GitHub, Some("ping")) => Event::Ping,
            (_, Some(other)) => Event::Other(validate::show(other)),
            (_, None) => Event::Other("(none)".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Good,
    Bad,
    Missing,
}

enum Event {
    Push,
    Ping,
    Other(String),
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The fields of a push payload ServOS reads (the same names on all three forges).
#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    after: Option<String>,
    /// GitLab: the commit to check out (null when the branch was deleted).
    checkout_sha: Option<String>,
    /// GitHub and Gitea: set when the push deleted the ref.
    #[serde(default)]
    deleted: bool,
}

/// What a delivery led to.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// `queued` (202), `duplicate` or `ignored` (200).
    pub status: String,
    /// The deployment queued (now, or by the first delivery of a duplicate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Why nothing was queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl WebhookAnswer {
    fn ignored(reason: impl Into<String>) -> (StatusCode, Json<Self>) {
        (StatusCode::OK, Json(Self { status: "ignored".into(), deployment_id: None, reason: Some(reason.into()) }))
    }
}

/// One forge's webhook settings for a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `github`, `gitlab` or `gitea` (also Forgejo).
    pub forge: String,
    /// The URL to paste into the forge.
    pub url: String,
    /// The header the forge authenticates with.
    pub secret_header: String,
    /// What to set in the forge's webhook form.
    pub setup: String,
}

/// Where forges should send a service's webhooks. The secret itself is never shown
/// again after creation or rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSettings {
    pub service_id: String,
    pub service_name: String,
    /// The branch whose pushes deploy (none: the service is not built from git, and
    /// its webhooks are acknowledged and ignored).
    pub branch: Option<String>,
    pub endpoints: Vec<WebhookEndpoint>,
}

#[utoipa::path(post, path = "/api/v1/webhooks/{forge}/{service_id}", tag = "webhooks",
    description = "No bearer token: authenticated by `X-Hub-Signature-256` (GitHub), `X-Gitea-Signature` \
        (Gitea/Forgejo, HMAC-SHA256 hex of the raw body) or `X-Gitlab-Token` (GitLab). A push to the \
        service's branch queues a build and deploy of the pushed commit; each delivery id is accepted once.",
    request_body(content = String, description = "The forge's JSON event payload, at most 1 MiB", content_type = "application/json"),
    params(("forge" = String, Path, description = "`github`, `gitlab` or `gitea`"), ("service_id" = String, Path, description = "Service id")),
    responses((status = 202, body = WebhookAnswer, description = "queued"), (status = 200, body = WebhookAnswer, description = "ignored or duplicate"),
        (status = 400, description = "no delivery id, or an unreadable payload"), (status = 401, description = "bad or missing signature, or no such service"),
        (status = 404, description = "unknown forge"), (status = 413, description = "body over 1 MiB")))]
pub async fn receive(
    State(state): State<AppState>,
    Path((forge, service_id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<(StatusCode, Json<WebhookAnswer>)> {
    let forge = Forge::parse(&forge).ok_or_else(|| ApiError::not_found(format!("no webhook receiver for {}", validate::show(&forge))))?;
    let (parts, body) = req.into_parts();
    let body = read_limited(&parts.headers, body).await?;
    let hooks = &state.inner.webhooks;
    let secret = hooks.secret(state.store(), &service_id).await?;
    let verdict = match &secret {
        Some(s) => forge.verify(&parts.headers, &body, s.expose().as_bytes()),
        None => {
            forge.verify(&parts.headers, &body, DUMMY_SECRET.as_bytes());
            Verdict::Bad
        }
    };
    if verdict != Verdict::Good {
        let (key, reason) = match (&secret, verdict) {
            (None, _) => ("unknown", "unknown_service"),
            (Some(_), Verdict::Missing) => (service_id.as_str(), "missing_signature"),
            (Some(_), _) => (service_id.as_str(), "bad_signature"),
        };
        hooks.reject(state.store(), key, forge, reason, crate::auth::client_source(&parts)).await;
        return Err(ApiError::unauthorized(
            "invalid_signature",
            format!("the webhook is not signed with this service's secret (expected header {})", forge.secret_header()),
        ));
    }

    let Some(delivery_id) = forge.delivery_id(&parts.headers) else {
        return Err(ApiError::bad_request("missing_delivery_id", "the delivery has no delivery id header; ServOS accepts each delivery once"));
    };
    if delivery_id.is_empty() || delivery_id.len() > 128 || !delivery_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(ApiError::bad_request("invalid_delivery_id", format!("delivery id {} is not 1-128 characters of [A-Za-z0-9-_.:]", validate::show(delivery_id))));
    }
    match forge.event(&parts.headers) {
        Event::Push => {}
        Event::Ping => return Ok(WebhookAnswer::ignored("ping received; pushes to the service's branch will deploy")),
        Event::Other(name) => return Ok(WebhookAnswer::ignored(format!("event {name} is not a push"))),
    }
    let payload: PushPayload = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_payload", format!("the push payload is not JSON ServOS can read (use content type application/json): {e}"))
    })?;

    let service = match state.store().get_service(&service_id).await {
        Ok(s) if s.id == service_id => s,
        // Deleted since the secret was cached: the same answer as any unknown service.
        Ok(_) | Err(StoreError::NotFound { .. }) => {
            hooks.forget(&service_id);
            return Err(ApiError::unauthorized("invalid_signature", "the webhook is not signed with this service's secret"));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(git) = &service.git else {
        return Ok(WebhookAnswer::ignored("the service runs an image, it is not built from git; deploy it with `servos deploy`"));
    };
    let Some(branch) = payload.git_ref.as_deref().and_then(|r| r.strip_prefix("refs/heads/")) else {
        return Ok(WebhookAnswer::ignored(format!("ref {} is not a branch", validate::show(payload.git_ref.as_deref().unwrap_or("(none)")))));
    };
    if branch != git.branch {
        return Ok(WebhookAnswer::ignored(format!("push to branch {}; the service deploys {}", validate::show(branch), git.branch)));
    }
    let commit = match forge {
        Forge::GitLab => payload.checkout_sha.as_deref().or(payload.after.as_deref()),
        _ => payload.after.as_deref(),
    };
    let commit = commit.unwrap_or("");
    if payload.deleted || (!commit.is_empty() && commit.bytes().all(|b| b == b'0')) {
        return Ok(WebhookAnswer::ignored(format!("branch {branch} was deleted")));
    }
    if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("invalid_payload", format!("{} is not a commit SHA", validate::show(commit))));
    }
    let commit = commit.to_ascii_lowercase();

    let actor = Actor { name: format!("webhook:{}", forge.as_str()), source: crate::auth::client_source(&parts) };
    match state.store().accept_webhook_delivery(&actor, &service, forge.as_str(), delivery_id, &commit).await? {
        DeliveryOutcome::Queued { deployment_id } => {
            state.engine().notify();
            Ok((StatusCode::ACCEPTED, Json(WebhookAnswer { status: "queued".into(), deployment_id: Some(deployment_id), reason: None })))
        }
        DeliveryOutcome::Duplicate { deployment_id } => Ok((
            StatusCode::OK,
            Json(WebhookAnswer { status: "duplicate".into(), deployment_id, reason: Some(format!("delivery {delivery_id} was received before")) }),
        )),
    }
}

/// Reads the body, refusing it (413) as soon as it is known to exceed the limit: from
/// `Content-Length` before reading anything, else while streaming.
async fn read_limited(headers: &HeaderMap, body: Body) -> ApiResult<axum::body::Bytes> {
    let declared = header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || ApiError::too_large(WEBHOOK_BODY_LIMIT);
    if declared.is_some_and(|n| n > WEBHOOK_BODY_LIMIT as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, WEBHOOK_BODY_LIMIT).await.map_err(|_| too_large())
}

#[utoipa::path(get, path = "/api/v1/services/{id}/webhooks", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Service id or name")), responses((status = 200, body = WebhookSettings), (status = 404)))]
pub async fn settings(State(state): State<AppState>, _caller: Caller, Path(id): Path<String>) -> ApiResult<Json<WebhookSettings>> {
    let service = state.store().get_service(&id).await?;
    let base = state.inner.public_url.trim_end_matches('/');
    let endpoints = Forge::ALL
        .iter()
        .map(|&forge| WebhookEndpoint {
            forge: forge.as_str().into(),
            url: format!("{base}/api/v1/webhooks/{}/{}", forge.as_str(), service.id),
            secret_header: forge.secret_header().into(),
            setup: match forge {
                Forge::GitHub => "Settings → Webhooks: Payload URL = url, Content type = application/json, Secret = the service's webhook secret, events: just the push event",
                Forge::GitLab => "Settings → Webhooks: URL = url, Secret token = the service's webhook secret, trigger: Push events",
                Forge::Gitea => "Settings → Webhooks → Gitea (or Forgejo): Target URL = url, POST, content type application/json, Secret = the service's webhook secret, trigger on push events",
            }
            .into(),
        })
        .collect();
    Ok(Json(WebhookSettings { service_id: service.id, service_name: service.name, branch: service.git.map(|g| g.branch), endpoints }))
}

/// A service's secret (`None`: no such service) and when it was looked up.
type CachedSecret = (Instant, Option<Arc<Secret<String>>>);

/// In-memory webhook state of one control plane: the secret cache and the coalescing
/// of rejection audit events.
#[derive(Debug)]
pub struct WebhookState {
    secrets: Mutex<HashMap<String, CachedSecret>>,
    rejections: Arc<Mutex<HashMap<String, Window>>>,
    audit_window_ms: AtomicU64,
}

impl Default for WebhookState {
    fn default() -> Self {
        Self {
            secrets: Mutex::new(HashMap::new()),
            rejections: Arc::new(Mutex::new(HashMap::new())),
            audit_window_ms: AtomicU64::new(AUDIT_WINDOW.as_millis() as u64),
        }
    }
}

/// Rejections of one service (or of all unknown ids) since `started`.
#[derive(Debug)]
struct Window {
    started: Instant,
    /// Rejections after the first, not yet written (a flush is scheduled when > 0).
    pending: u64,
    reasons: BTreeMap<String, u64>,
    sources: BTreeSet<String>,
    forge: Forge,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WebhookState {
    /// Sets the rejection-audit window (tests use a short one).
    pub fn set_audit_window(&self, window: Duration) {
        self.audit_window_ms.store(window.as_millis() as u64, Ordering::Relaxed);
    }

    fn audit_window(&self) -> Duration {
        Duration::from_millis(self.audit_window_ms.load(Ordering::Relaxed))
    }

    /// Forgets the cached secret of a service (after rotation or deletion).
    pub fn forget(&self, service_id: &str) {
        lock(&self.secrets).remove(service_id);
    }

    /// The webhook secret of `service_id`, `None` when no such service exists.
    async fn secret(&self, store: &Store, service_id: &str) -> ApiResult<Option<Arc<Secret<String>>>> {
        // Webhook URLs carry ids; anything else cannot name a service.
        if uuid::Uuid::try_parse(service_id).is_err() {
            return Ok(None);
        }
        if let Some((at, cached)) = lock(&self.secrets).get(service_id) {
            let ttl = if cached.is_some() { SECRET_TTL } else { MISSING_TTL };
            if at.elapsed() < ttl {
                return Ok(cached.clone());
            }
        }
        let found = match store.webhook_secret(service_id).await {
            Ok(s) => Some(Arc::new(s)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut secrets = lock(&self.secrets);
        if secrets.len() >= MAX_ENTRIES {
            secrets.clear();
        }
        secrets.insert(service_id.to_owned(), (Instant::now(), found.clone()));
        Ok(found)
    }

    /// Audits a rejected delivery. The first rejection of a window is written at once;
    /// later ones in the same window are counted and written as one event when the
    /// window ends, so a flood costs at most two audit writes per key and window.
    async fn reject(&self, store: &Store, key: &str, forge: Forge, reason: &str, source: String) {
        let window = self.audit_window();
        let write_now = {
            let mut windows = lock(&self.rejections);
            if windows.len() >= MAX_ENTRIES {
                windows.retain(|_, w| w.pending > 0);
            }
            match windows.get_mut(key) {
                // Within the window, or past it with a flush still to run: count.
                Some(w) if w.started.elapsed() < window || w.pending > 0 => {
                    w.pending += 1;
                    *w.reasons.entry(reason.to_owned()).or_default() += 1;
                    if w.sources.len() < 8 {
                        w.sources.insert(source.clone());
                    }
                    if w.pending == 1 {
                        self.schedule_flush(store.clone(), key.to_owned(), window.saturating_sub(w.started.elapsed()));
                    }
                    false
                }
                _ => {
                    let w = Window { started: Instant::now(), pending: 0, reasons: BTreeMap::new(), sources: BTreeSet::new(), forge };
                    windows.insert(key.to_owned(), w);
                    true
                }
            }
        };
        if write_now {
            let record = RejectionRecord {
                object_id: key,
                provider: forge.as_str(),
                count: 1,
                reasons: serde_json::json!({ reason: 1 }),
                window_secs: 0,
            };
            let actor = Actor { name: format!("webhook:{}", forge.as_str()), source };
            if let Err(e) = store.audit_webhook_rejections(&actor, &record).await {
                tracing::warn!("cannot audit a rejected webhook: {e}");
            }
        }
    }

    fn schedule_flush(&self, store: Store, key: String, after: Duration) {
        let windows = Arc::clone(&self.rejections);
        let window_secs = self.audit_window().as_secs();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(w) = lock(&windows).remove(&key) else { return };
            if w.pending == 0 {
                return;
            }
            let record = RejectionRecord {
                object_id: &key,
                provider: w.forge.as_str(),
                count: w.pending,
                reasons: serde_json::json!(w.reasons),
                window_secs,
            };
            let source = w.sources.iter().cloned().collect::<Vec<_>>().join(",");
            let actor = Actor { name: format!("webhook:{}", w.forge.as_str()), source };
            if let Err(e) = store.audit_webhook_rejections(&actor, &record).await {
                tracing::warn!("cannot audit {} rejected webhooks: {e}", w.pending);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn github_published_example_is_accepted() {
        let h = headers(&[("x-hub-signature-256", &format!("sha256={SIGNATURE}"))]);
        assert_eq!(Forge::GitHub.verify(&h, BODY, SECRET), Verdict::Good);
        assert_eq!(Forge::GitHub.verify(&h, b"Hello, World?", SECRET), Verdict::Bad);
        let bare = headers(&[("x-hub-signature-256", SIGNATURE)]);
        assert_eq!(Forge::GitHub.verify(&bare, BODY, SECRET), Verdict::Bad, "the sha256= prefix is required");
    }

    #[test]
    fn each_forge_reads_only_its_own_header() {
        let gitea = headers(&[("x-gitea-signature", SIGNATURE)]);
        assert_eq!(Forge::Gitea.verify(&gitea, BODY, SECRET), Verdict::Good);
        assert_eq!(Forge::GitHub.verify(&gitea, BODY, SECRET), Verdict::Missing);
        let forgejo = headers(&[("x-forgejo-signature", SIGNATURE)]);
        assert_eq!(Forge::Gitea.verify(&forgejo, BODY, SECRET), Verdict::Good);
        let gitlab = headers(&[("x-gitlab-token", "It's a Secret to Everybody")]);
        assert_eq!(Forge::GitLab.verify(&gitlab, BODY, SECRET), Verdict::Good);
        assert_eq!(Forge::Gitea.verify(&gitlab, BODY, SECRET), Verdict::Missing);
        let wrong = headers(&[("x-gitlab-token", "It's a Secret to Everybody ")]);
        assert_eq!(Forge::GitLab.verify(&wrong, BODY, SECRET), Verdict::Bad);
    }

    #[test]
    fn events_and_delivery_ids_by_forge() {
        let h = headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "u-1"), ("idempotency-key", "k-1")]);
        assert!(matches!(Forge::GitLab.event(&h), Event::Push));
        assert_eq!(Forge::GitLab.delivery_id(&h), Some("k-1"), "the idempotency key survives retries");
        let h = headers(&[("x-gitlab-event", "Tag Push Hook"), ("x-gitlab-event-uuid", "u-1")]);
        assert!(matches!(Forge::GitLab.event(&h), Event::Other(_)));
        assert_eq!(Forge::GitLab.delivery_id(&h), Some("u-1"));
        let h = headers(&[("x-github-event", "ping"), ("x-github-delivery", "d-1")]);
        assert!(matches!(Forge::GitHub.event(&h), Event::Ping));
        assert_eq!(Forge::GitHub.delivery_id(&h), Some("d-1"));
        assert_eq!(Forge::Gitea.delivery_id(&h), None);
    }
}
