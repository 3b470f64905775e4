//! Metric names, in one place so dashboards and code agree.

pub const CONNECTIONS_OPEN: &str = "gateway_connections_open";
/// Label `reason`: `max_connections` (the process cap) or `per_ip` (GATEWAY_MAX_CONNECTIONS_PER_IP).
pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
/// Label `result`: `ok` or the LoginError code (`rate_limited` for GATEWAY_LOGIN_RATE_PER_IP).
pub const LOGINS: &str = "gateway_logins_total";
pub const HEARTBEATS: &str = "gateway_heartbeats_total";
pub const DISCONNECTS: &str = "gateway_disconnects_total";
pub const PROTOCOL_ERRORS: &str = "gateway_protocol_errors_total";
pub const KICKS_DELIVERED: &str = "gateway_kicks_delivered_total";
pub const LINK_ATTACHED: &str = "gateway_registry_link_attached";
pub const LINK_ATTACHES: &str = "gateway_registry_link_attaches_total";
pub const ACCEPT_ERRORS: &str = "gateway_accept_errors_total";
/// Source IPs tracked by the per-IP limits (0 when they are off).
pub const LIMIT_TRACKED_IPS: &str = "gateway_limit_tracked_ips";
