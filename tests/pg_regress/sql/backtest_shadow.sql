-- Changing rules safely: a shadow rule logs what it would do and changes
-- nothing; a backtest replays stored leads against a changed configuration.
INSERT INTO iclear.product (name) VALUES ('g_safe');
INSERT INTO iclear.rule (product_id, name, status) SELECT id, 'Low income', 'shadow' FROM iclear.product WHERE name = 'g_safe';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'monthlyIncome', 'less', '1000' FROM iclear.rule WHERE name = 'Low income';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'stop_processing', '{"message": "income too low"}' FROM iclear.rule WHERE name = 'Low income';
SELECT n, d ->> 'status' AS status
  FROM generate_series(1, 4) n,
       LATERAL iclear_process(jsonb_build_object('product', 'g_safe', 'lead_id', 'B-' || n,
                              'fields', jsonb_build_object('monthlyIncome', n * 400))) AS d;
SELECT rule, status, matched, would_reject, would_reject_accepted FROM iclear.shadow_report WHERE product = 'g_safe';
-- what promoting it would have changed, on the same leads
SELECT b -> 'leads' AS leads, b -> 'changed' AS changed, b -> 'accepted_to_rejected' AS accepted_to_rejected
  FROM iclear.backtest('g_safe', now() - interval '1 hour', now() + interval '1 minute',
                       '{"rules": [{"name": "Low income", "status": "active"}]}') AS b;
-- nothing was written by the backtest
SELECT status, count(*) FROM iclear.rule r JOIN iclear.product p ON p.id = r.product_id
 WHERE p.name = 'g_safe' GROUP BY status;
