//! Metric names, in one place so dashboards and code agree, and their HELP texts.

use metrics::{Unit, describe_counter, describe_gauge};

pub const CONNECTIONS_OPEN: &str = "gateway_connections_open";
/// The connection cap (GATEWAY_MAX_CONNECTIONS, by default the fd limit - 256): alerts compare.
pub const CONNECTIONS_MAX: &str = "gateway_connections_max";
/// Label `reason`: `max_connections` (the process cap) or `per_ip` (GATEWAY_MAX_CONNECTIONS_PER_IP).
pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
/// Label `result`: `ok` or the LoginError code (`rate_limited` for GATEWAY_LOGIN_RATE_PER_IP).
pub const LOGINS: &str = "gateway_logins_total";
pub const HEARTBEATS: &str = "gateway_heartbeats_total";
/// Label `reason`: how the connection ended.
pub const DISCONNECTS: &str = "gateway_disconnects_total";
/// Label `reason`: the `Error` code sent.
pub const PROTOCOL_ERRORS: &str = "gateway_protocol_errors_total";
pub const KICKS_DELIVERED: &str = "gateway_kicks_delivered_total";
/// `StatusChanged` frames handed to subscribed sessions.
pub const STATUS_CHANGES_DELIVERED: &str = "gateway_status_changes_delivered_total";
pub const LINK_ATTACHED: &str = "gateway_registry_link_attached";
pub const LINK_ATTACHES: &str = "gateway_registry_link_attaches_total";
pub const ACCEPT_ERRORS: &str = "gateway_accept_errors_total";
/// Label `result`: `ok`, or why a WebSocket upgrade was refused (`bad_request`, `not_found`,
/// `forbidden_origin`, `too_large`, `closed`, `timeout`).
pub const WEBSOCKET_UPGRADES: &str = "gateway_websocket_upgrades_total";
/// Source IPs tracked by the per-IP limits (0 when they are off).
pub const LIMIT_TRACKED_IPS: &str = "gateway_limit_tracked_ips";

/// Registers every metric's HELP text with the installed recorder; called once at start.
pub fn describe() {
    describe_gauge!(CONNECTIONS_OPEN, Unit::Count, "Device connections open now.");
    describe_gauge!(CONNECTIONS_MAX, Unit::Count, "Device connections this gateway accepts at most.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections refused at accept, by reason (max_connections, per_ip)."
    );
    describe_counter!(LOGINS, Unit::Count, "Login attempts, by result (ok or the LoginError code).");
    describe_counter!(HEARTBEATS, Unit::Count, "Heartbeats received from logged-in devices.");
    describe_counter!(DISCONNECTS, Unit::Count, "Connections ended, by reason.");
    describe_counter!(
        PROTOCOL_ERRORS,
        Unit::Count,
        "Connections closed for breaking the protocol, by Error code."
    );
    describe_counter!(KICKS_DELIVERED, Unit::Count, "Kicks from the registry delivered to a held session.");
    describe_counter!(
        STATUS_CHANGES_DELIVERED,
        Unit::Count,
        "Subscribed users' status changes handed to the sessions that subscribe to them."
    );
    describe_gauge!(
        LINK_ATTACHED,
        "Registry links attached now (one per registry process; logins of a registry's partitions need its link)."
    );
    describe_counter!(LINK_ATTACHES, Unit::Count, "Successful attaches of the registry link.");
    describe_counter!(ACCEPT_ERRORS, Unit::Count, "Failed accept() calls (e.g. out of file descriptors).");
    describe_counter!(WEBSOCKET_UPGRADES, Unit::Count, "WebSocket upgrade requests, by result.");
    describe_gauge!(LIMIT_TRACKED_IPS, Unit::Count, "Source IPs tracked by the per-IP limits.");
}
