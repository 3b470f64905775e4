//! Metric names, in one place so dashboards and code agree.

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
