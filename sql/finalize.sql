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

CREATE FUNCTION iclear.validate_rule_action() RETURNS trigger
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
    RETURN NEW;
END $$;
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.rule_action
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_rule_action();

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

CREATE FUNCTION iclear.validate_global_rule() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM iclear.check_global_rule_settings(NEW.service, NEW.settings);
    RETURN NEW;
END $$;
CREATE TRIGGER validate BEFORE INSERT OR UPDATE ON iclear.global_rule
    FOR EACH ROW EXECUTE FUNCTION iclear.validate_global_rule();

-- ------------------------------------------------- configuration versioning
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['product', 'service', 'global_rule', 'global_cap', 'rule_category',
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
SELECT pg_catalog.pg_extension_config_dump('iclear.counter', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.rule_cap_usage', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.job', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.verification_history', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.sms_verification', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.decision', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.filter_log', '');
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

CREATE VIEW iclear.lead_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.name AS service, f.origin, f.outcome,
       f.request, f.response, f.detail
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
       f.outcome, f.detail
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
 WHERE f.stage = 'redirect';

-- ------------------------------------------------------------ public entry
CREATE FUNCTION public.iclear_process(lead jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE STRICT
AS $$ SELECT iclear.process(lead) $$;

-- -------------------------------------------------------- attach / detach
-- The trigger catches any error of processing in a subtransaction, so the
-- inserted row is always kept (design §4); on_error 'raise' opts out.
CREATE FUNCTION iclear.lead_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    product text := TG_ARGV[0];
    opts    jsonb := TG_ARGV[1]::jsonb;
    row_in  json := row_to_json(NEW);
    patch   json;
    err     text;
BEGIN
    BEGIN
        patch := iclear.process_row(product, opts, row_in);
    EXCEPTION WHEN OTHERS THEN
        IF opts ->> 'on_error' = 'raise' THEN
            RAISE;
        END IF;
        err := SQLERRM;
        BEGIN
            patch := iclear.record_error(product, opts, row_in, err);
        EXCEPTION WHEN OTHERS THEN
            -- even the error record failed: keep the row, say why on it
            patch := json_build_object('iclear_status', 'error', 'iclear_decision',
                     json_build_object('status', 'error', 'reason', err,
                                       'record_error', SQLERRM));
        END;
    END;
    IF patch ->> 'iclear_status' = 'rejected' AND opts ->> 'rejected' = 'skip' THEN
        RETURN NULL;
    END IF;
    NEW := json_populate_record(NEW, patch);
    RETURN NEW;
END $$;

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
