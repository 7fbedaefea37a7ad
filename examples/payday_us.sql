-- Example configuration: a US payday-loan product with the filters a lead
-- company typically runs. Used by `make demo`; read it as a worked example.
CREATE EXTENSION IF NOT EXISTS iclear;

INSERT INTO iclear.product (name, kind) VALUES ('payday_us', 'post');

-- ---------------------------------------------------------------- lists
INSERT INTO iclear.list (name, kind, field) VALUES
    ('complainers (email)', 'dnpl', 'email'),
    ('litigators (phone)', 'dnpl', 'homePhone'),
    ('rejected as fraud (email)', 'dnpl', 'email');
INSERT INTO iclear.list_product (list_id, product_id)
SELECT l.id, p.id FROM iclear.list l, iclear.product p
 WHERE l.name IN ('complainers (email)', 'litigators (phone)');
-- known complainers and litigators (deterministic, overlapping the demo leads)
INSERT INTO iclear.list_entry (list_id, value, added_by)
SELECT (SELECT id FROM iclear.list WHERE name = 'complainers (email)'),
       'customer' || g || '@yahoo.com', 'import'
  FROM generate_series(1, 2000, 37) g;
INSERT INTO iclear.list_entry (list_id, value, added_by)
SELECT (SELECT id FROM iclear.list WHERE name = 'litigators (phone)'),
       (3102870000 + g)::text, 'import'
  FROM generate_series(0, 9999, 53) g;

-- ----------------------------------------------------------- categories
INSERT INTO iclear.rule_category (product_id, stage, name, position)
SELECT id, 'processing', c.name, c.pos FROM iclear.product,
       (VALUES ('Fraud', 1), ('Compliance', 2), ('Quality', 3), ('Routing', 4)) AS c(name, pos);

-- A small helper for this file only: a rule with its conditions and actions.
CREATE FUNCTION pg_temp.add_rule(r_stage text, r_category text, r_name text, pos int,
                                 conds jsonb, acts jsonb, logic text DEFAULT 'and')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rid bigint;
    c jsonb;
    a jsonb;
    i int := 0;
BEGIN
    INSERT INTO iclear.rule (product_id, stage, name, position, category_id, logical_operator)
    SELECT p.id, r_stage, r_name, pos,
           (SELECT rc.id FROM iclear.rule_category rc WHERE rc.name = r_category AND rc.product_id = p.id),
           logic
      FROM iclear.product p WHERE p.name = 'payday_us'
    RETURNING rule.id INTO rid;
    FOR c IN SELECT * FROM jsonb_array_elements(conds) LOOP
        INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
        VALUES (rid, c->>'category', coalesce(c->>'parameter', ''), c->>'operator', c->'value');
    END LOOP;
    FOR a IN SELECT * FROM jsonb_array_elements(acts) LOOP
        INSERT INTO iclear.rule_action (rule_id, action, config, position)
        VALUES (rid, a->>'action', coalesce(a->'config', '{}'), i);
        i := i + 1;
    END LOOP;
    RETURN rid;
END $$;

-- ------------------------------------------------- pre-validation rules
SELECT pg_temp.add_rule('pre_validation', NULL, 'No email: reject before validation', 1,
    '[{"category": "lead_body", "parameter": "email", "operator": "is_empty"}]',
    '[{"action": "stop_processing", "config": {"message": "email missing"}}]');
SELECT pg_temp.add_rule('pre_validation', NULL, 'Tag the publisher on every lead', 2,
    '[]',
    '[{"action": "change_input_data", "config": {"params": {"pub_ref": "pub-{%publisherId%}-{%sourceId%}"}}}]');

-- ----------------------------------------------------- processing rules
SELECT pg_temp.add_rule('processing', 'Fraud', 'Phone: digits only', 0,
    '[{"category": "lead_body", "parameter": "homePhone", "operator": "regex", "value": "[^0-9]"}]',
    '[{"action": "find_and_replace", "config": {"field": "homePhone", "find": "[^0-9]", "replace": "", "regex": true}},
      {"action": "lead_tags", "config": {"mode": "add", "tags": ["phone_normalised"]}}]');
SELECT pg_temp.add_rule('processing', 'Fraud', 'Disposable email domain', 1,
    '[{"category": "lead_body", "parameter": "email", "operator": "regex",
       "value": "@(mailinator|guerrillamail|10minutemail|trashmail|yopmail)\\."}]',
    '[{"action": "stop_processing", "config": {"message": "disposable email domain"}}]');
SELECT pg_temp.add_rule('processing', 'Fraud', 'Test lead', 2,
    '[{"category": "lead_body", "parameter": "firstName", "operator": "in", "value": ["test", "asdf", "qwerty"]},
      {"category": "lead_body", "parameter": "lastName", "operator": "equals", "value": "test"}]',
    '[{"action": "stop_processing", "config": {"message": "test lead"}}]', 'or');
SELECT pg_temp.add_rule('processing', 'Fraud', 'Fictional 555 phone', 3,
    '[{"category": "lead_body", "parameter": "homePhone", "operator": "regex", "value": "^\\d{3}555\\d{4}$"}]',
    '[{"action": "stop_processing", "config": {"message": "fictional phone number"}}]');
-- A duplicate: an email accepted in the last 30 days (a history condition:
-- docs/guide/duplicates.md). Until 0.6.0 this was a counter keyed by email
-- and date read here and incremented by a later rule ("Remember the
-- email"): a calendar day, and two rules to keep in step.
SELECT pg_temp.add_rule('processing', 'Fraud', 'Duplicate email (30 days)', 4,
    '[{"category": "history", "parameter": "email", "operator": "greater_or_equal",
       "value": {"count": 1, "seconds": 2592000, "statuses": ["accepted"]}}]',
    '[{"action": "stop_processing", "config": {"message": "duplicate email (accepted in the last 30 days)"}}]');
SELECT pg_temp.add_rule('processing', 'Fraud', 'Known bad publisher channel', 5,
    '[{"category": "lead_param", "parameter": "channel_id", "operator": "equals", "value": 7}]',
    '[{"action": "stop_processing", "config": {"message": "blocked channel"}}]');
UPDATE iclear.rule SET publisher_id = 13 WHERE name = 'Known bad publisher channel';

SELECT pg_temp.add_rule('processing', 'Compliance', 'Under 18', 1,
    '[{"category": "lead_body", "parameter": "age", "operator": "less", "value": 18}]',
    '[{"action": "stop_processing", "config": {"message": "applicant under 18"}}]');
SELECT pg_temp.add_rule('processing', 'Compliance', 'State not served', 2,
    '[{"category": "lead_body", "parameter": "state", "operator": "in",
       "value": ["NY", "VT", "WV", "AR", "MD", "PA"]}]',
    '[{"action": "stop_processing", "config": {"message": "state not served ({%productField_state%})"}}]');
SELECT pg_temp.add_rule('processing', 'Compliance', 'No consent', 3,
    '[{"category": "lead_body", "parameter": "tcpaConsent", "operator": "not_equals", "value": true}]',
    '[{"action": "stop_processing", "config": {"message": "no TCPA consent"}}]');

SELECT pg_temp.add_rule('processing', 'Quality', 'Income below minimum', 1,
    '[{"category": "lead_body", "parameter": "monthlyIncome", "operator": "less", "value": 1000}]',
    '[{"action": "stop_processing", "config": {"message": "monthly income below 1000"}}]');
SELECT pg_temp.add_rule('processing', 'Quality', 'Loan amount out of range', 2,
    '[{"category": "lead_body", "parameter": "loanAmount", "operator": "greater", "value": 5000},
      {"category": "lead_body", "parameter": "loanAmount", "operator": "less", "value": 100}]',
    '[{"action": "stop_processing", "config": {"message": "loan amount out of range"}}]', 'or');

SELECT pg_temp.add_rule('processing', 'Routing', 'High earners to the premium tree', 1,
    '[{"category": "lead_body", "parameter": "monthlyIncome", "operator": "greater_or_equal", "value": 6000}]',
    '[{"action": "route_lead_to", "config": {"ping_tree_id": 501}},
      {"action": "lead_tags", "config": {"mode": "add", "tags": ["premium"]}}]');
SELECT pg_temp.add_rule('processing', 'Routing', 'QA sample (5%)', 2,
    '[{"category": "random", "operator": "less", "value": 50}]',
    '[{"action": "trigger_silent_campaign", "config": {"campaign_id": 900}},
      {"action": "lead_tags", "config": {"mode": "add", "tags": ["qa_sample"]}}]');
SELECT pg_temp.add_rule('processing', 'Routing', 'Military applicants: no resale', 3,
    '[{"category": "lead_body", "parameter": "military", "operator": "equals", "value": true}]',
    '[{"action": "block_monetization"}, {"action": "mark_ping_tree", "config": {"ping_tree_id": 777}}]');

-- ---------------------------------------------- after-processing rules
SELECT pg_temp.add_rule('after_processing', NULL, 'Remember fraud rejects', 1,
    jsonb_build_array(jsonb_build_object('category', 'rule', 'operator', 'equals', 'value', true,
        'parameter', (SELECT id::text FROM iclear.rule WHERE name = 'Disposable email domain'))),
    jsonb_build_array(
        jsonb_build_object('action', 'add_to_list', 'config', jsonb_build_object('list_ids',
            (SELECT jsonb_agg(id) FROM iclear.list WHERE name = 'rejected as fraud (email)'))),
        '{"action": "lead_tags", "config": {"mode": "add", "tags": ["fraud"]}}'::jsonb));
SELECT pg_temp.add_rule('after_processing', NULL, 'Echo the reference', 2,
    '[]',
    '[{"action": "change_response_parameter", "config": {"name": "ref", "value": "{%tPar_pub_ref%}"}}]');

-- ------------------------------------------------------------ lead table
-- ------------------------------------------------------- Global Rules
-- Third-party services, answered in the demo by the sandbox provider on
-- loopback (psql variable :sandbox, e.g. http://127.0.0.1:28817). In
-- production, leave endpoint out: it defaults to the vendor's URL. Without
-- :sandbox (the insert-path benchmark) there are no services.
\if :{?sandbox}
-- every service is listed, disabled: subscribe to three (on the sandbox)
UPDATE iclear.service s SET subscription = 'enabled', cost = v.cost, endpoint = :'sandbox' || v.path
  FROM (VALUES ('ip_analysis', 0.004, '/ip'), ('phone_analysis', 0.006, '/phone'),
               ('iclaim', 0.02, '/iclaim')) AS v(name, cost, path)
 WHERE s.name = v.name;
INSERT INTO iclear.list (name, kind, field) VALUES ('risky phones (async lookups)', 'dnpl', 'homePhone');
INSERT INTO iclear.list_product (list_id, product_id)
SELECT l.id, p.id FROM iclear.list l, iclear.product p WHERE l.name = 'risky phones (async lookups)';
-- 1. IP Analysis, sync, before filtration: reject fraud scores from 90 and
--    IPs from Mexico; answers cached 30 days.
INSERT INTO iclear.global_rule (product_id, service, position, execution, settings)
SELECT id, 'ip_analysis', 1, 'sync',
       '{"api_key": "demo-ipqs-key", "ip_field": "userIp", "strictness": 1, "cache_days": 30,
         "reject_fraud_score_gte": 90, "reject_countries": ["MX"], "sync_timeout_s": 2,
         "after_timeout_run_async": true}'
  FROM iclear.product WHERE name = 'payday_us';
-- 2. Phone Number Analysis, async on half the leads: VOIP or prepaid numbers
--    go on a DNPL for the next time; a daily cap of 300 paid lookups.
INSERT INTO iclear.global_rule (product_id, service, position, execution, lookup_percent, settings)
SELECT p.id, 'phone_analysis', 2, 'async', 50,
       jsonb_build_object('api_key', 'demo-ipqs-key', 'phone_field', 'homePhone', 'country', jsonb_build_array('US'),
                          'add_to_list', jsonb_build_object('voip', true, 'prepaid', true, 'fraud_score_gte', 90,
                                                             'list_ids', jsonb_build_array(l.id)))
  FROM iclear.product p, iclear.list l
 WHERE p.name = 'payday_us' AND l.name = 'risky phones (async lookups)';
INSERT INTO iclear.global_cap (service, period, cap_limit) VALUES ('phone_analysis', 'daily', 300);
-- 3. iClaim, sync, after filtration: claim the consent certificate of every
--    lead still sellable (no charge for rejected ones).
INSERT INTO iclear.global_rule (product_id, service, position, execution, run_time, no_response, settings)
SELECT id, 'iclaim', 3, 'sync', 'after_filtration', 'continue',
       '{"account_id": "demo-account", "api_token": "demo-token"}'
  FROM iclear.product WHERE name = 'payday_us';
-- 4. SMS verification (docs/reference/settings.md "Verification History"): leads of publisher 16, channel 7 are paused
--    until their phone confirms a code; the SMS goes through the sms webhook.
UPDATE iclear.service SET subscription = 'enabled', cost = 0.0075, endpoint = :'sandbox' || '/sms'
 WHERE name = 'sms';
SELECT pg_temp.add_rule('processing', 'Compliance', 'SMS verification for publisher 16 / channel 7', 9,
    '[{"category": "lead_param", "parameter": "publisher_id", "operator": "equals", "value": 16},
      {"category": "lead_param", "parameter": "channel_id", "operator": "equals", "value": 7}]',
    '[{"action": "pause_for_verification",
       "config": {"lead_status": "pre_screening", "phone_field": "homePhone", "message": "Pre-Screening"}},
      {"action": "lead_tags", "config": {"mode": "add", "tags": ["sms_verification"]}}]');
\endif

CREATE TABLE leads (
    id              bigserial PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    publisher_id    int,
    channel_id      int,
    source_id       int,
    "firstName"     text,
    "lastName"      text,
    email           text,
    "homePhone"     text,
    state           text,
    age             int,
    "monthlyIncome" int,
    "loanAmount"    int,
    military        boolean,
    "tcpaConsent"   boolean,
    "userIp"        text,
    extra           jsonb,
    tpar            jsonb,
    iclear_status   text,
    iclear_decision jsonb
);
SELECT iclear.attach('leads', 'payday_us',
                     '{"fields_column": "extra", "params_column": "tpar"}');
