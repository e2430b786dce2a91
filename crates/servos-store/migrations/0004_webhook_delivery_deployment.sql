-- A webhook delivery remembers the deployment it queued, so a replay can name it.
ALTER TABLE webhook_deliveries ADD COLUMN deployment_id TEXT;
