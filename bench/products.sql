-- The iclear variants beyond `leads`, each its own product and table so that
-- none shares rules, caps or rows with another (bench/run.sh, after
-- examples/payday_us.sql and bench/setup.sql). Every product is a copy of
-- payday_us as bench/setup.sql leaves it (24 active rules, its DNPLs), and
-- every table is `LIKE leads` (so ids come from one sequence and lead ids
-- never repeat across products), attached with the options of `leads`:
--   leads_tag     payday_us_tag:    + "Tag every lead", an uncategorised
--                                    processing rule (so the first to run)
--                                    with no condition and a lead_tags action
--   leads_tagcap  payday_us_tagcap: + the same rule with daily_limit 100,000,000
--                                    (never reached: every lead takes a slot)
--   leads_nodup   payday_us_nodup:  - the 30-day duplicate check on email (the
--                                    cost of a history condition: attached vs
--                                    this)
--   leads_ip      payday_us_ip:     + a sync IP Analysis global rule against the
--                                    sandbox provider (psql variable :sandbox),
--                                    no cache_days, so every lead is a paid lookup
--   leads_ipcap   payday_us_ipcap:  the same; bench/run.sh adds a global_cap
--                                    (ip_analysis, monthly, 100,000,000) for this
--                                    variant's runs only, since a global cap
--                                    applies to every product's rules of the service
SET client_min_messages = warning;
CREATE FUNCTION pg_temp.copy_product(src text, dst text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    sid bigint;
    did bigint;
    nid bigint;
    x record;
BEGIN
    SELECT id INTO STRICT sid FROM iclear.product WHERE name = src;
    INSERT INTO iclear.product (name, kind) SELECT dst, kind FROM iclear.product WHERE id = sid
    RETURNING id INTO did;
    CREATE TEMP TABLE IF NOT EXISTS copy_map (kind text, old bigint, new bigint);
    DELETE FROM copy_map;
    -- each row is copied whole (to_jsonb/jsonb_populate_record), with a new id
    -- and product, so columns added later come along
    FOR x IN SELECT * FROM iclear.rule_category WHERE product_id = sid ORDER BY id LOOP
        INSERT INTO iclear.rule_category
        SELECT * FROM jsonb_populate_record(NULL::iclear.rule_category, to_jsonb(x) || jsonb_build_object(
                    'id', nextval(pg_get_serial_sequence('iclear.rule_category', 'id')), 'product_id', did))
        RETURNING id INTO nid;
        INSERT INTO copy_map VALUES ('category', x.id, nid);
    END LOOP;
    FOR x IN SELECT * FROM iclear.rule WHERE product_id = sid ORDER BY id LOOP
        INSERT INTO iclear.rule
        SELECT * FROM jsonb_populate_record(NULL::iclear.rule, to_jsonb(x) || jsonb_build_object(
                    'id', nextval(pg_get_serial_sequence('iclear.rule', 'id')), 'product_id', did,
                    'category_id', (SELECT new FROM copy_map WHERE kind = 'category' AND old = x.category_id)))
        RETURNING id INTO nid;
        INSERT INTO copy_map VALUES ('rule', x.id, nid);
    END LOOP;
    FOR x IN SELECT * FROM iclear.global_rule WHERE product_id = sid ORDER BY id LOOP
        INSERT INTO iclear.global_rule
        SELECT * FROM jsonb_populate_record(NULL::iclear.global_rule, to_jsonb(x) || jsonb_build_object(
                    'id', nextval(pg_get_serial_sequence('iclear.global_rule', 'id')), 'product_id', did))
        RETURNING id INTO nid;
        INSERT INTO copy_map VALUES ('global_rule', x.id, nid);
    END LOOP;
    -- conditions and actions once every rule has its copy: a `rule` condition
    -- names a rule of the product, run_third_party_service a global rule (ids
    -- compared as text: a cast in a CASE branch may be folded at plan time)
    FOR x IN SELECT c.* FROM iclear.rule_condition c JOIN copy_map m ON m.kind = 'rule' AND m.old = c.rule_id
              ORDER BY c.id LOOP
        INSERT INTO iclear.rule_condition
        SELECT * FROM jsonb_populate_record(NULL::iclear.rule_condition, to_jsonb(x) || jsonb_build_object(
                    'id', nextval(pg_get_serial_sequence('iclear.rule_condition', 'id')),
                    'rule_id', (SELECT new FROM copy_map WHERE kind = 'rule' AND old = x.rule_id),
                    'parameter', CASE WHEN x.category = 'rule'
                                      THEN (SELECT new FROM copy_map WHERE kind = 'rule' AND old::text = x.parameter)::text
                                      ELSE x.parameter END));
    END LOOP;
    FOR x IN SELECT a.* FROM iclear.rule_action a JOIN copy_map m ON m.kind = 'rule' AND m.old = a.rule_id
              ORDER BY a.id LOOP
        INSERT INTO iclear.rule_action
        SELECT * FROM jsonb_populate_record(NULL::iclear.rule_action, to_jsonb(x) || jsonb_build_object(
                    'id', nextval(pg_get_serial_sequence('iclear.rule_action', 'id')),
                    'rule_id', (SELECT new FROM copy_map WHERE kind = 'rule' AND old = x.rule_id),
                    'config', CASE WHEN x.action = 'run_third_party_service'
                                   THEN x.config || jsonb_build_object('global_rule_id',
                                            (SELECT new FROM copy_map WHERE kind = 'global_rule'
                                              AND old::text = x.config ->> 'global_rule_id'))
                                   ELSE x.config END));
    END LOOP;
    INSERT INTO iclear.list_product (list_id, product_id)
    SELECT list_id, did FROM iclear.list_product WHERE product_id = sid;
    RETURN did;
END $$;

CREATE FUNCTION pg_temp.bench_table(tbl text, product text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I (LIKE leads INCLUDING DEFAULTS)', tbl);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (id)', tbl);
    PERFORM iclear.attach(tbl::regclass, product,
                          (SELECT options FROM iclear.attachment WHERE lead_table = 'leads'::regclass));
END $$;

-- ------------------------------------------ a never-reached rule cap (tag)
SELECT pg_temp.copy_product('payday_us', 'payday_us_tag');
SELECT pg_temp.copy_product('payday_us', 'payday_us_tagcap');
INSERT INTO iclear.rule (product_id, stage, name, position, daily_limit, cap_counts)
SELECT id, 'processing', 'Tag every lead', 0,
       CASE name WHEN 'payday_us_tagcap' THEN 100000000 END, 'matches'
  FROM iclear.product WHERE name IN ('payday_us_tag', 'payday_us_tagcap');
INSERT INTO iclear.rule_action (rule_id, action, config)
SELECT r.id, 'lead_tags', '{"mode": "add", "tags": ["every_lead"]}'
  FROM iclear.rule r JOIN iclear.product p ON p.id = r.product_id
 WHERE r.name = 'Tag every lead' AND p.name IN ('payday_us_tag', 'payday_us_tagcap');
SELECT pg_temp.bench_table('leads_tag', 'payday_us_tag');
SELECT pg_temp.bench_table('leads_tagcap', 'payday_us_tagcap');

-- ---------------------------------- without the 30-day duplicate check
SELECT pg_temp.copy_product('payday_us', 'payday_us_nodup');
DELETE FROM iclear.rule r USING iclear.product p
 WHERE p.id = r.product_id AND p.name = 'payday_us_nodup' AND r.name = 'Duplicate email (30 days)';
SELECT pg_temp.bench_table('leads_nodup', 'payday_us_nodup');

-- ------------------------------------- a sync IP lookup per lead (sandbox)
UPDATE iclear.service SET subscription = 'enabled', cost = 0.004, endpoint = :'sandbox' || '/ip'
 WHERE name = 'ip_analysis';
SELECT pg_temp.copy_product('payday_us', 'payday_us_ip');
SELECT pg_temp.copy_product('payday_us', 'payday_us_ipcap');
-- no cache_days: every lead is an API lookup; the sandbox answers fraud_score
-- = the IP's last octet mod 101 and MX for a third octet = 5 mod 8
INSERT INTO iclear.global_rule (product_id, service, position, execution, lookup_percent, settings)
SELECT id, 'ip_analysis', 1, 'sync', 100,
       '{"api_key": "bench-key", "ip_field": "userIp", "strictness": 1,
         "reject_fraud_score_gte": 90, "reject_countries": ["MX"], "sync_timeout_s": 2}'
  FROM iclear.product WHERE name IN ('payday_us_ip', 'payday_us_ipcap');
SELECT pg_temp.bench_table('leads_ip', 'payday_us_ip');
SELECT pg_temp.bench_table('leads_ipcap', 'payday_us_ipcap');
ANALYZE;
