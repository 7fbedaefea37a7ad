-- iclear finalize, functions: The functions iclear runs and offers: entry points, attach, maintenance, the worker's bookkeeping, the verification desk, erasure.
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

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

-- BEGIN since-0.2.0
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

-- Failed async jobs stay visible (iclear.health.failed_jobs); this queues
-- them again once the cause is fixed.
CREATE FUNCTION iclear.retry_failed_jobs() RETURNS bigint
LANGUAGE sql AS $$
    WITH r AS (UPDATE iclear.job SET status = 'queued', attempts = 0, run_after = now(),
                                    leased_until = NULL, updated_at = now()
                WHERE status = 'failed' RETURNING 1)
    SELECT count(*) FROM r
$$;

-- ------------------------------------------------- verification history
-- Phones are matched by their digits; an 11-digit number with the North
-- American country code 1 is its 10 digits (engine: verification::normalize_phone).
CREATE FUNCTION iclear.normalize_phone(phone text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT nullif(CASE WHEN length(d) = 11 AND left(d, 1) = '1' THEN substr(d, 2) ELSE d END, '')
      FROM (SELECT regexp_replace(phone, '[^0-9]', '', 'g') AS d) AS x
$$;
-- END since-0.2.0

-- BEGIN since-0.3.0
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
BEGIN
    -- (0.6.0 replaces it: since-0.5.0 below)
    RETURN NULL;
END $$;
-- END since-0.3.0

-- BEGIN since-0.4.0
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

-- Point the history views at a hub database through a postgres_fdw server
-- (NULL: back to this database's own tables). See docs/guide/verification.md.
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
-- END since-0.4.0

-- BEGIN since-0.5.0
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
    PERFORM iclear.progress_start('forget', NULL, 14);
    -- the signatures of the leads, before their envelopes are erased
    SELECT coalesce(array_agg(DISTINCT s), '{}') INTO sigs
      FROM (SELECT iclear.lead_signature(pr.name, d.envelope) AS s
              FROM iclear.decision d JOIN iclear.product pr ON pr.id = d.product_id
             WHERE d.lead_id = ANY (leads)) x
     WHERE s IS NOT NULL;
    UPDATE iclear.decision d SET envelope = iclear.erasure_erased(d.envelope, e, p),
                                 decision = iclear.erasure_erased(d.decision, e, p)
     WHERE d.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('decision', n); PERFORM iclear.progress_update(1);
    UPDATE iclear.filter_log f SET request = iclear.erasure_erased(f.request, e, p),
                                   response = iclear.erasure_erased(f.response, e, p),
                                   detail = iclear.erasure_erased(f.detail, e, p)
     WHERE f.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('filter_log', n); PERFORM iclear.progress_update(2);
    UPDATE iclear.job j SET payload = iclear.erasure_erased(j.payload::json, e, p)::jsonb
     WHERE j.lead_id = ANY (leads) OR iclear.erasure_mentions(j.payload::json, e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('job', n); PERFORM iclear.progress_update(3);
    DELETE FROM iclear.sms_outbox o USING iclear.job j WHERE j.id = o.job_id AND j.lead_id = ANY (leads);
    UPDATE iclear.spent_request s SET request = iclear.erasure_erased(s.request, e, p),
                                      response = iclear.erasure_erased(s.response, e, p)
     WHERE s.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('spent_request', n); PERFORM iclear.progress_update(4);
    UPDATE iclear.consent_evidence c SET response = iclear.erasure_erased(c.response, e, p)
     WHERE c.lead_id = ANY (leads);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('consent_evidence', n); PERFORM iclear.progress_update(5);
    UPDATE iclear.lead_feedback b SET reason = '[erased]'
     WHERE b.lead_id = ANY (leads) AND iclear.erasure_mentions(to_json(b.reason), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('lead_feedback', n); PERFORM iclear.progress_update(6);
    DELETE FROM iclear.lookup_cache c
     WHERE iclear.erasure_mentions(to_json(c.lookup_key), e, p) OR iclear.erasure_mentions(c.response::json, e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('lookup_cache', n); PERFORM iclear.progress_update(7);
    DELETE FROM iclear.counter_delta c WHERE iclear.erasure_mentions(to_json(c.key), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('counter_delta', n); PERFORM iclear.progress_update(8);
    DELETE FROM iclear.counter_total c WHERE iclear.erasure_mentions(to_json(c.key), e, p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('counter_total', n); PERFORM iclear.progress_update(9);
    DELETE FROM iclear.list_entry le USING iclear.list l
     WHERE l.id = le.list_id AND iclear.erasure_mentions(to_json(le.value), e, p)
       AND NOT (keep_suppression AND l.kind = 'dnpl');
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('list_entry', n); PERFORM iclear.progress_update(10);
    DELETE FROM iclear.sms_verification v WHERE v.phone = iclear.normalize_phone(p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('sms_verification', n); PERFORM iclear.progress_update(11);
    DELETE FROM iclear.verification_history v WHERE v.signature = ANY (sigs);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('verification_history', n); PERFORM iclear.progress_update(12);
    -- the history's rows under the keys the email and phone make (a key with
    -- another field goes when its window ends)
    DELETE FROM iclear.lead_history h WHERE h.key = ANY (iclear.erasure_history_digests(e, p));
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('lead_history', n); PERFORM iclear.progress_update(13);
    DELETE FROM iclear.paused_lead l WHERE l.lead_id = ANY (leads) OR l.phone = iclear.normalize_phone(p);
    GET DIAGNOSTICS n = ROW_COUNT; touched := touched || jsonb_build_object('paused_lead', n); PERFORM iclear.progress_update(14);
    INSERT INTO iclear.config_audit (table_name, op, new, role)
    VALUES ('consumer', 'ERASE', touched || jsonb_build_object('keep_suppression', keep_suppression),
            coalesce(nullif(current_setting('role'), 'none'), session_user));
    PERFORM iclear.progress_end();
    RETURN touched;
END $$;
-- Since 0.5.0 a phone rule's flags (reject_voip, ...) add to its overall
-- score, which rejects only past reject_fraud_score_gte: with a threshold
-- of 0 a flag rejects nothing (docs/upgrading.md). An upgrade names the
-- rules that have a flag on and no threshold.
DO $$
DECLARE
    ids text;
BEGIN
    SELECT string_agg(g.id::text, ', ' ORDER BY g.id) INTO ids
      FROM iclear.global_rule g
     WHERE g.service = 'phone_analysis'
       AND coalesce((g.settings ->> 'reject_fraud_score_gte')::int, 0) = 0
       AND EXISTS (SELECT 1 FROM jsonb_each(g.settings) e
                    WHERE e.key IN ('reject_invalid', 'reject_inactive', 'reject_prepaid', 'reject_voip', 'reject_spammer')
                      AND e.value = 'true');
    IF ids IS NOT NULL THEN
        RAISE NOTICE 'iclear: phone_analysis global rules % have a reject_ flag on and reject_fraud_score_gte 0: they reject no lead on a flag (set a threshold, docs/upgrading.md)', ids;
    END IF;
END $$;

-- The periods of a cap in local days of a time zone (a product's, or a
-- global cap's own): when the current one began and when it next resets,
-- as src/store/cap_key.rs counts them. A day is local midnight to local
-- midnight, 23 or 25 hours long across a daylight-saving change. (The
-- three-argument forms above count UTC days.)
CREATE FUNCTION iclear.cap_period_start(period text, start_day integer, at timestamptz, time_zone text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'daily' THEN date_trunc('day', at AT TIME ZONE time_zone) AT TIME ZONE time_zone
        WHEN 'monthly' THEN (
            SELECT max(d) FROM (
                SELECT (m + make_interval(days => least(start_day,
                            extract(day FROM m + interval '1 month' - interval '1 day')::int) - 1))
                       AT TIME ZONE time_zone AS d
                  FROM (SELECT date_trunc('month', at AT TIME ZONE time_zone) + k * interval '1 month' AS m
                          FROM generate_series(-1, 0) AS k) AS months) AS resets
             WHERE d <= at)
    END
$$;

CREATE FUNCTION iclear.next_cap_reset(period text, start_day integer, at timestamptz, time_zone text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE period
        WHEN 'daily' THEN (date_trunc('day', at AT TIME ZONE time_zone) + interval '1 day') AT TIME ZONE time_zone
        WHEN 'monthly' THEN (
            SELECT min(d) FROM (
                SELECT (m + make_interval(days => least(start_day,
                            extract(day FROM m + interval '1 month' - interval '1 day')::int) - 1))
                       AT TIME ZONE time_zone AS d
                  FROM (SELECT date_trunc('month', at AT TIME ZONE time_zone) + k * interval '1 month' AS m
                          FROM generate_series(-1, 1) AS k) AS months) AS resets
             WHERE d > at)
    END
$$;
-- The lead history keeps what the longest window of any history condition
-- (of an active, shadow or paused rule: a paused rule may come back) needs,
-- and no more. The worker runs it about once a minute, and maintain() too.
CREATE FUNCTION iclear.prune_history() RETURNS bigint
LANGUAGE sql AS $$
    WITH w AS (SELECT max((c.value ->> 'seconds')::bigint) AS s
                 FROM iclear.rule_condition c WHERE c.category = 'history'),
         d AS (DELETE FROM iclear.lead_history h USING w
                WHERE h.at < now() - make_interval(secs => coalesce(w.s, 0)) RETURNING 1)
    SELECT count(*) FROM d
$$;
-- (0.6.0: maintain() prunes the lead history too)
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
    PERFORM iclear.progress_start('maintain', NULL, 3);
    FOREACH t IN ARRAY ARRAY['decision', 'filter_log'] LOOP
        PERFORM iclear.progress_update(CASE t WHEN 'decision' THEN 0 ELSE 1 END);
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
    PERFORM iclear.progress_update(2);
    DELETE FROM iclear.consent_evidence WHERE at < now() - make_interval(days => keep_evidence);
    GET DIAGNOSTICS evidence = ROW_COUNT;
    PERFORM iclear.progress_update(3);
    PERFORM iclear.progress_end();
    PERFORM set_config('lock_timeout', old_lock_timeout, true);
    RETURN jsonb_build_object('created', created, 'dropped', dropped, 'moved_from_default', moved,
                              'evidence_deleted', evidence, 'retention_days', keep_days,
                              'evidence_retention_days', keep_evidence,
                              'history_pruned', iclear.prune_history());
END $$;
-- ---------------------------------------------------------- hub and stores
-- docs/guide/hub.md. The hub publishes the configuration and the lists
-- (built-in logical replication); a store subscribes to it, publishes its
-- list additions and its decisions back, reads the verification history on
-- the hub (postgres_fdw) and spends shared global caps from leases the hub
-- grants (dblink). These run DDL on replication objects: superuser only.
CREATE FUNCTION iclear.hub_require(what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'iclear.%: permission denied (a superuser sets up replication)', what
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'iclear.%: wal_level is %, and replication needs logical', what,
                        pg_catalog.current_setting('wal_level')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER SYSTEM SET wal_level = logical, then restart the server';
    END IF;
END $$;

-- The tables the hub publishes: the configuration and the lists.
CREATE FUNCTION iclear.hub_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['product', 'service', 'service_secret', 'global_rule', 'global_rule_credential', 'global_cap',
                 'rule_category', 'rule', 'rule_condition', 'rule_action', 'list', 'list_product', 'list_entry',
                 'product_field', 'config_version']
$$;

-- The key=value pairs of a connection string (values may be quoted).
CREATE FUNCTION iclear.conninfo_options(conninfo text) RETURNS TABLE (key text, value text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT m[1], coalesce(m[3], m[4])
      FROM regexp_matches(conninfo, '(\w+)\s*=\s*(''([^'']*)''|(\S+))', 'g') AS m
$$;

-- On the hub: (re)create the publication stores subscribe to. Idempotent.
CREATE FUNCTION iclear.hub_publish() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    tables text := (SELECT string_agg(format('iclear.%I', t), ', ') FROM unnest(iclear.hub_tables()) t);
BEGIN
    PERFORM iclear.hub_require('hub_publish');
    IF EXISTS (SELECT 1 FROM iclear.hub_membership) THEN
        RAISE EXCEPTION 'iclear.hub_publish: this database is a store of a hub, not a hub'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'iclear_hub') THEN
        EXECUTE 'ALTER PUBLICATION iclear_hub SET TABLE ' || tables;
    ELSE
        EXECUTE 'CREATE PUBLICATION iclear_hub FOR TABLE ' || tables;
    END IF;
    RETURN 'iclear_hub';
END $$;

-- A statement on another server through dblink, bounded by
-- iclear.hub_timeout (connection and statement); returns its one value.
CREATE FUNCTION iclear.hub_call(conninfo text, statement text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    -- in seconds, whatever unit it was set in
    timeout int := coalesce((SELECT s.setting::int FROM pg_catalog.pg_settings s WHERE s.name = 'iclear.hub_timeout'), 5);
    result text;
BEGIN
    SELECT t.x INTO result
      FROM iclear_link.dblink(conninfo || format(' connect_timeout=%s options=''-c statement_timeout=%ss''',
                                                 greatest(timeout, 2), timeout),
                              statement) AS t(x text);
    RETURN result;
END $$;

-- On a store: join the hub. Idempotent. The store's seeded service list is
-- replaced by the hub's configuration (a store with products of its own is
-- refused: the hub's would replace them).
CREATE FUNCTION iclear.join_hub(store text, hub_conninfo text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    slot text := 'iclear_' || store;
    m iclear.hub_membership;
    joined boolean;
    opts text;
    umap text;
BEGIN
    PERFORM iclear.hub_require('join_hub');
    IF store IS NULL OR store !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION 'iclear.join_hub: store must be a name (a-z, 0-9, _), not %', quote_nullable(store)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO m FROM iclear.hub_membership;
    joined := FOUND;
    IF joined AND (m.store <> join_hub.store OR m.hub_conninfo <> join_hub.hub_conninfo) THEN
        RAISE EXCEPTION 'iclear.join_hub: this database is already store % of another hub', m.store
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'SELECT iclear.leave_hub() first';
    END IF;
    IF NOT joined AND EXISTS (SELECT 1 FROM iclear.product) THEN
        RAISE EXCEPTION 'iclear.join_hub: this database has products of its own; the hub''s configuration would replace them'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'move them to the hub (iclear.export_config there, iclear.import_config on the hub), then delete them here';
    END IF;
    CREATE SCHEMA IF NOT EXISTS iclear_link;
    CREATE EXTENSION IF NOT EXISTS dblink SCHEMA iclear_link;
    CREATE EXTENSION IF NOT EXISTS postgres_fdw;
    -- the slot on the hub, made there (a subscription that makes its own
    -- cannot be created in a transaction)
    PERFORM iclear.hub_call(hub_conninfo, format(
        'SELECT coalesce((SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = %L),
                         (SELECT slot_name::text FROM pg_create_logical_replication_slot(%L, %L)))',
        slot, slot, 'pgoutput'));
    IF NOT joined THEN
        -- the seeded rows the hub's copy would collide with
        DELETE FROM iclear.service;
        DELETE FROM iclear.config_version;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = 'iclear_hub') THEN
        EXECUTE format('CREATE SUBSCRIPTION iclear_hub CONNECTION %L PUBLICATION iclear_hub
                        WITH (create_slot = false, slot_name = %L, copy_data = true)', hub_conninfo, slot);
    END IF;
    -- the verification history on the hub, as use_verification_hub reads it
    SELECT string_agg(format('%s %L', o.key, o.value), ', ') INTO opts
      FROM iclear.conninfo_options(hub_conninfo) o WHERE o.key IN ('host', 'hostaddr', 'port', 'dbname');
    SELECT string_agg(format('%s %L', o.key, o.value), ', ') INTO umap
      FROM iclear.conninfo_options(hub_conninfo) o WHERE o.key IN ('user', 'password');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = 'iclear_hub_server') THEN
        EXECUTE format('CREATE SERVER iclear_hub_server FOREIGN DATA WRAPPER postgres_fdw OPTIONS (%s)', opts);
        EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER iclear_hub_server OPTIONS (%s)',
                       concat_ws(', ', umap, 'password_required ''false'''));
    END IF;
    PERFORM iclear.use_verification_hub('iclear_hub_server');
    INSERT INTO iclear.hub_membership (store, hub_conninfo) VALUES (join_hub.store, join_hub.hub_conninfo)
    ON CONFLICT (one) DO NOTHING;
    PERFORM iclear.config_changed();
    RETURN format('store %s of hub %s', join_hub.store,
                  (SELECT string_agg(o.value, ':') FROM iclear.conninfo_options(hub_conninfo) o
                    WHERE o.key IN ('host', 'port')));
END $$;

-- On a store: leave the hub. The configuration received stays, as the
-- store's own; unused cap slots go back to the hub when it answers.
CREATE FUNCTION iclear.leave_hub() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    m iclear.hub_membership;
    g record;
BEGIN
    PERFORM iclear.hub_require('leave_hub');
    SELECT * INTO m FROM iclear.hub_membership;
    IF NOT FOUND THEN
        RETURN 'not a store';
    END IF;
    DELETE FROM iclear.hub_membership;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = 'iclear_hub') THEN
        ALTER SUBSCRIPTION iclear_hub DISABLE;
        ALTER SUBSCRIPTION iclear_hub SET (slot_name = NONE);
        DROP SUBSCRIPTION iclear_hub;
    END IF;
    PERFORM iclear.use_verification_hub(NULL);
    DROP SERVER IF EXISTS iclear_hub_server CASCADE;
    BEGIN
        -- the unused slots back, and the slot on the hub (its walsender may
        -- still hold it for an instant)
        FOR g IN SELECT * FROM iclear.cap_grant LOOP
            PERFORM iclear.hub_call(m.hub_conninfo, format('SELECT iclear.hub_lease(%L, %s, %L, %s, %s)',
                m.store, g.global_cap_id, g.bucket, -g.granted,
                (SELECT coalesce(sum(u.used), 0) FROM iclear.cap_use u
                  WHERE u.scope = 'global' AND u.ref_id = g.global_cap_id AND u.bucket = g.bucket)));
        END LOOP;
        DELETE FROM iclear.cap_grant;
        PERFORM iclear.hub_call(m.hub_conninfo, format(
            'SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
              WHERE slot_name = %L AND NOT active', 'iclear_' || m.store));
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'iclear.leave_hub: the hub did not answer (%): drop replication slot % there', SQLERRM, 'iclear_' || m.store;
    END;
    PERFORM iclear.config_changed();
    RETURN format('left the hub as store %s', m.store);
END $$;

-- On the hub: register a store whose workers bring its list additions and
-- decisions (push_to_hub): they are written here and replicated from here.
-- A store does not publish to the hub: logical decoding of a busy lead
-- store's WAL cost it 15% of its inserts (docs/guide/hub.md), and its slot
-- would keep WAL while the hub is down. Idempotent.
CREATE FUNCTION iclear.hub_add_store(store text, conninfo text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iclear.hub_require('hub_add_store');
    IF store IS NULL OR store !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION 'iclear.hub_add_store: store must be a name (a-z, 0-9, _), not %', quote_nullable(store)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO iclear.hub_store (store, conninfo) VALUES (hub_add_store.store, hub_add_store.conninfo)
    ON CONFLICT ON CONSTRAINT hub_store_pkey DO UPDATE SET conninfo = EXCLUDED.conninfo;
    PERFORM iclear.config_changed();
    RETURN hub_add_store.store;
END $$;

-- On a store: take its decisions (store_decision) and list additions
-- (list_entry_out) to the hub, a thousand of each per call, and delete what
-- the hub took. The worker runs it every round; an unreachable hub is a
-- WARNING and everything waits here. Returns the rows taken.
CREATE FUNCTION iclear.push_to_hub() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m       iclear.hub_membership;
    top_d   bigint;
    top_l   bigint;
    rows_d  jsonb;
    rows_l  jsonb;
    n       integer := 0;
BEGIN
    SELECT * INTO m FROM iclear.hub_membership;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    SELECT max(x.id), jsonb_agg(to_jsonb(x)) INTO top_d, rows_d
      FROM (SELECT * FROM iclear.store_decision ORDER BY id LIMIT 1000) x;
    SELECT max(x.id), jsonb_agg(jsonb_build_object('list_id', x.list_id, 'value', x.value)) INTO top_l, rows_l
      FROM (SELECT * FROM iclear.list_entry_out ORDER BY id LIMIT 1000) x;
    BEGIN
        PERFORM iclear.hub_call(m.hub_conninfo, format(
            'WITH d AS (INSERT INTO iclear.store_decision
                        SELECT * FROM jsonb_populate_recordset(NULL::iclear.store_decision, %L::jsonb)
                        ON CONFLICT DO NOTHING RETURNING 1),
                  l AS (INSERT INTO iclear.list_entry (list_id, value, added_by)
                        SELECT x.list_id, x.value, %L FROM jsonb_to_recordset(%L::jsonb) AS x(list_id bigint, value text)
                         WHERE EXISTS (SELECT 1 FROM iclear.list WHERE id = x.list_id)
                        ON CONFLICT DO NOTHING RETURNING 1),
                  s AS (UPDATE iclear.hub_store SET last_push_at = now() WHERE store = %L RETURNING 1)
             SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM l)',
            coalesce(rows_d, '[]'), m.store, coalesce(rows_l, '[]'), m.store));
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'iclear: the hub took nothing (%): the store''s decisions and list additions wait', SQLERRM;
        RETURN 0;
    END;
    IF top_d IS NOT NULL THEN
        DELETE FROM iclear.store_decision WHERE id <= top_d;
        n := n + jsonb_array_length(rows_d);
    END IF;
    IF top_l IS NOT NULL THEN
        DELETE FROM iclear.list_entry_out WHERE id <= top_l;
        n := n + jsonb_array_length(rows_l);
    END IF;
    RETURN n;
END $$;

-- On the hub: grant a store `want` more slots of a global cap for its
-- period `bucket` (a negative `want` gives unused ones back), within the
-- cap's limit less what every store holds. The cap's row is locked: two
-- stores asking at once are served one after the other. Returns what the
-- store now holds.
CREATE FUNCTION iclear.hub_lease(store text, global_cap_id bigint, bucket text, want bigint, used bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lim    bigint;
    held   bigint;
    mine   bigint;
    give   bigint;
BEGIN
    SELECT c.cap_limit INTO lim FROM iclear.global_cap c WHERE c.id = hub_lease.global_cap_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    SELECT coalesce(sum(l.granted), 0) INTO held FROM iclear.cap_lease l
     WHERE l.global_cap_id = hub_lease.global_cap_id AND l.bucket = hub_lease.bucket;
    SELECT coalesce(l.granted, 0) INTO mine FROM iclear.cap_lease l
     WHERE l.store = hub_lease.store AND l.global_cap_id = hub_lease.global_cap_id AND l.bucket = hub_lease.bucket;
    mine := coalesce(mine, 0);
    IF hub_lease.want >= 0 THEN
        give := greatest(0, least(hub_lease.want, lim - held));
    ELSE
        -- back: never below what the store spent
        give := -least(-hub_lease.want, greatest(mine - greatest(hub_lease.used, 0), 0));
    END IF;
    INSERT INTO iclear.cap_lease AS l (store, global_cap_id, bucket, granted, used, updated_at)
    VALUES (hub_lease.store, hub_lease.global_cap_id, hub_lease.bucket, mine + give, greatest(hub_lease.used, 0), now())
    ON CONFLICT (store, global_cap_id, bucket)
    DO UPDATE SET granted = l.granted + give, used = greatest(l.used, EXCLUDED.used), updated_at = now();
    RETURN mine + give;
END $$;

-- On a store: keep a lease of each global cap's current period, asking the
-- hub for more when fewer than half of iclear.cap_lease_size remain (the
-- worker, every round; run_worker_once). An unreachable hub is a WARNING:
-- leads spend what is left, then see the cap full. Returns the caps topped up.
CREATE FUNCTION iclear.refresh_cap_leases() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m       iclear.hub_membership;
    c       record;
    b       text;
    spent   bigint;
    held    bigint;
    size    bigint := coalesce(nullif(pg_catalog.current_setting('iclear.cap_lease_size', true), '')::bigint, 100);
    got     text;
    n       integer := 0;
BEGIN
    SELECT * INTO m FROM iclear.hub_membership;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    FOR c IN SELECT * FROM iclear.global_cap ORDER BY id LOOP
        b := to_char(iclear.cap_period_start(c.period, c.start_day, now(), c.time_zone) AT TIME ZONE c.time_zone,
                     'YYYY-MM-DD');
        SELECT coalesce(sum(u.used), 0) INTO spent FROM iclear.cap_use u
         WHERE u.scope = 'global' AND u.ref_id = c.id AND u.period = c.period AND u.bucket = b;
        SELECT coalesce(max(g.granted), 0) INTO held FROM iclear.cap_grant g
         WHERE g.global_cap_id = c.id AND g.bucket = b;
        CONTINUE WHEN held - spent >= (size + 1) / 2;
        BEGIN
            got := iclear.hub_call(m.hub_conninfo, format('SELECT iclear.hub_lease(%L, %s, %L, %s, %s)',
                                                          m.store, c.id, b, size - (held - spent), spent));
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'iclear: the hub granted no slots of global cap % (%)', c.id, SQLERRM;
            RETURN n;
        END;
        INSERT INTO iclear.cap_grant AS g (global_cap_id, bucket, granted, refreshed_at)
        VALUES (c.id, b, got::bigint, now())
        ON CONFLICT (global_cap_id, bucket) DO UPDATE SET granted = EXCLUDED.granted, refreshed_at = now();
        n := n + 1;
    END LOOP;
    DELETE FROM iclear.cap_grant g WHERE g.refreshed_at < now() - interval '40 days';
    RETURN n;
END $$;

-- The replication triggers (10_tables.sql) and the store's write refusal.
CREATE FUNCTION iclear.config_replicated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iclear.config_changed();
    RETURN NULL;
END $$;

CREATE FUNCTION iclear.list_entry_replicated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- an entry both sides have (it came back round the hub): nothing to do
    IF EXISTS (SELECT 1 FROM iclear.list_entry e WHERE e.list_id = NEW.list_id AND e.value = NEW.value) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION iclear.refuse_store_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hub text;
BEGIN
    SELECT string_agg(o.value, ':') INTO hub
      FROM iclear.hub_membership m, iclear.conninfo_options(m.hub_conninfo) o WHERE o.key IN ('host', 'port', 'dbname');
    IF hub IS NOT NULL THEN
        RAISE EXCEPTION 'iclear: this database is a store of the hub at %: change iclear.% on the hub', hub, TG_TABLE_NAME
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'Configuration is written on the hub and replicated to every store; lists may be added to here.';
    END IF;
    RETURN NULL;
END $$;
-- Hub and stores (docs/guide/hub.md). The apply worker of a subscription
-- fires no statement trigger and only row triggers enabled REPLICA or
-- ALWAYS: a configuration change applied from the hub moves the store's
-- configuration_version row, whose REPLICA trigger tells every backend; an
-- entry that came back round the hub is skipped; a store refuses
-- configuration written anywhere but the hub.
CREATE TRIGGER config_replicated AFTER INSERT OR UPDATE ON iclear.config_version
    FOR EACH ROW EXECUTE FUNCTION iclear.config_replicated();
ALTER TABLE iclear.config_version ENABLE REPLICA TRIGGER config_replicated;
CREATE TRIGGER list_entry_replicated BEFORE INSERT ON iclear.list_entry
    FOR EACH ROW EXECUTE FUNCTION iclear.list_entry_replicated();
ALTER TABLE iclear.list_entry ENABLE REPLICA TRIGGER list_entry_replicated;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY iclear.hub_tables() LOOP
        CONTINUE WHEN t = 'list_entry';
        EXECUTE format('CREATE TRIGGER refuse_store_write BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON iclear.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION iclear.refuse_store_write()', t);
    END LOOP;
END $$;

-- ------------------------------------------------------------------ alerts
-- docs/guide/alerts.md. An alert is raised once per kind, product, subject
-- and period (alert's unique key: of two sessions checking at once, one
-- raises it), recorded in iclear.alert and sent as NOTIFY iclear_alert.
CREATE FUNCTION iclear.raise_alert(kind text, product text, subject text, value numeric, threshold numeric,
                                   period text, detail jsonb DEFAULT '{}') RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    a iclear.alert;
BEGIN
    INSERT INTO iclear.alert AS x (kind, product, subject, value, threshold, period, detail)
    VALUES (raise_alert.kind, raise_alert.product, raise_alert.subject, raise_alert.value,
            raise_alert.threshold, raise_alert.period, raise_alert.detail)
    ON CONFLICT (kind, product, subject, period) DO NOTHING
    RETURNING * INTO a;
    IF a.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_catalog.pg_notify('iclear_alert', jsonb_build_object(
        'kind', a.kind, 'product', a.product, 'subject', a.subject, 'value', a.value,
        'threshold', a.threshold, 'at', a.at, 'detail', a.detail)::text);
    RETURN true;
END $$;

-- The rules of `kind` that apply, each with the product it is for (NULL:
-- every product without a rule of its own).
CREATE FUNCTION iclear.alert_rules_of(kind text) RETURNS SETOF iclear.alert_rule
LANGUAGE sql STABLE AS $$
    SELECT * FROM iclear.alert_rule r WHERE r.kind = alert_rules_of.kind AND r.enabled
$$;

-- Bring the hourly aggregates of the last two hours up to date (older hours
-- are final: a lead's transaction that stays open longer is counted in the
-- hour it is decided in only if it commits within the next), and drop
-- those older than 8 days.
-- The hourly aggregates, brought up to date by adding what was decided and
-- looked up since the last check (a minute's rows, not the last hours'):
-- each check reads only its own interval. A transaction still running at a
-- check (its rows dated before it) is counted when its hour is counted again,
-- whole, from the log once it is over an hour old.
-- One read of the interval feeds the hourly aggregates and, for a check's
-- own interval (`minutes`), the per-minute ones of the alert windows.
CREATE FUNCTION iclear.rollup(since timestamptz, upto timestamptz, minutes boolean) RETURNS void
LANGUAGE sql AS $$
    WITH d AS MATERIALIZED (
        SELECT d.created_at, coalesce(d.product_id, -1) AS product_id,
               coalesce((d.envelope ->> 'publisher_id')::bigint, -1) AS publisher_id, d.status,
               coalesce(d.decision -> 'rejected_by' ->> 'kind', '') AS rejected_kind
          FROM iclear.decision d WHERE d.created_at >= since AND d.created_at < upto),
    m AS (
        INSERT INTO iclear.lead_minutely AS m (minute, product_id, publisher_id, leads, rejects)
        SELECT date_trunc('minute', d.created_at), d.product_id, d.publisher_id, count(*),
               count(*) FILTER (WHERE d.status = 'rejected')
          FROM d WHERE minutes GROUP BY 1, 2, 3
        ON CONFLICT (minute, product_id, publisher_id)
        DO UPDATE SET leads = m.leads + excluded.leads, rejects = m.rejects + excluded.rejects)
    INSERT INTO iclear.lead_hourly AS h (hour, product_id, publisher_id, status, rejected_kind, leads)
    SELECT date_trunc('hour', d.created_at), d.product_id, d.publisher_id, d.status, d.rejected_kind, count(*)
      FROM d GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (hour, product_id, publisher_id, status, rejected_kind)
    DO UPDATE SET leads = h.leads + excluded.leads;
    WITH f AS MATERIALIZED (
        SELECT f.at, coalesce(f.name, '') AS service, coalesce(f.product_id, -1) AS product_id, f.outcome,
               coalesce(f.detail ->> 'source', '') AS source, (f.detail ->> 'cost')::numeric AS cost
          FROM iclear.filter_log f WHERE f.at >= since AND f.at < upto AND f.kind = 'service'),
    m AS (
        INSERT INTO iclear.service_minutely AS m (minute, service, product_id, outcome, calls)
        SELECT date_trunc('minute', f.at), f.service, f.product_id, f.outcome, count(*)
          FROM f WHERE minutes GROUP BY 1, 2, 3, 4
        ON CONFLICT (minute, service, product_id, outcome)
        DO UPDATE SET calls = m.calls + excluded.calls)
    INSERT INTO iclear.service_hourly AS h (hour, service, outcome, source, calls, cost)
    SELECT date_trunc('hour', f.at), f.service, f.outcome, f.source, count(*), coalesce(sum(f.cost), 0)
      FROM f GROUP BY 1, 2, 3, 4
    ON CONFLICT (hour, service, outcome, source)
    DO UPDATE SET calls = h.calls + excluded.calls, cost = h.cost + excluded.cost;
$$;
CREATE FUNCTION iclear.refresh_hourly() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s    iclear.hourly_rollup;
    h    timestamptz;
    -- up to this instant (rows are dated by their transaction's start; one
    -- still running now is counted late, with its hour)
    upto timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO s FROM iclear.hourly_rollup FOR UPDATE;
    IF NOT FOUND THEN
        -- the first check counts the last two hours (what it replaces did)
        h := date_trunc('hour', upto) - interval '1 hour';
        DELETE FROM iclear.lead_hourly WHERE hour >= h;
        DELETE FROM iclear.service_hourly WHERE hour >= h;
        INSERT INTO iclear.hourly_rollup (through, exact_through) VALUES (h, h) RETURNING * INTO s;
    END IF;
    -- after a long stop, no more than the aggregates keep
    s.through := greatest(s.through, upto - interval '8 days');
    s.exact_through := greatest(s.exact_through, date_trunc('hour', upto - interval '8 days'));
    IF s.through < upto THEN
        PERFORM iclear.rollup(s.through, upto, true);
        s.through := upto;
    END IF;
    -- each hour counted again, whole, once it ended over an hour ago
    h := s.exact_through;
    WHILE h < date_trunc('hour', upto) - interval '1 hour' LOOP
        DELETE FROM iclear.lead_hourly WHERE hour = h;
        DELETE FROM iclear.service_hourly WHERE hour = h;
        PERFORM iclear.rollup(h, h + interval '1 hour', false);
        h := h + interval '1 hour';
    END LOOP;
    UPDATE iclear.hourly_rollup SET through = s.through, exact_through = h;
    DELETE FROM iclear.lead_hourly WHERE hour < upto - interval '8 days';
    DELETE FROM iclear.service_hourly WHERE hour < upto - interval '8 days';
    -- minutes: as long as the longest enabled alert window, two hours at least
    h := upto - greatest(interval '2 hours', (SELECT make_interval(secs => max(window_s))
                                                 FROM iclear.alert_rule WHERE enabled));
    DELETE FROM iclear.lead_minutely WHERE minute < h;
    DELETE FROM iclear.service_minutely WHERE minute < h;
END $$;

-- Check every enabled alert rule; returns the alerts raised. The worker runs
-- it at most once a minute; anyone may run it (it reads aggregates and the
-- last window, never every lead).
CREATE FUNCTION iclear.check_alerts() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r      iclear.alert_rule;
    x      record;
    n      integer := 0;
    bucket text;
BEGIN
    -- one check at a time (the aggregates are rewritten): a session that
    -- finds another checking leaves it to that one, and waits for nothing
    IF NOT pg_catalog.pg_try_advisory_xact_lock(1769144321, 29) THEN
        RETURN 0;
    END IF;
    PERFORM iclear.refresh_hourly();
    -- caps at their limit, or past a share of it (per cap and period)
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind IN ('cap_reached', 'cap_warning') LOOP
        FOR x IN SELECT c.*, (SELECT p.name FROM iclear.rule ru JOIN iclear.product p ON p.id = ru.product_id
                               WHERE c.scope = 'rule' AND ru.id = c.rule_id
                              UNION ALL
                              SELECT p.name FROM iclear.global_rule g JOIN iclear.product p ON p.id = g.product_id
                               WHERE c.scope = 'global_rule' AND g.id = c.rule_id) AS product
                   FROM iclear.cap_status c
                  WHERE c.cap_limit > 0 AND c.period <> 'source'
                    AND c.current_value >= CASE r.kind WHEN 'cap_reached' THEN c.cap_limit
                                                       ELSE ceil(c.cap_limit * least(r.threshold, 1)) END LOOP
            CONTINUE WHEN r.product IS NOT NULL AND x.product IS DISTINCT FROM r.product;
            IF iclear.raise_alert(r.kind, x.product, x.scope || ' ' || x.subject || ' (' || x.period || ')',
                                  x.current_value, x.cap_limit, coalesce(x.next_reset::text, ''),
                                  jsonb_build_object('scope', x.scope, 'rule_id', x.rule_id, 'period', x.period,
                                                     'next_reset', x.next_reset, 'share', r.threshold)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    -- a publisher's reject rate in the window against its own last 7 days
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind = 'reject_spike' LOOP
        bucket := (extract(epoch FROM now())::bigint / r.window_s)::text;
        FOR x IN
            WITH recent AS (
                SELECT m.product_id, m.publisher_id, sum(m.leads) AS leads, sum(m.rejects) AS rejects
                  FROM iclear.lead_minutely m
                 WHERE m.minute >= date_trunc('minute', now() - make_interval(secs => r.window_s))
                 GROUP BY 1, 2),
            base AS (
                SELECT h.product_id, h.publisher_id, sum(h.leads) AS leads,
                       sum(h.leads) FILTER (WHERE h.status = 'rejected') AS rejects
                  FROM iclear.lead_hourly h
                 WHERE h.hour >= now() - interval '7 days' AND h.hour < now() - make_interval(secs => r.window_s)
                 GROUP BY 1, 2)
            SELECT p.name AS product, rc.publisher_id, rc.leads,
                   rc.rejects::numeric / rc.leads AS rate,
                   greatest(coalesce(b.rejects, 0)::numeric / nullif(b.leads, 0), 0.01) AS base_rate
              FROM recent rc
              JOIN iclear.product p ON p.id = rc.product_id
              -- a publisher without min_volume leads in its 7 days has no
              -- rate of its own to spike from (a new store, a new publisher)
              JOIN base b ON b.product_id = rc.product_id AND b.publisher_id = rc.publisher_id
             WHERE rc.leads >= r.min_volume AND b.leads >= r.min_volume
        LOOP
            CONTINUE WHEN r.product IS NOT NULL AND x.product <> r.product;
            CONTINUE WHEN x.rate / x.base_rate < r.threshold;
            IF iclear.raise_alert('reject_spike', x.product, 'publisher ' || x.publisher_id,
                                  round(x.rate / x.base_rate, 2), r.threshold, bucket,
                                  jsonb_build_object('publisher_id', x.publisher_id, 'leads', x.leads,
                                                     'reject_rate', round(x.rate, 4),
                                                     'reject_rate_7_days', round(x.base_rate, 4))) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    -- a service that does not answer
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind = 'vendor_failing' LOOP
        bucket := (extract(epoch FROM now())::bigint / r.window_s)::text;
        FOR x IN SELECT m.service, sum(m.calls) AS calls,
                        coalesce(sum(m.calls) FILTER (WHERE m.outcome = 'no_response'), 0)::numeric
                          / sum(m.calls) AS share
                   FROM iclear.service_minutely m
                  WHERE m.minute >= date_trunc('minute', now() - make_interval(secs => r.window_s))
                    AND m.outcome IN ('pass', 'reject', 'flagged', 'no_response')
                    AND (r.product IS NULL OR m.product_id = (SELECT id FROM iclear.product WHERE name = r.product))
                  GROUP BY 1 HAVING sum(m.calls) >= r.min_volume LOOP
            CONTINUE WHEN x.share < r.threshold;
            IF iclear.raise_alert('vendor_failing', r.product, x.service, round(x.share, 4), r.threshold, bucket,
                                  jsonb_build_object('calls', x.calls, 'window_s', r.window_s)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    -- the queue: its oldest due job waiting, and jobs failing
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind = 'queue_stalled' LOOP
        FOR x IN SELECT extract(epoch FROM now() - min(j.run_after)) AS waited, count(*) AS due
                   FROM iclear.job j WHERE j.status = 'queued' AND j.run_after <= now() LOOP
            CONTINUE WHEN x.waited IS NULL OR x.waited < r.threshold;
            IF iclear.raise_alert('queue_stalled', NULL, 'job queue', round(x.waited), r.threshold,
                                  to_char(now(), 'YYYY-MM-DD HH24'), jsonb_build_object('due_jobs', x.due)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind = 'jobs_failing' LOOP
        bucket := (extract(epoch FROM now())::bigint / r.window_s)::text;
        FOR x IN SELECT count(*) AS failed, max(j.last_error) AS last_error FROM iclear.job j
                  WHERE j.status = 'failed' AND j.updated_at >= now() - make_interval(secs => r.window_s) LOOP
            CONTINUE WHEN x.failed = 0 OR x.failed < r.threshold;
            IF iclear.raise_alert('jobs_failing', NULL, 'job queue', x.failed, r.threshold, bucket,
                                  jsonb_build_object('last_error', x.last_error)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    -- a do-not-call list past its refresh age
    FOR r IN SELECT * FROM iclear.alert_rule WHERE enabled AND kind = 'list_stale' LOOP
        FOR x IN SELECT l.name, extract(epoch FROM now() - l.refreshed_at) / 86400 AS days FROM iclear.list l
                  WHERE l.kind = 'dnpl' AND l.field ~* 'phone'
                    AND l.refreshed_at < now() - make_interval(days => r.threshold::int) LOOP
            IF iclear.raise_alert('list_stale', NULL, x.name, floor(x.days), r.threshold, current_date::text) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;

-- lead_info shows the decision as the caller got it: the filter-log steps a
-- 0.6.0 decision holds (`steps`) are in its `log`, through full_log.
CREATE OR REPLACE FUNCTION iclear.lead_info(lead_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'lead_id', $1,
        'decisions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                   'at', d.created_at, 'stage', d.stage, 'status', d.status,
                                   'envelope', d.envelope::jsonb, 'decision', d.decision::jsonb - 'steps') ORDER BY d.id)
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

-- END since-0.5.0
