//! A small fixed-window rate limiter for login and setup attempts, keyed by client
//! address (and username for logins). In memory: a restart resets it, which is fine for
//! slowing down online guessing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    max: u32,
    window: Duration,
    slots: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window, slots: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt for `key`; `Err(seconds)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let slot = slots.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0);
        }
        if slot.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(slot.0));
            return Err(left.as_secs().max(1));
        }
        slot.1 += 1;
        Ok(())
    }

    /// Forgets `key` (after a successful login).
    pub fn reset(&self, key: &str) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_then_refuses_until_the_window_passes() {
        let rl = RateLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(rl.check("ip").is_ok());
        }
        assert!(rl.check("ip").is_err());
        assert!(rl.check("other").is_ok());
        std::thread::sleep(Duration::from_millis(250));
        assert!(rl.check("ip").is_ok());
        rl.reset("ip");
    }
}
