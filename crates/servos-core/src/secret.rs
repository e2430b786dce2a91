//! `Secret<T>`: a value that never prints, never serialises and is zeroized on drop.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroize;

/// A secret value. `Debug` and `Display` print `[redacted]`; there is deliberately no
/// `Serialize` implementation, so a secret cannot leak into an API response or a log
/// line by accident. The only way to read it is [`Secret::expose`].
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// Reads the secret. Every call site is a place where the value leaves the type;
    /// keep them few and obvious.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Writes into the secret in place (e.g. decrypting into its buffer), so the value
    /// never exists outside the type.
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl Secret<String> {
    /// Converts UTF-8 bytes into a string secret, zeroizing the input on failure too.
    pub fn from_utf8(bytes: Secret<Vec<u8>>) -> Result<Self, std::str::Utf8Error> {
        match std::str::from_utf8(bytes.expose()) {
            Ok(s) => Ok(Secret::new(s.to_owned())),
            Err(e) => Err(e),
        }
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// Secrets are accepted from input (write-only API fields) but never written out.
impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserializes_from_plain_json_string() {
        #[derive(Debug, Deserialize)]
        struct Body {
            password: Secret<String>,
        }
        let b: Body = serde_json::from_str(r#"{"password":"p@ss"}"#).unwrap();
        assert_eq!(b.password.expose(), "p@ss");
        assert!(!format!("{b:?}").contains("p@ss"));
    }
}
