-- Benchmark configuration: the example product (examples/payday_us.sql: 19
-- active rules, an attached `leads` table) plus more rules and a DNPL of
-- 100,000 entries, and a plain table of the same shape.
INSERT INTO iclear.list_entry (list_id, value, added_by)
SELECT (SELECT id FROM iclear.list WHERE name = 'complainers (email)'),
       'bulk' || g || '@example.net', 'bench'
  FROM generate_series(1, 100000) g;

INSERT INTO iclear.rule (product_id, name, position, category_id)
SELECT p.id, 'bench rule ' || g, 10 + g,
       (SELECT id FROM iclear.rule_category WHERE name = 'Quality')
  FROM iclear.product p, generate_series(1, 6) g;
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
SELECT id, 'lead_body', 'employer', 'equals', to_jsonb('Never Inc ' || id) FROM iclear.rule WHERE name LIKE 'bench rule %';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
SELECT id, 'lead_body', 'zip', 'starts_with', '"000"' FROM iclear.rule WHERE name LIKE 'bench rule %';
INSERT INTO iclear.rule_action (rule_id, action, config)
SELECT id, 'lead_tags', '{"mode": "add", "tags": ["bench"]}' FROM iclear.rule WHERE name LIKE 'bench rule %';

CREATE TABLE leads_plain (LIKE leads INCLUDING DEFAULTS);
ALTER TABLE leads_plain ADD PRIMARY KEY (id);
ANALYZE;
