-- ServOS schema, version 2. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Where each deployment put its container on each server, and the path of the secret env
-- file that exists for the seconds around `docker run`: after a crash of the control plane,
-- start-up recovery reads these rows to remove orphan env files and half-started containers.
-- status: starting (env file may exist) | started (container up, env file gone, not yet
-- healthy) | running | stopped | failed | retired | removed.

CREATE TABLE deployment_servers (
    deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    status TEXT NOT NULL,
    container TEXT NOT NULL,
    env_file TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, server_id)
);

CREATE INDEX deployments_by_service ON deployments (service_id, created_at);
CREATE INDEX jobs_by_lock_key ON jobs (lock_key, status);
