-- Replicas and their heartbeats (docs/architecture.md, "Crash recovery"). Each replica holds a
-- session advisory lock (class 1885957490 = "pimr", key hashtext(owner)) on its heartbeat
-- connection and refreshes `last_seen`. A replica is dead when its lock is gone (the server drops
-- it with the session, at once after a crash) or its heartbeat is older than `dead_after`
-- (a host that vanished without closing its connections). Leases of dead replicas are taken
-- over at once instead of waiting for them to expire.
CREATE TABLE replicas (
    owner      text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Replicas known to be dead. An owner without a row (a lease from a version without
-- heartbeats) is not listed: its leases expire as before.
CREATE FUNCTION dead_replicas(dead_after_secs double precision)
RETURNS TABLE (dead_owner text) LANGUAGE sql VOLATILE AS $$
    SELECT r.owner FROM replicas r
    WHERE r.last_seen <= clock_timestamp() - make_interval(secs => dead_after_secs)
       OR NOT EXISTS (
           SELECT 1 FROM pg_locks l
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = 1885957490::oid AND l.objid = hashtext(r.owner)::oid)
$$;

-- How many replicas are alive: the complement of the above.
CREATE FUNCTION live_replica_count(dead_after_secs double precision)
RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT count(*) FROM replicas
    WHERE owner NOT IN (SELECT dead_owner FROM dead_replicas(dead_after_secs))
$$;
