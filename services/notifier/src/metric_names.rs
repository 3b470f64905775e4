//! Metric names, in one place so dashboards and code agree, and their HELP texts.

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
/// Events received but not yet settled.
pub const PENDING: &str = "notifier_pending_events";
/// Age of the oldest unsettled event (0 when none): how far behind the receivers are.
pub const LAG: &str = "notifier_lag_seconds";
/// Position of the durable cursor in the registry's feed.
pub const CURSOR: &str = "notifier_cursor_feed_id";

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
    describe_gauge!(PENDING, Unit::Count, "Events received but not yet settled.");
    describe_gauge!(LAG, Unit::Seconds, "Age of the oldest unsettled event (0 when none).");
    describe_gauge!(CURSOR, "The feed_id of the durable cursor in the registry's event feed.");
}
