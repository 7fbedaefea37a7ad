-- Roles: what each of iclear's roles may do, processing as a role that is
-- not a superuser, the audit trail that records who, and erasure.
CREATE ROLE g_admin NOLOGIN IN ROLE iclear_admin;
CREATE ROLE g_operator NOLOGIN IN ROLE iclear_operator;
CREATE ROLE g_reader NOLOGIN IN ROLE iclear_reader;
SELECT rolname, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'iclear_processor';
SELECT p.proname, pg_get_userbyid(p.proowner) AS owner, p.prosecdef AS security_definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('iclear', 'public')
   AND p.proname IN ('process', 'iclear_process', 'lead_trigger', 'confirm_sms', 'maintain', 'forget')
 ORDER BY 1;
INSERT INTO iclear.product (name) VALUES ('g_roles');
INSERT INTO iclear.global_rule (product_id, service, settings)
     SELECT id, 'ip_analysis', '{"api_key": "G-SECRET", "reject_fraud_score_gte": 90}' FROM iclear.product WHERE name = 'g_roles';
SET ROLE g_operator;
SELECT settings FROM iclear.global_rule g JOIN iclear.product p ON p.id = g.product_id WHERE p.name = 'g_roles';
SELECT * FROM iclear.global_rule_credential;
UPDATE iclear.global_rule SET settings = settings || '{"api_key": "mine"}';
INSERT INTO iclear.config_audit (table_name, op, role) VALUES ('rule', 'DELETE', 'g_admin');
UPDATE iclear.global_rule SET settings = '{"reject_fraud_score_gte": 80}'
 WHERE product_id = (SELECT id FROM iclear.product WHERE name = 'g_roles');
RESET ROLE;
SELECT role, table_name, op, new -> 'settings' AS settings FROM iclear.config_audit
 WHERE table_name = 'global_rule' AND op = 'UPDATE';
SET ROLE g_reader;
SELECT worker_alive IS NOT NULL AS health_readable FROM iclear.health;
SELECT count(*) FROM iclear.decision;
RESET ROLE;
-- erasure: the admin's, and the audit says that it ran, not whom
SELECT iclear_process('{"product": "g_roles", "lead_id": "E-1", "fields": {"email": "gone@example.com"}}') ->> 'status' AS status;
SET ROLE g_admin;
SELECT iclear.forget('gone@example.com') ->> 'decision' AS decisions_erased;
RESET ROLE;
SELECT envelope -> 'fields' ->> 'email' AS email FROM iclear.decision WHERE lead_id = 'E-1';
SELECT role, table_name, op FROM iclear.config_audit WHERE op = 'ERASE';
DROP ROLE g_admin, g_operator, g_reader;
