//! The mesh eBPF classifier (bpf/mesh.bpf.c): loaded and attached as root, then driven
//! through its maps only: policy updates never reload the program.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{config::Proto, error::AgentError};

/// One allowed flow as the BPF map stores it: source, destination (None = any mesh
/// address), destination port (0 for ICMP) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub src: Ipv4Addr,
    pub dst: Option<Ipv4Addr>,
    pub port: u16,
    pub proto: Proto,
}

impl Rule {
    /// The 12-byte key of `struct policy_key`: addresses in network order, port in host
    /// order, protocol, padding.
    pub fn key(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[0..4].copy_from_slice(&self.src.octets());
        k[4..8].copy_from_slice(&self.dst.map(|d| d.octets()).unwrap_or([0; 4]));
        k[8..10].copy_from_slice(&self.port.to_ne_bytes());
        k[10] = self.proto.number();
        k
    }
}

/// Packets the classifier let through and dropped, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub passed: u64,
    pub dropped: u64,
}

#[cfg(feature = "ebpf")]
mod imp {
    use super::*;
    use aya::{
        Ebpf,
        maps::{HashMap, MapData, PerCpuArray},
        programs::{SchedClassifier, TcAttachType, tc},
    };

    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh.bpf.o"));

    /// The loaded program (kept alive: dropping it detaches it) and its two maps.
    pub struct Classifier {
        _ebpf: Ebpf,
        policy: HashMap<MapData, [u8; 12], u8>,
        counters: PerCpuArray<MapData, u64>,
        installed: BTreeSet<Rule>,
    }

    impl std::fmt::Debug for Classifier {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Classifier")
                .field("rules", &self.installed.len())
                .finish()
        }
    }

    impl Classifier {
        /// Loads bpf/mesh.bpf.o and attaches it to `interface`'s ingress. Needs root.
        pub fn load_and_attach(interface: &str) -> Result<Self, AgentError> {
            Self::load_object_and_attach(OBJECT, interface)
        }

        /// Loads `object` (an ELF BPF object with `mesh_ingress`, `policy`, `counters`).
        pub fn load_object_and_attach(object: &[u8], interface: &str) -> Result<Self, AgentError> {
            let fail = |reason: String| AgentError::Classifier {
                interface: interface.to_owned(),
                reason,
            };
            let mut ebpf = Ebpf::load(object).map_err(|e| fail(format!("load object: {e}")))?;
            // The clsact qdisc is needed for netlink attachment (kernels < 6.6); it may exist.
            let _ = tc::qdisc_add_clsact(interface);
            let program: &mut SchedClassifier = ebpf
                .program_mut("mesh_ingress")
                .ok_or_else(|| fail("program mesh_ingress missing from the object".into()))?
                .try_into()
                .map_err(|e| fail(format!("mesh_ingress is not a classifier: {e}")))?;
            program.load().map_err(|e| fail(format!("verifier: {e}")))?;
            program
                .attach(interface, TcAttachType::Ingress)
                .map_err(|e| fail(format!("attach to ingress: {e}")))?;
            let policy = ebpf
                .take_map("policy")
                .ok_or_else(|| fail("map policy missing".into()))?;
            let counters = ebpf
                .take_map("counters")
                .ok_or_else(|| fail("map counters missing".into()))?;
            Ok(Self {
                policy: HashMap::try_from(policy).map_err(|e| fail(format!("map policy: {e}")))?,
                counters: PerCpuArray::try_from(counters)
                    .map_err(|e| fail(format!("map counters: {e}")))?,
                _ebpf: ebpf,
                installed: BTreeSet::new(),
            })
        }

        /// Makes the policy map hold exactly `rules`: new ones first, then removals, so a
        /// rule present in both the old and new policy never disappears in between.
        pub fn set_policy(&mut self, rules: &BTreeSet<Rule>) -> Result<(), AgentError> {
            for rule in rules.difference(&self.installed.clone()) {
                self.policy
                    .insert(rule.key(), 1, 0)
                    .map_err(|e| AgentError::PolicyMap(format!("insert {rule:?}: {e}")))?;
                self.installed.insert(*rule);
            }
            let stale: Vec<Rule> = self.installed.difference(rules).copied().collect();
            for rule in stale {
                self.policy
                    .remove(&rule.key())
                    .map_err(|e| AgentError::PolicyMap(format!("remove {rule:?}: {e}")))?;
                self.installed.remove(&rule);
            }
            Ok(())
        }

        pub fn counters(&self) -> Counters {
            let sum = |i: u32| {
                self.counters
                    .get(&i, 0)
                    .map(|values| values.iter().copied().sum())
                    .unwrap_or(0)
            };
            Counters {
                dropped: sum(0),
                passed: sum(1),
            }
        }
    }
}

#[cfg(not(feature = "ebpf"))]
mod imp {
    use super::*;

    /// Built without the `ebpf` feature: loading always fails, so the agent refuses to run.
    #[derive(Debug)]
    pub struct Classifier {
        _never: std::convert::Infallible,
    }

    impl Classifier {
        pub fn load_and_attach(_interface: &str) -> Result<Self, AgentError> {
            Err(AgentError::NoClassifier)
        }

        pub fn load_object_and_attach(
            _object: &[u8],
            _interface: &str,
        ) -> Result<Self, AgentError> {
            Err(AgentError::NoClassifier)
        }

        pub fn set_policy(&mut self, _rules: &BTreeSet<Rule>) -> Result<(), AgentError> {
            match self._never {}
        }

        pub fn counters(&self) -> Counters {
            match self._never {}
        }
    }
}

pub use imp::Classifier;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_key_matches_the_c_struct_layout() {
        let rule = Rule {
            src: Ipv4Addr::new(10, 77, 0, 2),
            dst: None,
            port: 8080,
            proto: Proto::Tcp,
        };
        let port = 8080u16.to_ne_bytes();
        assert_eq!(
            rule.key(),
            [10, 77, 0, 2, 0, 0, 0, 0, port[0], port[1], 6, 0]
        );
    }
}
