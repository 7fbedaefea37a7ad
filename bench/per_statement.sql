-- What a statement and its transaction cost beyond the lead's own work
-- (bench/run.sh "Per statement", issue 30): the backend's CPU, read from
-- /proc/self/schedstat (nanoseconds on CPU), for :n single-row INSERTs into
-- :table, each its own statement and transaction as a client sends them,
-- then for one INSERT of :n leads (committed). Per lead, the first less the
-- second is the statement's and the transaction's share. Prints one line:
-- single-row CPU per lead, multi-row CPU per lead (µs).
\set QUIET on
\pset format unaligned
\pset tuples_only on
\o :file
SELECT format($q$INSERT INTO %I (publisher_id, channel_id, source_id, "firstName", "lastName", email, "homePhone",
    state, age, "monthlyIncome", "loanAmount", military, "tcpaConsent", "userIp", extra, tpar)
    VALUES (%s, %s, %s, 'Maria', 'Garcia', %L, %L, %L, %s, %s, %s, false, true, %L, %L, '{"sub1": "cmp1"}');$q$,
    :'table', 11 + n % 6, 1 + n % 7, (11 + n % 6) * 100 + n % 5, 'maria.garcia' || n || '@gmail.com',
    (2000000000 + n % 7999999999)::text, (ARRAY['CA', 'TX', 'FL', 'NY', 'OH'])[1 + n % 5], 17 + n % 53,
    800 + n % 8200, 100 + n % 5100, '10.1.' || (n % 256) || '.' || (n % 250),
    jsonb_build_object('zip', lpad((n % 99999)::text, 5, '0'), 'employer', 'Acme'))
  FROM (SELECT (random() * 100000000)::int AS n FROM generate_series(1, :n)) s;
\o /dev/null
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t0 \gset
\i :file
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t1 \gset
\ir leads_many.sql
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t2 \gset
\o
SELECT round((:t1 - :t0) / 1000.0 / :n, 1) || ' ' || round((:t2 - :t1) / 1000.0 / :n, 1);
