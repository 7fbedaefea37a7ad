-- Where 8 clients wait (bench/run.sh "Wait events"): pg_stat_activity
-- sampled every 20 ms for :seconds s while pgbench runs, the client backends
-- of this database that are in a statement; "CPU" is one not waiting on
-- anything (running, or ready to run). Prints event and share, largest first.
\set QUIET on
\pset format unaligned
\pset tuples_only on
\pset fieldsep ' '
SELECT set_config('bench.seconds', :'seconds', false) \gset
CREATE TEMP TABLE samples (event text);
DO $$
DECLARE
    stop timestamptz := clock_timestamp() + make_interval(secs => current_setting('bench.seconds')::int);
BEGIN
    WHILE clock_timestamp() < stop LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO samples
        SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
          FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND state = 'active'
           AND datname = current_database() AND pid <> pg_backend_pid();
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
SELECT event, round(100.0 * count(*) / sum(count(*)) OVER (), 1)
  FROM samples GROUP BY event ORDER BY count(*) DESC LIMIT 8;
