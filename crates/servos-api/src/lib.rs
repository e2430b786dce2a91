//! ServOS HTTP API: JSON resources under `/api/v1`, setup, login, tokens, audit, and
//! the OpenAPI document generated from the handlers.
//!
//! Architecture invariants:
//! - This is the only crate that knows HTTP. Handlers are thin: validate, call the
//!   store (or the engines), shape the answer.
//! - Authorization is in the handler's argument list: a handler that takes a
//!   [`auth::Caller`] cannot run without a valid bearer token.
//! - Secret fields are `Secret<String>` in request types and absent from response
//!   types; nothing here can serialise a secret.

pub mod auth;
pub mod error;
pub mod json;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod setup;

use std::sync::Arc;
use std::time::Duration;

use servos_store::Store;

pub use error::{ApiError, ApiResult};
pub use routes::router;
pub use setup::SetupToken;

/// Shared state of the control plane's HTTP side.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Store,
    pub engine: servos_deploy::Engine,
    pub setup: SetupToken,
    pub public_url: String,
    pub tokens: auth::TokenCache,
    pub login_limiter: ratelimit::RateLimiter,
    /// The serialised service list and the store generation it was built at.
    pub services_cache: std::sync::Mutex<Option<(u64, axum::body::Bytes)>>,
    pub setup_limiter: ratelimit::RateLimiter,
    pub webhooks: routes::webhooks::WebhookState,
}

impl AppState {
    pub fn new(store: Store, setup: SetupToken, public_url: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine: servos_deploy::Engine::new(store.clone()),
                store,
                setup,
                public_url,
                tokens: auth::TokenCache::default(),
                login_limiter: ratelimit::RateLimiter::new(10, Duration::from_secs(300)),
                services_cache: std::sync::Mutex::new(None),
                setup_limiter: ratelimit::RateLimiter::new(10, Duration::from_secs(300)),
                webhooks: routes::webhooks::WebhookState::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn engine(&self) -> &servos_deploy::Engine {
        &self.inner.engine
    }

    pub fn webhooks(&self) -> &routes::webhooks::WebhookState {
        &self.inner.webhooks
    }
}
