-- Flap damping (docs/policy.md): a link_close or timeout disconnect is held for this long; a
-- re-login of the same device within it makes no event at all. 0 reports at once.
ALTER TABLE apps ADD COLUMN disconnect_grace_ms integer NOT NULL DEFAULT 0
    CHECK (disconnect_grace_ms BETWEEN 0 AND 3600000);
