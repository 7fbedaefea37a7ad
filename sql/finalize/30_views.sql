-- iclear finalize, views: The reporting views.
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

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

-- Operations at a glance. The async worker registers as "iclear worker".
CREATE VIEW iclear.health AS
SELECT iclear.version() AS version,
       EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'iclear worker') AS worker_alive,
       (SELECT count(*) FROM iclear.job WHERE status IN ('queued', 'running')) AS queue_depth,
       (SELECT min(created_at) FROM iclear.job WHERE status = 'queued') AS oldest_queued_at,
       (SELECT count(*) FROM iclear.job WHERE status = 'failed') AS failed_jobs,
       (SELECT count(*) FROM iclear.decision_default) AS rows_in_default_partitions,
       (SELECT version FROM iclear.config_version) AS config_version;

-- BEGIN since-0.2.0
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
-- END since-0.2.0

-- BEGIN since-0.4.0
-- Every global, global-rule and rule cap: period, limit, the slots committed
-- in the current period (or per source), next reset; the service's
-- subscription and the rule's status (docs/reference/settings.md's caps list). The count is what is
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

-- a lead rejected by validation shows here too (kind 'validation')
CREATE OR REPLACE VIEW iclear.pre_screen_reject_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       d.decision ->> 'reason' AS reason, d.envelope, f.kind
  FROM iclear.filter_log f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN LATERAL (SELECT * FROM iclear.decision d WHERE d.lead_id = f.lead_id
                      ORDER BY d.id DESC LIMIT 1) d ON true
 WHERE f.stage = 'pre_validation' AND f.outcome = 'reject';

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
-- END since-0.4.0

-- BEGIN since-0.5.0
-- worker_alive for every role that reads health (pg_stat_activity shows a
-- backend's type only to its own role)
CREATE OR REPLACE VIEW iclear.health AS
SELECT iclear.version() AS version,
       iclear.worker_alive() AS worker_alive,
       (SELECT count(*) FROM iclear.job WHERE status IN ('queued', 'running')) AS queue_depth,
       (SELECT min(created_at) FROM iclear.job WHERE status = 'queued') AS oldest_queued_at,
       (SELECT count(*) FROM iclear.job WHERE status = 'failed') AS failed_jobs,
       (SELECT count(*) FROM iclear.decision_default) AS rows_in_default_partitions,
       (SELECT version FROM iclear.config_version) AS config_version,
       -- a do-not-call list (a dnpl on a phone field whose source is dated)
       -- older than the Telemarketing Sales Rule's 31 days
       (SELECT coalesce(array_agg(l.name ORDER BY l.name), '{}') FROM iclear.list l
         WHERE l.kind = 'dnpl' AND l.field ~* 'phone'
           AND l.refreshed_at < now() - interval '31 days') AS stale_do_not_call_lists,
       -- a store of a hub: its name, its subscription to the hub (a broken
       -- one shows receiving false), and the cap slots it holds
       (SELECT m.store FROM iclear.hub_membership m) AS hub_store,
       (SELECT jsonb_build_object('receiving', s.pid IS NOT NULL,
                                  'last_message_at', s.last_msg_receipt_time,
                                  'seconds_since_message', round(extract(epoch FROM now() - s.last_msg_receipt_time)))
          FROM pg_catalog.pg_stat_subscription s WHERE s.subname = 'iclear_hub' AND s.relid IS NULL) AS hub_subscription,
       (SELECT jsonb_object_agg(g.global_cap_id || '/' || g.bucket, g.granted) FROM iclear.cap_grant g) AS cap_leases;
-- Caps count local days: a product's rule and global-rule caps in its
-- time zone, a global cap in its own (the last column says which).
CREATE OR REPLACE VIEW iclear.cap_status AS
WITH used AS (
    SELECT scope, ref_id, period, bucket, sum(used)::bigint AS used
      FROM iclear.cap_use GROUP BY 1, 2, 3, 4)
SELECT 'global'::text AS scope, c.service AS subject, c.id AS rule_id, c.period, c.start_day,
       c.cap_limit, coalesce(u.used, 0) AS current_value,
       iclear.next_cap_reset(c.period, c.start_day, now(), c.time_zone) AS next_reset,
       c.service, s.subscription, NULL::text AS status, c.time_zone
  FROM iclear.global_cap c
  JOIN iclear.service s ON s.name = c.service
  LEFT JOIN used u ON u.scope = 'global' AND u.ref_id = c.id AND u.period = c.period
       AND u.bucket = to_char(iclear.cap_period_start(c.period, c.start_day, now(), c.time_zone) AT TIME ZONE c.time_zone,
                              'YYYY-MM-DD')
UNION ALL
SELECT 'rule', r.name, r.id, x.period, NULL, x.cap_limit, coalesce(u.used, 0),
       iclear.next_cap_reset(x.period, 1, now(), p.time_zone), NULL, NULL, r.status, p.time_zone
  FROM iclear.rule r
  JOIN iclear.product p ON p.id = r.product_id
 CROSS JOIN LATERAL (VALUES ('daily', r.daily_limit), ('monthly', r.monthly_limit)) AS x(period, cap_limit)
  LEFT JOIN used u ON u.scope = 'rule' AND u.ref_id = r.id AND u.period = x.period
       AND u.bucket = to_char(iclear.cap_period_start(x.period, 1, now(), p.time_zone) AT TIME ZONE p.time_zone, 'YYYY-MM-DD')
 WHERE x.cap_limit IS NOT NULL
UNION ALL
SELECT 'rule', r.name || ' / source ' || coalesce(nullif(u.bucket, ''), 'none'), r.id, 'source', NULL,
       r.per_source_limit, u.used, NULL, NULL, NULL, r.status, NULL
  FROM iclear.rule r
  JOIN used u ON u.scope = 'rule' AND u.ref_id = r.id AND u.period = 'source'
 WHERE r.per_source_limit IS NOT NULL
UNION ALL
SELECT 'global_rule', g.service || ' (global rule ' || g.id || ')', g.id, x.period, NULL, x.cap_limit,
       coalesce(u.used, 0), iclear.next_cap_reset(x.period, 1, now(), p.time_zone), g.service, s.subscription,
       g.status, p.time_zone
  FROM iclear.global_rule g
  JOIN iclear.product p ON p.id = g.product_id
  JOIN iclear.service s ON s.name = g.service
 CROSS JOIN LATERAL (VALUES ('daily', g.daily_limit), ('monthly', g.monthly_limit)) AS x(period, cap_limit)
  LEFT JOIN used u ON u.scope = 'global_rule' AND u.ref_id = g.id AND u.period = x.period
       AND u.bucket = to_char(iclear.cap_period_start(x.period, 1, now(), p.time_zone) AT TIME ZONE p.time_zone, 'YYYY-MM-DD')
 WHERE x.cap_limit IS NOT NULL;
-- On the hub: each store, whether the hub receives from it, its last
-- contact and lease, and its latest decision (docs/guide/hub.md).
CREATE VIEW iclear.store_status AS
SELECT x.store, x.added_at,
       -- a store's worker comes every round (a second by default)
       coalesce(x.last_contact_at > now() - interval '30 seconds', false) AS receiving,
       x.last_contact_at,
       round(extract(epoch FROM now() - x.last_contact_at)) AS seconds_since_contact,
       x.last_lease_at, x.last_decision_at
  FROM (SELECT h.store, h.added_at,
               greatest(h.last_push_at, (SELECT max(l.updated_at) FROM iclear.cap_lease l WHERE l.store = h.store))
                   AS last_contact_at,
               (SELECT max(l.updated_at) FROM iclear.cap_lease l WHERE l.store = h.store) AS last_lease_at,
               (SELECT d.decided_at FROM iclear.store_decision d WHERE d.store = h.store ORDER BY d.id DESC LIMIT 1)
                   AS last_decision_at
          FROM iclear.hub_store h) x;

-- On the hub: the paid lookups of every store's leads, by store and service.
CREATE VIEW iclear.store_service_usage AS
SELECT d.store, x ->> 'service' AS service, count(*) AS lookups,
       coalesce(sum((x ->> 'cost')::numeric), 0) AS cost
  FROM iclear.store_decision d, jsonb_array_elements(coalesce(d.services, '[]')) x
 WHERE x ->> 'source' = 'api'
 GROUP BY 1, 2;

-- On the hub: each store's lease of each global cap and period.
CREATE VIEW iclear.cap_lease_status AS
SELECT l.store, c.service, l.global_cap_id, c.period, l.bucket, c.cap_limit, l.granted, l.used, l.updated_at
  FROM iclear.cap_lease l JOIN iclear.global_cap c ON c.id = l.global_cap_id;
-- Metrics a monitoring system reads (docs/guide/alerts.md, and
-- docs/postgres_exporter.yml for postgres_exporter): one row per series.
CREATE VIEW iclear.metrics AS
SELECT 'iclear_leads_24h'::text AS name, jsonb_build_object('product', p.name, 'status', h.status) AS labels,
       sum(h.leads)::numeric AS value, 'Leads decided in the last 24 hours, by product and status'::text AS help
  FROM iclear.lead_hourly h JOIN iclear.product p ON p.id = h.product_id
 WHERE h.hour >= now() - interval '24 hours' GROUP BY p.name, h.status
UNION ALL
SELECT 'iclear_rejects_24h', jsonb_build_object('product', p.name, 'kind', h.rejected_kind), sum(h.leads),
       'Leads rejected in the last 24 hours, by product and what rejected them (rule, list, service, validation)'
  FROM iclear.lead_hourly h JOIN iclear.product p ON p.id = h.product_id
 WHERE h.hour >= now() - interval '24 hours' AND h.status = 'rejected' GROUP BY p.name, h.rejected_kind
UNION ALL
SELECT 'iclear_lookups_24h', jsonb_build_object('service', s.service, 'outcome', s.outcome), sum(s.calls),
       'Service lookups in the last 24 hours, by service and outcome'
  FROM iclear.service_hourly s WHERE s.hour >= now() - interval '24 hours' GROUP BY s.service, s.outcome
UNION ALL
SELECT 'iclear_lookup_cost_24h', jsonb_build_object('service', s.service), sum(s.cost),
       'What the paid lookups of the last 24 hours cost, by service'
  FROM iclear.service_hourly s WHERE s.hour >= now() - interval '24 hours' GROUP BY s.service
UNION ALL
SELECT 'iclear_no_responses_24h', jsonb_build_object('service', s.service), sum(s.calls),
       'Lookups without an answer (timeouts, errors) in the last 24 hours, by service'
  FROM iclear.service_hourly s WHERE s.hour >= now() - interval '24 hours' AND s.outcome = 'no_response'
 GROUP BY s.service
UNION ALL
SELECT 'iclear_cap_used', jsonb_build_object('scope', c.scope, 'subject', c.subject, 'period', c.period),
       c.current_value, 'Slots of a cap used in its current period'
  FROM iclear.cap_status c WHERE c.period <> 'source'
UNION ALL
SELECT 'iclear_cap_limit', jsonb_build_object('scope', c.scope, 'subject', c.subject, 'period', c.period),
       c.cap_limit, 'The limit of a cap'
  FROM iclear.cap_status c WHERE c.period <> 'source'
UNION ALL
SELECT 'iclear_queue_depth', '{}', h.queue_depth, 'Async jobs queued or running' FROM iclear.health h
UNION ALL
SELECT 'iclear_queue_oldest_seconds', '{}', coalesce(round(extract(epoch FROM now() - h.oldest_queued_at)), 0),
       'Age of the oldest queued job' FROM iclear.health h
UNION ALL
SELECT 'iclear_failed_jobs', '{}', h.failed_jobs, 'Async jobs that failed (retry_failed_jobs queues them again)'
  FROM iclear.health h
UNION ALL
SELECT 'iclear_worker_alive', '{}', h.worker_alive::int, '1 while the background worker runs' FROM iclear.health h
UNION ALL
SELECT 'iclear_hub_seconds_since_message', '{}', (h.hub_subscription ->> 'seconds_since_message')::numeric,
       'On a store of a hub: seconds since the hub last sent (replication lag, and more when idle)'
  FROM iclear.health h WHERE h.hub_subscription IS NOT NULL
UNION ALL
SELECT 'iclear_alerts', jsonb_build_object('kind', a.kind), count(*), 'Alerts raised (iclear.alert), by kind'
  FROM iclear.alert a GROUP BY a.kind;
-- Long work as it runs (backtest, import_config, maintain, forget,
-- rebuild_history, a COPY into list_entry): the backends' progress slots that iclear marked
-- (src/progress.rs), read with the rights of the extension's owner, so that
-- a reader sees every role's.
CREATE FUNCTION iclear.progress_slots()
RETURNS TABLE (pid integer, command text, product_id bigint, done bigint, total bigint,
               started_at timestamptz, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT s.pid, iclear.progress_command(s.param2), nullif(s.param7, 0), s.param3, s.param4,
           to_timestamp(s.param5), to_timestamp(s.param6)
      FROM pg_catalog.pg_stat_get_progress_info('COPY') s
     WHERE s.param1 = 1768123506
    UNION ALL
    -- a bulk load of a list: a real COPY into list_entry (rows so far; no
    -- total, a COPY does not know its rows)
    SELECT s.pid, 'list_load', NULL::bigint, s.param3, NULL::bigint, a.query_start, now()
      FROM pg_catalog.pg_stat_get_progress_info('COPY') s
      JOIN pg_catalog.pg_stat_activity a ON a.pid = s.pid
     WHERE s.param1 <> 1768123506 AND s.relid = 'iclear.list_entry'::regclass
$$;
CREATE VIEW iclear.progress AS
SELECT s.pid, s.command, p.name AS product, s.done, s.total, s.started_at, s.updated_at
  FROM iclear.progress_slots() s LEFT JOIN iclear.product p ON p.id = s.product_id;
-- Every filter-log row (issue 30): the rows of iclear.filter_log and the
-- steps a decision holds. A rule's, a list's or a field's outcome is kept
-- in the stored decision rather than as a row of its own, which cost about
-- three times its bytes in WAL with its index entries
-- (src/store/persist.rs `steps`): `[stage, origin, kind, ref_id, name,
-- outcome, detail]`, or `[i, outcome]` for a matched rule that the
-- decision's trace entry i tells (stage, rule_id, name, its actions as the
-- detail; origin sync). Such a step has no id and shows at its decision's
-- time. A 0.5.0 decision has no steps: its rows are in filter_log, counted
-- once.
CREATE VIEW iclear.filter_log_all AS
SELECT f.id, f.lead_id, f.product_id, f.at, f.stage, f.origin, f.kind, f.ref_id, f.name, f.outcome,
       f.request, f.response, f.detail
  FROM iclear.filter_log f
UNION ALL
SELECT NULL::bigint, d.lead_id, d.product_id, d.created_at,
       CASE WHEN x.t IS NULL THEN s ->> 0 ELSE x.t ->> 'stage' END,
       CASE WHEN x.t IS NULL THEN s ->> 1 ELSE 'sync' END,
       CASE WHEN x.t IS NULL THEN s ->> 2 ELSE 'rule' END,
       (CASE WHEN x.t IS NULL THEN s ->> 3 ELSE x.t ->> 'rule_id' END)::bigint,
       CASE WHEN x.t IS NULL THEN s ->> 4 ELSE x.t ->> 'name' END,
       CASE WHEN x.t IS NULL THEN s ->> 5 ELSE s ->> 1 END,
       NULL::json, NULL::json,
       CASE WHEN x.t IS NOT NULL THEN json_build_object('actions', x.t -> 'actions')
            WHEN json_typeof(s -> 6) <> 'null' THEN s -> 6 END
  FROM iclear.decision d
 CROSS JOIN LATERAL json_array_elements(d.decision -> 'steps') s
 CROSS JOIN LATERAL (SELECT CASE WHEN json_array_length(s) = 2
                                 THEN d.decision -> 'trace' -> ((s ->> 0)::int) END AS t) x;

CREATE OR REPLACE VIEW iclear.full_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.stage, f.origin, f.kind, f.ref_id, f.name,
       f.outcome, f.detail
  FROM iclear.filter_log_all f
  LEFT JOIN iclear.product p ON p.id = f.product_id
UNION ALL
SELECT NULL, d.lead_id, p.name, d.created_at, 'decision', 'sync', 'decision', NULL, NULL,
       d.status, json_build_object('reason', d.decision -> 'reason', 'rejected_by', d.decision -> 'rejected_by')
  FROM iclear.decision d
  LEFT JOIN iclear.product p ON p.id = d.product_id;

CREATE OR REPLACE VIEW iclear.pre_screen_reject_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       d.decision ->> 'reason' AS reason, d.envelope, f.kind
  FROM iclear.filter_log_all f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN LATERAL (SELECT * FROM iclear.decision d WHERE d.lead_id = f.lead_id
                      ORDER BY d.id DESC LIMIT 1) d ON true
 WHERE f.stage = 'pre_validation' AND f.outcome = 'reject';

CREATE OR REPLACE VIEW iclear.redirect_log AS
SELECT f.id, f.lead_id, p.name AS product, f.at, f.ref_id AS rule_id, f.name AS rule_name,
       f.origin, f.kind, f.outcome, f.detail
  FROM iclear.filter_log_all f
  LEFT JOIN iclear.product p ON p.id = f.product_id
 WHERE f.stage = 'redirect';

CREATE OR REPLACE VIEW iclear.shadow_report AS
SELECT (f.at AT TIME ZONE 'UTC')::date AS day, p.name AS product, f.ref_id AS rule_id, f.name AS rule,
       r.status,
       count(DISTINCT f.lead_id) AS matched,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'reject') AS would_reject,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'pause') AS would_pause,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'change') AS would_change,
       count(DISTINCT f.lead_id) FILTER (WHERE f.detail ->> 'would' = 'reject'
                                           AND d.status = 'accepted') AS would_reject_accepted
  FROM iclear.filter_log_all f
  LEFT JOIN iclear.product p ON p.id = f.product_id
  LEFT JOIN iclear.rule r ON r.id = f.ref_id
  LEFT JOIN LATERAL (SELECT x.status FROM iclear.decision x WHERE x.lead_id = f.lead_id
                      ORDER BY x.id DESC LIMIT 1) d ON true
 WHERE f.kind = 'rule' AND f.outcome = 'shadow'
 GROUP BY 1, 2, 3, 4, 5;

CREATE OR REPLACE VIEW iclear.rule_quality AS
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
      FROM iclear.filter_log_all f
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
-- END since-0.5.0
