-- Caps: a rule's daily limit is exact, the lead past it skips the rule,
-- and cap_status says where each cap stands.
INSERT INTO iclear.product (name) VALUES ('g_caps');
INSERT INTO iclear.rule (product_id, name, daily_limit) SELECT id, 'Premium tag', 2 FROM iclear.product WHERE name = 'g_caps';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'lead_tags', '{"mode": "add", "tags": ["premium"]}' FROM iclear.rule WHERE name = 'Premium tag';
SELECT n, d -> 'tags' AS tags
  FROM generate_series(1, 3) n,
       LATERAL iclear_process(jsonb_build_object('product', 'g_caps', 'lead_id', 'C-' || n)) AS d;
SELECT lead_id, name, outcome FROM iclear.full_log WHERE lead_id LIKE 'C-%' AND kind = 'rule' ORDER BY lead_id;
SELECT scope, subject, period, cap_limit, current_value FROM iclear.cap_status WHERE subject = 'Premium tag';
