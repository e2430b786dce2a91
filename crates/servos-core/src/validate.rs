//! Input validation. Every error names the field and shows the offending value, escaped
//! so that hostile input (newlines, NUL, `$()`) is visible and harmless in messages.

use std::net::IpAddr;

/// A refused input value: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Shows a value in an error message: Rust-escaped and cut to 80 characters.
pub fn show(value: &str) -> String {
    let mut cut: String = value.chars().take(80).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Names of servers, services, builders, registries, credentials and users:
/// 1 to 63 characters of ASCII letters, digits, `.`, `-`, `_`, starting with a letter or
/// digit. Narrow on purpose: names end up in container names, labels, file names and logs.
pub fn name(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(ValidationError::new(
            field,
            format!("{} is {} bytes long, at most 63 are allowed", show(value), value.len()),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(ValidationError::new(
            field,
            format!(
                "{} contains {bad:?}; allowed are ASCII letters, digits, '.', '-' and '_'",
                show(value)
            ),
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ValidationError::new(field, format!("{} must start with a letter or digit", show(value))));
    }
    Ok(())
}

/// A host to connect to: an IP address or a DNS hostname (RFC 1123 labels).
pub fn host(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    hostname(field, value, false)
}

/// A DNS hostname; `allow_wildcard` permits a leading `*.` label.
pub fn hostname(field: &str, value: &str, allow_wildcard: bool) -> Result<(), ValidationError> {
    let bad = |why: &str| Err(ValidationError::new(field, format!("{} is not a valid hostname: {why}", show(value))));
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > 253 {
        return bad("longer than 253 characters");
    }
    let body = match value.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => return bad("wildcards are not allowed here"),
        None => value,
    };
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only ASCII letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label must not start or end with '-'");
        }
    }
    Ok(())
}

/// An environment variable name as Docker and POSIX shells accept it.
pub fn env_name(value: &str) -> Result<(), ValidationError> {
    let field = "vars";
    if value.is_empty() || value.len() > 255 {
        return Err(ValidationError::new(field, format!("name {} must be 1 to 255 characters", show(value))));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ValidationError::new(
            field,
            format!("name {} must match [A-Za-z_][A-Za-z0-9_]*", show(value)),
        ));
    }
    Ok(())
}

/// An environment variable value. Docker's `--env-file` takes each line verbatim after
/// the first `=`, so quotes, `=` and any unicode survive exactly; a newline, carriage
/// return or NUL cannot be carried and is refused instead of being silently mangled.
/// The message names the variable, never the value: values are secrets.
pub fn env_value(name: &str, value: &str) -> Result<(), ValidationError> {
    if value.len() > 64 * 1024 {
        return Err(ValidationError::new("vars", format!("value of {name} is longer than 64 KiB")));
    }
    if let Some(c) = value.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        return Err(ValidationError::new(
            "vars",
            format!(
                "value of {name} contains {c:?}, which Docker env files cannot carry; encode it (e.g. base64) first"
            ),
        ));
    }
    Ok(())
}

/// A password for a ServOS user.
pub fn password(value: &str) -> Result<(), ValidationError> {
    let n = value.chars().count();
    if n < 12 {
        return Err(ValidationError::new("password", format!("is {n} characters long, at least 12 are required")));
    }
    if value.len() > 1024 {
        return Err(ValidationError::new("password", "is longer than 1024 bytes"));
    }
    Ok(())
}

/// A TCP port that a user configures (1 to 65535).
pub fn port(field: &str, value: i64) -> Result<u16, ValidationError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ValidationError::new(field, format!("{value} is not a port between 1 and 65535")))
}

/// Free text that is stored and shown but never executed (descriptions, image names are
/// checked separately): bounded length, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError::new(field, format!("is longer than {max} bytes")));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(ValidationError::new(field, format!("{} contains the control character {c:?}", show(value))));
    }
    Ok(())
}

/// A Docker image reference such as `registry:5000/team/app:1.2@sha256:…`.
pub fn image(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > 512 {
        return Err(ValidationError::new(field, "must be 1 to 512 characters"));
    }
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@'));
    if !ok || value.starts_with(['-', '.', '/', ':', '@']) {
        return Err(ValidationError::new(field, format!("{} is not a valid image reference", show(value))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_hostile_input_and_show_it_escaped() {
        assert!(name("name", "web-1.prod_a").is_ok());
        let e = name("name", "a$(rm -rf /)").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"name: "a$(rm -rf /)" contains '$'; allowed are ASCII letters, digits, '.', '-' and '_'"#
        );
        let e = name("name", "a\nb").unwrap_err();
        assert!(e.to_string().contains(r#""a\nb""#), "{e}");
        let e = name("name", "a\0b").unwrap_err();
        assert!(e.to_string().contains(r#""a\0b""#), "{e}");
        assert!(name("name", "'quoted'").is_err());
        assert!(name("name", "-flag").is_err());
        assert!(name("name", "").is_err());
        assert!(name("name", &"x".repeat(64)).unwrap_err().to_string().contains("64 bytes"));
    }

    #[test]
    fn hosts_are_ips_or_hostnames() {
        assert!(host("host", "10.250.0.2").is_ok());
        assert!(host("host", "::1").is_ok());
        assert!(host("host", "node-1.example.com").is_ok());
        assert!(host("host", "a;b").is_err());
        assert!(host("host", "-oProxyCommand=x").is_err());
        assert!(host("host", "a..b").is_err());
        assert!(hostname("domain", "*.example.com", false).is_err());
        assert!(hostname("domain", "*.example.com", true).is_ok());
    }

    #[test]
    fn env_values_keep_quotes_and_equals_but_refuse_newlines() {
        assert!(env_name("DATABASE_URL").is_ok());
        assert!(env_name("1X").is_err());
        assert!(env_name("A-B").is_err());
        assert!(env_value("X", r#"a'b"c=d é ✓ $(x)"#).is_ok());
        let e = env_value("PEM", "line1\nline2").unwrap_err();
        assert!(e.to_string().contains("value of PEM contains '\\n'"), "{e}");
        assert!(!e.to_string().contains("line1"), "the value must not be echoed");
    }

    #[test]
    fn ports_passwords_images() {
        assert_eq!(port("port", 22).unwrap(), 22);
        assert!(port("port", 0).is_err());
        assert!(port("port", 70000).is_err());
        assert!(password("short").is_err());
        assert!(password("long enough password").is_ok());
        assert!(image("image", "registry.local:5000/team/app:1.2").is_ok());
        assert!(image("image", "app@sha256:abc").is_ok());
        assert!(image("image", "app; rm -rf /").is_err());
        assert!(image("image", "--privileged").is_err());
    }
}
