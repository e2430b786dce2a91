//! Small domain enums shared by the store, the API and the CLI, with their stable
//! wire names.

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Where a server stands, as the last connection attempt left it.
    ServerStatus {
        Pending = "pending",
        Ready = "ready",
        Unreachable = "unreachable",
        HostKeyMismatch = "host_key_mismatch",
        Error = "error",
    }
);

wire_enum!(
    /// The reverse proxy ServOS runs on a server.
    ProxyKind { Traefik = "traefik", Caddy = "caddy", None = "none" }
);

wire_enum!(
    /// How a service's domains get certificates.
    TlsMode { Acme = "acme", Internal = "internal", Off = "off" }
);

wire_enum!(
    /// The life of a deployment job.
    DeploymentStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_text_and_serde() {
        for s in ServerStatus::ALL {
            assert_eq!(ServerStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(ServerStatus::HostKeyMismatch.as_str(), "host_key_mismatch");
        assert_eq!(ProxyKind::parse("nginx"), None);
    }
}
