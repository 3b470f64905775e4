//! Tencent IM's `State.StateChange` callback, for apps with `apps.callback_format = 'tencent_im'`
//! (docs/http-api.md, "Tencent IM compatibility"): the same events, in the shape and with the
//! query parameters an app that migrates from Tencent IM already parses.

use presence_proto::json::PresenceEventJson;
use serde::Serialize;

/// A callback as Tencent IM sends it: query parameters for the callback URL, and the body.
pub struct Rendered {
    pub query: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct StateChange<'a> {
    CallbackCommand: &'static str,
    EventTime: u64,
    Info: Info<'a>,
    KickedDevice: Vec<KickedDevice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    CustomStatus: Option<&'a str>,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Info<'a> {
    Action: &'static str,
    To_Account: &'a str,
    Reason: &'static str,
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct KickedDevice {
    Platform: &'static str,
}

/// Tencent IM's callback names of our platforms (contract names otherwise).
fn platform(name: &str) -> &'static str {
    match name {
        "ios" => "iOS",
        "android" => "Android",
        "web" => "Web",
        "windows" => "Windows",
        "ipad" => "iPad",
        "mac" => "Mac",
        "linux" => "Linux",
        "android_pad" => "AndroidPad",
        "mini_program" => "MiniProgram",
        _ => "Unknown",
    }
}

/// Tencent IM's action and reason for one of our events. An admin kick and an expired push
/// device are logouts that Tencent IM has no reason of its own for: `Unregister`.
fn action_and_reason(event: &PresenceEventJson) -> (&'static str, &'static str) {
    match (event.action.as_str(), event.reason.as_str()) {
        ("status", _) => ("CustomStatusChange", "SetCustomStatus"),
        ("login", _) => ("Login", "Register"),
        ("disconnect", "timeout") => ("Disconnect", "TimeOut"),
        ("disconnect", _) => ("Disconnect", "LinkClose"),
        _ => ("Logout", "Unregister"),
    }
}

pub fn render(app_id: &str, event: &PresenceEventJson) -> Result<Rendered, serde_json::Error> {
    let (action, reason) = action_and_reason(event);
    let body = StateChange {
        CallbackCommand: "State.StateChange",
        EventTime: event.event_time_ms,
        Info: Info { Action: action, To_Account: &event.user_id, Reason: reason },
        KickedDevice: event
            .kicked_devices
            .iter()
            .map(|k| KickedDevice { Platform: platform(&k.platform) })
            .collect(),
        CustomStatus: (action == "CustomStatusChange").then_some(event.custom_status.as_str()),
    };
    let query = vec![
        ("SdkAppid", app_id.to_owned()),
        ("CallbackCommand", "State.StateChange".to_owned()),
        ("contenttype", "json".to_owned()),
        // Presence events do not carry the device's address.
        ("ClientIP", String::new()),
        ("OptPlatform", platform(&event.device.platform).to_owned()),
    ];
    Ok(Rendered { query, body: serde_json::to_vec(&body)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::json::{EventDeviceJson, KickedDeviceJson};
    use serde_json::json;

    fn event(action: &str, reason: &str) -> PresenceEventJson {
        PresenceEventJson {
            event_id: "e".into(),
            seq: 1,
            user_version: 1,
            app_id: "1400000000".into(),
            event_time_ms: 1_670_000_000_000,
            action: action.into(),
            reason: reason.into(),
            user_id: "u1".into(),
            device: EventDeviceJson {
                device_id: "d".into(),
                platform: "ios".into(),
                client_version: "1".into(),
            },
            kicked_devices: vec![],
            user_status: "online".into(),
            custom_status: String::new(),
        }
    }

    #[test]
    fn a_login_reads_like_tencent_ims_documented_callback() {
        let mut login = event("login", "register");
        login.kicked_devices = vec![KickedDeviceJson { device_id: "d0".into(), platform: "android".into() }];
        let rendered = render("1400000000", &login).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&rendered.body).unwrap();
        // Tencent IM's sample packet for State.StateChange, with our values.
        assert_eq!(
            body,
            json!({"CallbackCommand": "State.StateChange", "EventTime": 1_670_000_000_000u64,
                "Info": {"Action": "Login", "To_Account": "u1", "Reason": "Register"},
                "KickedDevice": [{"Platform": "Android"}]})
        );
        let query: Vec<(&str, &str)> = rendered.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            query,
            [
                ("SdkAppid", "1400000000"),
                ("CallbackCommand", "State.StateChange"),
                ("contenttype", "json"),
                ("ClientIP", ""),
                ("OptPlatform", "iOS")
            ]
        );
    }

    #[test]
    fn every_action_and_reason_has_its_tencent_name() {
        let cases = [
            (("logout", "unregister"), ("Logout", "Unregister")),
            (("logout", "admin_kick"), ("Logout", "Unregister")),
            (("logout", "push_expired"), ("Logout", "Unregister")),
            (("disconnect", "link_close"), ("Disconnect", "LinkClose")),
            (("disconnect", "timeout"), ("Disconnect", "TimeOut")),
        ];
        for ((action, reason), (tencent_action, tencent_reason)) in cases {
            let body: serde_json::Value =
                serde_json::from_slice(&render("a", &event(action, reason)).unwrap().body).unwrap();
            assert_eq!(
                (body["Info"]["Action"].as_str(), body["Info"]["Reason"].as_str()),
                (Some(tencent_action), Some(tencent_reason))
            );
            assert!(body.get("CustomStatus").is_none());
        }
        let mut status = event("status", "custom_status");
        status.custom_status = "in a meeting".into();
        let body: serde_json::Value = serde_json::from_slice(&render("a", &status).unwrap().body).unwrap();
        assert_eq!(body["Info"]["Action"], "CustomStatusChange");
        assert_eq!(body["Info"]["Reason"], "SetCustomStatus");
        assert_eq!(body["CustomStatus"], "in a meeting");
    }
}
