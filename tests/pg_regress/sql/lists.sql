-- PL/DNPL lists: a product's lists checked for every lead, values matched
-- trimmed and lowercased, and a rule that adds a lead's value to a list for
-- the next lead.
INSERT INTO iclear.product (name) VALUES ('g_lists');
INSERT INTO iclear.list (name, kind, field) VALUES ('g complainers', 'dnpl', 'email');
INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p
 WHERE l.name = 'g complainers' AND p.name = 'g_lists';
INSERT INTO iclear.list_entry (list_id, value) SELECT id, '  Angry@Example.COM ' FROM iclear.list WHERE name = 'g complainers';
SELECT l.name, e.value FROM iclear.list_entry e JOIN iclear.list l ON l.id = e.list_id
 WHERE l.name LIKE 'g %' ORDER BY 1;
-- a rule that puts a bot's email on the DNPL
INSERT INTO iclear.rule (product_id, name) SELECT id, 'Bots' FROM iclear.product WHERE name = 'g_lists';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'userAgent', 'contains', '"bot"' FROM iclear.rule WHERE name = 'Bots';
INSERT INTO iclear.rule_action (rule_id, action, config, position)
     SELECT r.id, 'add_to_list', jsonb_build_object('list_ids', jsonb_build_array(l.id)), 1
       FROM iclear.rule r, iclear.list l WHERE r.name = 'Bots' AND l.name = 'g complainers';
SELECT f ->> 'email' AS email, d ->> 'status' AS status, d ->> 'reason' AS reason, d -> 'rejected_by' ->> 'kind' AS kind
  FROM (VALUES ('{"email": "angry@example.com"}'::jsonb),
               ('{"email": "bot@example.com", "userAgent": "crawler bot/1.0"}'),
               ('{"email": "BOT@example.com "}')) AS x(f),
       LATERAL iclear_process(jsonb_build_object('product', 'g_lists', 'fields', f)) AS d;
-- a list needs a name and a kind
INSERT INTO iclear.list (name, kind, field) VALUES (' ', 'dnpl', 'email');
INSERT INTO iclear.list (name, kind, field) VALUES ('g nothing', 'maybe', 'email');
