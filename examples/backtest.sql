-- Changing rules safely, on the demo's stored leads (scripts/demo.sh prints
-- it; docs/guide/changing-rules.md).
-- 1. Buyers report back: some low-income leads come back as returns, some
--    high-income ones convert (made up for the demo).
SELECT count(iclear.feedback(d.lead_id, CASE WHEN income < 2000 THEN 'return' ELSE 'conversion' END))
  FROM (SELECT lead_id, (envelope::jsonb #>> '{fields,monthlyIncome}')::numeric AS income
          FROM iclear.decision WHERE status = 'accepted') d
 WHERE (d.income < 2000 AND d.lead_id::bigint % 3 = 0) OR (d.income > 6000 AND d.lead_id::bigint % 4 = 0);
-- 2. A draft rule, backtested: nothing is written, nothing is sent.
WITH bt AS (
    SELECT iclear.backtest('payday_us', now() - interval '1 day', now(),
             '{"rules": [{"name": "draft: income under 1500", "stage": "processing", "position": 0,
                          "conditions": [{"category": "lead_body", "parameter": "monthlyIncome",
                                          "operator": "less", "value": 1500}],
                          "actions": [{"action": "stop_processing",
                                       "config": {"message": "income under 1500"}}]}]}') AS r)
SELECT jsonb_pretty(jsonb_build_object(
         'leads', r -> 'leads', 'changed', r -> 'changed',
         'accepted_to_rejected', r -> 'accepted_to_rejected',
         'rejected_to_accepted', r -> 'rejected_to_accepted',
         'draft', (SELECT x FROM jsonb_array_elements(r -> 'by_rule') x WHERE x ->> 'name' LIKE 'draft%'),
         'sample', (SELECT jsonb_agg(s) FROM (SELECT s FROM jsonb_array_elements(r -> 'sample') s LIMIT 3) y),
         'feedback', r -> 'feedback',
         'without_recorded_answer', r -> 'without_recorded_answer'))
  FROM bt;
