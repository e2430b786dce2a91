//! ACME for the control plane's own certificate (`SERVOS_ACME_DOMAINS`).
//!
//! - The account credentials and the issued certificate with its key are stored
//!   encrypted in the database (`tls_state`), never as files: a restart (or a move to
//!   another host on PostgreSQL) serves the stored certificate at once and orders nothing.
//! - The challenge is TLS-ALPN-01, answered by [`crate::tls::CertResolver`] on the same
//!   listener, so no second port and no HTTP listener are needed.
//! - Renewal starts when a third of the certificate's lifetime is left (30 days of a 90-day
//!   certificate); failures are logged, audited and retried with a growing back-off while the
//!   current certificate keeps being served.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use servos_core::Secret;
use servos_store::{Actor, Store};

use crate::tls::{AcmeSettings, CertResolver, certified_key, own_certified_key};

/// An ACME problem, with what to check.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME CA {directory}: {source}")]
    Protocol { directory: String, source: instant_acme::Error },
    #[error("ACME order for {domains} ended {status}: check that the CA reaches this listener on port 443 under each name")]
    OrderFailed { domains: String, status: String },
    #[error("ACME: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] servos_store::StoreError),
}

/// The certificate being served and when to renew it.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Unix time at which renewal starts: when a third of the lifetime is left.
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before) / 3
    }
}

fn account_name(directory: &str) -> String {
    format!("acme:account:{directory}")
}

fn certificate_name(domains: &[String]) -> String {
    format!("acme:certificate:{}", domains.join(","))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCertificate {
    chain_pem: String,
    key_pem: String,
}

/// Parses a PEM chain and key, installs it in `resolver`, and returns its validity.
fn install(resolver: &CertResolver, chain_pem: &str, key_pem: &Secret<String>) -> Result<Validity, AcmeError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| AcmeError::Invalid(format!("certificate chain is not valid PEM: {e:?}")))?;
    let first = chain.first().ok_or_else(|| AcmeError::Invalid("the CA returned an empty certificate chain".into()))?;
    let validity = validity_of(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
        .map_err(|e| AcmeError::Invalid(format!("certificate key is not valid PEM: {e:?}")))?;
    let served = certified_key(chain, key).map_err(|e| AcmeError::Invalid(format!("certificate and key unusable: {e:?}")))?;
    resolver.set_current(served);
    Ok(validity)
}

fn validity_of(cert: &CertificateDer<'_>) -> Result<Validity, AcmeError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| AcmeError::Invalid(format!("cannot parse the certificate: {e}")))?;
    let v = parsed.validity();
    Ok(Validity { not_before: v.not_before.timestamp(), not_after: v.not_after.timestamp() })
}

/// Installs the stored certificate for these domains, if there is one. Returns its validity.
pub async fn install_stored(store: &Store, resolver: &CertResolver, settings: &AcmeSettings) -> Result<Option<Validity>, AcmeError> {
    let Some(stored) = store.tls_state(&certificate_name(&settings.domains)).await? else {
        return Ok(None);
    };
    let stored: StoredCertificate = serde_json::from_str(stored.expose())
        .map_err(|e| AcmeError::Invalid(format!("stored certificate is unreadable: {e}")))?;
    let key = Secret::new(stored.key_pem);
    let validity = install(resolver, &stored.chain_pem, &key)?;
    tracing::info!(domains = %settings.domains.join(","), not_after = validity.not_after, "serving the stored ACME certificate");
    Ok(Some(validity))
}

/// Keeps a valid certificate installed: orders one now if there is none, renews when due.
pub fn spawn(store: Store, resolver: Arc<CertResolver>, settings: AcmeSettings, mut current: Option<Validity>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(30);
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let due = current.map_or(now, |v| v.renew_at());
            if now >= due {
                match obtain(&store, &resolver, &settings).await {
                    Ok(v) => {
                        current = Some(v);
                        backoff = Duration::from_secs(30);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in_s = backoff.as_secs(), "ACME certificate order failed");
                        let _ = store
                            .audit_now(
                                &Actor::system(),
                                servos_store::audit::Event::new("acme.order_failed", "tls_state", &certificate_name(&settings.domains))
                                    .detail(serde_json::json!({ "error": e.to_string() })),
                            )
                            .await;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(6 * 3600));
                        continue;
                    }
                }
            }
            // Wake at the renewal time, at least twice a day (clocks and lifetimes change).
            let wait = u64::try_from(due - now).unwrap_or(0).min(12 * 3600);
            tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
        }
    });
}

async fn account(store: &Store, settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let protocol = |source| AcmeError::Protocol { directory: settings.directory.clone(), source };
    let builder = match &settings.ca_file {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    }
    .map_err(protocol)?;
    let name = account_name(&settings.directory);
    if let Some(stored) = store.tls_state(&name).await? {
        let credentials: AccountCredentials = serde_json::from_str(stored.expose())
            .map_err(|e| AcmeError::Invalid(format!("stored account is unreadable: {e}")))?;
        return builder.from_credentials(credentials).await.map_err(protocol);
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder.create(&new, settings.directory.clone(), None).await.map_err(protocol)?;
    let json = serde_json::to_string(&credentials).map_err(|e| AcmeError::Invalid(format!("cannot store the account: {e}")))?;
    store
        .put_tls_state(
            &Actor::system(),
            &name,
            &Secret::new(json),
            "acme.account_created",
            serde_json::json!({ "directory": settings.directory, "account": account.id() }),
        )
        .await?;
    Ok(account)
}

/// Orders a certificate for `settings.domains`, answering TLS-ALPN-01 on this listener,
/// then stores and installs it.
pub async fn obtain(store: &Store, resolver: &CertResolver, settings: &AcmeSettings) -> Result<Validity, AcmeError> {
    let protocol = |source| AcmeError::Protocol { directory: settings.directory.clone(), source };
    let domains = settings.domains.join(",");
    tracing::info!(%domains, directory = %settings.directory, "ordering a certificate by ACME");
    let account = account(store, settings).await?;
    let identifiers: Vec<Identifier> = settings.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(protocol)?;

    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(protocol)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::OrderFailed { domains: domains.clone(), status: format!("{other:?} authorization") });
                }
            }
            let wanted = authz.identifier().to_string();
            let mut challenge = authz.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| {
                AcmeError::Invalid(format!("the CA offers no tls-alpn-01 challenge for {wanted}"))
            })?;
            let name = challenge.identifier().to_string();
            let digest = challenge.key_authorization().digest();
            resolver.set_challenge(&name.to_ascii_lowercase(), challenge_certificate(&name, digest.as_ref())?);
            challenge.set_ready().await.map_err(protocol)?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await.map_err(protocol)?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::OrderFailed { domains: domains.clone(), status: format!("{status:?}") });
        }
        let key_pem = Secret::new(order.finalize().await.map_err(protocol)?);
        let chain_pem = order.poll_certificate(&RetryPolicy::default()).await.map_err(protocol)?;
        Ok((chain_pem, key_pem))
    }
    .await;
    resolver.clear_challenges();
    let (chain_pem, key_pem) = result?;

    let validity = install(resolver, &chain_pem, &key_pem)?;
    let stored = serde_json::to_string(&StoredCertificate { chain_pem, key_pem: key_pem.expose().clone() })
        .map_err(|e| AcmeError::Invalid(format!("cannot store the certificate: {e}")))?;
    store
        .put_tls_state(
            &Actor::system(),
            &certificate_name(&settings.domains),
            &Secret::new(stored),
            "acme.certificate_issued",
            serde_json::json!({ "domains": settings.domains, "not_after": validity.not_after, "directory": settings.directory }),
        )
        .await?;
    tracing::info!(%domains, not_after = validity.not_after, "ACME certificate issued and installed");
    Ok(validity)
}

/// The self-signed certificate that proves control of `name` for TLS-ALPN-01 (RFC 8737):
/// the name as its only SAN and the key authorization's digest in the critical
/// acmeIdentifier extension.
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<rustls::sign::CertifiedKey, AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::Invalid(format!("cannot make the challenge certificate for {name}: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| AcmeError::Invalid(format!("challenge key for {name}: {e}")))?;
    own_certified_key(cert.der().clone(), der).map_err(|e| AcmeError::Invalid(format!("challenge certificate for {name}: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left() {
        let day = 86_400;
        let v = Validity { not_before: 0, not_after: 90 * day };
        assert_eq!(v.renew_at(), 60 * day);
        let short = Validity { not_before: 0, not_after: 6 * day };
        assert_eq!(short.renew_at(), 4 * day);
    }

    #[test]
    fn challenge_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = challenge_certificate("cp.example.com", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ck.cert[0].as_ref()).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // DER OCTET STRING (0x04, length 32) wrapping the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(format!("{:?}", sans.value.general_names), "[DNSName(\"cp.example.com\")]");
    }
}
