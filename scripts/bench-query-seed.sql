-- Seeds :users known users of app `bench`, :online of them online on gateway `seed-gw`, each row
-- in its partition (as a registry would have written it). Used by bench-query.sh and
-- bench-scaleout.sh: `psql -v users=N -v online=M -f scripts/bench-query-seed.sql`.
INSERT INTO users (app_id, user_id, version, last_seen_ms, last_reason, partition)
  SELECT 'bench', 'q' || g, 2, 1700000000000 + g, 'link_close',
         presence_user_hash('bench', 'q' || g) % (SELECT count(*) FROM registry_partitions)
  FROM generate_series(0, :users - 1) g;
INSERT INTO devices (app_id, user_id, device_id, platform, status, session_id, gateway_id, since_ms,
                     client_version, push_enabled, peer_addr, partition)
  SELECT 'bench', u, 'd', 'ios', 'online', 's' || g, 'seed-gw', 1700000000000, '1.0', false, '127.0.0.1:1',
         presence_user_hash('bench', u) % (SELECT count(*) FROM registry_partitions)
  FROM generate_series(0, :online - 1) g, LATERAL (SELECT 'q' || (g * (:users / :online)) AS u) x;
