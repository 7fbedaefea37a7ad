-- iclear finalize, comments: What each table, view and function is, for \d+ and \df+ (README and docs/reference say more).
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

-- BEGIN since-0.4.0
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
-- END since-0.4.0

-- BEGIN since-0.5.0
COMMENT ON TABLE iclear.service_secret IS 'The whole endpoint of a service whose URL carries a secret (a user and password, query values); readable by iclear_admin alone. service.endpoint shows it masked.';
COMMENT ON FUNCTION iclear.service_endpoint() IS 'Trigger: checks a service endpoint against the egress policy and keeps its secret parts in service_secret.';
COMMENT ON FUNCTION iclear.check_endpoint(text) IS 'Refuses an endpoint that is not an http(s) URL or that iclear.allowed_endpoints does not allow, naming the setting.';
COMMENT ON FUNCTION iclear.shown_endpoint(text) IS 'An endpoint as iclear shows, logs and audits it: user, password and query values masked.';

COMMENT ON TABLE iclear.sms_key IS 'The key of the SMS code digests (32 random bytes made at install); readable by the processor alone.';
COMMENT ON TABLE iclear.sms_outbox IS 'The code of each SMS not sent yet, by job; the worker deletes it once sent. Readable by the processor alone.';
COMMENT ON FUNCTION iclear.sms_code_digest(text, text, text) IS 'Internal: the keyed digest of an SMS code of a phone of a product, as the history keeps it.';
COMMENT ON FUNCTION iclear.sms_locked_out(text, text) IS 'Internal (confirm_sms): true once a phone had iclear.sms_max_failed wrong codes in the window.';
COMMENT ON FUNCTION iclear.count_sms_failure(text, text) IS 'Internal (confirm_sms): counts a wrong code for a phone; a rollback does not take it back.';

COMMENT ON FUNCTION iclear.import_config(jsonb, boolean, boolean) IS 'Makes the product equal the document; objects other products share change only with change_shared.';
COMMENT ON FUNCTION iclear.config_shared_changes(jsonb) IS 'Internal (import_config): the shared objects (lists, global caps) a document would add or change.';
COMMENT ON FUNCTION iclear.defer_config_version(boolean) IS 'While on, this transaction''s configuration changes move the configuration version once, when it is turned off (import_config).';
COMMENT ON FUNCTION iclear.config_version_deferred() IS 'Internal (bump_config_version): is the version bump deferred?';

COMMENT ON FUNCTION iclear.forget(text, text, boolean) IS 'Erases one consumer (an email, a phone or both) from every iclear table; returns what it touched. iclear_admin.';
COMMENT ON FUNCTION iclear.erasure_mentions(json, text, text) IS 'Internal (forget): does a JSON value name the consumer?';
COMMENT ON FUNCTION iclear.erasure_erased(json, text, text) IS 'Internal (forget): a JSON value with every string naming the consumer replaced by [erased].';
COMMENT ON FUNCTION iclear.lead_signature(text, json) IS 'Internal (forget): the verification signature of a stored lead envelope.';

COMMENT ON FUNCTION iclear.audit_write(text, text, text, jsonb, jsonb) IS 'Internal: writes one row of config_audit (credentials masked); callable by its owner alone, through the audit trigger.';
COMMENT ON FUNCTION iclear.worker_alive() IS 'Is the background worker running (whoever asks).';
COMMENT ON FUNCTION iclear.validate_tracking_action() IS 'Trigger: a run_tracking_action action needs the tracking service subscribed, with an endpoint.';
COMMENT ON FUNCTION iclear.check_global_rule_credential() IS 'Trigger (at commit): an active global rule has the credential its service needs.';
COMMENT ON FUNCTION iclear.missing_credential(text, jsonb) IS 'Internal: the credential a global rule''s settings (with its stored credentials) lack, if any.';
COMMENT ON FUNCTION iclear.cap_period_start(text,integer,timestamp with time zone,text) IS 'When the current period of such a cap began, in local days of time_zone.';
COMMENT ON FUNCTION iclear.next_cap_reset(text,integer,timestamp with time zone,text) IS 'When such a cap next resets, in local days of time_zone.';
COMMENT ON FUNCTION iclear.validate_time_zone() IS 'Trigger: a product''s or global cap''s time_zone is a name of pg_timezone_names.';
COMMENT ON VIEW iclear.cap_status IS 'Every global cap, global-rule cap and rule cap (daily, monthly, per source): scope (global, global_rule, rule), subject, rule_id, period, start_day, cap_limit, current_value, next_reset, service, subscription, status and the time_zone whose local days it counts (docs/reference/views.md).';
COMMENT ON TABLE iclear.lead_history IS 'The lead history history conditions count: one row per decided lead and key, a keyed digest of its normalised values (never the values), its product, status and time.';
COMMENT ON FUNCTION iclear.prune_history() IS 'Drop the lead history older than the longest window of any history condition; returns the rows dropped.';
COMMENT ON FUNCTION iclear.rebuild_history(text,timestamp with time zone) IS 'Fill the lead history of a product from its decisions since a time (its rows from then are replaced); returns the rows written.';
COMMENT ON FUNCTION iclear.erasure_history_digests(text,text) IS 'Internal (forget): the lead-history digests a consumer''s email and phone make.';
COMMENT ON FUNCTION iclear.list_entry_normalize() IS 'Trigger (C): keeps list values as the engine probes them: a phone list''s numbers by their digits, others trimmed and lowercased.';
COMMENT ON TABLE iclear.hub_membership IS 'On a store: the hub it joined (store name, connection string, when). The admin''s alone.';
COMMENT ON TABLE iclear.hub_store IS 'On the hub: each store it gathers list additions and decisions from.';
COMMENT ON TABLE iclear.store_decision IS 'Every store''s decisions, on the hub (each store writes its own and publishes them): keyed by store and the store''s decision id.';
COMMENT ON TABLE iclear.cap_lease IS 'On the hub: the slots of each global cap and period granted to each store, and what it last reported spent.';
COMMENT ON TABLE iclear.cap_grant IS 'On a store: what the hub granted it, per global cap and period.';
COMMENT ON VIEW iclear.store_status IS 'On the hub: each store, whether the hub receives from it, its last contact, lease and decision.';
COMMENT ON VIEW iclear.store_service_usage IS 'On the hub: paid lookups and their cost by store and service.';
COMMENT ON VIEW iclear.cap_lease_status IS 'On the hub: each store''s lease of each global cap and period.';
COMMENT ON FUNCTION iclear.hub_publish() IS 'On the hub: creates or updates the publication of the configuration and the lists.';
COMMENT ON FUNCTION iclear.join_hub(text,text) IS 'On a store: subscribes to the hub, reads its verification history, publishes list additions and decisions back. Idempotent.';
COMMENT ON FUNCTION iclear.leave_hub() IS 'On a store: undoes join_hub; the configuration received stays.';
COMMENT ON FUNCTION iclear.hub_add_store(text,text) IS 'On the hub: registers a store whose worker brings its list additions and decisions. Idempotent.';
COMMENT ON FUNCTION iclear.hub_lease(text,bigint,text,bigint,bigint) IS 'On the hub: grants a store slots of a global cap''s period within the limit less what every store holds.';
COMMENT ON FUNCTION iclear.refresh_cap_leases() IS 'On a store: tops up each global cap''s lease from the hub (the worker, every round).';
COMMENT ON FUNCTION iclear.hub_require(text) IS 'Internal: a superuser and wal_level = logical, or an error naming them.';
COMMENT ON FUNCTION iclear.hub_tables() IS 'Internal: the tables the hub publishes.';
COMMENT ON FUNCTION iclear.conninfo_options(text) IS 'Internal: the key=value options of a connection string.';
COMMENT ON FUNCTION iclear.hub_call(text,text) IS 'Internal: one value of a statement on another server, through dblink, bounded by iclear.hub_timeout.';
COMMENT ON FUNCTION iclear.config_replicated() IS 'Trigger (REPLICA): a configuration change applied from the hub tells every backend.';
COMMENT ON FUNCTION iclear.list_entry_replicated() IS 'Trigger (REPLICA): an entry that came back round the hub is skipped.';
COMMENT ON FUNCTION iclear.refuse_store_write() IS 'Trigger: a store refuses configuration written anywhere but the hub (25006).';
COMMENT ON TABLE iclear.list_entry_out IS 'On a store: its list additions until the worker has taken them to the hub.';
COMMENT ON FUNCTION iclear.push_to_hub() IS 'On a store: takes its decisions and list additions to the hub and deletes what the hub took (the worker, every round).';
-- END since-0.5.0
