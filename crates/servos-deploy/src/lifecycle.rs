//! Stop, start, restart and remove a service's containers on its servers, and rollback
//! (a new deploy of the image digest of an earlier successful deployment).
//!
//! The containers of a service are found on each server by their `servos.service` label,
//! so containers the store does not know of are included; the store's placements are
//! updated to match and each action is audited. After `start` and `restart` the service's
//! route is pointed at the running container again (see [`crate::routing`]).

use serde_json::json;
use servos_store::Actor;
use servos_store::deployments::DeploymentRecord;
use servos_store::hosts::HostKind;
use servos_store::services::ServiceRecord;

use crate::Engine;
use crate::error::{DeployError, command_detail};
use crate::remote::docker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Stop,
    Start,
    Restart,
    Remove,
}

impl Action {
    fn audit(self) -> &'static str {
        match self {
            Action::Stop => "service.stopped",
            Action::Start => "service.started",
            Action::Restart => "service.restarted",
            Action::Remove => "service.removed",
        }
    }

    /// The placement status afterwards.
    fn status(self) -> &'static str {
        match self {
            Action::Stop => "stopped",
            Action::Start | Action::Restart => "running",
            Action::Remove => "removed",
        }
    }

    fn step(self) -> &'static str {
        match self {
            Action::Stop => "stopping containers",
            Action::Start => "starting containers",
            Action::Restart => "restarting containers",
            Action::Remove => "removing containers",
        }
    }
}

impl Engine {
    /// Stops the service's running containers on every server (they stay, stopped).
    pub async fn stop(&self, actor: &Actor, service_id: &str) -> Result<(), DeployError> {
        self.act(actor, service_id, Action::Stop).await
    }

    /// Starts the service's containers again.
    pub async fn start(&self, actor: &Actor, service_id: &str) -> Result<(), DeployError> {
        self.act(actor, service_id, Action::Start).await
    }

    pub async fn restart(&self, actor: &Actor, service_id: &str) -> Result<(), DeployError> {
        self.act(actor, service_id, Action::Restart).await
    }

    /// Removes the service's containers and its network from every server. The service
    /// record stays: deleting it is the store's `delete_service`, after this.
    pub async fn remove(&self, actor: &Actor, service_id: &str) -> Result<(), DeployError> {
        self.act(actor, service_id, Action::Remove).await
    }

    async fn act(
        &self,
        actor: &Actor,
        service_id: &str,
        action: Action,
    ) -> Result<(), DeployError> {
        let service = self.store().get_service(service_id).await?;
        let _service = self.lock_service(&service.id).await;
        let mut done = Vec::new();
        for server_id in &service.servers {
            let (containers, route) = self.act_on(actor, &service, server_id, action).await?;
            let mut entry = json!({ "server": server_id, "containers": containers });
            if let Some(route) = route {
                entry["route"] = json!(route);
            }
            done.push(entry);
        }
        self.store()
            .record_service_action(
                actor,
                &service.id,
                action.audit(),
                action.status(),
                json!({ "servers": done }),
            )
            .await?;
        Ok(())
    }

    async fn act_on(
        &self,
        actor: &Actor,
        service: &ServiceRecord,
        server_id: &str,
        action: Action,
    ) -> Result<(Vec<String>, Option<String>), DeployError> {
        let server = self.store().get_host(HostKind::Server, server_id).await?;
        let session = self.session(HostKind::Server, server_id, actor).await?;
        let fail = |step: &'static str, detail: String| DeployError::Step {
            server: server.name.clone(),
            step,
            detail,
        };
        let listed = Self::exec_checked(
            &session,
            &docker::list_containers(&service.id, action != Action::Stop),
        )
        .await
        .map_err(|e| fail("listing containers", e))?;
        let names = docker::parse_names(&listed.stdout_lossy());
        let cmd = match action {
            Action::Stop => docker::stop_containers(&names),
            Action::Start => docker::start_containers(&names),
            Action::Restart => docker::restart_containers(&names),
            Action::Remove => docker::remove_containers(&names),
        };
        if !names.is_empty() {
            let addr = session.target().addr();
            session
                .exec(&cmd)
                .await
                .and_then(|o| o.checked(&addr, &cmd))
                .map_err(|e| fail(action.step(), command_detail(&e)))?;
        }
        let mut route = None;
        if matches!(action, Action::Start | Action::Restart) && !names.is_empty() {
            // A (re)started container may have a new IP: the route must follow it.
            route = self.reroute_running(&session, service, &server).await?;
            if route.is_none() {
                route = self
                    .repoint_running_mesh(&session, service, &server)
                    .await?;
            }
        }
        if action == Action::Remove {
            route = self.unpublish_mesh(&session, service, &server).await?;
            // Absent already, or still used by a container we do not own: not an error.
            let _ = session
                .exec(&docker::remove_network(&docker::network_name(
                    &service.name,
                )))
                .await;
        }
        Ok((names, route))
    }

    /// Queues a deploy of the image digest of an earlier successful deployment: `to`, or
    /// else the most recent successful one whose digest differs from the current one.
    pub async fn rollback(
        &self,
        actor: &Actor,
        service_id: &str,
        to: Option<&str>,
    ) -> Result<DeploymentRecord, DeployError> {
        let service = self.store().get_service(service_id).await?;
        let succeeded = self.store().succeeded_deployments(&service.id).await?;
        let target = match to {
            Some(id) => {
                let d = self.store().get_deployment(id).await?;
                let bad = |reason: String| DeployError::BadRollbackTarget {
                    deployment: id.to_owned(),
                    reason,
                };
                if d.service_id != service.id {
                    return Err(bad(format!(
                        "it belongs to another service, not {}",
                        service.name
                    )));
                }
                if d.status != "succeeded" {
                    return Err(bad(format!(
                        "it has status {}; only succeeded deployments can be rolled back to",
                        d.status
                    )));
                }
                d
            }
            None => {
                let current = succeeded.first().and_then(|d| d.image_digest.clone());
                succeeded
                    .iter()
                    .skip(1)
                    .find(|d| d.image_digest.is_some() && d.image_digest != current)
                    .cloned()
                    .ok_or_else(|| DeployError::NoRollbackTarget {
                        service: service.name.clone(),
                    })?
            }
        };
        let digest = target
            .image_digest
            .clone()
            .ok_or_else(|| DeployError::BadRollbackTarget {
                deployment: target.id.clone(),
                reason: "its image digest was not recorded".into(),
            })?;
        let queued = self
            .store()
            .queue_deployment(actor, &service.id, Some(&digest))
            .await?;
        let note = format!(
            "rollback to deployment {} (image {}, digest {digest})",
            target.id,
            target.image.as_deref().unwrap_or("?")
        );
        self.store()
            .append_deployment_log(&queued.id, "step", &note)
            .await?;
        self.notify();
        Ok(queued)
    }
}
