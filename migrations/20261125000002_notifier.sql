-- The notifier's durable state: how far it has delivered, and what it gave up on.

-- Every event with feed_id <= this one is delivered or dead-lettered (a restart resumes after it).
CREATE TABLE notifier_cursor (
    consumer   text PRIMARY KEY,
    feed_id    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Callbacks that failed for longer than the notifier's limits. Inspect with SQL; replay with
--   UPDATE callback_dead_letters SET replay_requested = true WHERE app_id = 'chat';
-- A replayed row is deleted once delivered, or dead-lettered again with the new error.
CREATE TABLE callback_dead_letters (
    event_id         uuid PRIMARY KEY,
    feed_id          bigint NOT NULL,
    app_id           text NOT NULL,
    user_id          text NOT NULL,
    body             text NOT NULL,                 -- the JSON as POSTed (body::jsonb to query it)
    attempts         integer NOT NULL,
    last_error       text NOT NULL,
    first_attempt_at timestamptz NOT NULL,
    dead_at          timestamptz NOT NULL DEFAULT now(),
    replay_requested boolean NOT NULL DEFAULT false
);
CREATE INDEX callback_dead_letters_replay ON callback_dead_letters (dead_at) WHERE replay_requested;
CREATE INDEX callback_dead_letters_by_app ON callback_dead_letters (app_id, dead_at);
