//! Metric names, in one place so dashboards and code agree, and their HELP texts.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Duration of a Login call, commit included.
pub const LOGIN_SECONDS: &str = "registry_login_seconds";
/// Duration of one group commit.
pub const COMMIT_SECONDS: &str = "registry_commit_seconds";
/// Mutations per group commit.
pub const COMMIT_BATCH_SIZE: &str = "registry_commit_batch_size";
pub const COMMIT_FAILURES: &str = "registry_commit_failures_total";
/// Label `action`: login, logout or disconnect.
pub const EVENTS: &str = "registry_events_total";
pub const GATEWAY_LEASES_EXPIRED: &str = "registry_gateway_leases_expired_total";
pub const GATEWAYS_ATTACHED: &str = "registry_gateways_attached";
/// Label `delivered`: `yes`, or `no` when the gateway was not attached.
pub const KICKS_SENT: &str = "registry_kicks_sent_total";
/// Users online (or push_online) in the partitions held here, every app together.
pub const ONLINE_USERS: &str = "registry_online_users";
pub const PUSH_ONLINE_USERS: &str = "registry_push_online_users";
/// Label `platform`: online devices in the partitions held here.
pub const ONLINE_DEVICES: &str = "registry_online_devices";
/// Label `delivered`: `yes`, or `no` when the gateway was between links.
pub const STATUS_PUSHES: &str = "registry_status_pushes_total";
/// Label `outcome`: `held` (a lost link put on hold), `reported` (its grace ended), or
/// `came_back` (the device logged in again within the grace: no event).
pub const FLAP_DAMPING: &str = "registry_flap_damping_total";
/// Changes refused because their partition's epoch had moved on (another process took it).
pub const COMMITS_FENCED: &str = "registry_commits_fenced_total";

/// Registers every metric's HELP text with the installed recorder; called once at start.
pub fn describe() {
    describe_histogram!(LOGIN_SECONDS, Unit::Seconds, "Duration of a Login call, durable commit included.");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Duration of one group commit of events and state.");
    describe_histogram!(COMMIT_BATCH_SIZE, Unit::Count, "User changes written per group commit.");
    describe_counter!(
        COMMIT_FAILURES,
        Unit::Count,
        "Group commits that failed (every change in them was refused)."
    );
    describe_counter!(EVENTS, Unit::Count, "Presence events committed, by action.");
    describe_counter!(
        GATEWAY_LEASES_EXPIRED,
        Unit::Count,
        "Gateways whose lease ran out; their devices were disconnected."
    );
    describe_gauge!(GATEWAYS_ATTACHED, Unit::Count, "Gateways with an attached link now.");
    describe_gauge!(ONLINE_USERS, Unit::Count, "Online users in the partitions held here (every app).");
    describe_gauge!(
        PUSH_ONLINE_USERS,
        Unit::Count,
        "push_online users in the partitions held here (every app)."
    );
    describe_gauge!(ONLINE_DEVICES, Unit::Count, "Online devices in the partitions held here, by platform.");
    describe_counter!(
        STATUS_PUSHES,
        Unit::Count,
        "Status changes pushed to gateways that hold subscribers, by delivered (yes, no)."
    );
    describe_counter!(KICKS_SENT, Unit::Count, "Kicks sent to gateways, by delivered (yes, no).");
    LEASE_METRICS.describe("registry", "Stop, drain and release of one partition.");
    describe_counter!(
        FLAP_DAMPING,
        Unit::Count,
        "Disconnects held for the app's grace, by outcome (held, reported, came_back)."
    );
    describe_counter!(COMMITS_FENCED, Unit::Count, "Changes refused because their partition changed owner.");
}

/// The lease loop's figures: `registry_partitions_owned`, `registry_lease_renewals_total`,
/// `registry_partitions_taken_total`, `registry_partitions_lost_total`, `registry_handover_seconds`.
pub const LEASE_METRICS: presence_common::partition_lease::LeaseMetricNames =
    presence_common::lease_metric_names!("registry");
