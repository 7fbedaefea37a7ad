-- Third-party services against the sandbox provider (127.0.0.1:28819,
-- started by scripts/pg-tests.sh): a sync IP Analysis rule, its answer in
-- the iClear Log with the key masked, the egress policy, and an endpoint
-- whose secret is kept apart.
INSERT INTO iclear.product (name) VALUES ('g_services');
UPDATE iclear.service SET subscription = 'enabled', cost = 0.004,
       endpoint = 'http://127.0.0.1:28819/ip' WHERE name = 'ip_analysis';
INSERT INTO iclear.global_rule (product_id, service, settings)
     SELECT id, 'ip_analysis', '{"api_key": "G-KEY-1", "reject_fraud_score_gte": 90}'
       FROM iclear.product WHERE name = 'g_services';
SELECT ip, d ->> 'status' AS status, d ->> 'reason' AS reason, d -> 'services' -> 0 ->> 'score' AS score
  FROM (VALUES ('10.0.0.5'), ('10.0.0.95')) AS x(ip),
       LATERAL iclear_process(jsonb_build_object('product', 'g_services', 'lead_id', 'S-' || ip,
                                                 'fields', jsonb_build_object('userIp', ip))) AS d;
SELECT lead_id, service, outcome, source, request ->> 'url' AS url
  FROM iclear.lead_log WHERE lead_id LIKE 'S-%' ORDER BY lead_id;
SELECT service, lookups, cost FROM iclear.service_usage WHERE product = 'g_services';
-- the key is kept apart; the settings show none
SELECT settings FROM iclear.global_rule WHERE settings::text LIKE '%90%';
-- egress: a non-public address only where iclear.allowed_endpoints lists it
SHOW iclear.allowed_endpoints;
UPDATE iclear.service SET endpoint = 'http://169.254.169.254/latest' WHERE name = 'tracking';
UPDATE iclear.service SET endpoint = 'http://0x7f000002/x' WHERE name = 'tracking';
-- a webhook's user, password and token are kept apart and shown masked
UPDATE iclear.service SET endpoint = 'http://smsuser:PASS@127.0.0.1:28819/sms?token=TOKEN' WHERE name = 'sms';
SELECT name, endpoint FROM iclear.service WHERE name = 'sms';
SELECT service, endpoint FROM iclear.service_secret;
