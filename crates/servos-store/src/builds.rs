//! What a build from git records on its deployment: the image it produced and the commit
//! it was built from (the ref asked for stays in the `deployment.queued` audit event).

use crate::audit::Event;
use crate::{Actor, Result, Store, StoreError};

impl Store {
    /// Records that `deployment_id` was built from `commit` into `image`: the deployment's
    /// `image` and `git_ref` (now the full commit SHA) are set, with an audit event.
    pub async fn record_build(
        &self,
        actor: &Actor,
        deployment_id: &str,
        image: &str,
        commit: &str,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE deployments SET image = $1, git_ref = $2 WHERE id = $3")
            .bind(image)
            .bind(commit)
            .bind(deployment_id)
            .execute(&mut *tx.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                kind: "deployment",
                key: deployment_id.into(),
            });
        }
        self.audit(
            &mut tx,
            actor,
            Event::new("deployment.built", "deployment", deployment_id)
                .detail(serde_json::json!({ "image": image, "commit": commit })),
        )
        .await?;
        tx.commit().await
    }
}
