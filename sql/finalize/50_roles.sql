-- iclear finalize, roles: Roles, ownership and grants: who may do what, and whose rights each function runs with (SECURITY.md).
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

-- BEGIN since-0.4.0
REVOKE ALL ON FUNCTION iclear.use_verification_hub(text) FROM PUBLIC;

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

-- BEGIN since-0.5.0
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
                          iclear.check_global_rule_settings(text, jsonb), iclear.resume_paused_leads(text, text),
                          iclear.missing_credential(text, jsonb)
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
-- (an operator's rule is checked against a credential it may not read)
ALTER FUNCTION iclear.check_global_rule_credential() OWNER TO iclear_processor;
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
-- docs/guide/retention.md).
ALTER FUNCTION iclear.maintain(integer, integer, integer) SECURITY DEFINER;

REVOKE ALL ON FUNCTION iclear.audit_write(text, text, text, jsonb, jsonb) FROM PUBLIC;

REVOKE ALL ON FUNCTION iclear.audit_config() FROM PUBLIC;
-- operators read the trail; only iclear writes it
REVOKE INSERT ON iclear.config_audit FROM iclear_operator;

GRANT SELECT, INSERT, UPDATE, DELETE ON iclear.service_secret TO iclear_admin;
GRANT SELECT ON iclear.service_secret TO iclear_processor;

GRANT SELECT ON iclear.sms_key TO iclear_processor;
GRANT SELECT, INSERT, DELETE ON iclear.sms_outbox TO iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.sms_code_digest(text, text, text), iclear.sms_locked_out(text, text),
                          iclear.count_sms_failure(text, text), iclear.check_endpoint(text),
                          iclear.shown_endpoint(text)
    TO iclear_processor;

GRANT EXECUTE ON FUNCTION iclear.import_config(jsonb, boolean, boolean), iclear.config_shared_changes(jsonb),
                          iclear.defer_config_version(boolean), iclear.config_version_deferred()
    TO iclear_operator;
GRANT EXECUTE ON FUNCTION iclear.config_version_deferred() TO iclear_processor;

REVOKE ALL ON FUNCTION iclear.forget(text, text, boolean) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION iclear.worker_alive() TO iclear_reader, iclear_processor;
-- hub and stores: a store writes its decisions for the hub, and reads its
-- grants; the hub's own leads read the leases; the membership's connection
-- string is the admin's alone
GRANT SELECT, INSERT ON iclear.store_decision, iclear.list_entry_out TO iclear_processor;
ALTER FUNCTION iclear.push_to_hub() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION iclear.push_to_hub() TO iclear_processor;
GRANT SELECT ON iclear.cap_grant, iclear.cap_lease, iclear.hub_membership, iclear.hub_store TO iclear_processor;
GRANT SELECT ON iclear.store_decision, iclear.store_status, iclear.store_service_usage, iclear.cap_lease_status
    TO iclear_reader, iclear_operator;
GRANT SELECT ON iclear.cap_lease, iclear.cap_grant TO iclear_operator;
ALTER FUNCTION iclear.refresh_cap_leases() SECURITY DEFINER;
-- (a write by any role is checked against the membership, which only the
-- admin reads)
ALTER FUNCTION iclear.refuse_store_write() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION iclear.refresh_cap_leases() TO iclear_processor;
-- alerts and metrics: the worker checks (as the extension owner, which
-- reads every source); the reader reads the alerts, their rules and the
-- metrics; the operator sets the rules
ALTER FUNCTION iclear.check_alerts() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION iclear.check_alerts() TO iclear_processor, iclear_operator;
GRANT SELECT ON iclear.alert, iclear.alert_rule, iclear.metrics, iclear.lead_hourly, iclear.service_hourly
    TO iclear_reader, iclear_operator;
GRANT INSERT, UPDATE, DELETE ON iclear.alert_rule TO iclear_operator;
-- progress: reported by whoever runs the long work, read by the reader
GRANT EXECUTE ON FUNCTION iclear.progress_start(text, text, bigint), iclear.progress_update(bigint, bigint),
                          iclear.progress_end()
    TO iclear_operator, iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.progress_slots(), iclear.progress_command(bigint) TO iclear_reader, iclear_operator;
GRANT SELECT ON iclear.progress TO iclear_reader, iclear_operator;
-- the lead history: the processor's alone (digests of personal data)
GRANT SELECT, INSERT, DELETE ON iclear.lead_history TO iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.prune_history() TO iclear_processor;
GRANT EXECUTE ON FUNCTION iclear.rebuild_history(text, timestamptz) TO iclear_operator;
REVOKE ALL ON FUNCTION iclear.erasure_history_digests(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION iclear.cap_period_start(text, integer, timestamptz, text),
                          iclear.next_cap_reset(text, integer, timestamptz, text)
    TO iclear_reader, iclear_processor;

-- The tail of every release: the admin may call every function but the
-- internal ones, nothing is PUBLIC, and every function pins its
-- search_path (the functions above included).
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA iclear TO iclear_admin;
REVOKE EXECUTE ON FUNCTION iclear.use_verification_hub(text), iclear.resume_paused_leads(text, text),
                           iclear.audit_write(text, text, text, jsonb, jsonb),
                           iclear.sms_code_digest(text, text, text), iclear.sms_locked_out(text, text),
                           iclear.count_sms_failure(text, text), iclear.erasure_history_digests(text, text)
    FROM iclear_admin;
-- the digests' key and the codes to send: the processor's alone
REVOKE ALL ON iclear.sms_key, iclear.sms_outbox, iclear.lead_history
    FROM iclear_admin, iclear_operator, iclear_reader;
-- (a connection string may hold a password)
REVOKE ALL ON iclear.hub_membership, iclear.hub_store FROM iclear_operator, iclear_reader;
GRANT SELECT ON iclear.hub_membership, iclear.hub_store TO iclear_admin;
-- what the release's grants on all tables and sequences give a fresh install
GRANT SELECT ON iclear.cap_grant, iclear.cap_lease, iclear.list_entry_out, iclear.store_decision TO iclear_admin;
GRANT USAGE ON SEQUENCE iclear.list_entry_out_id_seq TO iclear_operator;
GRANT SELECT ON iclear.alert, iclear.alert_rule, iclear.lead_hourly, iclear.service_hourly, iclear.hourly_rollup, iclear.lead_minutely, iclear.service_minutely TO iclear_admin;
GRANT USAGE ON SEQUENCE iclear.alert_id_seq, iclear.alert_rule_id_seq TO iclear_operator;
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
-- every filter-log row, those a decision holds too: as filter_log
GRANT SELECT ON iclear.filter_log_all TO iclear_operator, iclear_processor;
-- END since-0.5.0
