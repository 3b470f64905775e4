//! Metric names, in one place so dashboards and code agree.

pub const CONNECTIONS_OPEN: &str = "gateway_connections_open";
pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
pub const LOGINS: &str = "gateway_logins_total";
pub const HEARTBEATS: &str = "gateway_heartbeats_total";
pub const DISCONNECTS: &str = "gateway_disconnects_total";
pub const PROTOCOL_ERRORS: &str = "gateway_protocol_errors_total";
pub const KICKS_DELIVERED: &str = "gateway_kicks_delivered_total";
pub const LINK_ATTACHED: &str = "gateway_registry_link_attached";
pub const LINK_ATTACHES: &str = "gateway_registry_link_attaches_total";
pub const ACCEPT_ERRORS: &str = "gateway_accept_errors_total";
