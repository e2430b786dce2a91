//! ServOS core: the types every other crate shares, with no IO.
//!
//! Architecture invariant: nothing in this crate touches the network, the disk or the
//! clock's wall time except through arguments. It knows nothing about SQL, SSH or HTTP.

pub mod model;
pub mod random;
pub mod secret;
pub mod validate;
pub mod vault;
pub mod webhook;

pub use secret::Secret;
pub use vault::{Aad, KeyError, MasterKey, Vault, VaultError};
