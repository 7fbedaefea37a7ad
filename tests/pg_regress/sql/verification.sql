-- Pause for verification: a lead waits for its phone's SMS code; the code
-- is kept as a digest, wrong codes count, and a confirmed phone resumes
-- the lead with its final decision.
UPDATE iclear.service SET subscription = 'enabled', endpoint = 'http://127.0.0.1:28819/sms' WHERE name = 'sms';
INSERT INTO iclear.product (name) VALUES ('g_verify');
INSERT INTO iclear.rule (product_id, name) SELECT id, 'Verify by SMS' FROM iclear.product WHERE name = 'g_verify';
INSERT INTO iclear.rule_action (rule_id, action, config)
     SELECT id, 'pause_for_verification', '{"phone_field": "homePhone", "message": "check your phone"}'
       FROM iclear.rule WHERE name = 'Verify by SMS';
SELECT d ->> 'status' AS status, d ->> 'reason' AS reason, d #>> '{verification,phone}' AS phone
  FROM iclear_process('{"product": "g_verify", "lead_id": "V-1", "fields": {"homePhone": "(310) 555-0199"}}') AS d;
SELECT phone, status, length(code) AS code_length FROM iclear.sms_verification WHERE product = 'g_verify';
SELECT lead_id, phone FROM iclear.paused_lead;
-- a wrong code counts an attempt
SELECT iclear.confirm_sms('g_verify', '3105550199', '000000') AS confirmed;
SELECT attempts FROM iclear.sms_verification WHERE product = 'g_verify';
-- a phone verified at the desk resumes the lead
SELECT iclear.record_sms_verification('g_verify', '+1 310 555 0199', '123456');
SELECT status, decision ->> 'status' AS final FROM iclear.decision WHERE lead_id = 'V-1' ORDER BY id;
SELECT count(*) AS still_paused FROM iclear.paused_lead;
