-- iclear finalize: runs after the Rust functions exist.

-- ------------------------------------------------------ validation triggers
-- Each refuses a bad row at INSERT/UPDATE with a message naming the setting;
-- the checks themselves are the engine's parsers (src/engine), so what is
-- accepted here is exactly what the engine can run.
CREATE FUNCTION iclear.validate_rule_condition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iclear.check_condition(NEW.category, NEW.parameter, NEW.operator, NEW.value);
    RETURN NEW;
END $$;
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.rule_condition
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_rule_condition();

-- Moving a rule to another stage re-checks its actions against that stage.
CREATE FUNCTION iclear.validate_rule_stage() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    a record;
BEGIN
    FOR a IN SELECT action, config FROM iclear.rule_action WHERE rule_id = NEW.id LOOP
        PERFORM iclear.check_action(NEW.stage, a.action, a.config);
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER validate_stage BEFORE UPDATE OF stage ON iclear.rule
    FOR EACH ROW WHEN (OLD.stage IS DISTINCT FROM NEW.stage)
    EXECUTE FUNCTION iclear.validate_rule_stage();

-- ------------------------------------------------- configuration versioning
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['product', 'service', 'global_rule', 'rule_category',
                             'rule', 'rule_condition', 'rule_action', 'list', 'list_product'] LOOP
        EXECUTE format('CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
                        ON iclear.%I FOR EACH STATEMENT EXECUTE FUNCTION iclear.bump_config_version()', t);
    END LOOP;
END $$;
-- A new source is registered on a lead's path and must not flush caches; an
-- edit (e.g. of created_at, read by "All New" targeting) must.
CREATE TRIGGER bump_config_version AFTER UPDATE OR DELETE OR TRUNCATE ON iclear.source
    FOR EACH STATEMENT EXECUTE FUNCTION iclear.bump_config_version();

-- ---------------------------------------------------------- pg_dump support
SELECT pg_catalog.pg_extension_config_dump('iclear.product', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.source', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.service', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.global_rule', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.global_cap', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_category', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_condition', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_action', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.list', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.list_product', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.list_entry', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.attachment', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.counter_total', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.cap_use', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.job', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.verification_history_local', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.sms_verification_local', '');
-- Results: the DEFAULT partitions created here; monthly partitions are made
-- at run time by iclear.maintain(), are not extension members, and so pg_dump
-- dumps them (definition and rows) like any table.
SELECT pg_catalog.pg_extension_config_dump('iclear.decision_default', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.filter_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.consent_evidence', '');
-- identity sequences, so restored rows do not collide with new ones
-- (one statement each: every call updates the same pg_extension row)
SELECT pg_catalog.pg_extension_config_dump('iclear.product_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.global_rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.global_cap_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_category_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_condition_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_action_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.list_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.verification_history_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.sms_verification_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.consent_evidence_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.decision_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.filter_log_id_seq', '');

-- -------------------------------------------------------------------- views
-- Every step of every lead: the filter log plus each lead's final decision
-- (kept once, in iclear.decision, rather than copied into the log).
CREATE VIEW iclear.full_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.stage, f.origin, f.kind, f.ref_id, f.name,
       f.outcome, f.detail
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
UNION ALL
SELECT NULL, d.lead_id, p.name, d.created_at, 'decision', 'sync', 'decision', NULL, NULL,
       d.status, json_build_object('reason', d.decision -> 'reason', 'rejected_by', d.decision -> 'rejected_by')
  FROM iclear.decision d
  LEFT JOIN iclear.product p ON p.id = d.product_id;

-- The iClear Log: each third-party service response per lead, with the
-- origin of the request (sync, async, on_demand, redirect).
CREATE VIEW iclear.lead_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.name AS service, f.origin, f.outcome,
       f.detail ->> 'source' AS source, f.request, f.response, f.detail
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
 WHERE f.kind = 'service';

CREATE VIEW iclear.pre_screen_reject_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       d.decision ->> 'reason' AS reason, d.envelope
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN LATERAL (SELECT * FROM iclear.decision d WHERE d.lead_id = f.lead_id
                      ORDER BY d.id DESC LIMIT 1) d ON true
 WHERE f.stage = 'pre_validation' AND f.outcome = 'reject';

CREATE VIEW iclear.redirect_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       f.origin, f.kind, f.outcome, f.detail
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
 WHERE f.stage = 'redirect';

-- When a cap of `period` (daily, or monthly from `start_day`) next resets
-- after `at`. Caps count in UTC; a start day past the month's end resets on
-- its last day.
CREATE FUNCTION iclear.next_cap_reset(period text, start_day integer DEFAULT 1, at timestamptz DEFAULT now())
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'daily' THEN (date_trunc('day', at AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
        WHEN 'monthly' THEN (
            SELECT min(d) FROM (
                SELECT (m + make_interval(days => least(start_day,
                            extract(day FROM m + interval '1 month' - interval '1 day')::int) - 1))
                       AT TIME ZONE 'UTC' AS d
                  FROM (SELECT date_trunc('month', at AT TIME ZONE 'UTC') + k * interval '1 month' AS m
                          FROM generate_series(-1, 1) AS k) AS months) AS resets
             WHERE d > at)
    END
$$;

-- Operations at a glance. The async worker registers as "iclear worker".
CREATE VIEW iclear.health AS
SELECT iclear.version() AS version,
       EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'iclear worker') AS worker_alive,
       (SELECT count(*) FROM iclear.job WHERE status IN ('queued', 'running')) AS queue_depth,
       (SELECT min(created_at) FROM iclear.job WHERE status = 'queued') AS oldest_queued_at,
       (SELECT count(*) FROM iclear.job WHERE status = 'failed') AS failed_jobs,
       (SELECT count(*) FROM iclear.decision_default) AS rows_in_default_partitions,
       (SELECT version FROM iclear.config_version) AS config_version;

-- BEGIN since-0.2.0 (objects new or changed since 0.2.0; also the tail of the
-- 0.2.0 -> 0.3.0 upgrade, made by scripts/gen-upgrade.sh)
CREATE OR REPLACE FUNCTION iclear.validate_rule_action() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    PERFORM iclear.check_action((SELECT stage FROM iclear.rule WHERE id = NEW.rule_id), NEW.action, NEW.config);
    SELECT x INTO missing
      FROM unnest(iclear.action_list_ids(NEW.action, NEW.config)) AS x
     WHERE NOT EXISTS (SELECT 1 FROM iclear.list l WHERE l.id = x)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'invalid setting rule_action.config.list_ids: unknown list id %', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.action = 'run_third_party_service' AND NOT EXISTS (
        SELECT 1 FROM iclear.global_rule g JOIN iclear.rule r ON r.product_id = g.product_id
         WHERE r.id = NEW.rule_id AND g.id = (NEW.config ->> 'global_rule_id')::bigint) THEN
        RAISE EXCEPTION 'invalid setting rule_action.config.global_rule_id: % is not a global rule of this rule''s product',
            NEW.config ->> 'global_rule_id' USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.rule_action
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_rule_action();

-- Until 0.4.0 global caps counted in their own row (current_value,
-- period_start), updated on the lead path: not configuration changes.
DROP TRIGGER IF EXISTS bump_config_version ON iclear.global_cap;
CREATE TRIGGER bump_config_version AFTER INSERT OR DELETE OR TRUNCATE ON iclear.global_cap
    FOR EACH STATEMENT EXECUTE FUNCTION iclear.bump_config_version();
CREATE TRIGGER bump_config_version_on_edit AFTER UPDATE OF service, period, start_day, cap_limit
    ON iclear.global_cap FOR EACH STATEMENT EXECUTE FUNCTION iclear.bump_config_version();

-- When the current period of a cap began (the last reset at or before `at`);
-- the counterpart of next_cap_reset().
CREATE FUNCTION iclear.cap_period_start(period text, start_day integer DEFAULT 1, at timestamptz DEFAULT now())
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'daily' THEN date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        WHEN 'monthly' THEN (
            SELECT max(d) FROM (
                SELECT (m + make_interval(days => least(start_day,
                            extract(day FROM m + interval '1 month' - interval '1 day')::int) - 1))
                       AT TIME ZONE 'UTC' AS d
                  FROM (SELECT date_trunc('month', at AT TIME ZONE 'UTC') + k * interval '1 month' AS m
                          FROM generate_series(-1, 0) AS k) AS months) AS resets
             WHERE d <= at)
    END
$$;

-- Lookups and cost per UTC day, product and service. `requests` counts the
-- times a service was asked for a lead (answers from the API, the cache or
-- the local DB, no response, cap reached); a queued async lookup counts once,
-- by its answer. Only API answers are charged, at the cost logged with each.
CREATE OR REPLACE VIEW iclear.service_usage AS
SELECT (f.at AT TIME ZONE 'UTC')::date AS day, p.name AS product, f.name AS service,
       count(*) FILTER (WHERE f.outcome NOT IN ('queued', 'not_sampled', 'skipped')) AS requests,
       count(*) FILTER (WHERE f.detail ->> 'source' = 'api') AS lookups,
       count(*) FILTER (WHERE f.detail ->> 'source' = 'cache') AS cache_hits,
       count(*) FILTER (WHERE f.detail ->> 'source' = 'local') AS local_hits,
       count(*) FILTER (WHERE f.outcome = 'no_response') AS no_response,
       count(*) FILTER (WHERE f.outcome = 'reject') AS rejects,
       coalesce(sum((f.detail ->> 'cost')::numeric) FILTER (WHERE f.detail ->> 'source' = 'api'), 0) AS cost
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
 WHERE f.kind = 'service'
 GROUP BY 1, 2, 3;

-- Failed async jobs stay visible (iclear.health.failed_jobs); this queues
-- them again once the cause is fixed.
CREATE FUNCTION iclear.retry_failed_jobs() RETURNS bigint
LANGUAGE sql AS $$
    WITH r AS (UPDATE iclear.job SET status = 'queued', attempts = 0, run_after = now(),
                                    leased_until = NULL, updated_at = now()
                WHERE status = 'failed' RETURNING 1)
    SELECT count(*) FROM r
$$;

SELECT pg_catalog.pg_extension_config_dump('iclear.counter_delta', '');
-- paid answers: a restore keeps them
SELECT pg_catalog.pg_extension_config_dump('iclear.lookup_cache', '');
-- ------------------------------------------------- verification history
-- Phones are matched by their digits; an 11-digit number with the North
-- American country code 1 is its 10 digits (engine: verification::normalize_phone).
CREATE FUNCTION iclear.normalize_phone(phone text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT nullif(CASE WHEN length(d) = 11 AND left(d, 1) = '1' THEN substr(d, 2) ELSE d END, '')
      FROM (SELECT regexp_replace(phone, '[^0-9]', '', 'g') AS d) AS x
$$;


-- END since-0.2.0

-- ------------------------------------------------------------ public entry
CREATE FUNCTION public.iclear_process(lead jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE STRICT
AS $$ SELECT iclear.process(lead) $$;

-- -------------------------------------------------------- attach / detach
CREATE FUNCTION iclear.attach(lead_table regclass, product text, options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    col text;
BEGIN
    PERFORM iclear.check_attach_options(options);
    IF NOT EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = product) THEN
        RAISE EXCEPTION 'iclear.attach: unknown product "%"', product USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY ARRAY[options ->> 'fields_column', options ->> 'params_column'] LOOP
        IF col IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_attribute
             WHERE attrelid = lead_table AND attname = col AND NOT attisdropped
               AND atttypid = 'jsonb'::regtype) THEN
            RAISE EXCEPTION 'iclear.attach: option names column "%", which % has not as a jsonb column', col, lead_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    col := coalesce(options ->> 'id_column', 'id');
    IF options ? 'id_column' AND NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = lead_table AND attname = col AND NOT attisdropped) THEN
        RAISE EXCEPTION 'iclear.attach: id_column "%" is not a column of %', col, lead_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = lead_table AND tgname = 'iclear_process') THEN
        EXECUTE format('DROP TRIGGER iclear_process ON %s', lead_table);
    END IF;
    EXECUTE format('CREATE TRIGGER iclear_process BEFORE INSERT ON %s FOR EACH ROW
                    EXECUTE FUNCTION iclear.lead_trigger(%L, %L)', lead_table, product, options::text);
    INSERT INTO iclear.attachment (lead_table, product, options) VALUES (lead_table, product, options)
    ON CONFLICT ON CONSTRAINT attachment_pkey
    DO UPDATE SET product = EXCLUDED.product, options = EXCLUDED.options, created_at = now();
END $$;

CREATE FUNCTION iclear.detach(lead_table regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS iclear_process ON %s', lead_table);
    DELETE FROM iclear.attachment a WHERE a.lead_table = detach.lead_table;
END $$;

-- BEGIN since-0.3.0 (objects new or changed since 0.3.0; also the tail of the
-- 0.3.0 -> 0.4.0 upgrade, made by scripts/gen-upgrade.sh)
-- The attach trigger (docs/architecture.md "Attaching"), in Rust (src/trigger.rs): it processes the
-- row in a subtransaction, so an error keeps the inserted row with status
-- error; on_error 'raise' opts out.
CREATE OR REPLACE FUNCTION iclear.lead_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'iclear_lead_trigger';
-- Partitions and retention; run daily (cron, pg_cron; the async worker will).
-- Creates the monthly partitions of decision and filter_log from the oldest
-- row waiting in a DEFAULT partition up to `months_ahead` months ahead
-- (moving those rows in), drops partitions wholly older than retention, and
-- deletes consent evidence older than the evidence retention.
CREATE OR REPLACE FUNCTION iclear.maintain(retention_days integer DEFAULT NULL,
                                evidence_retention_days integer DEFAULT NULL,
                                months_ahead integer DEFAULT 2)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    keep_days     integer;
    keep_evidence integer;
    t             text;
    col           text;
    m             timestamp;
    lo            timestamptz;
    hi            timestamptz;
    part          text;
    oldest        timestamptz;
    n             bigint;
    moved         bigint := 0;
    evidence      bigint;
    created       text[] := '{}';
    dropped       text[] := '{}';
    r             record;
    locked        boolean := false;
    old_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM iclear.version();  -- loads the library, which defines the GUCs
    keep_days := coalesce(retention_days, nullif(current_setting('iclear.retention_days', true), '')::int, 180);
    keep_evidence := coalesce(evidence_retention_days,
                              nullif(current_setting('iclear.evidence_retention_days', true), '')::int, 1827);
    IF keep_days < 1 OR keep_evidence < 1 OR months_ahead < 0 THEN
        RAISE EXCEPTION 'iclear.maintain: retention_days and evidence_retention_days must be at least 1, months_ahead at least 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Writers wait (readers do not) until the new months are attached: an
    -- insert that had already routed its row to a DEFAULT partition would
    -- otherwise fail its new partition constraint; a writer that waited sees
    -- the new partitions when it goes on. Writers lock the two tables in
    -- either order, so each attempt gives up after 200 ms instead of waiting
    -- into a deadlock (where a writer could be the one cancelled), and retries.
    -- While rows wait in a DEFAULT partition, readers wait too: a query
    -- planned against the old partitions that ran after the move would find
    -- them neither in DEFAULT nor in the month it does not know of.
    FOR attempt IN 1 .. 100 LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '200ms', true);
            LOCK TABLE iclear.filter_log, iclear.decision IN EXCLUSIVE MODE;
            IF EXISTS (SELECT 1 FROM iclear.decision_default) OR EXISTS (SELECT 1 FROM iclear.filter_log_default) THEN
                LOCK TABLE iclear.filter_log, iclear.decision IN ACCESS EXCLUSIVE MODE;
            END IF;
            locked := true;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(0.05 * random());
        END;
    END LOOP;
    -- the DDL below (ATTACH, DROP) waits for readers of single partitions
    -- while writers wait for it: bound that too
    PERFORM set_config('lock_timeout', '5s', true);
    IF NOT locked THEN
        RAISE EXCEPTION 'iclear.maintain: decision and filter_log stayed busy for about 20 s; run it again'
            USING ERRCODE = 'lock_not_available';
    END IF;
    FOREACH t IN ARRAY ARRAY['decision', 'filter_log'] LOOP
        col := CASE t WHEN 'decision' THEN 'created_at' ELSE 'at' END;
        EXECUTE format('SELECT min(%I) FROM iclear.%I', col, t || '_default') INTO oldest;
        FOR m IN SELECT generate_series(date_trunc('month', least(coalesce(oldest, now()), now()) AT TIME ZONE 'UTC'),
                                        date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => months_ahead),
                                        interval '1 month') LOOP
            part := format('%s_%s', t, to_char(m, 'YYYYMM'));
            lo := m AT TIME ZONE 'UTC';
            hi := (m + interval '1 month') AT TIME ZONE 'UTC';
            CONTINUE WHEN to_regclass(format('iclear.%I', part)) IS NOT NULL;
            CONTINUE WHEN hi <= now() - make_interval(days => keep_days);  -- would be dropped at once
            EXECUTE format('CREATE TABLE iclear.%I (LIKE iclear.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION)', part, t);
            EXECUTE format('WITH moved AS (DELETE FROM iclear.%I WHERE %I >= $1 AND %I < $2 RETURNING *)
                            INSERT INTO iclear.%I SELECT * FROM moved', t || '_default', col, col, part)
                USING lo, hi;
            GET DIAGNOSTICS n = ROW_COUNT;
            moved := moved + n;
            EXECUTE format('CREATE INDEX ON iclear.%I (lead_id)', part);
            EXECUTE format('CREATE INDEX ON iclear.%I USING brin (%I)', part, col);
            EXECUTE format('ALTER TABLE iclear.%I ATTACH PARTITION iclear.%I FOR VALUES FROM (%L) TO (%L)', t, part, lo, hi);
            created := created || part;
        END LOOP;
        FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = format('iclear.%I', t)::regclass AND c.relname ~ '_\d{6}$' LOOP
            hi := (to_date(right(r.relname, 6), 'YYYYMM')::timestamp + interval '1 month') AT TIME ZONE 'UTC';
            IF hi <= now() - make_interval(days => keep_days) THEN
                EXECUTE format('DROP TABLE iclear.%I', r.relname);
                dropped := dropped || r.relname::text;
            END IF;
        END LOOP;
        EXECUTE format('DELETE FROM iclear.%I WHERE %I < $1', t || '_default', col)
            USING now() - make_interval(days => keep_days);
    END LOOP;
    DELETE FROM iclear.consent_evidence WHERE at < now() - make_interval(days => keep_evidence);
    GET DIAGNOSTICS evidence = ROW_COUNT;
    PERFORM set_config('lock_timeout', old_lock_timeout, true);
    RETURN jsonb_build_object('created', created, 'dropped', dropped, 'moved_from_default', moved,
                              'evidence_deleted', evidence, 'retention_days', keep_days,
                              'evidence_retention_days', keep_evidence);
END $$;
-- END since-0.3.0

-- BEGIN since-0.4.0 (objects new or changed since 0.4.0; also the tail of the
-- 0.4.0 -> 0.5.0 upgrade, made by scripts/gen-upgrade.sh)
-- Every global, global-rule and rule cap: period, limit, the slots committed
-- in the current period (or per source), next reset; the service's
-- subscription and the rule's status (docs/settings.md's caps list). The count is what is
-- durable (iclear.cap_use); slots of leads still open are not in it.
CREATE VIEW iclear.cap_status AS
WITH used AS (
    SELECT scope, ref_id, period, bucket, sum(used)::bigint AS used
      FROM iclear.cap_use GROUP BY 1, 2, 3, 4)
SELECT 'global'::text AS scope, c.service AS subject, c.id AS rule_id, c.period, c.start_day,
       c.cap_limit, coalesce(u.used, 0) AS current_value,
       iclear.next_cap_reset(c.period, c.start_day) AS next_reset,
       c.service, s.subscription, NULL::text AS status
  FROM iclear.global_cap c
  JOIN iclear.service s ON s.name = c.service
  LEFT JOIN used u ON u.scope = 'global' AND u.ref_id = c.id AND u.period = c.period
       AND u.bucket = to_char(iclear.cap_period_start(c.period, c.start_day) AT TIME ZONE 'UTC', 'YYYY-MM-DD')
UNION ALL
SELECT 'rule', r.name, r.id, x.period, NULL, x.cap_limit, coalesce(u.used, 0),
       iclear.next_cap_reset(x.period, 1), NULL, NULL, r.status
  FROM iclear.rule r
 CROSS JOIN LATERAL (VALUES ('daily', r.daily_limit), ('monthly', r.monthly_limit)) AS x(period, cap_limit)
  LEFT JOIN used u ON u.scope = 'rule' AND u.ref_id = r.id AND u.period = x.period
       AND u.bucket = to_char(iclear.cap_period_start(x.period, 1) AT TIME ZONE 'UTC', 'YYYY-MM-DD')
 WHERE x.cap_limit IS NOT NULL
UNION ALL
SELECT 'rule', r.name || ' / source ' || coalesce(nullif(u.bucket, ''), 'none'), r.id, 'source', NULL,
       r.per_source_limit, u.used, NULL, NULL, NULL, r.status
  FROM iclear.rule r
  JOIN used u ON u.scope = 'rule' AND u.ref_id = r.id AND u.period = 'source'
 WHERE r.per_source_limit IS NOT NULL
UNION ALL
SELECT 'global_rule', g.service || ' (global rule ' || g.id || ')', g.id, x.period, NULL, x.cap_limit,
       coalesce(u.used, 0), iclear.next_cap_reset(x.period, 1), g.service, s.subscription, g.status
  FROM iclear.global_rule g
  JOIN iclear.service s ON s.name = g.service
 CROSS JOIN LATERAL (VALUES ('daily', g.daily_limit), ('monthly', g.monthly_limit)) AS x(period, cap_limit)
  LEFT JOIN used u ON u.scope = 'global_rule' AND u.ref_id = g.id AND u.period = x.period
       AND u.bucket = to_char(iclear.cap_period_start(x.period, 1) AT TIME ZONE 'UTC', 'YYYY-MM-DD')
 WHERE x.cap_limit IS NOT NULL;

-- The worker folds the append-only rows every round (and run_worker_once,
-- maintain): counter increments into counter_total, a cap period's slots
-- into one row. Each is one statement, so a reader sees the rows before or
-- after, never both or neither.
CREATE FUNCTION iclear.fold_counters() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM iclear.counter_delta RETURNING name, key, by, at),
         s AS (SELECT name, key, sum(by)::bigint AS by, max(at) AS at FROM d GROUP BY name, key),
         u AS (INSERT INTO iclear.counter_total AS t (name, key, value, updated_at)
               SELECT name, key, by, at FROM s
               ON CONFLICT (name, key) DO UPDATE
               SET value = t.value OPERATOR(pg_catalog.+) EXCLUDED.value,
                   updated_at = greatest(t.updated_at, EXCLUDED.updated_at)
               RETURNING 1)
    SELECT count(*) FROM u
$$;

CREATE FUNCTION iclear.fold_cap_uses() RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH many AS (SELECT scope, ref_id, period, bucket FROM iclear.cap_use
                   GROUP BY 1, 2, 3, 4 HAVING count(*) > 1),
         d AS (DELETE FROM iclear.cap_use c USING many m
                WHERE c.scope = m.scope AND c.ref_id = m.ref_id AND c.period = m.period AND c.bucket = m.bucket
                RETURNING c.scope, c.ref_id, c.period, c.bucket, c.used, c.at),
         s AS (INSERT INTO iclear.cap_use (scope, ref_id, period, bucket, used, at)
               SELECT scope, ref_id, period, bucket, sum(used)::bigint, max(at) FROM d GROUP BY 1, 2, 3, 4
               RETURNING 1)
    SELECT count(*) FROM s
$$;
SELECT pg_catalog.pg_extension_config_dump('iclear.spent_request', '');
-- Backends that ran leads on the new library under the 0.4.0 schema used its
-- tables: a new configuration version tells them the schema moved.
UPDATE iclear.config_version SET version = nextval('iclear.config_version_seq');
SELECT iclear.config_changed();

-- Point the history views at a hub database through a postgres_fdw server
-- (NULL: back to this database's own tables). See README "Sharing the
-- verification history".
CREATE OR REPLACE FUNCTION iclear.use_verification_hub(server text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    -- in seconds, whatever unit it was set in (5 before the library is loaded)
    timeout text := coalesce((SELECT setting FROM pg_settings WHERE name = 'iclear.hub_timeout'), '5');
    opts text[];
    remote text;
BEGIN
    -- back to the local tables first: the views may depend on a previous hub
    CREATE OR REPLACE VIEW iclear.verification_history AS
    SELECT id, product, signature, recorded_at FROM iclear.verification_history_local;
    CREATE OR REPLACE VIEW iclear.sms_verification AS
    SELECT id, product, phone, code, status, attempts, created_at, verified_at, expires_at, lead_id
      FROM iclear.sms_verification_local;
    IF server IS NULL THEN
        DROP SCHEMA IF EXISTS iclear_hub CASCADE;
        RETURN 'local';
    END IF;
    -- An unreachable hub costs a lead at most iclear.hub_timeout (review
    -- finding 12): libpq's connect_timeout bounds the connection (which
    -- PostgreSQL 15 cannot cancel), the hub's statement_timeout each read.
    SELECT s.srvoptions INTO opts FROM pg_foreign_server s WHERE s.srvname = server;
    SELECT o.option_value INTO remote FROM pg_options_to_table(opts) o WHERE o.option_name = 'options';
    remote := btrim(regexp_replace(coalesce(remote, ''), '-c\s*statement_timeout=\S+', '', 'g')
                    || ' -c statement_timeout=' || timeout || 's');
    EXECUTE format('ALTER SERVER %I OPTIONS (%s connect_timeout %L, %s options %L)', server,
                   CASE WHEN 'connect_timeout' IN (SELECT option_name FROM pg_options_to_table(opts)) THEN 'SET' ELSE 'ADD' END,
                   greatest(timeout::int, 2),
                   CASE WHEN 'options' IN (SELECT option_name FROM pg_options_to_table(opts)) THEN 'SET' ELSE 'ADD' END,
                   remote);
    CREATE SCHEMA IF NOT EXISTS iclear_hub;
    DROP FOREIGN TABLE IF EXISTS iclear_hub.verification_history, iclear_hub.sms_verification;
    -- no id column: the hub assigns its own
    EXECUTE format('CREATE FOREIGN TABLE iclear_hub.verification_history
                        (product text, signature text, recorded_at timestamptz)
                    SERVER %I OPTIONS (schema_name %L, table_name %L)',
                   server, 'iclear', 'verification_history_local');
    EXECUTE format('CREATE FOREIGN TABLE iclear_hub.sms_verification
                        (product text, phone text, code text, status text, attempts integer,
                         created_at timestamptz, verified_at timestamptz, expires_at timestamptz, lead_id text)
                    SERVER %I OPTIONS (schema_name %L, table_name %L)',
                   server, 'iclear', 'sms_verification_local');
    CREATE OR REPLACE VIEW iclear.verification_history AS
    SELECT NULL::bigint AS id, product, signature, recorded_at FROM iclear_hub.verification_history;
    CREATE OR REPLACE VIEW iclear.sms_verification AS
    SELECT NULL::bigint AS id, product, phone, code, status, attempts, created_at, verified_at, expires_at, lead_id
      FROM iclear_hub.sms_verification;
    RETURN server;
END $$;
REVOKE ALL ON FUNCTION iclear.use_verification_hub(text) FROM PUBLIC;

-- One lead: its decisions (envelope and full decision), every step of its log,
-- its iClear Log (each service call's request, credentials masked, and the
-- vendor's response: the seeds' "iClear Log" block), its consent evidence and
-- the latest trace.
CREATE OR REPLACE FUNCTION iclear.lead_info(lead_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'lead_id', $1,
        'decisions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                   'at', d.created_at, 'stage', d.stage, 'status', d.status,
                                   'envelope', d.envelope::jsonb, 'decision', d.decision::jsonb) ORDER BY d.id)
                                 FROM iclear.decision d WHERE d.lead_id = $1), '[]'),
        'log', coalesce((SELECT jsonb_agg(to_jsonb(f) - 'lead_id' ORDER BY f.at, f.id)
                           FROM iclear.full_log f WHERE f.lead_id = $1), '[]'),
        'iclear_log', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                    'at', f.at, 'service', f.name, 'global_rule_id', f.ref_id,
                                    'origin', f.origin, 'outcome', f.outcome, 'source', f.detail -> 'source',
                                    'request', f.request::jsonb, 'response', f.response::jsonb)
                                  ORDER BY f.at, f.id)
                                  FROM iclear.filter_log f
                                 WHERE f.lead_id = $1 AND f.kind = 'service'), '[]'),
        'consent_evidence', coalesce((SELECT jsonb_agg(to_jsonb(e) - 'lead_id' ORDER BY e.id)
                                        FROM iclear.consent_evidence e WHERE e.lead_id = $1), '[]'),
        'feedback', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'kind', b.kind, 'reason', b.reason, 'reported_at', b.reported_at,
                                  'reported_by', b.reported_by) ORDER BY b.id)
                                FROM iclear.lead_feedback b WHERE b.lead_id = $1), '[]'),
        'trace', (SELECT d.decision::jsonb -> 'trace' FROM iclear.decision d
                   WHERE d.lead_id = $1 ORDER BY d.id DESC LIMIT 1))
$$;

-- Product field definitions: checked by the engine's own parser when saved.
CREATE FUNCTION iclear.validate_product_field() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iclear.check_product_field(to_jsonb(NEW));
    RETURN NEW;
END $$;
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.product_field
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_product_field();
CREATE TRIGGER bump_config_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON iclear.product_field
    FOR EACH STATEMENT EXECUTE FUNCTION iclear.bump_config_version();
-- a lead rejected by validation shows here too (kind 'validation')
CREATE OR REPLACE VIEW iclear.pre_screen_reject_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       d.decision ->> 'reason' AS reason, d.envelope, f.kind
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN LATERAL (SELECT * FROM iclear.decision d WHERE d.lead_id = f.lead_id
                      ORDER BY d.id DESC LIMIT 1) d ON true
 WHERE f.stage = 'pre_validation' AND f.outcome = 'reject';

-- ------------------------------------------------------------- credentials
-- Vendor credentials written into global_rule.settings are moved to
-- global_rule_credential, which iclear_admin alone may read: an operator
-- reads and edits a global rule's settings without seeing or losing them.
-- Only iclear_admin may set one; a credential set to null is removed.
-- Validation sees the settings with the stored credentials (the processing
-- configuration is loaded the same way, src/store/config.rs).
CREATE FUNCTION iclear.credential_keys() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY['api_key', 'api_token', 'account_id'] $$;

CREATE FUNCTION iclear.check_global_rule(id bigint, service text, settings jsonb) RETURNS void
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT iclear.check_global_rule_settings($2, $3 || coalesce(
        (SELECT c.credentials FROM iclear.global_rule_credential c WHERE c.global_rule_id = $1), '{}'))
$$;

CREATE OR REPLACE FUNCTION iclear.validate_global_rule() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
    given jsonb;
    key text;
BEGIN
    SELECT jsonb_object_agg(e.key, e.value) INTO given
      FROM jsonb_each(NEW.settings) e WHERE e.key = ANY (iclear.credential_keys());
    IF given IS NOT NULL THEN
        IF NOT pg_has_role('iclear_admin', 'USAGE') THEN
            SELECT min(k) INTO key FROM jsonb_object_keys(given) k;
            RAISE EXCEPTION 'permission denied to set global_rule.settings.%', key
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Credentials are set by a member of iclear_admin.';
        END IF;
        NEW.settings := NEW.settings - iclear.credential_keys();
        INSERT INTO iclear.global_rule_credential AS c (global_rule_id, credentials)
        VALUES (NEW.id, jsonb_strip_nulls(given))
        ON CONFLICT (global_rule_id) DO UPDATE SET credentials = jsonb_strip_nulls(c.credentials || given);
    END IF;
    PERFORM iclear.check_global_rule(NEW.id, NEW.service, NEW.settings);
    SELECT x INTO missing
      FROM jsonb_array_elements_text(coalesce(NEW.settings -> 'add_to_list' -> 'list_ids', '[]')) AS t(x)
     WHERE NOT EXISTS (SELECT 1 FROM iclear.list l WHERE l.id = t.x::bigint)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'invalid setting global_rule.settings.add_to_list.list_ids: unknown list id %', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.global_rule
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_global_rule();
-- credentials stored in settings before 0.5.0 move out (the trigger moves them)
UPDATE iclear.global_rule SET settings = settings WHERE settings ?| iclear.credential_keys();

-- A phone verified outside iclear (or by another instance of the flow): the
-- leads of the product paused on it are resumed.
CREATE OR REPLACE FUNCTION iclear.record_sms_verification(product text, phone text, code text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text := iclear.normalize_phone(phone);
BEGIN
    IF p IS NULL THEN
        RAISE EXCEPTION 'iclear.record_sms_verification: phone % has no digits', phone
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(code), '') = '' THEN
        RAISE EXCEPTION 'iclear.record_sms_verification: code must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iclear.sms_verification (product, phone, code, status, attempts, created_at, verified_at)
    VALUES (record_sms_verification.product, p, btrim(record_sms_verification.code), 'verified', 0, now(), now());
    PERFORM iclear.resume_paused_leads(record_sms_verification.product, p);
END $$;

-- Complete a pending SMS verification (pause_for_verification). A wrong code
-- counts an attempt; at iclear.sms_max_attempts, or past its expiry, the
-- code is dead and a new pause sends a new one. A confirmed code resumes the
-- leads of the product paused on the phone (iclear.paused_lead).
CREATE OR REPLACE FUNCTION iclear.confirm_sms(product text, phone text, code text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p        text := iclear.normalize_phone(confirm_sms.phone);
    max_try  integer;
    r        record;
BEGIN
    PERFORM iclear.version();  -- loads the library, which defines the GUCs
    max_try := coalesce(nullif(current_setting('iclear.sms_max_attempts', true), '')::int, 5);
    SELECT s.code, s.attempts, s.expires_at INTO r FROM iclear.sms_verification s
     WHERE s.product = confirm_sms.product AND s.phone = p AND s.status = 'pending'
     ORDER BY s.created_at DESC LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF r.expires_at IS NOT NULL AND r.expires_at < now() THEN
        UPDATE iclear.sms_verification SET status = 'expired'
         WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
        RETURN false;
    END IF;
    IF r.code = btrim(confirm_sms.code) THEN
        UPDATE iclear.sms_verification SET status = 'verified', verified_at = now()
         WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
        PERFORM iclear.resume_paused_leads(confirm_sms.product, p);
        RETURN true;
    END IF;
    UPDATE iclear.sms_verification
       SET attempts = attempts + 1,
           status = CASE WHEN attempts + 1 >= max_try THEN 'expired' ELSE 'pending' END
     WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
    RETURN false;
END $$;

-- Shadow rules per UTC day: the leads each matched, and how many of them it
-- would have rejected, paused or changed had it been active (its actions'
-- kinds, src/engine/actions.rs ActionKind::effect). would_reject_accepted:
-- the leads it would have rejected that the live rules accepted, i.e. the
-- decisions promoting it changes.
CREATE VIEW iclear.shadow_report AS
SELECT (f.at AT TIME ZONE 'UTC')::date AS day, p.name AS product, f.ref_id AS rule_id, f.name AS rule,
       r.status,
       count(DISTINCT f.lead_id) AS matched,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'reject') AS would_reject,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'pause') AS would_pause,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'change') AS would_change,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'reject'
                                           AND d.status = 'accepted') AS would_reject_accepted
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN iclear.rule r ON r.id = f.ref_id
  LEFT JOIN LATERAL (SELECT x.status FROM iclear.decision x WHERE x.lead_id = f.lead_id
                      ORDER BY x.id DESC LIMIT 1) d ON true
 WHERE f.kind = 'rule' AND f.outcome = 'shadow'
 GROUP BY 1, 2, 3, 4, 5;

-- Outcome feedback: a buyer's return, conversion, chargeback or complaint
-- about a processed lead. Returns the feedback's id. Runs as its caller,
-- recorded as `reported_by`.
CREATE FUNCTION iclear.feedback(lead_id text, kind text, reason text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    product bigint;
    id      bigint;
BEGIN
    IF kind IS NULL OR kind NOT IN ('return', 'conversion', 'chargeback', 'complaint') THEN
        RAISE EXCEPTION 'iclear.feedback: kind % is not a feedback kind', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'expected one of: return, conversion, chargeback, complaint';
    END IF;
    SELECT d.product_id INTO product FROM iclear.decision d
     WHERE d.lead_id = feedback.lead_id ORDER BY d.id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'iclear.feedback: lead_id % names no processed lead', quote_literal(feedback.lead_id)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iclear.lead_feedback (lead_id, product_id, kind, reason, reported_by)
    VALUES (feedback.lead_id, product, feedback.kind, feedback.reason, current_user)
    RETURNING lead_feedback.id INTO id;
    RETURN id;
END $$;

-- Rule quality per product, rule and UTC month (the month the lead was
-- first processed): the leads a rule matched (shadow matches included) and
-- rejected, their feedback, and the rates against the product's baseline
-- for that month. A rule whose return_rate is well above
-- baseline_return_rate catches returns; one whose conversion_rate is well
-- above its baseline rejects good leads. A report over the whole log:
-- filter it by product and month.
CREATE VIEW iclear.rule_quality AS
WITH fb AS (
    SELECT b.lead_id, bool_or(b.kind = 'return') AS returned, bool_or(b.kind = 'conversion') AS converted,
           bool_or(b.kind = 'chargeback') AS charged_back, bool_or(b.kind = 'complaint') AS complained
      FROM iclear.lead_feedback b GROUP BY b.lead_id),
leads AS (
    SELECT DISTINCT ON (d.lead_id) d.lead_id, d.product_id,
           date_trunc('month', d.created_at AT TIME ZONE 'UTC')::date AS month
      FROM iclear.decision d ORDER BY d.lead_id, d.id),
base AS (
    SELECT l.product_id, l.month, count(*) AS leads,
           count(*) FILTER (WHERE fb.returned) AS returns,
           count(*) FILTER (WHERE fb.converted) AS conversions
      FROM leads l LEFT JOIN fb USING (lead_id) GROUP BY 1, 2),
hits AS (
    SELECT f.lead_id, f.ref_id AS rule_id,
           bool_or(f.outcome = 'reject' OR (f.outcome = 'shadow' AND f.detail ->> 'would' = 'reject')) AS rejected,
           bool_or(f.outcome = 'shadow') AS shadow
      FROM iclear.filter_log f
     WHERE f.kind = 'rule' AND f.outcome IN ('matched', 'reject', 'paused', 'shadow')
     GROUP BY 1, 2)
SELECT p.name AS product, h.rule_id, r.name AS rule, l.month, bool_or(h.shadow) AS shadow,
       count(*) AS matched,
       count(*) FILTER (WHERE h.rejected) AS rejected,
       count(*) FILTER (WHERE fb.returned) AS returns,
       count(*) FILTER (WHERE fb.converted) AS conversions,
       count(*) FILTER (WHERE fb.charged_back) AS chargebacks,
       count(*) FILTER (WHERE fb.complained) AS complaints,
       round(count(*) FILTER (WHERE fb.returned)::numeric / count(*), 4) AS return_rate,
       round(b.returns::numeric / nullif(b.leads, 0), 4) AS baseline_return_rate,
       round(count(*) FILTER (WHERE fb.converted)::numeric / count(*), 4) AS conversion_rate,
       round(b.conversions::numeric / nullif(b.leads, 0), 4) AS baseline_conversion_rate
  FROM hits h
  JOIN leads l USING (lead_id)
  LEFT JOIN fb USING (lead_id)
  JOIN base b ON b.product_id = l.product_id AND b.month = l.month
  LEFT JOIN iclear.product p ON p.id = l.product_id
  LEFT JOIN iclear.rule r ON r.id = h.rule_id
 GROUP BY p.name, h.rule_id, r.name, l.month, b.leads, b.returns, b.conversions;

-- The audit trail: every INSERT, UPDATE and DELETE of a configuration table
-- (and each TRUNCATE), with the credentials of global_rule_credential
-- masked. Not audited: list_entry and source (data, written on the lead
-- path) and the state tables. It runs as the role that made the change, so
-- `role` is that role (after SET ROLE too): the roles that may change the
-- configuration may add to the trail, and nobody but the owner may change or
-- delete it.
CREATE FUNCTION iclear.audit_config() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    o jsonb;
    n jsonb;
    k text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO iclear.config_audit (table_name, op, role) VALUES (TG_TABLE_NAME, TG_OP, current_user);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;
    IF TG_TABLE_NAME = 'global_rule_credential' THEN
        o := o || jsonb_build_object('credentials',
                     (SELECT coalesce(jsonb_object_agg(c.key, '***'), '{}') FROM jsonb_each(o -> 'credentials') c));
        n := n || jsonb_build_object('credentials',
                     (SELECT coalesce(jsonb_object_agg(c.key, '***'), '{}') FROM jsonb_each(n -> 'credentials') c));
    END IF;
    IF TG_OP = 'UPDATE' AND o = n THEN
        RETURN NULL; -- nothing changed
    END IF;
    k := CASE TG_TABLE_NAME
           WHEN 'service' THEN coalesce(n, o) ->> 'name'
           WHEN 'attachment' THEN coalesce(n, o) ->> 'lead_table'
           WHEN 'global_rule_credential' THEN coalesce(n, o) ->> 'global_rule_id'
           WHEN 'list_product' THEN (coalesce(n, o) ->> 'list_id') || ':' || (coalesce(n, o) ->> 'product_id')
           ELSE coalesce(n, o) ->> 'id' END;
    INSERT INTO iclear.config_audit (table_name, op, row_id, old, new, role)
    VALUES (TG_TABLE_NAME, TG_OP, k, o, n, current_user);
    RETURN NULL;
END $$;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['product', 'service', 'global_rule', 'global_rule_credential', 'global_cap',
                             'rule_category', 'rule', 'rule_condition', 'rule_action', 'list', 'list_product',
                             'product_field', 'attachment'] LOOP
        EXECUTE format('CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON iclear.%I
                        FOR EACH ROW EXECUTE FUNCTION iclear.audit_config()', t);
        EXECUTE format('CREATE TRIGGER audit_truncate AFTER TRUNCATE ON iclear.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION iclear.audit_config()', t);
    END LOOP;
END $$;

-- A product's configuration changes in order: the product row, its rules
-- (with their conditions and actions), categories, global rules (and their
-- masked credentials), product fields and list links, as audited. Rows that
-- no longer exist are found through the trail itself.
CREATE FUNCTION iclear.config_history(product text)
RETURNS TABLE (at timestamptz, role name, table_name text, op text, row_id text, old jsonb, new jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH pid AS (
        SELECT DISTINCT a.row_id FROM iclear.config_audit a
         WHERE a.table_name = 'product' AND coalesce(a.new, a.old) ->> 'name' = $1
        UNION SELECT p.id::text FROM iclear.product p WHERE p.name = $1),
    owned AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE a.table_name IN ('rule', 'rule_category', 'global_rule', 'product_field', 'list_product')
           AND coalesce(a.new, a.old) ->> 'product_id' IN (SELECT row_id FROM pid)),
    children AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name IN ('rule_condition', 'rule_action')
                AND coalesce(a.new, a.old) ->> 'rule_id' IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'rule'))
            OR (a.table_name = 'global_rule_credential'
                AND a.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule')))
    SELECT a.at, a.role, a.table_name, a.op, a.row_id, a.old, a.new
      FROM iclear.config_audit a
     WHERE (a.table_name = 'product' AND a.row_id IN (SELECT row_id FROM pid))
        OR (a.table_name, a.row_id) IN (SELECT * FROM owned UNION SELECT * FROM children)
     ORDER BY a.at, a.id
$$;

-- Configuration as code. export_config(product) is the whole product as one
-- document: objects referenced by name, never by id (rules by name, lists by
-- name, global rules by `key`: the service, or `service:N` for the Nth of
-- one service), no credentials, nulls left out, jsonb's stable key order.
-- import_config(document, dry_run) plans, and applies in one transaction,
-- the changes that make the product equal the document.
CREATE FUNCTION iclear.export_config(product text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p   iclear.product;
    dup text;
BEGIN
    SELECT * INTO p FROM iclear.product x WHERE x.name = export_config.product;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'iclear.export_config: product % does not exist', quote_literal(export_config.product)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT r.name INTO dup FROM iclear.rule r WHERE r.product_id = p.id GROUP BY r.name HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.export_config: two rules of % are named %', quote_literal(p.name), quote_literal(dup)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the document references rules by name: rename one of them';
    END IF;
    RETURN (
    WITH g AS (
        SELECT x.*, CASE WHEN count(*) OVER (PARTITION BY x.service) = 1 THEN x.service
                         ELSE x.service || ':' || row_number() OVER (PARTITION BY x.service ORDER BY x.position, x.id)
                    END AS key
          FROM iclear.global_rule x WHERE x.product_id = p.id),
    lists AS (SELECT l.id, l.name FROM iclear.list l)
    SELECT jsonb_strip_nulls(jsonb_build_object(
      'format', 1,
      'product', jsonb_build_object('name', p.name, 'kind', p.kind),
      'categories', coalesce((SELECT jsonb_agg(jsonb_build_object('stage', c.stage, 'name', c.name, 'position', c.position)
                                               ORDER BY c.stage, c.position, c.name)
                                FROM iclear.rule_category c WHERE c.product_id = p.id), '[]'),
      'rules', coalesce((SELECT jsonb_agg(
              (to_jsonb(r) - ARRAY['id', 'product_id', 'category_id', 'created_at', 'all_new_since'])
              || jsonb_build_object(
                   'category', (SELECT c.name FROM iclear.rule_category c WHERE c.id = r.category_id),
                   -- All New counts from coalesce(all_new_since, created_at): kept as one date
                   'all_new_since', CASE WHEN r.all_new THEN coalesce(r.all_new_since, r.created_at)
                                         ELSE r.all_new_since END,
                   'conditions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'category', c.category, 'operator', c.operator, 'value', c.value,
                        'parameter', CASE WHEN c.category = 'rule'
                                          THEN (SELECT o.name FROM iclear.rule o WHERE o.id::text = c.parameter)
                                          ELSE c.parameter END) ORDER BY c.id)
                      FROM iclear.rule_condition c WHERE c.rule_id = r.id), '[]'),
                   'actions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'action', a.action, 'status', a.status, 'position', a.position,
                        'config', CASE
                            WHEN a.config ? 'list_ids' THEN (a.config - 'list_ids') || jsonb_build_object('lists',
                                (SELECT jsonb_agg(l.name ORDER BY l.name) FROM lists l
                                  WHERE l.id::text IN (SELECT jsonb_array_elements_text(a.config -> 'list_ids'))))
                            WHEN a.config ? 'global_rule_id' THEN (a.config - 'global_rule_id') || jsonb_build_object(
                                'global_rule', (SELECT g.key FROM g WHERE g.id::text = a.config ->> 'global_rule_id'))
                            ELSE a.config END) ORDER BY a.position, a.id)
                      FROM iclear.rule_action a WHERE a.rule_id = r.id), '[]'))
              ORDER BY r.stage, r.position, r.name)
            FROM iclear.rule r WHERE r.product_id = p.id), '[]'),
      'global_rules', coalesce((SELECT jsonb_agg(
              (to_jsonb(g) - ARRAY['id', 'product_id'])
              || jsonb_build_object('settings', CASE
                   WHEN g.settings -> 'add_to_list' ? 'list_ids' THEN jsonb_set(g.settings, '{add_to_list}',
                        ((g.settings -> 'add_to_list') - 'list_ids') || jsonb_build_object('lists',
                        (SELECT coalesce(jsonb_agg(l.name ORDER BY l.name), '[]') FROM lists l
                          WHERE l.id::text IN (SELECT jsonb_array_elements_text(g.settings -> 'add_to_list' -> 'list_ids')))))
                   ELSE g.settings END)
              ORDER BY g.position, g.id)
            FROM g), '[]'),
      'global_caps', coalesce((SELECT jsonb_agg(jsonb_build_object('service', c.service, 'period', c.period,
                                 'start_day', c.start_day, 'cap_limit', c.cap_limit) ORDER BY c.service, c.period)
                                 FROM iclear.global_cap c
                                WHERE c.service IN (SELECT g.service FROM g)), '[]'),
      'fields', coalesce((SELECT jsonb_agg(to_jsonb(f) - ARRAY['id', 'product_id'] ORDER BY f.name)
                            FROM iclear.product_field f WHERE f.product_id = p.id), '[]'),
      'lists', coalesce((SELECT jsonb_agg(jsonb_build_object('name', l.name, 'kind', l.kind, 'field', l.field,
                              'product_level', EXISTS (SELECT 1 FROM iclear.list_product lp
                                                        WHERE lp.list_id = l.id AND lp.product_id = p.id))
                              ORDER BY l.name)
                           FROM iclear.list l
                          WHERE EXISTS (SELECT 1 FROM iclear.list_product lp WHERE lp.list_id = l.id AND lp.product_id = p.id)
                             OR EXISTS (SELECT 1 FROM iclear.rule_action a JOIN iclear.rule r ON r.id = a.rule_id
                                         WHERE r.product_id = p.id AND a.config -> 'list_ids' @> to_jsonb(l.id))
                             OR EXISTS (SELECT 1 FROM g WHERE g.settings -> 'add_to_list' -> 'list_ids' @> to_jsonb(l.id))),
                        '[]')
    )));
END $$;

-- Refuse a document object with a key outside `allowed`, naming its path.
CREATE FUNCTION iclear.config_keys(obj jsonb, path text, allowed text[], required text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'iclear.import_config: % must be a JSON object', path USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x INTO k FROM jsonb_object_keys(obj) x WHERE x <> ALL (allowed) ORDER BY x LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %.% is not a key of this object', path, k
            USING ERRCODE = 'invalid_parameter_value', HINT = 'expected one of: ' || array_to_string(allowed, ', ');
    END IF;
    SELECT x INTO k FROM unnest(required) x WHERE NOT obj ? x OR jsonb_typeof(obj -> x) = 'null' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %.% is required', path, k USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The elements of `doc -> section` (an array, or absent) with their index.
CREATE FUNCTION iclear.config_items(doc jsonb, section text)
RETURNS TABLE (i integer, o jsonb) LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF doc -> section IS NOT NULL AND jsonb_typeof(doc -> section) <> 'array' THEN
        RAISE EXCEPTION 'iclear.import_config: % must be an array', section USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT (x.n - 1)::integer, x.v FROM jsonb_array_elements(coalesce(doc -> section, '[]')) WITH ORDINALITY x(v, n);
END $$;

-- List names to ids (unknown names refused, naming the path).
CREATE FUNCTION iclear.config_list_ids(names jsonb, path text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
BEGIN
    SELECT n INTO missing FROM jsonb_array_elements_text(names) n
     WHERE NOT EXISTS (SELECT 1 FROM iclear.list l WHERE l.name = n) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %: no list is named %', path, quote_literal(missing)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT coalesce(jsonb_agg(l.id ORDER BY l.id), '[]') FROM iclear.list l
             WHERE l.name IN (SELECT jsonb_array_elements_text(names)));
END $$;

-- Make the product equal `doc` (import_config's work; errors name the path).
CREATE FUNCTION iclear.apply_config(doc jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pid     bigint;
    pname   text;
    before  jsonb;
    path    text;
    it      record;
    c       record;
    r       iclear.rule;
    g       iclear.global_rule;
    rid     bigint;
    cat     bigint;
    gmap    jsonb;
    rmap    jsonb := '{}';
    cfg     jsonb;
    param   text;
BEGIN
    PERFORM iclear.config_keys(doc, 'document',
        ARRAY['format', 'product', 'categories', 'rules', 'global_rules', 'global_caps', 'fields', 'lists'],
        ARRAY['product']);
    PERFORM iclear.config_keys(doc -> 'product', 'product', ARRAY['name', 'kind'], ARRAY['name']);
    pname := doc #>> '{product,name}';
    IF EXISTS (SELECT 1 FROM iclear.product WHERE name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    BEGIN
        INSERT INTO iclear.product (name, kind) VALUES (pname, coalesce(doc #>> '{product,kind}', 'post'))
        ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind WHERE product.kind IS DISTINCT FROM EXCLUDED.kind;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'iclear.import_config: product: %', SQLERRM USING ERRCODE = SQLSTATE;
    END;
    SELECT id INTO pid FROM iclear.product WHERE name = pname;

    -- lists are shared by products: created or updated, never removed here;
    -- the product's links follow product_level
    FOR it IN SELECT * FROM iclear.config_items(doc, 'lists') LOOP
        path := format('lists[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'kind', 'field', 'product_level'], ARRAY['name', 'kind', 'field']);
        BEGIN
            INSERT INTO iclear.list (name, kind, field) VALUES (it.o ->> 'name', it.o ->> 'kind', it.o ->> 'field')
            ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, field = EXCLUDED.field
             WHERE (list.kind, list.field) IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.field);
            IF coalesce((it.o ->> 'product_level')::boolean, false) THEN
                INSERT INTO iclear.list_product (list_id, product_id)
                SELECT l.id, pid FROM iclear.list l WHERE l.name = it.o ->> 'name' ON CONFLICT DO NOTHING;
            ELSE
                DELETE FROM iclear.list_product lp USING iclear.list l
                 WHERE lp.list_id = l.id AND l.name = it.o ->> 'name' AND lp.product_id = pid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.list_product lp USING iclear.list l
     WHERE lp.list_id = l.id AND lp.product_id = pid
       AND l.name NOT IN (SELECT x.o ->> 'name' FROM iclear.config_items(doc, 'lists') x);

    -- categories by stage and name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'categories') LOOP
        path := format('categories[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['stage', 'name', 'position'], ARRAY['stage', 'name']);
        BEGIN
            UPDATE iclear.rule_category SET position = coalesce((it.o ->> 'position')::int, 0)
             WHERE product_id = pid AND stage = it.o ->> 'stage' AND name = it.o ->> 'name'
               AND position IS DISTINCT FROM coalesce((it.o ->> 'position')::int, 0);
            INSERT INTO iclear.rule_category (product_id, stage, name, position)
            SELECT pid, it.o ->> 'stage', it.o ->> 'name', coalesce((it.o ->> 'position')::int, 0)
             WHERE NOT EXISTS (SELECT 1 FROM iclear.rule_category x
                                WHERE x.product_id = pid AND x.stage = it.o ->> 'stage' AND x.name = it.o ->> 'name');
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- global rules by key, updated in place: their stored credentials stay
    SELECT coalesce(jsonb_object_agg(k.key, k.id), '{}') INTO gmap FROM (
        SELECT x.id, CASE WHEN count(*) OVER (PARTITION BY x.service) = 1 THEN x.service
                          ELSE x.service || ':' || row_number() OVER (PARTITION BY x.service ORDER BY x.position, x.id)
                     END AS key
          FROM iclear.global_rule x WHERE x.product_id = pid) k;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_rules') LOOP
        path := format('global_rules[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['key', 'service', 'status', 'execution', 'lookup_percent', 'position', 'run_time', 'run_on',
                  'run_on_silent_ping', 'no_response', 'settings', 'daily_limit', 'monthly_limit'], ARRAY['service']);
        cfg := coalesce(it.o -> 'settings', '{}');
        IF cfg -> 'add_to_list' ? 'lists' THEN
            cfg := jsonb_set(cfg, '{add_to_list}', ((cfg -> 'add_to_list') - 'lists') || jsonb_build_object('list_ids',
                       iclear.config_list_ids(cfg -> 'add_to_list' -> 'lists', path || '.settings.add_to_list.lists')));
        END IF;
        BEGIN
            g := jsonb_populate_record(NULL::iclear.global_rule, it.o - 'settings' - 'key');
            rid := (gmap ->> coalesce(it.o ->> 'key', it.o ->> 'service'))::bigint;
            IF rid IS NULL THEN
                INSERT INTO iclear.global_rule (product_id, service, status, execution, lookup_percent, position, run_time,
                                                run_on, run_on_silent_ping, no_response, settings, daily_limit, monthly_limit)
                VALUES (pid, g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                RETURNING id INTO rid;
                gmap := gmap || jsonb_build_object(coalesce(it.o ->> 'key', it.o ->> 'service'), rid);
            ELSE
                UPDATE iclear.global_rule x
                   SET (service, status, execution, lookup_percent, position, run_time, run_on, run_on_silent_ping,
                        no_response, settings, daily_limit, monthly_limit)
                     = (g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                 WHERE x.id = rid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- rules by name: their columns first, so conditions can name any of them
    SELECT coalesce(jsonb_object_agg(x.name, x.id), '{}') INTO rmap FROM iclear.rule x WHERE x.product_id = pid;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        path := format('rules[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['name', 'stage', 'status', 'position', 'category', 'publisher_id', 'channel_id', 'source_id',
                  'all_new', 'all_new_since', 'publisher_ids', 'exclude_publisher_ids', 'channel_ids',
                  'exclude_channel_ids', 'source_ids', 'exclude_source_ids', 'logical_operator', 'method',
                  'daily_limit', 'monthly_limit', 'per_source_limit', 'conditions', 'actions'], ARRAY['name']);
        BEGIN
            r := jsonb_populate_record(NULL::iclear.rule, it.o - 'category' - 'conditions' - 'actions');
            r.stage := coalesce(r.stage, 'processing');
            cat := NULL;
            IF it.o ? 'category' THEN
                SELECT x.id INTO cat FROM iclear.rule_category x
                 WHERE x.product_id = pid AND x.stage = r.stage AND x.name = it.o ->> 'category';
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no % category is named %', r.stage, quote_literal(it.o ->> 'category');
                END IF;
            END IF;
            rid := (rmap ->> r.name)::bigint;
            IF rid IS NULL THEN
                INSERT INTO iclear.rule (product_id, name, stage) VALUES (pid, r.name, r.stage) RETURNING id INTO rid;
                rmap := rmap || jsonb_build_object(r.name, rid);
            END IF;
            UPDATE iclear.rule x
               SET (stage, status, position, category_id, publisher_id, channel_id, source_id, all_new, all_new_since,
                    publisher_ids, exclude_publisher_ids, channel_ids, exclude_channel_ids, source_ids,
                    exclude_source_ids, logical_operator, method, daily_limit, monthly_limit, per_source_limit)
                 = (r.stage, coalesce(r.status, 'active'), coalesce(r.position, 0), cat, r.publisher_id, r.channel_id,
                    r.source_id, coalesce(r.all_new, false), r.all_new_since,
                    coalesce(r.publisher_ids, '{}'), coalesce(r.exclude_publisher_ids, '{}'),
                    coalesce(r.channel_ids, '{}'), coalesce(r.exclude_channel_ids, '{}'),
                    coalesce(r.source_ids, '{}'), coalesce(r.exclude_source_ids, '{}'),
                    coalesce(r.logical_operator, 'and'), r.method, r.daily_limit, r.monthly_limit, r.per_source_limit)
             WHERE x.id = rid;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.rule x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'rules') y);
    DELETE FROM iclear.global_rule x WHERE x.product_id = pid
       AND x.id NOT IN (SELECT (gmap ->> coalesce(y.o ->> 'key', y.o ->> 'service'))::bigint
                          FROM iclear.config_items(doc, 'global_rules') y);
    DELETE FROM iclear.rule_category x WHERE x.product_id = pid
       AND (x.stage, x.name) NOT IN (SELECT y.o ->> 'stage', y.o ->> 'name' FROM iclear.config_items(doc, 'categories') y);

    -- each rule's conditions and actions, replaced where they differ
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        IF before IS NOT NULL AND EXISTS (
            SELECT 1 FROM jsonb_array_elements(before -> 'rules') b
             WHERE b ->> 'name' = it.o ->> 'name'
               AND b -> 'conditions' = coalesce(it.o -> 'conditions', '[]')
               AND b -> 'actions' = coalesce(it.o -> 'actions', '[]')) THEN
            CONTINUE;
        END IF;
        rid := (rmap ->> (it.o ->> 'name'))::bigint;
        DELETE FROM iclear.rule_condition WHERE rule_id = rid;
        DELETE FROM iclear.rule_action WHERE rule_id = rid;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'conditions') LOOP
            path := format('rules[%s].conditions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['category', 'parameter', 'operator', 'value'], ARRAY['category', 'operator']);
            param := c.o ->> 'parameter';
            IF c.o ->> 'category' = 'rule' THEN
                param := rmap ->> param;
                IF param IS NULL THEN
                    RAISE EXCEPTION 'iclear.import_config: %.parameter: no rule of % is named %', path,
                        quote_literal(pname), quote_literal(c.o ->> 'parameter') USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
            BEGIN
                INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
                VALUES (rid, c.o ->> 'category', coalesce(param, ''), c.o ->> 'operator', coalesce(c.o -> 'value', 'null'));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'actions') LOOP
            path := format('rules[%s].actions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['action', 'config', 'status', 'position'], ARRAY['action']);
            cfg := coalesce(c.o -> 'config', '{}');
            IF cfg ? 'lists' THEN
                cfg := (cfg - 'lists') || jsonb_build_object('list_ids', iclear.config_list_ids(cfg -> 'lists', path || '.config.lists'));
            END IF;
            IF cfg ? 'global_rule' THEN
                IF NOT gmap ? (cfg ->> 'global_rule') THEN
                    RAISE EXCEPTION 'iclear.import_config: %.config.global_rule: % has no global rule %', path,
                        quote_literal(pname), quote_literal(cfg ->> 'global_rule') USING ERRCODE = 'invalid_parameter_value';
                END IF;
                cfg := (cfg - 'global_rule') || jsonb_build_object('global_rule_id', (gmap ->> (cfg ->> 'global_rule'))::bigint);
            END IF;
            BEGIN
                INSERT INTO iclear.rule_action (rule_id, action, config, status, position)
                VALUES (rid, c.o ->> 'action', cfg, coalesce(c.o ->> 'status', 'active'), coalesce((c.o ->> 'position')::int, 0));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
    END LOOP;

    -- product fields by name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'fields') LOOP
        path := format('fields[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'type', 'required', 'min', 'max', 'pattern', 'allowed'],
                                   ARRAY['name', 'type']);
        BEGIN
            INSERT INTO iclear.product_field (product_id, name, type, required, min, max, pattern, allowed)
            SELECT pid, f.name, f.type, coalesce(f.required, false), f.min, f.max, f.pattern, f.allowed
              FROM jsonb_populate_record(NULL::iclear.product_field, it.o) f
            ON CONFLICT (product_id, name) DO UPDATE
               SET type = EXCLUDED.type, required = EXCLUDED.required, min = EXCLUDED.min, max = EXCLUDED.max,
                   pattern = EXCLUDED.pattern, allowed = EXCLUDED.allowed
             WHERE (product_field.type, product_field.required, product_field.min, product_field.max,
                    product_field.pattern, product_field.allowed)
                   IS DISTINCT FROM (EXCLUDED.type, EXCLUDED.required, EXCLUDED.min, EXCLUDED.max,
                                     EXCLUDED.pattern, EXCLUDED.allowed);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.product_field x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'fields') y);

    -- global caps (shared by the products of a service): set, never removed here
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_caps') LOOP
        path := format('global_caps[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['service', 'period', 'start_day', 'cap_limit'],
                                   ARRAY['service', 'period', 'cap_limit']);
        BEGIN
            INSERT INTO iclear.global_cap (service, period, start_day, cap_limit)
            VALUES (it.o ->> 'service', it.o ->> 'period', coalesce((it.o ->> 'start_day')::int, 1), (it.o ->> 'cap_limit')::bigint)
            ON CONFLICT (service, period) DO UPDATE SET start_day = EXCLUDED.start_day, cap_limit = EXCLUDED.cap_limit
             WHERE (global_cap.start_day, global_cap.cap_limit) IS DISTINCT FROM (EXCLUDED.start_day, EXCLUDED.cap_limit);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
END $$;

-- What changed between two exports: the objects added, changed and removed,
-- each as "<section> <name>".
CREATE FUNCTION iclear.config_plan(before jsonb, after jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH sections(section, id) AS (VALUES ('categories', '{stage,name}'), ('rules', '{name}'),
                                          ('global_rules', '{key}'), ('global_caps', '{service,period}'),
                                          ('fields', '{name}'), ('lists', '{name}')),
    b AS (SELECT s.section, (SELECT string_agg(o ->> k, '/') FROM unnest(s.id::text[]) k) AS name, o
            FROM sections s, jsonb_array_elements(coalesce(before -> s.section, '[]')) o),
    a AS (SELECT s.section, (SELECT string_agg(o ->> k, '/') FROM unnest(s.id::text[]) k) AS name, o
            FROM sections s, jsonb_array_elements(coalesce(after -> s.section, '[]')) o),
    d AS (SELECT coalesce(a.section, b.section) AS section, coalesce(a.name, b.name) AS name,
                 CASE WHEN b.o IS NULL THEN 'added' WHEN a.o IS NULL THEN 'removed'
                      WHEN a.o <> b.o THEN 'changed' END AS what
            FROM a FULL JOIN b ON a.section = b.section AND a.name = b.name
          UNION ALL
          SELECT 'product', after #>> '{product,name}',
                 CASE WHEN before IS NULL THEN 'added'
                      WHEN before -> 'product' <> after -> 'product' THEN 'changed' END)
    SELECT jsonb_build_object(
        'product', after #>> '{product,name}',
        'added', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'added'), '[]'),
        'changed', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'changed'), '[]'),
        'removed', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'removed'), '[]'))
$$;

-- Import a document of export_config: returns the plan; with dry_run false,
-- applies it (in the caller's transaction: all of it or, on any error,
-- none). A dry run applies it in a subtransaction, so every validation of
-- the configuration tables runs, and rolls it back.
CREATE FUNCTION iclear.import_config(config jsonb, dry_run boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pname  text := config #>> '{product,name}';
    before jsonb;
    plan   jsonb;
BEGIN
    IF pname IS NOT NULL AND EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    BEGIN
        PERFORM iclear.apply_config(config);
        plan := iclear.config_plan(before, iclear.export_config(pname))
                || jsonb_build_object('dry_run', dry_run);
        IF dry_run THEN
            RAISE EXCEPTION USING ERRCODE = 'ICDRY', MESSAGE = 'iclear.import_config: dry run';
        END IF;
    EXCEPTION WHEN SQLSTATE 'ICDRY' THEN
        NULL; -- rolled back: the plan stays
    END;
    RETURN plan;
END $$;

-- A pause waits for an SMS: without a subscribed sms service no code would
-- ever be sent. (A restore loads `service` before `rule_action`: the foreign
-- keys of global_rule and global_cap order it first.)
CREATE FUNCTION iclear.validate_pause_action() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iclear.service WHERE name = 'sms' AND subscription = 'enabled') THEN
        RAISE EXCEPTION 'invalid setting rule_action.action: pause_for_verification needs the sms service subscribed'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'UPDATE iclear.service SET subscription = ''enabled'' WHERE name = ''sms'' (an admin sets its endpoint)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER validate_pause BEFORE INSERT OR UPDATE ON iclear.rule_action
    FOR EACH ROW WHEN (NEW.action = 'pause_for_verification')
    EXECUTE FUNCTION iclear.validate_pause_action();

-- ------------------------------------------------------------------ roles
-- The application role that inserts leads needs INSERT on its own table
-- (and EXECUTE on iclear_process where it calls it): processing runs with
-- the extension owner's rights. The roles (SECURITY.md):
--   iclear_admin     everything, including credentials and endpoints
--   iclear_operator  rules, lists, products, caps; processes leads; logs
--   iclear_reader    the reporting views
--   iclear_verifier  records and confirms verifications (e.g. a call
--                    centre's SMS desk) and reads nothing else
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['iclear_admin', 'iclear_operator', 'iclear_reader', 'iclear_verifier'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;
GRANT iclear_reader TO iclear_operator;
GRANT iclear_operator, iclear_verifier TO iclear_admin;

-- Processing runs as the owner: whoever inserts, the trigger and the
-- entry points read the configuration and write the logs.
ALTER FUNCTION iclear.lead_trigger() SECURITY DEFINER;
ALTER FUNCTION iclear.process(jsonb) SECURITY DEFINER;
ALTER FUNCTION iclear.process_redirect(text, jsonb) SECURITY DEFINER;
ALTER FUNCTION public.iclear_process(jsonb) SECURITY DEFINER;
ALTER FUNCTION iclear.bump_config_version() SECURITY DEFINER;
ALTER FUNCTION iclear.retry_failed_jobs() SECURITY DEFINER;
ALTER FUNCTION iclear.run_worker_once(integer) SECURITY DEFINER;
-- (a backtest reads the configuration as processing does, credentials
-- included, though it never sends a request; granted to operators)
ALTER FUNCTION iclear.backtest(text, timestamptz, timestamptz, jsonb) SECURITY DEFINER;

-- Nothing is PUBLIC; each role gets what its name says.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA iclear FROM PUBLIC;
REVOKE ALL ON FUNCTION public.iclear_process(jsonb) FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA iclear FROM PUBLIC;
GRANT USAGE ON SCHEMA iclear TO iclear_reader, iclear_verifier;
-- (functions a view calls are checked against the reader)
GRANT SELECT ON iclear.full_log, iclear.lead_log, iclear.pre_screen_reject_log, iclear.redirect_log,
                iclear.health, iclear.service_usage, iclear.cap_status, iclear.counter,
                iclear.shadow_report, iclear.rule_quality
    TO iclear_reader;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON iclear.product, iclear.source, iclear.global_rule, iclear.global_cap, iclear.rule_category,
       iclear.rule, iclear.rule_condition, iclear.rule_action, iclear.list, iclear.list_product,
       iclear.list_entry, iclear.attachment, iclear.product_field
    TO iclear_operator;
GRANT SELECT ON iclear.service, iclear.decision, iclear.filter_log, iclear.job, iclear.cap_use, iclear.paused_lead,
                iclear.lead_feedback, iclear.config_audit,
                iclear.counter_total, iclear.spent_request, iclear.consent_evidence, iclear.config_version
    TO iclear_operator;
GRANT UPDATE (subscription, cost) ON iclear.service TO iclear_operator;
GRANT INSERT ON iclear.lead_feedback, iclear.config_audit TO iclear_operator;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA iclear TO iclear_operator;
GRANT EXECUTE ON FUNCTION iclear.cap_period_start(text, integer, timestamptz),
                          iclear.next_cap_reset(text, integer, timestamptz), iclear.version()
    TO iclear_reader;
GRANT EXECUTE ON FUNCTION public.iclear_process(jsonb), iclear.process(jsonb),
                          iclear.process_redirect(text, jsonb), iclear.lead_trigger(),
                          iclear.attach(regclass, text, jsonb), iclear.detach(regclass),
                          iclear.lead_info(text), iclear.retry_failed_jobs(),
                          -- what the configuration tables' checks and triggers call
                          iclear.check_condition(text, text, text, jsonb), iclear.check_action(text, text, jsonb),
                          iclear.action_list_ids(text, jsonb), iclear.check_attach_options(jsonb),
                          iclear.check_global_rule_settings(text, jsonb), iclear.check_global_rule(bigint, text, jsonb),
                          iclear.check_product_field(jsonb),
                          iclear.credential_keys(), iclear.config_changed(), iclear.normalize_phone(text),
                          iclear.feedback(text, text, text), iclear.config_history(text),
                          iclear.export_config(text), iclear.import_config(jsonb, boolean),
                          iclear.backtest(text, timestamptz, timestamptz, jsonb),
                          iclear.apply_config(jsonb), iclear.config_plan(jsonb, jsonb),
                          iclear.config_keys(jsonb, text, text[], text[]), iclear.config_items(jsonb, text),
                          iclear.config_list_ids(jsonb, text)
    TO iclear_operator;
GRANT SELECT, INSERT, UPDATE, DELETE ON iclear.service, iclear.global_rule_credential TO iclear_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA iclear TO iclear_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA iclear TO iclear_admin;
REVOKE EXECUTE ON FUNCTION iclear.use_verification_hub(text) FROM iclear_admin;
-- resuming leads without a code is nobody's to call
REVOKE EXECUTE ON FUNCTION iclear.resume_paused_leads(text, text) FROM iclear_admin;
GRANT EXECUTE ON FUNCTION iclear.record_verification(text, jsonb), iclear.record_sms_verification(text, text, text),
                          iclear.confirm_sms(text, text, text), iclear.normalize_phone(text)
    TO iclear_verifier;

-- What each table, view and function is, for \d+ and \df+ (the README says
-- more; pg_test every_object_has_a_comment keeps the list whole).
COMMENT ON TABLE iclear.attachment IS 'The tables attached with attach (informational).';
COMMENT ON TABLE iclear.cap_use IS 'The durable record of cap slots: scope (rule, global_rule, global), ref_id (the rule, global rule or global_cap), period (daily, monthly, source), bucket (the period''s first day, or the source id), used, at.';
COMMENT ON TABLE iclear.config_audit IS 'Every INSERT, UPDATE and DELETE of a configuration table, and each TRUNCATE: at, role (the role that made the change, after SET ROLE too), table_name, op, row_id (the row''s key as text), old, new (the rows as JSON; credentials shown as ***).';
COMMENT ON TABLE iclear.config_version IS 'The configuration version; backends reload their cached configuration when it moves.';
COMMENT ON TABLE iclear.consent_evidence IS 'Consent-claim evidence (iClaim results: session_id, outcome, expires_at, response), kept apart from the log for iclear.evidence_retention_days.';
COMMENT ON TABLE iclear.counter_delta IS 'Increments of increment_counter, appended by leads without a lock; folded into counter_total.';
COMMENT ON TABLE iclear.counter_total IS 'Folded counter values (fold_counters()); the counter view adds the deltas not yet folded.';
COMMENT ON TABLE iclear.decision IS 'One row per processed lead: the envelope it came with and the decision it got; partitioned by month.';
COMMENT ON TABLE iclear.decision_default IS 'The DEFAULT partition of decision: rows no monthly partition covers (iclear.maintain() moves them out).';
COMMENT ON TABLE iclear.filter_log IS 'One row per step of a lead: matched rules, list rejects, cap skips, service answers; partitioned by month.';
COMMENT ON TABLE iclear.filter_log_default IS 'The DEFAULT partition of filter_log: rows no monthly partition covers (iclear.maintain() moves them out).';
COMMENT ON TABLE iclear.global_cap IS 'A global cap of a service: daily or monthly (from start_day), cap_limit.';
COMMENT ON TABLE iclear.global_rule IS 'A Global Rule of a product: a third-party service with its execution, sampling, run time, no-response action, settings (no credentials) and caps.';
COMMENT ON TABLE iclear.global_rule_credential IS 'The credentials of a global rule (api_key, api_token, account_id), moved out of its settings; readable by iclear_admin alone.';
COMMENT ON TABLE iclear.job IS 'The async queue: kind (lookup), lead_id, payload (global rule, looked-up value, the fields it needs; never credentials), status (queued, running, done, failed), attempts, run_after, leased_until, last_error.';
COMMENT ON TABLE iclear.lead_feedback IS 'Buyers'' reports (iclear.feedback()): lead_id, product_id, kind, reason, reported_at, reported_by.';
COMMENT ON TABLE iclear.list IS 'A PL (allow) or DNPL (deny) list on one lead field.';
COMMENT ON TABLE iclear.list_entry IS 'A value on a list, trimmed and lowercased (a value over 512 bytes as its sha256 digest).';
COMMENT ON TABLE iclear.list_product IS 'A list checked for every lead of a product (Product PL/DNPL).';
COMMENT ON TABLE iclear.lookup_cache IS 'Service answers by (service, lookup_key) with fetched_at; read by "Use cache data not older than" and "Lookup only in the local DB".';
COMMENT ON TABLE iclear.paused_lead IS 'Leads paused for SMS verification until their phone is confirmed or their code expires: lead_id, product_id, phone, paused_at, expires_at, lead_table, id_column (the attached row the final decision goes to).';
COMMENT ON TABLE iclear.product IS 'A product: its name (unique) and kind (post or pingpost).';
COMMENT ON TABLE iclear.product_field IS 'A field definition of a product (type, required, min, max, pattern, allowed), validated after pre-validation.';
COMMENT ON TABLE iclear.rule IS 'An Advanced Rule of a product: its stage, status (active, paused or shadow), position, category, targeting, logic and caps.';
COMMENT ON TABLE iclear.rule_action IS 'An action of a rule: its name, config, status and position.';
COMMENT ON TABLE iclear.rule_category IS 'A category of rules of one product and stage; categories run in position order.';
COMMENT ON TABLE iclear.rule_condition IS 'A condition of a rule: category, parameter, operator and value.';
COMMENT ON TABLE iclear.sent_mark IS 'One row per sync request about to be sent, written in the lead''s transaction: after a crash it tells the worker whether that lead committed (the transaction id in the request''s file may by then belong to another transaction).';
COMMENT ON TABLE iclear.service IS 'A service with its subscription (enabled or disabled), cost and endpoint (admin-only).';
COMMENT ON TABLE iclear.sms_verification_local IS 'The SMS verification history of this database (codes pending, verified or expired); read through the sms_verification view.';
COMMENT ON TABLE iclear.source IS 'Id (the lead''s source id), publisher_id, channel_id, created_at (read by "All New" targeting: the lead store''s date of the source).';
COMMENT ON TABLE iclear.spent_request IS 'Requests sent (and billed) for leads whose transaction rolled back: lead_id, product_id, global_rule_id, service, cost, request, response, recorded_at.';
COMMENT ON TABLE iclear.verification_history_local IS 'The verification signatures of this database; read through the verification_history view.';
COMMENT ON VIEW iclear.cap_status IS 'Every global cap, global-rule cap and rule cap (daily, monthly, per source): scope (global, global_rule, rule), subject, rule_id, period, start_day, cap_limit, current_value, next_reset, and more (README).';
COMMENT ON VIEW iclear.counter IS 'Counters of increment_counter: name, key, value, updated_at, the sum of counter_total (folded) and counter_delta (increments appended by leads, folded by the worker).';
COMMENT ON VIEW iclear.full_log IS 'Every step of every lead, with each lead''s final decision (the Full iClear Log).';
COMMENT ON VIEW iclear.health IS 'Version, worker_alive (a backend of type iclear worker), queue_depth, oldest_queued_at, failed_jobs, rows_in_default_partitions (should be 0 after maintain()), config_version.';
COMMENT ON VIEW iclear.lead_log IS 'Each third-party service response per lead, with origin (sync, async, on-demand action, redirect) and source (api, cache, local): the iClear Log.';
COMMENT ON VIEW iclear.pre_screen_reject_log IS 'Leads rejected before processing: by a pre-validation rule or by validation (kind: rule or validation; rule_id/rule_name are the field''s for validation), with the reason and the envelope.';
COMMENT ON VIEW iclear.redirect_log IS 'Rules run on redirect (process_redirect).';
COMMENT ON VIEW iclear.rule_quality IS 'Per product, rule and UTC month (of the lead''s first decision): shadow, matched, rejected, returns, conversions, chargebacks, complaints, return_rate, conversion_rate, and the product''s baseline_return_rate and baseline_conversion_rate that month.';
COMMENT ON VIEW iclear.service_usage IS 'Per UTC day, product and service: requests (times the service was asked for a lead: answered from the API, cache or local DB, no response, or cap reached; an async lookup counts once), lookups (API), cache_hits, local_hits, no_response, rejects, cost.';
COMMENT ON VIEW iclear.shadow_report IS 'Per UTC day and shadow rule: product, rule_id, rule, status (now), matched (leads), would_reject, would_pause, would_change (by its actions'' kinds), and more (README).';
COMMENT ON VIEW iclear.sms_verification IS 'The SMS verification history: this database''s, or a hub''s (use_verification_hub()).';
COMMENT ON VIEW iclear.verification_history IS 'The verification signatures: this database''s, or a hub''s (use_verification_hub()).';
COMMENT ON FUNCTION iclear.action_list_ids(text,jsonb) IS 'Internal: the list ids an action config names (for the validation trigger).';
COMMENT ON FUNCTION iclear.apply_config(jsonb) IS 'Internal (import_config): makes a product equal an export_config document.';
COMMENT ON FUNCTION iclear.attach(regclass,text,jsonb) IS 'Installs a BEFORE INSERT row trigger iclear_process on the table (see Attaching).';
COMMENT ON FUNCTION iclear.audit_config() IS 'The audit trigger of the configuration tables (config_audit).';
COMMENT ON FUNCTION iclear.backtest(text,timestamp with time zone,timestamp with time zone,jsonb) IS 'Replays the product''s leads first processed in since, until) against its configuration with changes applied, and says what would have been decided otherwise.';
COMMENT ON FUNCTION iclear.bump_config_version() IS 'Trigger: moves the configuration version, so every backend reloads its cached configuration.';
COMMENT ON FUNCTION iclear.cap_period_start(text,integer,timestamp with time zone) IS 'When the current period of such a cap began (its last reset at or before at).';
COMMENT ON FUNCTION iclear.check_action(text,text,jsonb) IS 'Refuses an invalid rule action for a stage, naming the setting (what the validation trigger runs).';
COMMENT ON FUNCTION iclear.check_attach_options(jsonb) IS 'Refuses invalid attach options, naming the key.';
COMMENT ON FUNCTION iclear.check_condition(text,text,text,jsonb) IS 'Refuses an invalid rule condition, naming the setting (what the validation trigger runs).';
COMMENT ON FUNCTION iclear.check_global_rule(bigint,text,jsonb) IS 'Internal: the global rule check, with its stored credentials.';
COMMENT ON FUNCTION iclear.check_global_rule_settings(text,jsonb) IS 'Refuses invalid global rule settings for a service, naming the setting.';
COMMENT ON FUNCTION iclear.check_product_field(jsonb) IS 'Refuses an invalid product_field row, naming the column (the engine''s parser).';
COMMENT ON FUNCTION iclear.config_changed() IS 'Internal: tells every backend that the configuration changed.';
COMMENT ON FUNCTION iclear.config_history(text) IS 'A product''s configuration changes in order, from config_audit: the product, its rules with their conditions and actions, categories, global rules and their (masked) credentials, product fields and list links, deleted rows included.';
COMMENT ON FUNCTION iclear.config_items(jsonb,text) IS 'Internal (import_config): the elements of a document section, with their index.';
COMMENT ON FUNCTION iclear.config_keys(jsonb,text,text[],text[]) IS 'Internal (import_config): refuses an object with an unknown or missing key, naming its path.';
COMMENT ON FUNCTION iclear.config_list_ids(jsonb,text) IS 'Internal (import_config): list names to ids.';
COMMENT ON FUNCTION iclear.config_plan(jsonb,jsonb) IS 'Internal (import_config): the objects added, changed and removed between two exports.';
COMMENT ON FUNCTION iclear.confirm_sms(text,text,text) IS 'Completes a pending pause_for_verification code: true when it matches and has not expired, and then the leads of the product paused on that phone get their final decision (Pause).';
COMMENT ON FUNCTION iclear.credential_keys() IS 'Internal: the settings keys kept as credentials.';
COMMENT ON FUNCTION iclear.detach(regclass) IS 'Removes the trigger.';
COMMENT ON FUNCTION iclear.export_config(text) IS 'The whole product as one document: categories, rules with their conditions and actions, global rules (without credentials), the global caps of its services, product fields, and the lists it uses (definitions, not entries).';
COMMENT ON FUNCTION iclear.feedback(text,text,text) IS 'Records a buyer''s report about a processed lead: kind is return, conversion, chargeback or complaint.';
COMMENT ON FUNCTION iclear.fold_cap_uses() IS 'Folds a cap period''s cap_use rows into one (the worker runs it every round).';
COMMENT ON FUNCTION iclear.fold_counters() IS 'Folds the counter_delta rows into counter_total (the worker runs it every round).';
COMMENT ON FUNCTION iclear.import_config(jsonb,boolean) IS 'Makes the product equal the document.';
COMMENT ON FUNCTION iclear.lead_info(text) IS 'One lead: its decisions, each with envelope and full decision; every step of its log (full_log); its iClear Log (iclear_log: each service call with its service, global_rule_id, origin, outcome, source, the request as sent, credentials masked, and more (README).';
COMMENT ON FUNCTION iclear.lead_trigger() IS 'The attach trigger (Rust): processes each inserted row and writes the outcome back into it.';
COMMENT ON FUNCTION iclear.list_entry_normalize() IS 'Trigger: keeps list values trimmed and lowercased, as the engine probes them.';
COMMENT ON FUNCTION iclear.maintain(integer,integer,integer) IS 'Partitions ahead and retention: run it daily (the worker does).';
COMMENT ON FUNCTION iclear.next_cap_reset(text,integer,timestamp with time zone) IS 'When a daily or monthly cap (monthly from start_day) next resets.';
COMMENT ON FUNCTION iclear.normalize_phone(text) IS 'The phone rule of the history: digits only, a leading 1 of an 11-digit number dropped.';
COMMENT ON FUNCTION iclear.process(jsonb) IS 'Processes one lead envelope and persists the decision and the filter log in the caller''s transaction.';
COMMENT ON FUNCTION iclear.process_redirect(text,jsonb) IS 'Advanced Rules on Redirect for a processed lead.';
COMMENT ON FUNCTION iclear.record_sms_verification(text,text,text) IS 'Records a verified phone (normalised) with its code, and resumes the leads of the product paused on it.';
COMMENT ON FUNCTION iclear.record_verification(text,jsonb) IS 'Renders the product''s verification_history signature template for the lead (an envelope {"fields", "params"} or a bare fields object), stores the SHA-256 signature in the history and returns it (hex).';
COMMENT ON FUNCTION iclear.resume_paused_leads(text,text) IS 'Internal, callable by the owner only (it would resume leads without a code): finishes the leads of the product paused on a verified phone.';
COMMENT ON FUNCTION iclear.retry_failed_jobs() IS 'Queues every failed job again (attempts reset).';
COMMENT ON FUNCTION iclear.run_worker_once(integer) IS 'Drains due async jobs in the calling session: claims them (SKIP LOCKED, leased), runs the HTTP on threads, writes the results.';
COMMENT ON FUNCTION iclear.service_defaults() IS 'Trigger: a vendor''s endpoint by default; an INSERT of a listed service updates it.';
COMMENT ON FUNCTION iclear.use_verification_hub(text) IS 'Points the history views at a hub database through a postgres_fdw server; NULL points them back at this database.';
COMMENT ON FUNCTION iclear.validate_global_rule() IS 'Trigger: checks a global rule and moves its credentials out of the settings.';
COMMENT ON FUNCTION iclear.validate_pause_action() IS 'Trigger: a pause_for_verification action needs the sms service subscribed.';
COMMENT ON FUNCTION iclear.validate_product_field() IS 'Trigger: checks a product_field row.';
COMMENT ON FUNCTION iclear.validate_rule_action() IS 'Trigger: checks a rule action and the lists and global rule it names.';
COMMENT ON FUNCTION iclear.validate_rule_condition() IS 'Trigger: checks a rule condition.';
COMMENT ON FUNCTION iclear.validate_rule_stage() IS 'Trigger: checks a rule''s actions against its stage.';
COMMENT ON FUNCTION iclear.version() IS 'The installed version.';
COMMENT ON FUNCTION public.iclear_process(jsonb) IS 'The public entry point: processes one lead envelope and returns its decision, in the caller''s transaction.';

-- Every function pins its search_path (review finding 3): objects that
-- another role plants in public, or in any schema on a caller's path, are
-- never called by iclear's SQL, whoever runs it.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
               JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'iclear'
              WHERE p.proconfig IS NULL
                AND p.pronamespace IN ('iclear'::regnamespace, 'public'::regnamespace) LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END $$;
-- END since-0.4.0

-- BEGIN since-0.5.0 (objects new or changed since 0.5.0; also the tail of the
-- 0.5.0 -> 0.6.0 upgrade, made by scripts/gen-upgrade.sh)
-- ------------------------------------------------------------ whose rights
-- Processing runs as iclear_processor, a role that is not a superuser and
-- holds only what processing needs (SECURITY.md "Whose rights"): the entry
-- points are SECURITY DEFINER functions it owns, and the attach trigger
-- and the worker switch to it (src/privilege.rs). What a user can define on
-- a lead table (types, domains, defaults, constraints, triggers) runs with
-- the inserting role's rights, or the table owner's where iclear writes to
-- or probes the table; never with iclear's. Nobody is granted the role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iclear_processor') THEN
        CREATE ROLE iclear_processor NOLOGIN NOINHERIT;
    ELSIF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'iclear_processor'
                     AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role iclear_processor has attributes beyond what processing needs'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'ALTER ROLE iclear_processor NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS';
    END IF;
END $$;
GRANT USAGE ON SCHEMA iclear TO iclear_processor;
-- the configuration, credentials and endpoints, read
GRANT SELECT ON iclear.product, iclear.service, iclear.global_rule, iclear.global_rule_credential,
                iclear.global_cap, iclear.rule_category, iclear.rule, iclear.rule_condition,
                iclear.rule_action, iclear.list, iclear.list_product, iclear.product_field,
                iclear.attachment, iclear.config_version
    TO iclear_processor;
-- what a lead, a job or the worker's bookkeeping writes
GRANT SELECT, INSERT ON iclear.decision, iclear.filter_log TO iclear_processor;
GRANT SELECT, INSERT, UPDATE ON iclear.source, iclear.list_entry TO iclear_processor;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON iclear.job, iclear.lookup_cache, iclear.counter_delta, iclear.counter_total, iclear.cap_use,
       iclear.spent_request, iclear.sent_mark, iclear.paused_lead, iclear.consent_evidence,
       iclear.sms_verification_local, iclear.verification_history_local,
       iclear.sms_verification, iclear.verification_history
    TO iclear_processor;
GRANT SELECT ON iclear.counter, iclear.lead_feedback TO iclear_processor;
GRANT UPDATE ON iclear.config_version TO iclear_processor;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA iclear TO iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.process(jsonb), iclear.process_redirect(text, jsonb),
                          iclear.maintain(integer, integer, integer), iclear.fold_counters(),
                          iclear.fold_cap_uses(), iclear.normalize_phone(text), iclear.config_changed(),
                          iclear.cap_period_start(text, integer, timestamptz),
                          iclear.next_cap_reset(text, integer, timestamptz), iclear.version(),
                          iclear.check_global_rule_settings(text, jsonb), iclear.resume_paused_leads(text, text)
    TO iclear_processor;
-- the entry points: SECURITY DEFINER, owned by the processor
ALTER FUNCTION iclear.process(jsonb) OWNER TO iclear_processor;
ALTER FUNCTION iclear.process_redirect(text, jsonb) OWNER TO iclear_processor;
ALTER FUNCTION public.iclear_process(jsonb) OWNER TO iclear_processor;
ALTER FUNCTION iclear.bump_config_version() OWNER TO iclear_processor;
ALTER FUNCTION iclear.retry_failed_jobs() OWNER TO iclear_processor;
ALTER FUNCTION iclear.run_worker_once(integer) OWNER TO iclear_processor;
ALTER FUNCTION iclear.record_verification(text, jsonb) OWNER TO iclear_processor;
ALTER FUNCTION iclear.record_sms_verification(text, text, text) OWNER TO iclear_processor;
ALTER FUNCTION iclear.confirm_sms(text, text, text) OWNER TO iclear_processor;
ALTER FUNCTION iclear.check_global_rule(bigint, text, jsonb) OWNER TO iclear_processor;
-- (resuming leads without a code: only the processor, through confirm_sms
-- and record_sms_verification, calls it)
ALTER FUNCTION iclear.resume_paused_leads(text, text) OWNER TO iclear_processor;
-- the attach trigger runs as the inserting role and switches to the
-- processor for processing alone
ALTER FUNCTION iclear.lead_trigger() SECURITY INVOKER;
-- a backtest applies the changes with the caller's rights, and reads the
-- configuration (credentials included) as the processor
ALTER FUNCTION iclear.backtest(text, timestamptz, timestamptz, jsonb) SECURITY INVOKER;
-- the roles that read the trail read it with their own rights
ALTER FUNCTION iclear.config_history(text) SECURITY INVOKER;
-- Partitions are DDL on iclear's own tables, which only their owner may
-- run; maintain() touches nothing a user can define (iclear_admin runs it,
-- README "Retention and partitions").
ALTER FUNCTION iclear.maintain(integer, integer, integer) SECURITY DEFINER;

-- Attaching a table is its owner's decision: a table another role owns is
-- refused, whatever privileges on it the caller holds.
CREATE OR REPLACE FUNCTION iclear.attach(lead_table regclass, product text, options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    col text;
BEGIN
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = lead_table), 'USAGE') THEN
        RAISE EXCEPTION 'iclear.attach: permission denied: % belongs to another role', lead_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A table is attached by its owner (or a member of the owning role).';
    END IF;
    PERFORM iclear.check_attach_options(options);
    IF NOT EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = product) THEN
        RAISE EXCEPTION 'iclear.attach: unknown product "%"', product USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH col IN ARRAY ARRAY[options ->> 'fields_column', options ->> 'params_column'] LOOP
        IF col IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_attribute
             WHERE attrelid = lead_table AND attname = col AND NOT attisdropped
               AND atttypid = 'jsonb'::regtype) THEN
            RAISE EXCEPTION 'iclear.attach: option names column "%", which % has not as a jsonb column', col, lead_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    col := coalesce(options ->> 'id_column', 'id');
    IF options ? 'id_column' AND NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = lead_table AND attname = col AND NOT attisdropped) THEN
        RAISE EXCEPTION 'iclear.attach: id_column "%" is not a column of %', col, lead_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = lead_table AND tgname = 'iclear_process') THEN
        EXECUTE format('DROP TRIGGER iclear_process ON %s', lead_table);
    END IF;
    EXECUTE format('CREATE TRIGGER iclear_process BEFORE INSERT ON %s FOR EACH ROW
                    EXECUTE FUNCTION iclear.lead_trigger(%L, %L)', lead_table, product, options::text);
    INSERT INTO iclear.attachment (lead_table, product, options) VALUES (lead_table, product, options)
    ON CONFLICT ON CONSTRAINT attachment_pkey
    DO UPDATE SET product = EXCLUDED.product, options = EXCLUDED.options, created_at = now();
END $$;

-- The audit trail is written by iclear alone (SECURITY.md "The audit
-- trail"): the trigger (in Rust) takes the role that made the change and
-- writes through audit_write, which only the trail's owner may call.
CREATE FUNCTION iclear.audit_write(actor text, table_name text, op text, o jsonb, n jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    IF op = 'TRUNCATE' THEN
        INSERT INTO iclear.config_audit (table_name, op, role) VALUES (audit_write.table_name, op, actor);
        RETURN;
    END IF;
    IF audit_write.table_name = 'global_rule_credential' THEN
        o := o || jsonb_build_object('credentials',
                     (SELECT coalesce(jsonb_object_agg(c.key, '***'), '{}') FROM jsonb_each(o -> 'credentials') c));
        n := n || jsonb_build_object('credentials',
                     (SELECT coalesce(jsonb_object_agg(c.key, '***'), '{}') FROM jsonb_each(n -> 'credentials') c));
    END IF;
    IF audit_write.table_name = 'service_secret' THEN
        o := o || jsonb_build_object('endpoint', iclear.shown_endpoint(o ->> 'endpoint'));
        n := n || jsonb_build_object('endpoint', iclear.shown_endpoint(n ->> 'endpoint'));
    END IF;
    IF op = 'UPDATE' AND o = n THEN
        RETURN; -- nothing changed
    END IF;
    k := CASE audit_write.table_name
           WHEN 'service' THEN coalesce(n, o) ->> 'name'
           WHEN 'service_secret' THEN coalesce(n, o) ->> 'service'
           WHEN 'attachment' THEN coalesce(n, o) ->> 'lead_table'
           WHEN 'global_rule_credential' THEN coalesce(n, o) ->> 'global_rule_id'
           WHEN 'list_product' THEN (coalesce(n, o) ->> 'list_id') || ':' || (coalesce(n, o) ->> 'product_id')
           ELSE coalesce(n, o) ->> 'id' END;
    INSERT INTO iclear.config_audit (table_name, op, row_id, old, new, role)
    VALUES (audit_write.table_name, op, k, o, n, actor);
END $$;
REVOKE ALL ON FUNCTION iclear.audit_write(text, text, text, jsonb, jsonb) FROM PUBLIC;
CREATE OR REPLACE FUNCTION iclear.audit_config() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'iclear_audit_trigger';
REVOKE ALL ON FUNCTION iclear.audit_config() FROM PUBLIC;
-- operators read the trail; only iclear writes it
REVOKE INSERT ON iclear.config_audit FROM iclear_operator;

-- Secrets never sit in a shown endpoint (SECURITY.md "Secrets"): an endpoint
-- saved with a user and password or query values keeps the whole URL in
-- service_secret (admin-only) and shows it masked in service.endpoint, and
-- so in config_audit and the logs; processing calls the whole URL. The
-- endpoint is also judged by the egress policy (iclear.allowed_endpoints).
-- It runs after service_defaults (trigger names fire in order).
CREATE FUNCTION iclear.service_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    shown text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.endpoint IS NOT DISTINCT FROM OLD.endpoint THEN
        RETURN NEW;  -- kept as shown: its secret stays
    END IF;
    IF NEW.endpoint IS NULL THEN
        DELETE FROM iclear.service_secret s WHERE s.service = NEW.name;
        RETURN NEW;
    END IF;
    IF strpos(NEW.endpoint, '***') > 0 THEN
        RAISE EXCEPTION 'invalid setting service.endpoint: % is shown masked; set the whole URL', NEW.endpoint
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM iclear.check_endpoint(NEW.endpoint);
    shown := iclear.shown_endpoint(NEW.endpoint);
    IF shown <> NEW.endpoint THEN
        INSERT INTO iclear.service_secret AS s (service, endpoint) VALUES (NEW.name, NEW.endpoint)
        ON CONFLICT (service) DO UPDATE SET endpoint = EXCLUDED.endpoint;
        NEW.endpoint := shown;
    ELSE
        DELETE FROM iclear.service_secret s WHERE s.service = NEW.name;
    END IF;
    RETURN NEW;
END $$;
-- endpoints saved before 0.6.0 with a secret in them move out
INSERT INTO iclear.service_secret (service, endpoint)
SELECT s.name, s.endpoint FROM iclear.service s
 WHERE s.endpoint IS NOT NULL AND iclear.shown_endpoint(s.endpoint) <> s.endpoint
ON CONFLICT (service) DO NOTHING;
UPDATE iclear.service s SET endpoint = iclear.shown_endpoint(s.endpoint)
 WHERE s.endpoint IS NOT NULL AND iclear.shown_endpoint(s.endpoint) <> s.endpoint;
CREATE TRIGGER service_endpoint BEFORE INSERT OR UPDATE OF endpoint ON iclear.service
    FOR EACH ROW EXECUTE FUNCTION iclear.service_endpoint();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON iclear.service_secret
    FOR EACH ROW EXECUTE FUNCTION iclear.audit_config();
CREATE TRIGGER audit_truncate AFTER TRUNCATE ON iclear.service_secret
    FOR EACH STATEMENT EXECUTE FUNCTION iclear.audit_config();
GRANT SELECT, INSERT, UPDATE, DELETE ON iclear.service_secret TO iclear_admin;
GRANT SELECT ON iclear.service_secret TO iclear_processor;
COMMENT ON TABLE iclear.service_secret IS 'The whole endpoint of a service whose URL carries a secret (a user and password, query values); readable by iclear_admin alone. service.endpoint shows it masked.';
COMMENT ON FUNCTION iclear.service_endpoint() IS 'Trigger: checks a service endpoint against the egress policy and keeps its secret parts in service_secret.';
COMMENT ON FUNCTION iclear.check_endpoint(text) IS 'Refuses an endpoint that is not an http(s) URL or that iclear.allowed_endpoints does not allow, naming the setting.';
COMMENT ON FUNCTION iclear.shown_endpoint(text) IS 'An endpoint as iclear shows, logs and audits it: user, password and query values masked.';

-- SMS codes (SECURITY.md "SMS codes"): the history keeps a keyed digest of
-- each code; a phone gets at most iclear.sms_max_sends codes and
-- iclear.sms_max_failed wrong tries per iclear.sms_window (counted in shared
-- memory, so a wrong try counts even when the caller rolls back).
CREATE FUNCTION iclear.sms_code_digest(product text, phone text, code text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(k.key || convert_to($1 || ':' || $2 || ':' || $3, 'UTF8')), 'hex')
      FROM iclear.sms_key k ORDER BY k.made_at, k.key LIMIT 1
$$;
-- codes kept before 0.6.0: the history's become digests; a code whose SMS is
-- still to be sent waits in the outbox
INSERT INTO iclear.sms_outbox (job_id, code)
SELECT DISTINCT ON (j.id) j.id, v.code
  FROM iclear.job j
  JOIN iclear.sms_verification_local v
    ON v.product = j.payload ->> 'product' AND v.phone = j.payload ->> 'phone' AND v.status = 'pending'
 WHERE j.kind = 'sms' AND j.status IN ('queued', 'running')
 ORDER BY j.id, v.created_at DESC
ON CONFLICT (job_id) DO NOTHING;
UPDATE iclear.sms_verification_local
   SET code = iclear.sms_code_digest(product, phone, code)
 WHERE code !~ '^[0-9a-f]{64}$';

CREATE OR REPLACE FUNCTION iclear.record_sms_verification(product text, phone text, code text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p text := iclear.normalize_phone(phone);
BEGIN
    IF p IS NULL THEN
        RAISE EXCEPTION 'iclear.record_sms_verification: phone % has no digits', phone
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(code), '') = '' THEN
        RAISE EXCEPTION 'iclear.record_sms_verification: code must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iclear.sms_verification (product, phone, code, status, attempts, created_at, verified_at)
    VALUES (record_sms_verification.product, p,
            iclear.sms_code_digest(record_sms_verification.product, p, btrim(record_sms_verification.code)),
            'verified', 0, now(), now());
    PERFORM iclear.resume_paused_leads(record_sms_verification.product, p);
END $$;

-- Complete a pending SMS verification (pause_for_verification). A wrong code
-- counts an attempt of the code, and of the phone's window (which a
-- rollback does not take back); at iclear.sms_max_attempts the code is dead,
-- at iclear.sms_max_failed the phone cannot be confirmed until the window
-- has passed. A confirmed code resumes the leads of the product paused on
-- the phone (iclear.paused_lead).
CREATE OR REPLACE FUNCTION iclear.confirm_sms(product text, phone text, code text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p        text := iclear.normalize_phone(confirm_sms.phone);
    max_try  integer;
    r        record;
BEGIN
    PERFORM iclear.version();  -- loads the library, which defines the GUCs
    max_try := coalesce(nullif(current_setting('iclear.sms_max_attempts', true), '')::int, 5);
    IF p IS NULL OR iclear.sms_locked_out(confirm_sms.product, p) THEN
        RETURN false;
    END IF;
    SELECT s.code, s.attempts, s.expires_at INTO r FROM iclear.sms_verification s
     WHERE s.product = confirm_sms.product AND s.phone = p AND s.status = 'pending'
     ORDER BY s.created_at DESC LIMIT 1 FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM iclear.count_sms_failure(confirm_sms.product, p);
        RETURN false;
    END IF;
    IF r.expires_at IS NOT NULL AND r.expires_at < now() THEN
        UPDATE iclear.sms_verification SET status = 'expired'
         WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
        RETURN false;
    END IF;
    IF r.code = iclear.sms_code_digest(confirm_sms.product, p, btrim(confirm_sms.code)) THEN
        UPDATE iclear.sms_verification SET status = 'verified', verified_at = now()
         WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
        PERFORM iclear.resume_paused_leads(confirm_sms.product, p);
        RETURN true;
    END IF;
    PERFORM iclear.count_sms_failure(confirm_sms.product, p);
    UPDATE iclear.sms_verification
       SET attempts = attempts + 1,
           status = CASE WHEN attempts + 1 >= max_try THEN 'expired' ELSE 'pending' END
     WHERE product = confirm_sms.product AND phone = p AND status = 'pending';
    RETURN false;
END $$;
GRANT SELECT ON iclear.sms_key TO iclear_processor;
GRANT SELECT, INSERT, DELETE ON iclear.sms_outbox TO iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.sms_code_digest(text, text, text), iclear.sms_locked_out(text, text),
                          iclear.count_sms_failure(text, text), iclear.check_endpoint(text),
                          iclear.shown_endpoint(text)
    TO iclear_processor;
COMMENT ON TABLE iclear.sms_key IS 'The key of the SMS code digests (32 random bytes made at install); readable by the processor alone.';
COMMENT ON TABLE iclear.sms_outbox IS 'The code of each SMS not sent yet, by job; the worker deletes it once sent. Readable by the processor alone.';
COMMENT ON FUNCTION iclear.sms_code_digest(text, text, text) IS 'Internal: the keyed digest of an SMS code of a phone of a product, as the history keeps it.';
COMMENT ON FUNCTION iclear.sms_locked_out(text, text) IS 'Internal (confirm_sms): true once a phone had iclear.sms_max_failed wrong codes in the window.';
COMMENT ON FUNCTION iclear.count_sms_failure(text, text) IS 'Internal (confirm_sms): counts a wrong code for a phone; a rollback does not take it back.';

CREATE OR REPLACE FUNCTION iclear.apply_config(doc jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pid     bigint;
    pname   text;
    before  jsonb;
    path    text;
    it      record;
    c       record;
    r       iclear.rule;
    g       iclear.global_rule;
    rid     bigint;
    cat     bigint;
    gmap    jsonb;
    rmap    jsonb := '{}';
    cfg     jsonb;
    param   text;
BEGIN
    PERFORM iclear.config_keys(doc, 'document',
        ARRAY['format', 'product', 'categories', 'rules', 'global_rules', 'global_caps', 'fields', 'lists'],
        ARRAY['product']);
    PERFORM iclear.config_keys(doc -> 'product', 'product', ARRAY['name', 'kind'], ARRAY['name']);
    pname := doc #>> '{product,name}';
    IF EXISTS (SELECT 1 FROM iclear.product WHERE name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    BEGIN
        INSERT INTO iclear.product (name, kind) VALUES (pname, coalesce(doc #>> '{product,kind}', 'post'))
        ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind WHERE product.kind IS DISTINCT FROM EXCLUDED.kind;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'iclear.import_config: product: %', SQLERRM USING ERRCODE = SQLSTATE;
    END;
    SELECT id INTO pid FROM iclear.product WHERE name = pname;

    -- lists are shared by products: created or updated, never removed here;
    -- the product's links follow product_level
    FOR it IN SELECT * FROM iclear.config_items(doc, 'lists') LOOP
        path := format('lists[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'kind', 'field', 'product_level'], ARRAY['name', 'kind', 'field']);
        BEGIN
            INSERT INTO iclear.list (name, kind, field) VALUES (it.o ->> 'name', it.o ->> 'kind', it.o ->> 'field')
            ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, field = EXCLUDED.field
             WHERE (list.kind, list.field) IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.field);
            IF coalesce((it.o ->> 'product_level')::boolean, false) THEN
                INSERT INTO iclear.list_product (list_id, product_id)
                SELECT l.id, pid FROM iclear.list l WHERE l.name = it.o ->> 'name' ON CONFLICT DO NOTHING;
            ELSE
                DELETE FROM iclear.list_product lp USING iclear.list l
                 WHERE lp.list_id = l.id AND l.name = it.o ->> 'name' AND lp.product_id = pid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.list_product lp USING iclear.list l
     WHERE lp.list_id = l.id AND lp.product_id = pid
       AND l.name NOT IN (SELECT x.o ->> 'name' FROM iclear.config_items(doc, 'lists') x);

    -- categories by stage and name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'categories') LOOP
        path := format('categories[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['stage', 'name', 'position'], ARRAY['stage', 'name']);
        BEGIN
            UPDATE iclear.rule_category SET position = coalesce((it.o ->> 'position')::int, 0)
             WHERE product_id = pid AND stage = it.o ->> 'stage' AND name = it.o ->> 'name'
               AND position IS DISTINCT FROM coalesce((it.o ->> 'position')::int, 0);
            INSERT INTO iclear.rule_category (product_id, stage, name, position)
            SELECT pid, it.o ->> 'stage', it.o ->> 'name', coalesce((it.o ->> 'position')::int, 0)
             WHERE NOT EXISTS (SELECT 1 FROM iclear.rule_category x
                                WHERE x.product_id = pid AND x.stage = it.o ->> 'stage' AND x.name = it.o ->> 'name');
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- global rules by key, updated in place: their stored credentials stay
    SELECT coalesce(jsonb_object_agg(k.key, k.id), '{}') INTO gmap FROM (
        SELECT x.id, CASE WHEN count(*) OVER (PARTITION BY x.service) = 1 THEN x.service
                          ELSE x.service || ':' || row_number() OVER (PARTITION BY x.service ORDER BY x.position, x.id)
                     END AS key
          FROM iclear.global_rule x WHERE x.product_id = pid) k;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_rules') LOOP
        path := format('global_rules[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['key', 'service', 'status', 'execution', 'lookup_percent', 'position', 'run_time', 'run_on',
                  'run_on_silent_ping', 'no_response', 'settings', 'daily_limit', 'monthly_limit'], ARRAY['service']);
        cfg := coalesce(it.o -> 'settings', '{}');
        IF cfg -> 'add_to_list' ? 'lists' THEN
            cfg := jsonb_set(cfg, '{add_to_list}', ((cfg -> 'add_to_list') - 'lists') || jsonb_build_object('list_ids',
                       iclear.config_list_ids(cfg -> 'add_to_list' -> 'lists', path || '.settings.add_to_list.lists')));
        END IF;
        BEGIN
            g := jsonb_populate_record(NULL::iclear.global_rule, it.o - 'settings' - 'key');
            rid := (gmap ->> coalesce(it.o ->> 'key', it.o ->> 'service'))::bigint;
            IF rid IS NULL THEN
                INSERT INTO iclear.global_rule (product_id, service, status, execution, lookup_percent, position, run_time,
                                                run_on, run_on_silent_ping, no_response, settings, daily_limit, monthly_limit)
                VALUES (pid, g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                RETURNING id INTO rid;
                gmap := gmap || jsonb_build_object(coalesce(it.o ->> 'key', it.o ->> 'service'), rid);
            ELSE
                UPDATE iclear.global_rule x
                   SET (service, status, execution, lookup_percent, position, run_time, run_on, run_on_silent_ping,
                        no_response, settings, daily_limit, monthly_limit)
                     = (g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                 WHERE x.id = rid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- rules by name: their columns first, so conditions can name any of them
    -- (each looked up by the (product_id, name) index: a map grown one rule
    -- at a time made an import quadratic in its rules)
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        path := format('rules[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['name', 'stage', 'status', 'position', 'category', 'publisher_id', 'channel_id', 'source_id',
                  'all_new', 'all_new_since', 'publisher_ids', 'exclude_publisher_ids', 'channel_ids',
                  'exclude_channel_ids', 'source_ids', 'exclude_source_ids', 'logical_operator', 'method',
                  'daily_limit', 'monthly_limit', 'per_source_limit', 'conditions', 'actions'], ARRAY['name']);
        BEGIN
            r := jsonb_populate_record(NULL::iclear.rule, it.o - 'category' - 'conditions' - 'actions');
            r.stage := coalesce(r.stage, 'processing');
            cat := NULL;
            IF it.o ? 'category' THEN
                SELECT x.id INTO cat FROM iclear.rule_category x
                 WHERE x.product_id = pid AND x.stage = r.stage AND x.name = it.o ->> 'category';
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no % category is named %', r.stage, quote_literal(it.o ->> 'category');
                END IF;
            END IF;
            SELECT min(x.id) INTO rid FROM iclear.rule x WHERE x.product_id = pid AND x.name = r.name;
            IF rid IS NULL THEN
                INSERT INTO iclear.rule (product_id, name, stage) VALUES (pid, r.name, r.stage) RETURNING id INTO rid;
            END IF;
            UPDATE iclear.rule x
               SET (stage, status, position, category_id, publisher_id, channel_id, source_id, all_new, all_new_since,
                    publisher_ids, exclude_publisher_ids, channel_ids, exclude_channel_ids, source_ids,
                    exclude_source_ids, logical_operator, method, daily_limit, monthly_limit, per_source_limit)
                 = (r.stage, coalesce(r.status, 'active'), coalesce(r.position, 0), cat, r.publisher_id, r.channel_id,
                    r.source_id, coalesce(r.all_new, false), r.all_new_since,
                    coalesce(r.publisher_ids, '{}'), coalesce(r.exclude_publisher_ids, '{}'),
                    coalesce(r.channel_ids, '{}'), coalesce(r.exclude_channel_ids, '{}'),
                    coalesce(r.source_ids, '{}'), coalesce(r.exclude_source_ids, '{}'),
                    coalesce(r.logical_operator, 'and'), r.method, r.daily_limit, r.monthly_limit, r.per_source_limit)
             WHERE x.id = rid;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.rule x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'rules') y);
    DELETE FROM iclear.global_rule x WHERE x.product_id = pid
       AND x.id NOT IN (SELECT (gmap ->> coalesce(y.o ->> 'key', y.o ->> 'service'))::bigint
                          FROM iclear.config_items(doc, 'global_rules') y);
    DELETE FROM iclear.rule_category x WHERE x.product_id = pid
       AND (x.stage, x.name) NOT IN (SELECT y.o ->> 'stage', y.o ->> 'name' FROM iclear.config_items(doc, 'categories') y);

    -- each rule's conditions and actions, replaced where they differ (the
    -- rules before, and the ids now, by name: one map each, read per rule)
    SELECT coalesce(jsonb_object_agg(x.name, x.id), '{}') INTO rmap FROM iclear.rule x WHERE x.product_id = pid;
    SELECT coalesce(jsonb_object_agg(b ->> 'name', jsonb_build_array(b -> 'conditions', b -> 'actions')), '{}')
      INTO before FROM jsonb_array_elements(coalesce(before -> 'rules', '[]')) b;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        IF before -> (it.o ->> 'name')
           = jsonb_build_array(coalesce(it.o -> 'conditions', '[]'), coalesce(it.o -> 'actions', '[]')) THEN
            CONTINUE;
        END IF;
        rid := (rmap ->> (it.o ->> 'name'))::bigint;
        DELETE FROM iclear.rule_condition WHERE rule_id = rid;
        DELETE FROM iclear.rule_action WHERE rule_id = rid;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'conditions') LOOP
            path := format('rules[%s].conditions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['category', 'parameter', 'operator', 'value'], ARRAY['category', 'operator']);
            param := c.o ->> 'parameter';
            IF c.o ->> 'category' = 'rule' THEN
                param := rmap ->> param;
                IF param IS NULL THEN
                    RAISE EXCEPTION 'iclear.import_config: %.parameter: no rule of % is named %', path,
                        quote_literal(pname), quote_literal(c.o ->> 'parameter') USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
            BEGIN
                INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
                VALUES (rid, c.o ->> 'category', coalesce(param, ''), c.o ->> 'operator', coalesce(c.o -> 'value', 'null'));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'actions') LOOP
            path := format('rules[%s].actions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['action', 'config', 'status', 'position'], ARRAY['action']);
            cfg := coalesce(c.o -> 'config', '{}');
            IF cfg ? 'lists' THEN
                cfg := (cfg - 'lists') || jsonb_build_object('list_ids', iclear.config_list_ids(cfg -> 'lists', path || '.config.lists'));
            END IF;
            IF cfg ? 'global_rule' THEN
                IF NOT gmap ? (cfg ->> 'global_rule') THEN
                    RAISE EXCEPTION 'iclear.import_config: %.config.global_rule: % has no global rule %', path,
                        quote_literal(pname), quote_literal(cfg ->> 'global_rule') USING ERRCODE = 'invalid_parameter_value';
                END IF;
                cfg := (cfg - 'global_rule') || jsonb_build_object('global_rule_id', (gmap ->> (cfg ->> 'global_rule'))::bigint);
            END IF;
            BEGIN
                INSERT INTO iclear.rule_action (rule_id, action, config, status, position)
                VALUES (rid, c.o ->> 'action', cfg, coalesce(c.o ->> 'status', 'active'), coalesce((c.o ->> 'position')::int, 0));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
    END LOOP;

    -- product fields by name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'fields') LOOP
        path := format('fields[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'type', 'required', 'min', 'max', 'pattern', 'allowed'],
                                   ARRAY['name', 'type']);
        BEGIN
            INSERT INTO iclear.product_field (product_id, name, type, required, min, max, pattern, allowed)
            SELECT pid, f.name, f.type, coalesce(f.required, false), f.min, f.max, f.pattern, f.allowed
              FROM jsonb_populate_record(NULL::iclear.product_field, it.o) f
            ON CONFLICT (product_id, name) DO UPDATE
               SET type = EXCLUDED.type, required = EXCLUDED.required, min = EXCLUDED.min, max = EXCLUDED.max,
                   pattern = EXCLUDED.pattern, allowed = EXCLUDED.allowed
             WHERE (product_field.type, product_field.required, product_field.min, product_field.max,
                    product_field.pattern, product_field.allowed)
                   IS DISTINCT FROM (EXCLUDED.type, EXCLUDED.required, EXCLUDED.min, EXCLUDED.max,
                                     EXCLUDED.pattern, EXCLUDED.allowed);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.product_field x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'fields') y);

    -- global caps (shared by the products of a service): set, never removed here
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_caps') LOOP
        path := format('global_caps[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['service', 'period', 'start_day', 'cap_limit'],
                                   ARRAY['service', 'period', 'cap_limit']);
        BEGIN
            INSERT INTO iclear.global_cap (service, period, start_day, cap_limit)
            VALUES (it.o ->> 'service', it.o ->> 'period', coalesce((it.o ->> 'start_day')::int, 1), (it.o ->> 'cap_limit')::bigint)
            ON CONFLICT (service, period) DO UPDATE SET start_day = EXCLUDED.start_day, cap_limit = EXCLUDED.cap_limit
             WHERE (global_cap.start_day, global_cap.cap_limit) IS DISTINCT FROM (EXCLUDED.start_day, EXCLUDED.cap_limit);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
END $$;


-- Import a document of export_config: returns the plan; with dry_run false,
-- applies it (in the caller's transaction: all of it or, on any error,
-- none). A dry run applies it in a subtransaction, so every validation of
-- the configuration tables runs, and rolls it back; it moves no
-- configuration version, so it holds nothing another operator's edit
-- waits for. Objects other products share (a list that exists, a service's
-- global cap) are listed apart in the plan ("shared"), and a real import
-- changes them only with change_shared => true (SECURITY.md "Configuration
-- as code").
DROP FUNCTION iclear.import_config(jsonb, boolean);
CREATE FUNCTION iclear.import_config(config jsonb, dry_run boolean DEFAULT true, change_shared boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pname  text := config #>> '{product,name}';
    before jsonb;
    plan   jsonb;
    shared jsonb;
BEGIN
    IF pname IS NOT NULL AND EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    shared := iclear.config_shared_changes(config);
    IF NOT dry_run AND NOT change_shared AND jsonb_array_length(shared) > 0 THEN
        RAISE EXCEPTION 'iclear.import_config: the document changes what other products share: %',
            (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(shared) x)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass change_shared => true to change them, or leave them out of the document.';
    END IF;
    PERFORM iclear.defer_config_version(true);
    BEGIN
        PERFORM iclear.apply_config(config);
        plan := iclear.config_plan(before, iclear.export_config(pname))
                || jsonb_build_object('shared', shared, 'dry_run', dry_run);
        IF dry_run THEN
            RAISE EXCEPTION USING ERRCODE = 'ICDRY', MESSAGE = 'iclear.import_config: dry run';
        END IF;
    EXCEPTION WHEN SQLSTATE 'ICDRY' THEN
        NULL; -- rolled back: the plan stays
    END;
    PERFORM iclear.defer_config_version(false);
    RETURN plan;
END $$;

-- The shared objects a document would add or change: a list that exists
-- with another kind or field, a service's global cap added or changed, when
-- another product uses it (links or names the list, has a global rule of
-- the service). A list no other product uses is the document's own.
CREATE FUNCTION iclear.config_shared_changes(doc jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH others AS (SELECT p.id FROM iclear.product p WHERE p.name IS DISTINCT FROM doc #>> '{product,name}')
    SELECT coalesce(jsonb_agg(x ORDER BY x), '[]') FROM (
        SELECT 'lists ' || (o ->> 'name') AS x
          FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'lists') WHEN 'array' THEN doc -> 'lists' ELSE '[]' END) o
          JOIN iclear.list l ON l.name = o ->> 'name'
         WHERE (l.kind, l.field) IS DISTINCT FROM (o ->> 'kind', o ->> 'field')
           AND (EXISTS (SELECT 1 FROM iclear.list_product lp WHERE lp.list_id = l.id AND lp.product_id IN (SELECT id FROM others))
                OR EXISTS (SELECT 1 FROM iclear.rule_action a JOIN iclear.rule r ON r.id = a.rule_id
                            WHERE r.product_id IN (SELECT id FROM others) AND a.config -> 'list_ids' @> to_jsonb(l.id))
                OR EXISTS (SELECT 1 FROM iclear.global_rule g
                            WHERE g.product_id IN (SELECT id FROM others)
                              AND g.settings -> 'add_to_list' -> 'list_ids' @> to_jsonb(l.id)))
        UNION ALL
        SELECT 'global_caps ' || (o ->> 'service') || '/' || (o ->> 'period')
          FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'global_caps') WHEN 'array' THEN doc -> 'global_caps' ELSE '[]' END) o
         WHERE NOT EXISTS (SELECT 1 FROM iclear.global_cap c
                            WHERE c.service = o ->> 'service' AND c.period = o ->> 'period'
                              AND c.cap_limit::text = o ->> 'cap_limit'
                              AND c.start_day = coalesce((o ->> 'start_day')::int, 1))
           AND EXISTS (SELECT 1 FROM iclear.global_rule g
                        WHERE g.service = o ->> 'service' AND g.product_id IN (SELECT id FROM others))) s
$$;

-- One version bump per import, not one per statement (defer_config_version).
CREATE OR REPLACE FUNCTION iclear.bump_config_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF iclear.config_version_deferred() THEN
        RETURN NULL;
    END IF;
    UPDATE iclear.config_version SET version = nextval('iclear.config_version_seq');
    PERFORM iclear.config_changed();
    RETURN NULL;
END $$;
ALTER FUNCTION iclear.bump_config_version() SET search_path = pg_catalog, pg_temp;
CREATE INDEX rule_product_name ON iclear.rule (product_id, name);

-- A product's configuration changes in order: the product row, its rules
-- (with their conditions and actions), categories, global rules (and their
-- masked credentials), product fields and list links, and the shared
-- objects it uses (its lists, its services' global caps), as audited. Rows
-- that no longer exist are found through the trail itself.
CREATE OR REPLACE FUNCTION iclear.config_history(product text)
RETURNS TABLE (at timestamptz, role name, table_name text, op text, row_id text, old jsonb, new jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH pid AS (
        SELECT DISTINCT a.row_id FROM iclear.config_audit a
         WHERE a.table_name = 'product' AND coalesce(a.new, a.old) ->> 'name' = $1
        UNION SELECT p.id::text FROM iclear.product p WHERE p.name = $1),
    owned AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE a.table_name IN ('rule', 'rule_category', 'global_rule', 'product_field', 'list_product')
           AND coalesce(a.new, a.old) ->> 'product_id' IN (SELECT row_id FROM pid)),
    children AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name IN ('rule_condition', 'rule_action')
                AND coalesce(a.new, a.old) ->> 'rule_id' IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'rule'))
            OR (a.table_name = 'global_rule_credential'
                AND a.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule'))),
    shared AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name = 'list'
                AND a.row_id IN (SELECT split_part(o.row_id, ':', 1) FROM owned o WHERE o.table_name = 'list_product'
                                 UNION SELECT jsonb_array_elements_text(coalesce(x.new, x.old) -> 'config' -> 'list_ids')
                                         FROM iclear.config_audit x
                                        WHERE x.table_name = 'rule_action'
                                          AND x.row_id IN (SELECT c.row_id FROM children c WHERE c.table_name = 'rule_action')))
            OR (a.table_name = 'global_cap'
                AND coalesce(a.new, a.old) ->> 'service' IN (
                    SELECT coalesce(g.new, g.old) ->> 'service' FROM iclear.config_audit g
                     WHERE g.table_name = 'global_rule'
                       AND g.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule'))))
    SELECT a.at, a.role, a.table_name, a.op, a.row_id, a.old, a.new
      FROM iclear.config_audit a
     WHERE (a.table_name = 'product' AND a.row_id IN (SELECT row_id FROM pid))
        OR (a.table_name, a.row_id) IN (SELECT * FROM owned UNION SELECT * FROM children UNION SELECT * FROM shared)
     ORDER BY a.at, a.id
$$;
GRANT EXECUTE ON FUNCTION iclear.import_config(jsonb, boolean, boolean), iclear.config_shared_changes(jsonb),
                          iclear.defer_config_version(boolean), iclear.config_version_deferred()
    TO iclear_operator;
GRANT EXECUTE ON FUNCTION iclear.config_version_deferred() TO iclear_processor;
COMMENT ON FUNCTION iclear.import_config(jsonb, boolean, boolean) IS 'Makes the product equal the document; objects other products share change only with change_shared.';
COMMENT ON FUNCTION iclear.config_shared_changes(jsonb) IS 'Internal (import_config): the shared objects (lists, global caps) a document would add or change.';
COMMENT ON FUNCTION iclear.defer_config_version(boolean) IS 'While on, this transaction''s configuration changes move the configuration version once, when it is turned off (import_config).';
COMMENT ON FUNCTION iclear.config_version_deferred() IS 'Internal (bump_config_version): is the version bump deferred?';

-- Erasure on request (CCPA, GDPR; SECURITY.md "Erasure"): every value that
-- names one consumer (an email, compared lowercased anywhere in a string; a
-- phone, compared by normalize_phone) is replaced by "[erased]" in the
-- decisions, the filter log, jobs, spent requests, consent evidence and
-- feedback of the leads that name them; what is keyed by them (lookup
-- cache, counters, list entries, the SMS history, verification signatures,
-- paused leads, codes to send) is deleted. With keep_suppression, entries of
-- a do-not-contact list (dnpl) stay: they are what honours the request. The
-- lead store erases its own lead table. The reports, lead_info and backtest
-- go on over the anonymised rows. The audit records that an erasure ran,
-- and what it touched, never whom. It runs as the extension owner (it
-- rewrites logs no role may write) and touches iclear's tables only.
CREATE FUNCTION iclear.forget(email text DEFAULT NULL, phone text DEFAULT NULL,
                              keep_suppression boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    e       text := email;
    p       text := phone;
    leads   text[];
    n       bigint;
    touched jsonb := '{}';
    sigs    text[];
BEGIN
    PERFORM iclear.erasure_mentions('null'::json, e, p);  -- refuses a request naming nobody
    SELECT coalesce(array_agg(DISTINCT d.lead_id), '{}') INTO leads
      FROM iclear.decision d
     WHERE iclear.erasure_mentions(d.envelope, e, p) OR iclear.erasure_mentions(d.decision, e, p);
    touched := touched || jsonb_build_object('leads', cardinality(leads));
    -- the signatures of the leads, before their envelopes are erased
    SELECT coalesce(array_agg(DISTINCT s), '{}') INTO sigs
      FROM (SELECT iclear.lead_signature(pr.name, d.envelope) AS s
              FROM iclear.decision d JOIN iclear.product pr ON pr.id = d.product_id
             WHERE d.lead_id = ANY (leads)) x
     WHERE s IS NOT NULL;
    UPDATE iclear.decision d SET envelope = iclear.erasure_erased(d.envelope, e, p),
                                 decision = iclear.erasure_erased(d.decision, e, p)
     WHERE d.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('decision', n);
    UPDATE iclear.filter_log f SET request = iclear.erasure_erased(f.request, e, p),
                                   response = iclear.erasure_erased(f.response, e, p),
                                   detail = iclear.erasure_erased(f.detail, e, p)
     WHERE f.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('filter_log', n);
    UPDATE iclear.job j SET payload = iclear.erasure_erased(j.payload::json, e, p)::jsonb
     WHERE j.lead_id = ANY (leads) OR iclear.erasure_mentions(j.payload::json, e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('job', n);
    DELETE FROM iclear.sms_outbox o USING iclear.job j WHERE j.id = o.job_id AND j.lead_id = ANY (leads);
    UPDATE iclear.spent_request s SET request = iclear.erasure_erased(s.request, e, p),
                                      response = iclear.erasure_erased(s.response, e, p)
     WHERE s.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('spent_request', n);
    UPDATE iclear.consent_evidence c SET response = iclear.erasure_erased(c.response, e, p)
     WHERE c.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('consent_evidence', n);
    UPDATE iclear.lead_feedback b SET reason = '[erased]'
     WHERE b.lead_id = ANY (leads) AND iclear.erasure_mentions(to_json(b.reason), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('lead_feedback', n);
    DELETE FROM iclear.lookup_cache c
     WHERE iclear.erasure_mentions(to_json(c.lookup_key), e, p) OR iclear.erasure_mentions(c.response::json, e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('lookup_cache', n);
    DELETE FROM iclear.counter_delta c WHERE iclear.erasure_mentions(to_json(c.key), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('counter_delta', n);
    DELETE FROM iclear.counter_total c WHERE iclear.erasure_mentions(to_json(c.key), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('counter_total', n);
    DELETE FROM iclear.list_entry le USING iclear.list l
     WHERE l.id = le.list_id AND iclear.erasure_mentions(to_json(le.value), e, p)
       AND NOT (keep_suppression AND l.kind = 'dnpl');
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('list_entry', n);
    DELETE FROM iclear.sms_verification v WHERE v.phone = iclear.normalize_phone(p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('sms_verification', n);
    DELETE FROM iclear.verification_history v WHERE v.signature = ANY (sigs);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('verification_history', n);
    DELETE FROM iclear.paused_lead l WHERE l.lead_id = ANY (leads) OR l.phone = iclear.normalize_phone(p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('paused_lead', n);
    INSERT INTO iclear.config_audit (table_name, op, new, role)
    VALUES ('consumer', 'ERASE', touched || jsonb_build_object('keep_suppression', keep_suppression),
            coalesce(nullif(current_setting('role'), 'none'), session_user));
    RETURN touched;
END $$;
REVOKE ALL ON FUNCTION iclear.forget(text, text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION iclear.forget(text, text, boolean) IS 'Erases one consumer (an email, a phone or both) from every iclear table; returns what it touched. iclear_admin.';
COMMENT ON FUNCTION iclear.erasure_mentions(json, text, text) IS 'Internal (forget): does a JSON value name the consumer?';
COMMENT ON FUNCTION iclear.erasure_erased(json, text, text) IS 'Internal (forget): a JSON value with every string naming the consumer replaced by [erased].';
COMMENT ON FUNCTION iclear.lead_signature(text, json) IS 'Internal (forget): the verification signature of a stored lead envelope.';

-- worker_alive for every role that reads health (pg_stat_activity shows a
-- backend's type only to its own role)
CREATE OR REPLACE VIEW iclear.health AS
SELECT iclear.version() AS version,
       iclear.worker_alive() AS worker_alive,
       (SELECT count(*) FROM iclear.job WHERE status IN ('queued', 'running')) AS queue_depth,
       (SELECT min(created_at) FROM iclear.job WHERE status = 'queued') AS oldest_queued_at,
       (SELECT count(*) FROM iclear.job WHERE status = 'failed') AS failed_jobs,
       (SELECT count(*) FROM iclear.decision_default) AS rows_in_default_partitions,
       (SELECT version FROM iclear.config_version) AS config_version;
GRANT EXECUTE ON FUNCTION iclear.worker_alive() TO iclear_reader, iclear_processor;
COMMENT ON FUNCTION iclear.audit_write(text, text, text, jsonb, jsonb) IS 'Internal: writes one row of config_audit (credentials masked); callable by its owner alone, through the audit trigger.';
COMMENT ON FUNCTION iclear.worker_alive() IS 'Is the background worker running (whoever asks).';
-- The tail of every release: the admin may call every function but the
-- internal ones, nothing is PUBLIC, and every function pins its
-- search_path (the functions above included).
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA iclear TO iclear_admin;
REVOKE EXECUTE ON FUNCTION iclear.use_verification_hub(text), iclear.resume_paused_leads(text, text),
                           iclear.audit_write(text, text, text, jsonb, jsonb),
                           iclear.sms_code_digest(text, text, text), iclear.sms_locked_out(text, text),
                           iclear.count_sms_failure(text, text)
    FROM iclear_admin;
-- the digests' key and the codes to send: the processor's alone
REVOKE ALL ON iclear.sms_key, iclear.sms_outbox FROM iclear_admin, iclear_operator, iclear_reader;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA iclear FROM PUBLIC;
REVOKE ALL ON FUNCTION public.iclear_process(jsonb) FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA iclear FROM PUBLIC;
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
               JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'iclear'
              WHERE p.proconfig IS NULL
                AND p.pronamespace IN ('iclear'::regnamespace, 'public'::regnamespace) LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END $$;
-- END since-0.5.0
