-- Services across servers (issue 6, item 6) and the containers agents report (item 5).
-- services.publish: 'proxy' (default: the port stays inside the service network, domains go
-- through the server's proxy) or 'mesh' (the port is also bound on the server's mesh address
-- only). service_grants: "src may reach dst"; the agents' policy is derived from it (servers
-- of src -> servers of dst, dst's port, tcp), so it follows assignments, revocation and deletion.
-- deployment_servers.container_id: the id `docker run -d` printed, to match agents' reports.
ALTER TABLE services ADD COLUMN publish TEXT NOT NULL DEFAULT 'proxy';

CREATE TABLE service_grants (
    src_service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    dst_service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (src_service_id, dst_service_id)
);

ALTER TABLE deployment_servers ADD COLUMN container_id TEXT;
