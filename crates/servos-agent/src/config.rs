//! The mesh configuration the agent applies: its peers and the policy. It comes from the
//! control plane (`GET /api/v1/agent/config`) or, without one, from a local JSON file.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::{classifier::Rule, error::AgentError};

/// Transport protocols the policy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
}

/// Peers and policy, as sent by the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshConfig {
    /// This server's own mesh address, when the control plane sends it: a change
    /// re-addresses the interface in place (same prefix).
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    pub peers: Vec<PeerConfig>,
    pub policy: Vec<PolicyRule>,
}

/// Another server of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Base64 of the peer's 32-byte X25519 public key.
    pub public_key: String,
    /// `ip:port` where the peer's agent listens, if known.
    pub endpoint: Option<SocketAddr>,
    pub mesh_address: Ipv4Addr,
}

/// `src` may reach `dst` (any mesh address when absent) on `port` over `proto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub src: Ipv4Addr,
    pub dst: Option<Ipv4Addr>,
    #[serde(default)]
    pub port: u16,
    pub proto: Proto,
}

impl MeshConfig {
    pub fn rules(&self) -> BTreeSet<Rule> {
        self.policy
            .iter()
            .map(|r| Rule {
                src: r.src,
                dst: r.dst,
                port: if r.proto == Proto::Icmp { 0 } else { r.port },
                proto: r.proto,
            })
            .collect()
    }

    /// Checks every public key decodes to 32 bytes.
    pub fn validate(&self) -> Result<(), AgentError> {
        for peer in &self.peers {
            decode_key(&peer.public_key)?;
        }
        Ok(())
    }
}

/// A base64 WireGuard key.
pub fn decode_key(text: &str) -> Result<[u8; 32], AgentError> {
    let invalid = || AgentError::Invalid {
        what: "WireGuard public key",
        value: servos_core::validate::show(text),
    };
    let bytes = STANDARD.decode(text.trim()).map_err(|_| invalid())?;
    bytes.try_into().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_icmp_rules_ignore_ports() {
        let text = r#"{"peers":[{"public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","endpoint":"10.0.0.2:51820","mesh_address":"10.77.0.2"}],
            "policy":[{"src":"10.77.0.2","dst":null,"port":9,"proto":"icmp"},{"src":"10.77.0.2","dst":"10.77.0.1","port":80,"proto":"tcp"}]}"#;
        let config: MeshConfig = serde_json::from_str(text).unwrap();
        config.validate().unwrap();
        let rules: Vec<_> = config
            .rules()
            .into_iter()
            .map(|r| (r.port, r.proto))
            .collect();
        assert_eq!(rules, vec![(0, Proto::Icmp), (80, Proto::Tcp)]);
    }

    #[test]
    fn bad_public_key_is_named_in_the_error() {
        let err = decode_key("not$key").unwrap_err().to_string();
        assert_eq!(err, "invalid WireGuard public key \"not$key\"");
    }
}
