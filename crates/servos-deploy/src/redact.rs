//! Redaction of known secret values from everything a deploy streams or stores.

use servos_core::Secret;

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// The shortest value treated as a secret.
pub const MIN_SECRET_CHARS: usize = 4;

/// The secret values known for one deploy (decrypted env values, the registry password, a
/// git token). Every line streamed or stored, and the deployment's error, passes through
/// [`Redactor::redact`]. Values shorter than [`MIN_SECRET_CHARS`] are skipped: `DEBUG=1`
/// would otherwise turn every `1` of every log line into `[redacted]`, and a value that
/// short protects nothing. Every other value is replaced wherever it occurs, longest first
/// so that a value containing another is replaced whole.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    secrets: Vec<Secret<String>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds values to redact.
    pub fn add<'a>(&mut self, values: impl IntoIterator<Item = &'a Secret<String>>) {
        for v in values {
            if v.expose().chars().count() >= MIN_SECRET_CHARS
                && !self.secrets.iter().any(|s| s.expose() == v.expose())
            {
                self.secrets.push(v.clone());
            }
        }
        self.secrets
            .sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.expose().as_str()) {
                out = out.replace(s.expose().as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_value_is_replaced_longest_first() {
        let mut r = Redactor::new();
        let values = [
            Secret::new("hunter2".to_owned()),
            Secret::new("hunter2-long".to_owned()),
            Secret::new(String::new()),
            Secret::new("1".to_owned()),
            Secret::new("äöü".to_owned()),
            Secret::new("äöüß".to_owned()),
        ];
        r.add(&values);
        assert_eq!(
            r.redact("a hunter2-long b hunter2 c 1 äöüß"),
            "a [redacted] b [redacted] c 1 [redacted]"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert_eq!(
            format!("{r:?}"),
            "Redactor { secrets: [[redacted], [redacted], [redacted]] }"
        );
    }

    #[test]
    fn unicode_and_quotes_are_matched_exactly() {
        let mut r = Redactor::new();
        r.add(&[Secret::new("pä\"ss='wörd'".to_owned())]);
        assert_eq!(r.redact("FOO=pä\"ss='wörd' end"), "FOO=[redacted] end");
    }
}
