-- The demo's summary: what happened to the batch, at a glance.
\pset footer off
\pset border 1
\echo
\echo '== Decisions'
SELECT iclear_status AS status, count(*) AS leads,
       round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS "%"
  FROM leads GROUP BY 1 ORDER BY 2 DESC;
\echo '== Rejected, by reason'
SELECT iclear_decision -> 'rejected_by' ->> 'kind' AS by,
       regexp_replace(regexp_replace(iclear_decision ->> 'reason', ' \(..\)$', ''),
                      'fraud score \d+ >= ', 'fraud score >= ') AS reason, count(*) AS leads
  FROM leads WHERE iclear_status = 'rejected' GROUP BY 1, 2 ORDER BY 3 DESC, 2;
\echo '== Top rules (from the filter log)'
SELECT f.name AS rule, f.stage, count(*) AS matched,
       count(*) FILTER (WHERE f.outcome = 'reject') AS rejected
  FROM iclear.filter_log_all f
 WHERE f.kind = 'rule' AND f.lead_id IN (SELECT id::text FROM leads)
 GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 10;
\echo '== Tags, routes and lists'
SELECT 'tag ' || t AS what, count(*) AS leads
  FROM leads, jsonb_array_elements_text(iclear_decision -> 'tags') AS t GROUP BY 1
UNION ALL
SELECT 'routed to ping tree ' || (iclear_decision -> 'route' ->> 'ping_tree_id'), count(*)
  FROM leads WHERE iclear_decision -> 'route' IS NOT NULL AND iclear_decision -> 'route' <> 'null' GROUP BY 1
UNION ALL
SELECT 'monetization blocked', count(*) FROM leads WHERE (iclear_decision ->> 'block_monetization')::boolean
UNION ALL
SELECT 'list "' || l.name || '" now holds', count(e.value)
  FROM iclear.list l LEFT JOIN iclear.list_entry e ON e.list_id = l.id AND e.added_by = 'iclear'
 WHERE l.name IN ('rejected as fraud (email)', 'risky phones (async lookups)') GROUP BY l.name
ORDER BY 2 DESC;
\echo '== Third-party services (view service_usage; async answers included)'
SELECT service, sum(requests) AS requests, sum(lookups) AS api_lookups, sum(cache_hits) AS cache_hits,
       sum(no_response) AS no_response, sum(rejects) AS rejects, sum(cost) AS cost
  FROM iclear.service_usage GROUP BY 1 ORDER BY 1;
\echo '== Service outcomes (filter log)'
SELECT name AS service, origin, outcome, count(*) AS rows
  FROM iclear.filter_log WHERE kind = 'service' GROUP BY 1, 2, 3 ORDER BY 1, 2, 4 DESC;
\echo '== Operations (views: pre_screen_reject_log, cap_status, service_usage, health)'
SELECT (SELECT count(*) FROM iclear.pre_screen_reject_log) AS pre_screen_rejects,
       (SELECT count(*) FROM iclear.cap_status) AS caps,
       (SELECT coalesce(sum(lookups), 0) FROM iclear.service_usage) AS service_lookups,
       (SELECT coalesce(sum(cost), 0) FROM iclear.service_usage) AS service_cost,
       h.queue_depth, h.failed_jobs, h.rows_in_default_partitions, h.version
  FROM iclear.health h;
