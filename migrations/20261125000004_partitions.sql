-- Several registry processes share the users (docs/scaling.md): users are hashed into P fixed
-- partitions, each owned by one process at a time while that process's lease (its member row)
-- lives. Taking a partition raises its epoch; every commit checks its partitions' epochs in its
-- own transaction, so an owner that lost its partitions can never commit. P is chosen once, by presence-migrate (PRESENCE_PARTITIONS, default 64), which seeds the
-- partition tables and numbers the rows written before this migration.

-- presence_proto::partition::user_hash: the first four bytes of sha256(app_id || 0x00 || user_id),
-- big-endian. The partition of a user is this modulo P.
CREATE FUNCTION presence_user_hash(app_id text, user_id text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || substr(encode(sha256(convert_to(app_id, 'UTF8') || '\x00'::bytea
                                        || convert_to(user_id, 'UTF8')), 'hex'), 1, 8))::bit(32)::bigint
$$;

-- Live processes of each kind, each with one lease (alive_until) for all it owns. A member also
-- holds the session advisory lock (7201, lock_key) while it runs: when its connection closes (the
-- process died) the lock frees at once and the others take its partitions without waiting for the
-- lease. Safety rests on the epochs alone.
CREATE TABLE presence_members (
    member      text PRIMARY KEY,                 -- one per process start, e.g. registry-2-8f3a01c2
    kind        text NOT NULL CHECK (kind IN ('registry', 'notifier')),
    addr        text NOT NULL DEFAULT '',         -- a registry's gRPC URL, for routing
    lock_key    integer NOT NULL CHECK (lock_key > 0),
    alive_until timestamptz NOT NULL
);

-- Which registry process owns each partition (null: free). `epoch` rises at every take.
CREATE TABLE registry_partitions (
    partition integer PRIMARY KEY CHECK (partition >= 0),
    owner     text,
    epoch     bigint NOT NULL DEFAULT 0
);

-- The same for notifier processes; `delivered` is the partition's durable cursor: every event of
-- the partition up to this position is delivered or dead-lettered.
CREATE TABLE notifier_partitions (
    partition integer PRIMARY KEY CHECK (partition >= 0),
    owner     text,
    epoch     bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0
);

-- Gateways and registries follow ownership changes (routing, balance). Row triggers: a statement
-- that changes nothing (the members' regular clean-up) must not wake every listener, and the
-- notifications of one transaction collapse into one.
CREATE FUNCTION presence_partitions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('presence_partitions', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER registry_partitions_changed AFTER INSERT OR UPDATE OF owner, epoch OR DELETE
    ON registry_partitions FOR EACH ROW EXECUTE FUNCTION presence_partitions_changed();
CREATE TRIGGER notifier_partitions_changed AFTER INSERT OR UPDATE OF owner, epoch OR DELETE
    ON notifier_partitions FOR EACH ROW EXECUTE FUNCTION presence_partitions_changed();
CREATE TRIGGER presence_members_changed AFTER INSERT OR DELETE OR UPDATE OF addr
    ON presence_members FOR EACH ROW EXECUTE FUNCTION presence_partitions_changed();

-- Each app's latest `seq`. Every commit takes its events' seqs from this row, inside the commit,
-- so one app's feed stays gap-free and in commit order whichever process writes it.
CREATE TABLE app_feed (
    app_id   text PRIMARY KEY,
    last_seq bigint NOT NULL
);
INSERT INTO app_feed (app_id, last_seq) SELECT app_id, max(seq) FROM presence_events GROUP BY app_id;

-- feed_id: a unique id, in commit order within one registry process (no longer a global order).
CREATE SEQUENCE presence_feed_ids;
SELECT setval('presence_feed_ids', coalesce(max(feed_id), 0) + 1, false) FROM presence_events;

-- Rows carry their partition; events also their position in the partition's feed (gap-free,
-- written only by the partition's owner). feed_id stays a unique id of the event.
ALTER TABLE presence_events ADD COLUMN partition integer, ADD COLUMN position bigint;
CREATE UNIQUE INDEX presence_events_by_partition ON presence_events (partition, position);
ALTER TABLE devices ADD COLUMN partition integer;
CREATE INDEX devices_by_partition ON devices (partition);
ALTER TABLE users ADD COLUMN partition integer;
CREATE INDEX users_by_partition ON users (partition);
