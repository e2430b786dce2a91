//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{agent, audit, credentials, deployments, domains, hosts, logs, mesh, meta, services, session, tokens, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "ServOS API", description = "Self-hosted PaaS control plane. Secret fields are write-only."),
    paths(
        meta::healthz, meta::openapi,
        session::setup, session::login,
        tokens::list, tokens::create, tokens::revoke,
        hosts::create_server, hosts::list_servers, hosts::get_server, hosts::delete_server, hosts::reset_server_fingerprint, hosts::check_server,
        hosts::create_builder, hosts::list_builders, hosts::get_builder, hosts::delete_builder, hosts::reset_builder_fingerprint, hosts::check_builder,
        credentials::create_registry, credentials::list_registries, credentials::get_registry, credentials::delete_registry,
        credentials::create_git, credentials::list_git, credentials::get_git, credentials::delete_git,
        services::create, services::list, services::get, services::delete, services::get_env, services::put_env, services::patch_env,
        services::rotate_webhook_secret,
        domains::list, domains::add, domains::remove, domains::proxy_status,
        deployments::create, deployments::list, deployments::get, deployments::logs, deployments::rollback,
        deployments::stop, deployments::start, deployments::restart,
        logs::logs,
        audit::list, audit::verify,
        agent::issue_enrolment, agent::install, agent::set_mesh_address, agent::get_agent, agent::add_rule, agent::delete_rule, agent::enroll, agent::config, agent::heartbeat,
        webhooks::receive, webhooks::settings,
        mesh::set_publish, mesh::list_grants, mesh::add_grant, mesh::delete_grant, mesh::policy, mesh::all_grants,
    ),
    modifiers(&BearerAuth)
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
