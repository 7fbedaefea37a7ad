-- Every documented kind of error, with its SQLSTATE (docs/reference/errors.md).
\set SHOW_CONTEXT never
-- 23514: a configuration row refused by its check; the expected list is the HINT
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
VALUES ((SELECT id FROM iclear.rule WHERE name = 'Under 18'), 'lead_body', 'email', 'like', '"x"');
\echo :LAST_ERROR_SQLSTATE
-- 23503: a reference to a list that does not exist
INSERT INTO iclear.rule_action (rule_id, action, config)
VALUES ((SELECT id FROM iclear.rule WHERE name = 'Under 18'), 'add_to_list', '{"list_ids": [999]}');
\echo :LAST_ERROR_SQLSTATE
-- 22023: an envelope refused, the key named
SELECT iclear_process('{"product": "payday_us", "publisher_id": "twelve"}');
\echo :LAST_ERROR_SQLSTATE
SELECT iclear_process('{"product": "nope"}');
\echo :LAST_ERROR_SQLSTATE
-- 22023: attach options refused, the key named
SELECT iclear.attach('leads', 'payday_us', '{"id_col": "x"}');
\echo :LAST_ERROR_SQLSTATE
-- 22023: a document for import_config, the path named
SELECT iclear.import_config('{"product": {"name": "payday_us"}, "rules": [{"name": "x", "colour": "red"}]}');
\echo :LAST_ERROR_SQLSTATE
-- 22023: a backtest's changes
SELECT iclear.backtest('payday_us', now(), now(), '{"product": {}}');
\echo :LAST_ERROR_SQLSTATE
-- 39P01: the attach trigger used as something else
CREATE TABLE misused (id int);
CREATE TRIGGER t AFTER INSERT ON misused FOR EACH ROW EXECUTE FUNCTION iclear.lead_trigger('payday_us');
INSERT INTO misused VALUES (1);
\echo :LAST_ERROR_SQLSTATE
-- 42501: a credential written by an operator
CREATE ROLE regress_ops LOGIN IN ROLE iclear_operator;
INSERT INTO iclear.global_rule (product_id, service, settings)
     SELECT id, 'ip_analysis', '{"api_key": "k"}' FROM iclear.product;
SET ROLE regress_ops;
UPDATE iclear.global_rule SET settings = settings || '{"api_key": "other"}';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DELETE FROM iclear.global_rule;
DROP ROLE regress_ops;
