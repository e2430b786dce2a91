-- ServOS schema, version 1. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Conventions: ids are UUID text; times are UTC text "YYYY-MM-DDTHH:MM:SS.ffffffZ" (sortable);
-- integers are BIGINT; columns ending in _enc hold Base64(nonce || AES-256-GCM ciphertext)
-- bound to (table, column, row id) as associated data. No plaintext secret has a column.

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);

CREATE TABLE servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    ssh_user TEXT NOT NULL,
    private_key_enc TEXT NOT NULL,
    passphrase_enc TEXT,
    public_key TEXT NOT NULL,
    host_key_fingerprint TEXT,
    proxy TEXT NOT NULL DEFAULT 'traefik',
    status TEXT NOT NULL,
    status_reason TEXT,
    facts TEXT,
    mesh_address TEXT,
    last_checked_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE builders (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    ssh_user TEXT NOT NULL,
    private_key_enc TEXT NOT NULL,
    passphrase_enc TEXT,
    public_key TEXT NOT NULL,
    host_key_fingerprint TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    facts TEXT,
    last_checked_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE registries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    username TEXT NOT NULL,
    password_enc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE git_credentials (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    token_enc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT,
    registry_id TEXT REFERENCES registries(id),
    git_repository TEXT,
    git_branch TEXT,
    git_credential_id TEXT REFERENCES git_credentials(id),
    builder_id TEXT REFERENCES builders(id),
    command TEXT,
    port BIGINT,
    domains TEXT NOT NULL,
    tls TEXT NOT NULL,
    healthcheck_path TEXT,
    healthcheck_port BIGINT,
    webhook_secret_enc TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE service_servers (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES servers(id),
    position BIGINT NOT NULL,
    PRIMARY KEY (service_id, server_id)
);

CREATE TABLE env_vars (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value_enc TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (service_id, name)
);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    image TEXT,
    image_digest TEXT,
    git_ref TEXT,
    triggered_by TEXT NOT NULL,
    error TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);

CREATE TABLE deployment_logs (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    at TEXT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    lock_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX jobs_status ON jobs (status, created_at);

CREATE TABLE webhook_deliveries (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    delivery_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (service_id, delivery_id)
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
