-- Rules and actions: categories run in order, conditions AND or OR,
-- placeholders in every action value, and the trace says why.
INSERT INTO iclear.product (name) VALUES ('g_rules');
INSERT INTO iclear.rule_category (product_id, stage, name, position)
     SELECT id, 'processing', c, p FROM iclear.product, (VALUES ('Fraud', 1), ('Routing', 2)) AS x(c, p)
      WHERE name = 'g_rules';
-- a test lead is rejected (either condition is enough)
INSERT INTO iclear.rule (product_id, name, category_id, logical_operator)
     SELECT p.id, 'Test lead', c.id, 'or' FROM iclear.product p JOIN iclear.rule_category c ON c.product_id = p.id
      WHERE p.name = 'g_rules' AND c.name = 'Fraud';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'firstName', 'in', '["test", "asdf"]'::jsonb FROM iclear.rule WHERE name = 'Test lead'
     UNION ALL
     SELECT id, 'lead_body', 'lastName', 'equals', '"test"' FROM iclear.rule WHERE name = 'Test lead';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'stop_processing', '{"message": "test lead from publisher {%publisherId%}"}'
       FROM iclear.rule WHERE name = 'Test lead';
-- high earners get a tag, a field and a thank-you URL built from the lead
INSERT INTO iclear.rule (product_id, name, category_id)
     SELECT p.id, 'High earners', c.id FROM iclear.product p JOIN iclear.rule_category c ON c.product_id = p.id
      WHERE p.name = 'g_rules' AND c.name = 'Routing';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'monthlyIncome', 'greater_or_equal', '6000' FROM iclear.rule WHERE name = 'High earners';
INSERT INTO iclear.rule_action (rule_id, action, config, position)
     SELECT id, a, c::jsonb, n FROM iclear.rule,
            (VALUES (1, 'lead_tags', '{"mode": "add", "tags": ["premium"]}'),
                    (2, 'change_lead_body_fields', '{"fields": {"tier": "gold-{%productField_state%}"}}'),
                    (3, 'change_response_parameter',
                        '{"name": "redirect_url", "value": "https://buyer.example/thanks?email={%productField_email%}&pub={%publisherId%}"}'))
            AS x(n, a, c)
      WHERE name = 'High earners';

SELECT d ->> 'status' AS status, d ->> 'reason' AS reason
  FROM iclear_process('{"product": "g_rules", "lead_id": "R-1", "publisher_id": 7,
                        "fields": {"firstName": "Ann", "lastName": "test"}}') AS d;
-- a value that tries to add URL parameters is percent-encoded in the URL
SELECT d ->> 'status' AS status, d -> 'tags' AS tags, d #>> '{fields,tier}' AS tier,
       d #>> '{response,redirect_url}' AS redirect_url
  FROM iclear_process('{"product": "g_rules", "lead_id": "R-2", "publisher_id": 7,
                        "fields": {"firstName": "Bo", "monthlyIncome": 7000, "state": "CA",
                                   "email": "bo@example.com&pub=999"}}') AS d;
-- the trace: each matched rule with its conditions' actual values
SELECT e ->> 'name' AS rule, c ->> 'parameter' AS parameter, c ->> 'actual' AS actual, c ->> 'result' AS result
  FROM iclear.decision d, json_array_elements(d.decision -> 'trace') e, json_array_elements(e -> 'conditions') c
 WHERE d.lead_id = 'R-2';
-- an action whose output would outgrow a value's limit decides the lead error
INSERT INTO iclear.rule (product_id, name, position)
     SELECT id, 'Blow up', 9 FROM iclear.product WHERE name = 'g_rules';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'change_lead_body_fields',
            jsonb_build_object('fields', jsonb_build_object('big', repeat('{%productField_note%}', 40)))
       FROM iclear.rule WHERE name = 'Blow up';
SELECT d ->> 'status' AS status, d ->> 'reason' AS reason
  FROM iclear_process(jsonb_build_object('product', 'g_rules', 'lead_id', 'R-3',
                                         'fields', jsonb_build_object('note', repeat('x', 2000)))) AS d;
-- a condition or action that cannot work is refused when saved
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'age', 'near', '18' FROM iclear.rule WHERE name = 'Blow up';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'lead_tags', '{"mode": "add", "tags": ["{%noSuch%}"]}' FROM iclear.rule WHERE name = 'Blow up';
