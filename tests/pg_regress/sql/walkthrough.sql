-- The README's "Five minutes in SQL", as written there.
INSERT INTO iclear.product (name) VALUES ('payday_us');

-- a do-not-present list on the email field, checked for every payday_us lead
INSERT INTO iclear.list (name, kind, field) VALUES ('complainers', 'dnpl', 'email');
INSERT INTO iclear.list_product
     SELECT l.id, p.id FROM iclear.list l, iclear.product p
      WHERE l.name = 'complainers' AND p.name = 'payday_us';
INSERT INTO iclear.list_entry (list_id, value)
     SELECT id, 'angry@example.com' FROM iclear.list WHERE name = 'complainers';

-- a rule: reject applicants under 18, and tag them
INSERT INTO iclear.rule (product_id, name)
     SELECT id, 'Under 18' FROM iclear.product WHERE name = 'payday_us';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'age', 'less', '18' FROM iclear.rule WHERE name = 'Under 18';
INSERT INTO iclear.rule_action (rule_id, action, config, position)
     SELECT id, 'stop_processing', '{"message": "applicant is {%productField_age%}"}', 1
       FROM iclear.rule WHERE name = 'Under 18';

-- process a lead and read the decision
SELECT d ->> 'status' AS status, d ->> 'reason' AS reason, d -> 'rejected_by' AS rejected_by
  FROM iclear_process('{"product": "payday_us", "lead_id": "L-1", "publisher_id": 12,
                        "fields": {"email": "kid@example.com", "age": 16}}') AS d;

SELECT stage, kind, name, outcome FROM iclear.full_log WHERE lead_id = 'L-1' ORDER BY at, kind;

-- or let the lead table do it: each INSERT is processed in its own transaction
CREATE TABLE leads (id bigserial PRIMARY KEY, email text, age int, publisher_id int,
                    iclear_status text, iclear_decision jsonb);
SELECT iclear.attach('leads', 'payday_us');
INSERT INTO leads (email, age) VALUES ('angry@example.com', 40);
SELECT iclear_status, iclear_decision->>'reason' FROM leads;   -- rejected, on the DNPL
