-- ServOS schema, version 6. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- The domains each service claims: the primary key makes a domain belong to at most one
-- service, checked by the database in the same transaction that changes services.domains
-- (which keeps the ordered list shown to users). path_prefix: only requests under it are
-- routed to the service (NULL: all paths).

CREATE TABLE service_domains (
    domain TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);

CREATE INDEX service_domains_by_service ON service_domains (service_id);

ALTER TABLE services ADD COLUMN path_prefix TEXT;
