-- ServOS schema, version 3. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Builds from git: where the Dockerfile and the build context are inside the repository
-- (NULL: `Dockerfile` at the root, context `.`). The commit a deployment was built from
-- is written to deployments.git_ref once resolved, the built image to deployments.image.

ALTER TABLE services ADD COLUMN git_dockerfile TEXT;
ALTER TABLE services ADD COLUMN git_context TEXT;
