-- One trace per login (docs/monitoring.md): the W3C trace context of the change that made the
-- event, so that the notifier's callback joins the login's trace. NULL when tracing is off.
ALTER TABLE presence_events ADD COLUMN traceparent text;
