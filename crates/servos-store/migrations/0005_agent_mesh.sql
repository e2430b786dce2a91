-- The node agent and the mesh (issue 6): one row per server's agent, and the mesh policy.
-- Token and credential are stored only as SHA-256 hex; a server's removal deletes its
-- agent row (and so revokes the credential) and its policy rules.
CREATE TABLE agents (
    server_id TEXT PRIMARY KEY REFERENCES servers(id) ON DELETE CASCADE,
    enrol_token_hash TEXT,
    credential_hash TEXT UNIQUE,
    public_key TEXT,
    listen_port BIGINT,
    online BIGINT NOT NULL DEFAULT 0,
    last_heartbeat_at TEXT,
    heartbeat TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE mesh_policy (
    id TEXT PRIMARY KEY,
    src_server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    dst_server_id TEXT REFERENCES servers(id) ON DELETE CASCADE,
    port BIGINT NOT NULL,
    proto TEXT NOT NULL,
    created_at TEXT NOT NULL
);
