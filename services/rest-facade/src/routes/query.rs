//! `POST /v1/presence/query`: the presence of up to 500 users at once.

use std::fmt;

use axum::{extract::State, response::Response};
use presence_proto::query_request::UserIds;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, DeserializeSeed, SeqAccess, Visitor},
};
use utoipa::ToSchema;

use crate::{
    auth::CallerApp,
    error::{ApiError, ErrorResponse},
    extract::ApiJson,
    presence_json::{RESULT_JSON_BYTES, UserPresenceJson, json_bytes_response},
    routes::check_user_id,
    state::AppState,
};

/// Most users one query may name (http-api.md; the registry enforces the same bound).
pub use presence_proto::limits::MAX_IDS_PER_QUERY as MAX_QUERY_USERS;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// 1 to 500 user ids; results come back in this order (duplicates included).
    #[schema(schema_with = crate::routes::user_ids_schema)]
    #[serde(deserialize_with = "user_ids")]
    pub user_ids: UserIds,
    /// List each user's devices. Default false.
    #[serde(default)]
    #[schema(default = false)]
    pub detail: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResponse<'a> {
    /// One per requested id, in request order; unknown users are `offline`.
    pub results: Vec<UserPresenceJson<'a>>,
    /// The app's event `seq` this snapshot reflects: events after it are not in it.
    pub as_of_seq: u64,
}

/// Presence of several users of the calling app.
#[utoipa::path(
    post,
    path = "/v1/presence/query",
    tag = "presence",
    request_body = QueryBody,
    responses(
        (status = 200, description = "Presence of each user, in request order", body = QueryResponse),
        (status = 400, description = "`no_user_ids`, `too_many_user_ids`, `invalid_user_id`, \
            `invalid_json`, `invalid_body` or `bad_request`", body = ErrorResponse),
    ),
    security(("api_key" = []))
)]
pub async fn query(
    app: CallerApp,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Response, ApiError> {
    if body.user_ids.is_empty() {
        return Err(ApiError::bad_request("no_user_ids", "user_ids must name at least one user"));
    }
    if body.user_ids.len() > MAX_QUERY_USERS {
        return Err(ApiError::bad_request(
            "too_many_user_ids",
            format!("user_ids names {} users; at most {MAX_QUERY_USERS} per query", body.user_ids.len()),
        ));
    }
    body.user_ids.iter().try_for_each(check_user_id)?;
    let reply = state.registry.query_unnamed(app.id(), &body.user_ids, body.detail).await?;
    let results: Vec<_> = (reply.results.iter().zip(&body.user_ids))
        .map(|(p, user_id)| UserPresenceJson { user_id, ..UserPresenceJson::new(p, body.detail) })
        .collect();
    Ok(json_bytes_response(QueryResponse { results, as_of_seq: reply.as_of_seq }.to_json()))
}

/// `user_ids` read straight into one buffer, not a `String` each (the same errors as a
/// `Vec<String>`: "expected a sequence", "expected a string").
fn user_ids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<UserIds, D::Error> {
    struct Ids;
    impl<'de> Visitor<'de> for Ids {
        type Value = UserIds;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UserIds, A::Error> {
            let mut ids = UserIds::default();
            while seq.next_element_seed(Id(&mut ids))?.is_some() {}
            Ok(ids)
        }
    }
    /// One id, appended.
    struct Id<'a>(&'a mut UserIds);
    impl<'de> DeserializeSeed<'de> for Id<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_str(self)
        }
    }
    impl Visitor<'_> for Id<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, id: &str) -> Result<(), E> {
            self.0.push(id);
            Ok(())
        }
    }
    deserializer.deserialize_seq(Ids)
}

impl QueryResponse<'_> {
    /// The JSON serde writes for it (a test holds the two equal), written by hand: the answer
    /// every app backend asks for most, with up to 500 results.
    fn to_json(&self) -> Vec<u8> {
        let detail = self.results.iter().any(|result| result.devices.is_some());
        let mut out = Vec::with_capacity(self.results.len() * RESULT_JSON_BYTES * if detail { 3 } else { 1 });
        out.extend_from_slice(b"{\"results\":[");
        for (i, result) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            result.write_json(&mut out);
        }
        out.extend_from_slice(b"],\"as_of_seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.as_of_seq).as_bytes());
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests {
    use presence_proto::v1::{
        DevicePresence, DeviceStatus, EventReason, Platform, PresenceStatus, UserPresence,
    };

    use super::*;

    #[test]
    fn ids_are_read_as_a_vec_of_strings_would_be() {
        #[derive(Debug, Deserialize)]
        struct AsStrings {
            #[allow(dead_code)]
            user_ids: Vec<String>,
        }
        let bodies = [
            r#"{"user_ids":["a","","quo\"te","\u00e9","a"]}"#,
            r#"{"user_ids":[]}"#,
            r#"{"user_ids":["a",1]}"#,
            r#"{"user_ids":"a"}"#,
            r#"{"user_ids":[null]}"#,
            r#"{"user_ids":["a""#,
        ];
        for body in bodies {
            let ours = serde_json::from_str::<QueryBody>(body);
            let theirs = serde_json::from_str::<AsStrings>(body);
            match (&ours, &theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours.user_ids.iter().collect::<Vec<_>>(), theirs.user_ids, "{body}");
                }
                (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string(), "{body}"),
                _ => panic!("{body}: {ours:?} against {theirs:?}"),
            }
        }
        let escaped = serde_json::from_str::<QueryBody>(r#"{"user_ids":["quo\"te"]}"#).unwrap();
        assert_eq!(escaped.user_ids.get(0), Some("quo\"te"));
    }

    #[test]
    fn the_hand_written_answer_is_the_json_serde_writes() {
        let device = |id: &str, version: &str| DevicePresence {
            device_id: id.into(),
            platform: Platform::MiniProgram as i32,
            status: DeviceStatus::Online as i32,
            since_ms: 17,
            client_version: version.into(),
            push_enabled: id.len().is_multiple_of(2),
        };
        let users = [
            UserPresence { user_id: "plain".into(), ..UserPresence::default() },
            UserPresence {
                user_id: "quo\"te\\back\u{7f}é😀\u{1}\u{8}\u{c}\n\r\t\u{1f}".into(),
                status: PresenceStatus::Online as i32,
                devices: vec![device("d1", "1.0 \"beta\""), device("d22", "")],
                last_seen_ms: Some(u64::MAX),
                last_reason: EventReason::AdminKick as i32,
                custom_status: "in a \"meeting\"\n".into(),
                user_version: 42,
            },
            UserPresence {
                user_id: "gone".into(),
                status: PresenceStatus::PushOnline as i32,
                last_seen_ms: Some(0),
                last_reason: EventReason::Timeout as i32,
                ..UserPresence::default()
            },
        ];
        for detail in [false, true] {
            let answer = QueryResponse {
                results: users.iter().map(|p| UserPresenceJson::new(p, detail)).collect(),
                as_of_seq: 9_007_199_254_740_993,
            };
            let by_serde = serde_json::to_vec(&answer).unwrap();
            assert_eq!(String::from_utf8_lossy(&answer.to_json()), String::from_utf8_lossy(&by_serde));
        }
    }
}
