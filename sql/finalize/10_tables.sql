-- iclear finalize, tables: The tables' own machinery: validation and configuration-version triggers, the audit trail, credentials and endpoint secrets, pg_dump registration.
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

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

-- BEGIN since-0.2.0
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

SELECT pg_catalog.pg_extension_config_dump('iclear.counter_delta', '');
-- paid answers: a restore keeps them
SELECT pg_catalog.pg_extension_config_dump('iclear.lookup_cache', '');
-- END since-0.2.0

-- BEGIN since-0.4.0
SELECT pg_catalog.pg_extension_config_dump('iclear.spent_request', '');
-- Backends that ran leads on the new library under the 0.4.0 schema used its
-- tables: a new configuration version tells them the schema moved.
UPDATE iclear.config_version SET version = nextval('iclear.config_version_seq');
SELECT iclear.config_changed();

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
-- END since-0.4.0

-- BEGIN since-0.5.0
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

CREATE OR REPLACE FUNCTION iclear.audit_config() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'iclear_audit_trigger';

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
-- A tracking event needs somewhere to go: a tracking action is refused
-- while the tracking service is unsubscribed or has no endpoint (as a pause
-- is without sms); a lead that meets one anyway (the service unsubscribed
-- since) logs it `skipped`, never `queued`.
CREATE FUNCTION iclear.validate_tracking_action() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM iclear.service
                    WHERE name = 'tracking' AND subscription = 'enabled' AND endpoint IS NOT NULL) THEN
        RAISE EXCEPTION 'invalid setting rule_action.action: run_tracking_action needs the tracking service subscribed, with an endpoint'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'UPDATE iclear.service SET subscription = ''enabled'' WHERE name = ''tracking'' (an admin sets its endpoint)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER validate_tracking BEFORE INSERT OR UPDATE ON iclear.rule_action
    FOR EACH ROW WHEN (NEW.action = 'run_tracking_action')
    EXECUTE FUNCTION iclear.validate_tracking_action();

-- An active global rule needs its credential (issue 25 item 5): without
-- it every lead would be "no response". The check runs at commit, so an
-- admin may add the rule and then its credential in one transaction; an
-- operator prepares a rule as `paused`, and an admin sets its key and
-- activates it. It runs as iclear_processor (50_roles.sql), which reads
-- the credentials an operator may not. A restore loads global_rule before
-- global_rule_credential, each table in its own transaction: like
-- PostgreSQL's own function-body check, the check is off while
-- check_function_bodies is (pg_dump and pg_restore turn it off).
CREATE FUNCTION iclear.check_global_rule_credential() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g       iclear.global_rule;
    rid     bigint;
    missing text;
BEGIN
    IF NOT pg_catalog.current_setting('check_function_bodies')::boolean THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'global_rule' THEN
        rid := NEW.id;
    ELSE
        rid := OLD.global_rule_id;
    END IF;
    SELECT * INTO g FROM iclear.global_rule x WHERE x.id = rid;
    IF NOT FOUND OR g.status <> 'active' THEN
        RETURN NULL;
    END IF;
    SELECT iclear.missing_credential(g.service, g.settings || coalesce(c.credentials, '{}')) INTO missing
      FROM (SELECT NULL) x LEFT JOIN iclear.global_rule_credential c ON c.global_rule_id = g.id;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'invalid setting global_rule.settings.%: global rule % (%) is active without it', missing, g.id, g.service
            USING ERRCODE = 'check_violation',
                  HINT = 'A member of iclear_admin sets it (in the same transaction, or first save the rule as paused).';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER credential AFTER INSERT OR UPDATE ON iclear.global_rule
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION iclear.check_global_rule_credential();
CREATE CONSTRAINT TRIGGER credential AFTER UPDATE OR DELETE ON iclear.global_rule_credential
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION iclear.check_global_rule_credential();

-- A time zone is a name PostgreSQL knows (pg_timezone_names): the Rust
-- side resolves it with PostgreSQL's own zone data (src/store/local_time.rs),
-- so the caps and the views agree. Abbreviations and offsets ('PST',
-- '+05') are refused: they do not follow daylight-saving time.
CREATE FUNCTION iclear.validate_time_zone() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = NEW.time_zone) THEN
        RAISE EXCEPTION 'invalid setting %.time_zone: unknown time zone %', TG_TABLE_NAME, quote_literal(NEW.time_zone)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a name of pg_timezone_names, such as America/New_York or UTC';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER validate_time_zone BEFORE INSERT OR UPDATE OF time_zone ON iclear.product
    FOR EACH ROW WHEN (NEW.time_zone <> 'UTC') EXECUTE FUNCTION iclear.validate_time_zone();
CREATE TRIGGER validate_time_zone BEFORE INSERT OR UPDATE OF time_zone ON iclear.global_cap
    FOR EACH ROW WHEN (NEW.time_zone <> 'UTC') EXECUTE FUNCTION iclear.validate_time_zone();

-- Phone lists keep numbers by their digits from 0.6.0: the entries an older
-- version kept formatted are normalised (one that becomes an entry the list
-- has already is the same entry).
DELETE FROM iclear.list_entry e
 USING iclear.list l
 WHERE l.id = e.list_id AND l.field ~* 'phone'
   AND iclear.normalize_phone(e.value) IS NOT NULL AND e.value <> iclear.normalize_phone(e.value)
   AND (EXISTS (SELECT 1 FROM iclear.list_entry x
                 WHERE x.list_id = e.list_id AND x.value = iclear.normalize_phone(e.value))
        OR EXISTS (SELECT 1 FROM iclear.list_entry y
                    WHERE y.list_id = e.list_id AND y.value <> iclear.normalize_phone(y.value)
                      AND iclear.normalize_phone(y.value) = iclear.normalize_phone(e.value)
                      AND y.value < e.value));
UPDATE iclear.list_entry e SET value = iclear.normalize_phone(e.value)
  FROM iclear.list l
 WHERE l.id = e.list_id AND l.field ~* 'phone'
   AND iclear.normalize_phone(e.value) IS NOT NULL AND e.value <> iclear.normalize_phone(e.value);

-- An alert rule of a kind and product that exists is updated, not added
-- (CREATE EXTENSION seeds one per kind, and a restore loads the dumped ones
-- beside them).
CREATE FUNCTION iclear.alert_rule_upsert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE iclear.alert_rule r
       SET threshold = NEW.threshold, window_s = NEW.window_s, min_volume = NEW.min_volume, enabled = NEW.enabled
     WHERE r.kind = NEW.kind AND r.product IS NOT DISTINCT FROM NEW.product;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alert_rule_upsert BEFORE INSERT ON iclear.alert_rule
    FOR EACH ROW EXECUTE FUNCTION iclear.alert_rule_upsert();

-- Rules capped under 0.5.0 keep counting as they did (every match, every
-- source) until an operator chooses the seed's meaning (docs/upgrading.md).
DO $$
DECLARE
    n bigint;
BEGIN
    UPDATE iclear.rule SET cap_counts = 'matches'
     WHERE daily_limit IS NOT NULL OR monthly_limit IS NOT NULL OR per_source_limit IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE iclear.rule SET per_source_scope = 'all_sources' WHERE per_source_limit IS NOT NULL;
    IF n > 0 THEN
        RAISE NOTICE 'iclear: % capped rules keep counting every match (cap_counts = matches); the seed counts the runs of a rule''s service (cap_counts = service_runs): docs/upgrading.md', n;
    END IF;
END $$;

-- END since-0.5.0
