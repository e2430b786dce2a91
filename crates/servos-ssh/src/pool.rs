//! `SshPool`: one live connection per server, shared by everything that talks to it, and
//! reopened when it has died.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::SshError;
use crate::session::Session;

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

/// Connections keyed by server id. Connecting to one server never waits for another.
pub struct SshPool<K> {
    slots: Mutex<HashMap<K, Slot>>,
}

impl<K> std::fmt::Debug for SshPool<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPool").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone> Default for SshPool<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone> SshPool<K> {
    pub fn new() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The live session of `server`, or a new one from `connect` if there is none or the
    /// old one is closed. Concurrent callers for the same server share one connect.
    pub async fn get<F, Fut>(&self, server: &K, connect: F) -> Result<Arc<Session>, SshError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Session, SshError>>,
    {
        let slot = self.slot(server);
        let mut guard = slot.lock().await;
        if let Some(session) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(session));
        }
        *guard = None;
        let session = Arc::new(connect().await?);
        *guard = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Forgets the session of `server` (e.g. after its fingerprint was reset or the server
    /// was deleted); the next [`SshPool::get`] connects anew. Users of the old session
    /// keep it until they drop it.
    pub fn forget(&self, server: &K) {
        self.lock().remove(server);
    }

    /// How many servers have a live session.
    pub fn live(&self) -> usize {
        let slots: Vec<Slot> = self.lock().values().cloned().collect();
        slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .is_ok_and(|g| g.as_ref().is_some_and(|s| !s.is_closed()))
            })
            .count()
    }

    fn slot(&self, server: &K) -> Slot {
        Arc::clone(self.lock().entry(server.clone()).or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
