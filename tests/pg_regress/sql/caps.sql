-- Caps: a rule's cap counts what seed 002 counts (the times its service is
-- processed), a rule may count its matches instead, each is exact, and
-- cap_status says where each cap stands, in the product's local days.
INSERT INTO iclear.product (name, time_zone) VALUES ('g_caps', 'America/Los_Angeles');
INSERT INTO iclear.product (name) VALUES ('g_caps_nowhere');
UPDATE iclear.product SET time_zone = 'Mars/Olympus_Mons' WHERE name = 'g_caps_nowhere';
-- an on-demand IP Analysis rule (the sandbox of the services test answers it)
INSERT INTO iclear.global_rule (product_id, service, execution, lookup_percent, settings)
     SELECT id, 'ip_analysis', 'on_demand', 0, '{"api_key": "G-KEY-2", "cache_days": 30}'
       FROM iclear.product WHERE name = 'g_caps';
INSERT INTO iclear.rule (product_id, name, daily_limit) SELECT id, 'Check IP', 2 FROM iclear.product WHERE name = 'g_caps';
INSERT INTO iclear.rule_action (rule_id, action, config, position)
     SELECT r.id, 'run_third_party_service', jsonb_build_object('global_rule_id', g.id), 1
       FROM iclear.rule r JOIN iclear.global_rule g ON g.product_id = r.product_id WHERE r.name = 'Check IP'
     UNION ALL
     SELECT id, 'lead_tags', '{"mode": "add", "tags": ["checked"]}', 2 FROM iclear.rule WHERE name = 'Check IP';
INSERT INTO iclear.rule (product_id, name, daily_limit, cap_counts)
     SELECT id, 'Premium tag', 2, 'matches' FROM iclear.product WHERE name = 'g_caps';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'lead_tags', '{"mode": "add", "tags": ["premium"]}' FROM iclear.rule WHERE name = 'Premium tag';
-- lead 2 repeats lead 1's IP: a cached answer is not a run of the service
SELECT n, d -> 'tags' AS tags, d -> 'services' -> 0 ->> 'source' AS source
  FROM (VALUES (1, '10.0.0.7'), (2, '10.0.0.7'), (3, '10.0.0.8'), (4, '10.0.0.9')) AS x(n, ip),
       LATERAL iclear_process(jsonb_build_object('product', 'g_caps', 'lead_id', 'C-' || n,
                                                 'fields', jsonb_build_object('userIp', ip))) AS d;
SELECT lead_id, kind, name, outcome, detail ->> 'cap' AS cap
  FROM iclear.full_log WHERE lead_id LIKE 'C-%' AND (kind = 'service' OR outcome = 'cap_reached')
 ORDER BY lead_id, kind;
SELECT scope, subject, period, cap_limit, current_value, time_zone,
       next_reset = iclear.next_cap_reset(period, 1, now(), 'America/Los_Angeles') AS resets_at_local_midnight
  FROM iclear.cap_status WHERE subject IN ('Premium tag', 'Check IP') ORDER BY subject;
-- a rule's slots are counted in the product's local day
SELECT DISTINCT bucket = to_char(now() AT TIME ZONE 'America/Los_Angeles', 'YYYY-MM-DD') AS local_day
  FROM iclear.cap_use u JOIN iclear.rule r ON r.id = u.ref_id WHERE u.scope = 'rule' AND r.name = 'Check IP';
-- what a cap counts is a setting of its own
\set VERBOSITY terse
UPDATE iclear.rule SET cap_counts = 'leads' WHERE name = 'Premium tag';
\set VERBOSITY default
