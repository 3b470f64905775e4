-- Apps, their login policy, and the registry's durable state.
-- Admins change apps and policies with plain SQL; a trigger tells the running services (NOTIFY).

CREATE TABLE apps (
    app_id            text PRIMARY KEY,
    token_secret      text NOT NULL,                 -- HS256 secret for device JWTs
    api_key_sha256    text,                          -- lowercase hex SHA-256 of the REST API key
    callback_url      text,                          -- null: no callbacks
    callback_secret   text,                          -- HMAC key for X-Presence-Signature
    -- single_device | one_per_platform | groups (see login_policy_groups and docs/policy.md)
    login_policy      text NOT NULL DEFAULT 'single_device'
                      CHECK (login_policy IN ('single_device', 'one_per_platform', 'groups')),
    push_online_ttl_s bigint NOT NULL DEFAULT 604800 CHECK (push_online_ttl_s > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Used when apps.login_policy = 'groups'. A platform belongs to at most one group of an app;
-- a platform in no group is a group of its own with max_devices 1.
CREATE TABLE login_policy_groups (
    app_id      text NOT NULL REFERENCES apps (app_id) ON DELETE CASCADE,
    group_name  text NOT NULL,
    platforms   text[] NOT NULL CHECK (
                    cardinality(platforms) > 0 AND
                    platforms <@ ARRAY['ios', 'android', 'windows', 'mac', 'linux', 'web', 'ipad',
                                       'android_pad', 'mini_program']::text[]),
    max_devices integer NOT NULL CHECK (max_devices >= 1),
    PRIMARY KEY (app_id, group_name)
);

CREATE FUNCTION presence_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('presence_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER apps_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION presence_config_changed();
CREATE TRIGGER login_policy_groups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON login_policy_groups
    FOR EACH STATEMENT EXECUTE FUNCTION presence_config_changed();

-- Every presence event, in the order the registry committed them.
CREATE TABLE presence_events (
    feed_id        bigint PRIMARY KEY,               -- global order over all apps
    app_id         text NOT NULL,
    seq            bigint NOT NULL,                  -- the app's feed cursor
    event_id       uuid NOT NULL UNIQUE,
    user_id        text NOT NULL,
    user_version   bigint NOT NULL,
    event_time_ms  bigint NOT NULL,
    action         text NOT NULL,
    reason         text NOT NULL,
    device_id      text NOT NULL,
    platform       text NOT NULL,
    client_version text NOT NULL,
    kicked_devices jsonb NOT NULL,
    user_status    text NOT NULL,
    UNIQUE (app_id, seq)
);

-- Devices the registry knows as online or push_online; offline devices have no row.
CREATE TABLE devices (
    app_id             text NOT NULL,
    user_id            text NOT NULL,
    device_id          text NOT NULL,
    platform           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('online', 'push_online')),
    session_id         text NOT NULL,
    gateway_id         text NOT NULL,
    since_ms           bigint NOT NULL,
    client_version     text NOT NULL,
    push_enabled       boolean NOT NULL,
    peer_addr          text NOT NULL,
    disconnected_at_ms bigint,
    PRIMARY KEY (app_id, user_id, device_id)
);
-- Lease expiry and re-attach find a gateway's devices; push expiry finds the oldest disconnects.
CREATE INDEX devices_by_gateway ON devices (gateway_id) WHERE status = 'online';
CREATE INDEX devices_push_online ON devices (disconnected_at_ms) WHERE status = 'push_online';

-- Per-user bookkeeping that outlives devices.
CREATE TABLE users (
    app_id       text NOT NULL,
    user_id      text NOT NULL,
    version      bigint NOT NULL,                   -- user_version of the user's latest event
    last_seen_ms bigint,
    last_reason  text,
    PRIMARY KEY (app_id, user_id)
);
