//! A logged-in device's requests: its user's custom status, and its subscriptions to other
//! users. Each is answered with its `request_id`, or with `RequestError`; the connection stays
//! open either way.

use std::collections::{HashMap, HashSet};

use compact_str::CompactString;
use presence_proto::{
    codes::RequestErrorCode,
    limits::{MAX_CUSTOM_STATUS_LEN, MAX_IDS_PER_SUBSCRIBE, is_valid_id, is_valid_text},
    v1::{
        RequestError, SetCustomStatusRequest, SetStatus, SetStatusOk, Subscribe, SubscribeOk, Unsubscribe,
        UnsubscribeOk, UserStatus, server_frame,
    },
};
use tonic::Code;

use super::{Conn, Context, End, Session, retry_unavailable};
use crate::{subscriptions, transport::FrameTransport};

/// A refused request: its code and what the device is told.
type Refusal = (RequestErrorCode, &'static str);

/// The code a device gets for a registry failure (the registry's own text stays in the logs).
fn refusal(status: &tonic::Status) -> Refusal {
    tracing::debug!(%status, "registry refused a request");
    match status.code() {
        Code::InvalidArgument => (RequestErrorCode::BadRequest, "the request was refused"),
        _ => (RequestErrorCode::Unavailable, "the registry is unavailable, retry later"),
    }
}

/// The ids of a `Subscribe` or `Unsubscribe`, each once, in request order.
fn user_ids(ids: &[String], allow_empty: bool) -> Result<Vec<CompactString>, Refusal> {
    if (ids.is_empty() && !allow_empty) || ids.len() > MAX_IDS_PER_SUBSCRIBE {
        return Err((RequestErrorCode::BadRequest, "user_ids must hold 1 to 500 ids"));
    }
    if !ids.iter().all(|id| is_valid_id(id)) {
        return Err((
            RequestErrorCode::BadRequest,
            "a user id must be 1 to 256 bytes without control characters",
        ));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    Ok(ids.iter().filter(|id| seen.insert(id.as_str())).map(|id| CompactString::from(id.as_str())).collect())
}

/// How a user nobody answered for is shown: offline, never seen.
fn offline(user_id: &str) -> UserStatus {
    UserStatus { user_id: user_id.to_owned(), status: "offline".to_owned(), ..UserStatus::default() }
}

impl<T: FrameTransport> Conn<T> {
    /// Sends the answer of request `request_id`, or its `RequestError`.
    fn answer(&mut self, request_id: u32, answer: Result<server_frame::Kind, Refusal>) -> Result<(), End> {
        let kind = answer.unwrap_or_else(|(code, message)| {
            server_frame::Kind::RequestError(RequestError {
                request_id,
                code: code.as_str().to_owned(),
                message: message.to_owned(),
            })
        });
        self.push(kind)
    }

    pub(super) async fn set_status(&mut self, request: SetStatus) -> Result<(), End> {
        let answer = self.set_custom_status(&request).await;
        self.answer(request.request_id, answer)
    }

    async fn set_custom_status(&mut self, request: &SetStatus) -> Result<server_frame::Kind, Refusal> {
        let Some(session) = &self.session else {
            return Err((RequestErrorCode::BadRequest, "not logged in"));
        };
        if !is_valid_text(&request.custom_status, MAX_CUSTOM_STATUS_LEN) {
            return Err((
                RequestErrorCode::BadRequest,
                "custom_status: at most 256 bytes, no control characters",
            ));
        }
        let reference = session.reference();
        let call = SetCustomStatusRequest {
            app_id: reference.app_id.clone(),
            user_id: reference.user_id.clone(),
            custom_status: request.custom_status.clone(),
            session: Some(reference.clone()),
        };
        retry_unavailable(&self.ctx.registries, &reference, |mut registry| {
            let call = call.clone();
            async move { registry.set_custom_status(call).await.map(drop) }
        })
        .await
        .map_err(|status| refusal(&status))?;
        Ok(server_frame::Kind::SetStatusOk(SetStatusOk { request_id: request.request_id }))
    }

    pub(super) async fn subscribe(&mut self, request: Subscribe) -> Result<(), End> {
        let answer = self.watch(&request).await;
        self.answer(request.request_id, answer)
    }

    /// Adds the subscriptions, then asks the users' registries for their changes and current
    /// status. If they cannot answer, the subscriptions this request added are taken back.
    async fn watch(&mut self, request: &Subscribe) -> Result<server_frame::Kind, Refusal> {
        let Some(session) = &self.session else {
            return Err((RequestErrorCode::BadRequest, "not logged in"));
        };
        let wanted = user_ids(&request.user_ids, false)?;
        let added: Vec<CompactString> = {
            let mut subscribed = session.handle.subscribed.lock();
            let held = subscribed.get_or_insert_with(Box::default);
            let added: Vec<CompactString> = wanted.iter().filter(|u| !held.contains(*u)).cloned().collect();
            if held.len() + added.len() > self.ctx.max_subscriptions {
                if held.is_empty() {
                    *subscribed = None;
                }
                return Err((
                    RequestErrorCode::TooManySubscriptions,
                    "this device holds too many subscriptions",
                ));
            }
            held.extend(added.iter().cloned());
            added
        };
        let app_id = session.handle.app_id.as_str();
        // Registered here before the registry hears of it: a push may come before the answer.
        let interests = self.ctx.subscriptions.add(app_id, session.id, &wanted);
        match subscriptions::watch(&self.ctx.registries, &self.ctx.gateway_id, app_id, interests).await {
            Ok(statuses) => {
                let by_user: HashMap<String, UserStatus> =
                    statuses.into_iter().map(|s| (s.user_id.clone(), s)).collect();
                let statuses = request
                    .user_ids
                    .iter()
                    .map(|id| by_user.get(id).cloned().unwrap_or_else(|| offline(id)))
                    .collect();
                Ok(server_frame::Kind::SubscribeOk(SubscribeOk { request_id: request.request_id, statuses }))
            }
            Err(status) => {
                self.forget(&added);
                Err(refusal(&status))
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, request: Unsubscribe) -> Result<(), End> {
        let answer = user_ids(&request.user_ids, true).map(|ids| {
            if ids.is_empty() {
                self.forget_all();
            } else {
                self.forget(&ids);
            }
            server_frame::Kind::UnsubscribeOk(UnsubscribeOk { request_id: request.request_id })
        });
        self.answer(request.request_id, answer)
    }

    /// Ends these subscriptions of the session.
    fn forget(&self, users: &[CompactString]) {
        let Some(session) = &self.session else { return };
        let removed: Vec<CompactString> = {
            let mut subscribed = session.handle.subscribed.lock();
            let Some(held) = subscribed.as_mut() else { return };
            let removed = users.iter().filter(|u| held.remove(*u)).cloned().collect();
            if held.is_empty() {
                *subscribed = None;
            }
            removed
        };
        self.ctx.subscriptions.remove(&session.handle.app_id, session.id, &removed);
    }

    /// Ends every subscription of the session (an empty `Unsubscribe`).
    fn forget_all(&self) {
        if let Some(session) = &self.session {
            end_subscriptions(&self.ctx, session);
        }
    }
}

/// Ends every subscription of `session` (also when its connection ends).
pub(super) fn end_subscriptions(ctx: &Context, session: &Session) {
    let Some(held) = session.handle.subscribed.lock().take() else { return };
    ctx.subscriptions.remove(&session.handle.app_id, session.id, held.iter());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_deduplicated_in_order() {
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let got = user_ids(&ids(&["b", "a", "b"]), false).unwrap();
        assert_eq!(got, ["b", "a"]);
        assert!(user_ids(&[], false).is_err());
        assert!(user_ids(&[], true).unwrap().is_empty());
        assert!(user_ids(&ids(&["ok", "bad\n"]), false).is_err());
        assert!(user_ids(&vec!["u".to_owned(); MAX_IDS_PER_SUBSCRIBE + 1], false).is_err());
    }
}
