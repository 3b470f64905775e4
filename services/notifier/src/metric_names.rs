//! Metric names, in one place so dashboards and code agree, and their HELP texts.
//!
//! The `app` label is bounded (see `crate::app_labels`): apps beyond the allow-list or the first
//! `NOTIFIER_METRIC_APPS_MAX` share `app="_other"`, so per-app gauges there are sums.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Callbacks answered 2xx, by `app`.
pub const DELIVERED: &str = "notifier_callbacks_delivered_total";
/// Failed attempts that will be retried, by `app`.
pub const RETRIED: &str = "notifier_callback_retries_total";
/// Events given up on and written to `callback_dead_letters`, by `app`.
pub const DEAD_LETTERED: &str = "notifier_dead_letters_total";
/// Events of apps without a callback URL.
pub const SKIPPED: &str = "notifier_events_skipped_total";
/// Duration of one callback request, by `app`.
pub const LATENCY: &str = "notifier_callback_duration_seconds";
/// Events read but not yet settled.
pub const PENDING: &str = "notifier_pending_events";
/// Age of the oldest unsettled event (0 when none): how far behind the receivers are.
pub const LAG: &str = "notifier_lag_seconds";
/// Queued callbacks dropped unsent because their partition went to another notifier.
pub const ABANDONED: &str = "notifier_callbacks_abandoned_total";
/// Events read into memory and not yet settled, by `app` (bounded by `NOTIFIER_MAX_PENDING_PER_APP`).
pub const APP_PENDING: &str = "notifier_app_pending_events";
/// Users' next callbacks waiting for their app's circuit to let them go, by `app`.
pub const HELD: &str = "notifier_callbacks_held";
/// Apps whose receiver circuit is open or half-open, by `app` (0 or 1; a count for `_other`).
pub const CIRCUIT_OPEN: &str = "notifier_circuit_open";
/// Times an app's circuit opened, by `app`.
pub const CIRCUIT_OPENED: &str = "notifier_circuit_opened_total";

/// Registers every metric's HELP text with the installed recorder; called once at start.
pub fn describe() {
    describe_counter!(DELIVERED, Unit::Count, "Callbacks answered 2xx, by app.");
    describe_counter!(RETRIED, Unit::Count, "Failed callback attempts that will be retried, by app.");
    describe_counter!(
        DEAD_LETTERED,
        Unit::Count,
        "Events given up on and written to callback_dead_letters, by app."
    );
    describe_counter!(SKIPPED, Unit::Count, "Events of apps without a callback URL.");
    describe_histogram!(LATENCY, Unit::Seconds, "Duration of one callback request, by app.");
    describe_gauge!(PENDING, Unit::Count, "Events read but not yet settled.");
    describe_gauge!(LAG, Unit::Seconds, "Age of the oldest unsettled event (0 when none).");
    describe_counter!(
        ABANDONED,
        Unit::Count,
        "Queued callbacks dropped unsent because their partition went to another notifier."
    );
    describe_gauge!(APP_PENDING, Unit::Count, "Events read into memory and not yet settled, by app.");
    describe_gauge!(HELD, Unit::Count, "Users' next callbacks waiting for their app's circuit, by app.");
    describe_gauge!(
        CIRCUIT_OPEN,
        Unit::Count,
        "Apps whose receiver circuit is open or half-open (callbacks held, one probe at a time), by app."
    );
    describe_counter!(CIRCUIT_OPENED, Unit::Count, "Times an app's receiver circuit opened, by app.");
    LEASE_METRICS.describe(
        "notifier",
        "Stop reading, settle in-flight callbacks, save the cursor and release one partition.",
    );
}

/// The lease loop's figures: `notifier_partitions_owned`, `notifier_lease_renewals_total`,
/// `notifier_partitions_taken_total`, `notifier_partitions_lost_total`, `notifier_handover_seconds`.
pub const LEASE_METRICS: presence_common::partition_lease::LeaseMetricNames =
    presence_common::lease_metric_names!("notifier");
