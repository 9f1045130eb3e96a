//! The cluster's part of the OpenAPI document, added to a cluster node's `/openapi.json` (a
//! single node's document stays as committed in `openapi/openapi.json`).
//!
//! Owns [`ClusterDoc`]: it merges in the `/cluster` routes (from their `#[utoipa::path]`
//! attributes in [`super::admin`]), adds the `consistency` query parameter to every read the
//! read barrier guards, the 503 `not-applied` / `unavailable` answers to writes, and the
//! `X-Hoardhaven-Leader` header to the description.

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::admin;

/// The `/cluster` routes.
#[derive(OpenApi)]
#[openapi(
    paths(admin::status, admin::init, admin::add_learner, admin::promote, admin::remove),
    components(schemas(admin::LearnerBody)),
    tags((name = "cluster", description = "Raft membership and status (cluster nodes only)."))
)]
struct ClusterApi;

/// Adds the cluster's routes and semantics to the document (see the module documentation).
pub struct ClusterDoc;

const READ_BARRIER: &str = "\n\n## Cluster node\n\n\
This server is a node of a Raft cluster. Writes go through the leader's log (a follower \
forwards them); every response names the leader's API URL in `X-Hoardhaven-Leader`. Reads are \
linearizable unless `?consistency=stale` asks for this node's local copy. Without a leader or \
quorum in time, writes and linearizable reads answer 503: type `not-applied` says the write \
was applied nowhere (a retry is safe), type `unavailable` leaves its outcome unknown.";

fn consistency_param() -> Parameter {
    ParameterBuilder::new()
        .name("consistency")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "`linearizable` (default): the read waits until this node has applied everything \
             the leader committed when it began (read index); `stale`: this node's local copy \
             at once, even without a quorum.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["linearizable", "stale"])),
        ))
        .build()
}

fn add_param(op: &mut Operation) {
    op.parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(consistency_param()));
}

fn add_not_applied(op: &mut Operation) {
    let text = "Starting, overloaded, or (cluster) no leader or quorum in time: type \
                `not-applied` = applied nowhere (retry is safe), `unavailable` = outcome unknown.";
    op.responses
        .responses
        .entry("503".into())
        .and_modify(|r| {
            if let RefOr::T(r) = r {
                r.description = text.into();
            }
        })
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(text).build()));
}

impl Modify for ClusterDoc {
    fn modify(&self, doc: &mut OpenApiDoc) {
        doc.merge(ClusterApi::openapi());
        doc.info.description = Some(format!(
            "{}{READ_BARRIER}",
            doc.info.description.as_deref().unwrap_or_default()
        ));
        for (path, item) in doc.paths.paths.iter_mut() {
            let kv = path == "/kv" || path.starts_with("/kv/");
            if kv {
                item.get
                    .iter_mut()
                    .chain(item.head.iter_mut())
                    .for_each(add_param);
                item.put
                    .iter_mut()
                    .chain(item.delete.iter_mut())
                    .for_each(add_not_applied);
            }
            if path == "/mget" {
                item.post.iter_mut().for_each(add_param);
            }
            if path == "/batch" {
                item.post.iter_mut().for_each(add_not_applied);
            }
        }
    }
}
