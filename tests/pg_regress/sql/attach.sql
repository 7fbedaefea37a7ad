-- Attaching a lead table: each INSERT is processed in the inserting
-- transaction, the outcome is written back, a failed lead keeps its row,
-- and only a table's owner attaches it.
INSERT INTO iclear.product (name) VALUES ('g_attach');
INSERT INTO iclear.rule (product_id, name) SELECT id, 'No minors' FROM iclear.product WHERE name = 'g_attach';
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
     SELECT id, 'lead_body', 'age', 'less', '18' FROM iclear.rule WHERE name = 'No minors';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'stop_processing', '{"message": "under 18"}' FROM iclear.rule WHERE name = 'No minors';
CREATE TABLE g_leads (id bigserial PRIMARY KEY, email text, age int, ext text UNIQUE,
                      iclear_status text, iclear_decision jsonb);
SELECT iclear.attach('g_leads', 'g_attach', '{"rejected": "keep"}');
INSERT INTO g_leads (email, age, ext) VALUES ('a@x.com', 30, 'k1'), ('b@x.com', 16, 'k2');
-- a retried row whose unique key is taken is not processed again
INSERT INTO g_leads (email, age, ext) VALUES ('a@x.com', 30, 'k1') ON CONFLICT DO NOTHING;
SELECT id, email, iclear_status, iclear_decision ->> 'reason' AS reason FROM g_leads ORDER BY id;
SELECT count(*) AS decisions FROM iclear.decision d JOIN iclear.product p ON p.id = d.product_id WHERE p.name = 'g_attach';
-- a table of another owner is refused, whatever its grants
CREATE ROLE g_owner NOLOGIN;
CREATE ROLE g_ops NOLOGIN IN ROLE iclear_operator;
CREATE TABLE g_theirs (id bigserial PRIMARY KEY, email text);
ALTER TABLE g_theirs OWNER TO g_owner;
GRANT ALL ON g_theirs TO g_ops;
SET ROLE g_ops;
SELECT iclear.attach('g_theirs', 'g_attach');
RESET ROLE;
SELECT iclear.detach('g_leads');
INSERT INTO g_leads (email, age) VALUES ('c@x.com', 12) RETURNING iclear_status;
DROP TABLE g_theirs;
DROP ROLE g_ops, g_owner;
