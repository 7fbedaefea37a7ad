-- Configuration as code: a product as one document, a dry run's plan, and
-- a document that would change what other products share.
INSERT INTO iclear.product (name) VALUES ('g_code'), ('g_other');
INSERT INTO iclear.list (name, kind, field) VALUES ('g shared', 'dnpl', 'email');
INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p
 WHERE l.name = 'g shared' AND p.name = 'g_other';
INSERT INTO iclear.rule (product_id, name) SELECT id, 'Tag NY' FROM iclear.product WHERE name = 'g_code';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'state', 'equals', '"NY"' FROM iclear.rule WHERE name = 'Tag NY';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'lead_tags', '{"mode": "add", "tags": ["ny"]}' FROM iclear.rule WHERE name = 'Tag NY';
SELECT jsonb_pretty(iclear.export_config('g_code'));
-- a dry run plans, changes nothing
SELECT iclear.import_config('{"product": {"name": "g_code"},
  "rules": [{"name": "Tag NY", "conditions": [{"category": "lead_body", "parameter": "state", "operator": "equals", "value": "NJ"}],
             "actions": [{"action": "lead_tags", "config": {"mode": "add", "tags": ["nj"]}}]},
            {"name": "New rule"}]}');
SELECT count(*) AS rules FROM iclear.rule r JOIN iclear.product p ON p.id = r.product_id WHERE p.name = 'g_code';
-- a list another product uses is listed apart, and changed only when told to
SELECT iclear.import_config('{"product": {"name": "g_code"},
  "lists": [{"name": "g shared", "kind": "pl", "field": "phone"}]}') -> 'shared' AS shared;
SELECT iclear.import_config('{"product": {"name": "g_code"},
  "lists": [{"name": "g shared", "kind": "pl", "field": "phone"}]}', false);
-- a bad document is refused naming the path
SELECT iclear.import_config('{"product": {"name": "g_code"}, "rules": [{"name": "x", "colour": "red"}]}');
