-- Custom status (docs/protocol.md, "Custom status and subscriptions"): kept with the user while
-- online or push_online, and carried by every event (empty when none).
ALTER TABLE users ADD COLUMN custom_status text NOT NULL DEFAULT '';
ALTER TABLE presence_events ADD COLUMN custom_status text NOT NULL DEFAULT '';
