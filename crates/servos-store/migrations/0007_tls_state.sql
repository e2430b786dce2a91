-- The control plane's own TLS state when `servos serve` gets its certificate by ACME:
-- the ACME account credentials and the issued certificate with its private key. Both are
-- secrets (the account key can revoke; the certificate key impersonates the control plane),
-- so `value_enc` is Base64(nonce || AES-256-GCM ciphertext) bound to (tls_state, value_enc, name).
CREATE TABLE tls_state (
    name TEXT PRIMARY KEY,
    value_enc TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
