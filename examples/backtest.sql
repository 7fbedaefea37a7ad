-- A draft rule backtested on the stored leads before it goes live
-- (scripts/demo.sh prints it; README "Changing rules safely").
WITH bt AS (
    SELECT iclear.backtest('payday_us', now() - interval '1 day', now(),
             '{"rules": [{"name": "draft: loans over 5000", "stage": "processing", "position": 0,
                          "conditions": [{"category": "lead_body", "parameter": "loanAmount",
                                          "operator": "greater", "value": 5000}],
                          "actions": [{"action": "stop_processing",
                                       "config": {"message": "loan over 5000"}}]}]}') AS r)
SELECT jsonb_pretty(jsonb_build_object(
         'leads', r -> 'leads', 'changed', r -> 'changed',
         'accepted_to_rejected', r -> 'accepted_to_rejected',
         'rejected_to_accepted', r -> 'rejected_to_accepted',
         'draft', (SELECT x FROM jsonb_array_elements(r -> 'by_rule') x WHERE x ->> 'name' LIKE 'draft%'),
         'sample', (SELECT jsonb_agg(s) FROM (SELECT s FROM jsonb_array_elements(r -> 'sample') s LIMIT 3) y),
         'without_recorded_answer', r -> 'without_recorded_answer'))
  FROM bt;
