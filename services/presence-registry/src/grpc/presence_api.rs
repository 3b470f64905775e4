use presence_common::{
    internal_auth::{Caller, Role},
    trace_context,
};
use presence_proto::v1::{
    DisconnectReply, DisconnectRequest, KickReply, KickRequest, LoginReply, LoginRequest, LogoutReply,
    LogoutRequest, Platform, QueryReply, QueryRequest, SetCustomStatusReply, SetCustomStatusRequest,
    StatsReply, StatsRequest, UnwatchReply, UnwatchRequest, WatchReply, WatchRequest,
    presence_registry_server::PresenceRegistry,
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{metric_names as m, registry::SharedRegistry};

pub struct PresenceApi {
    pub registry: SharedRegistry,
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))
}

#[tonic::async_trait]
impl PresenceRegistry for PresenceApi {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginReply>, Status> {
        Caller::require_gateway(&request, &request.get_ref().gateway_id)?;
        // A child of the gateway's login span; the login event keeps its context for the notifier.
        let span = tracing::info_span!("registry.login");
        if let Some(caller) = trace_context::of_request(&request) {
            trace_context::set_parent(&span, caller);
        }
        let traceparent = trace_context::traceparent(&span);
        let req = request.into_inner();
        let session = required(req.session, "session")?;
        let started = std::time::Instant::now();
        let outcome = self.registry.login(&req.gateway_id, session, traceparent).instrument(span).await;
        metrics::histogram!(m::LOGIN_SECONDS).record(started.elapsed().as_secs_f64());
        let outcome = outcome?;
        Ok(Response::new(LoginReply {
            kicked_devices: outcome.kicked,
            seq: outcome.seq,
            user_version: outcome.user_version,
        }))
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutReply>, Status> {
        let caller = Caller::require(&request, Role::Gateway)?.clone();
        let session = required(request.into_inner().session, "session")?;
        let applied = self.registry.logout(&session, caller.verified_id()).await?;
        Ok(Response::new(LogoutReply { applied }))
    }

    async fn disconnect(
        &self,
        request: Request<DisconnectRequest>,
    ) -> Result<Response<DisconnectReply>, Status> {
        let caller = Caller::require(&request, Role::Gateway)?.clone();
        let req = request.into_inner();
        let reason = req.reason();
        let session = required(req.session, "session")?;
        let applied = self.registry.disconnect(&session, reason, caller.verified_id()).await?;
        Ok(Response::new(DisconnectReply { applied }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        Caller::require(&request, Role::Facade)?;
        let forwarded = presence_common::registry_router::is_forwarded(&request);
        let req = request.into_inner();
        let (mut results, as_of_seq) = if forwarded {
            self.registry.query_here(&req.app_id, &req.user_ids, req.detail).await?
        } else {
            self.registry.query(&req.app_id, &req.user_ids, req.detail).await?
        };
        // Results come without ids; they go back on the wire only to a caller that asks for them.
        if !req.without_user_ids {
            for (result, id) in results.iter_mut().zip(&req.user_ids) {
                id.clone_into(&mut result.user_id);
            }
        }
        Ok(Response::new(QueryReply { results, as_of_seq }))
    }

    async fn kick(&self, request: Request<KickRequest>) -> Result<Response<KickReply>, Status> {
        Caller::require(&request, Role::Facade)?;
        let req = request.into_inner();
        let platforms = req
            .platforms
            .iter()
            .map(|p| {
                Platform::try_from(*p).map_err(|_| Status::invalid_argument(format!("unknown platform {p}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let kicked_devices = self.registry.kick(&req.app_id, &req.user_id, &platforms).await?;
        Ok(Response::new(KickReply { kicked_devices }))
    }

    async fn set_custom_status(
        &self,
        request: Request<SetCustomStatusRequest>,
    ) -> Result<Response<SetCustomStatusReply>, Status> {
        // A device's request comes through its gateway, with its session; the backend's through
        // the facade, without.
        let role = if request.get_ref().session.is_some() { Role::Gateway } else { Role::Facade };
        let caller = Caller::require(&request, role)?.clone();
        let req = request.into_inner();
        let gateway = if role == Role::Gateway { caller.verified_id() } else { None };
        let (user_version, changed) = self
            .registry
            .set_custom_status(&req.app_id, &req.user_id, &req.custom_status, req.session.as_ref(), gateway)
            .await?;
        Ok(Response::new(SetCustomStatusReply { user_version, changed }))
    }

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<WatchReply>, Status> {
        Caller::require_gateway(&request, &request.get_ref().gateway_id)?;
        let req = request.into_inner();
        let statuses = self.registry.watch(&req.gateway_id, &req.app_id, &req.users).await?;
        Ok(Response::new(WatchReply { statuses }))
    }

    async fn stats(&self, request: Request<StatsRequest>) -> Result<Response<StatsReply>, Status> {
        Caller::require(&request, Role::Facade)?;
        let (counts, as_of_seq) = self.registry.stats(&request.into_inner().app_id)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Response::new(StatsReply {
            online_users: count(counts.online_users),
            push_online_users: count(counts.push_online_users),
            online_devices: counts
                .devices_by_platform()
                .map(|(name, n)| (name.to_owned(), count(n)))
                .collect(),
            as_of_seq,
        }))
    }

    async fn unwatch(&self, request: Request<UnwatchRequest>) -> Result<Response<UnwatchReply>, Status> {
        Caller::require_gateway(&request, &request.get_ref().gateway_id)?;
        let req = request.into_inner();
        self.registry.unwatch(&req.gateway_id, &req.app_id, &req.users).await?;
        Ok(Response::new(UnwatchReply {}))
    }
}
