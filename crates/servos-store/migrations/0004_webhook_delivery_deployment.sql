-- A webhook delivery remembers the deployment it queued, so a replay can name it; the
-- index keeps pruning a service's old delivery ids a range scan.
ALTER TABLE webhook_deliveries ADD COLUMN deployment_id TEXT;
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (service_id, received_at);
