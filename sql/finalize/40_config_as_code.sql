-- iclear finalize, config as code: Configuration as code: export, import, plans and the configuration history.
-- One part of sql/finalize.sql, which scripts/gen-finalize.py assembles:
-- release by release (the statements outside any region first, then each
-- since-X region), and within a release these files in their order.

-- BEGIN since-0.4.0
-- A product's configuration changes in order: the product row, its rules
-- (with their conditions and actions), categories, global rules (and their
-- masked credentials), product fields and list links, as audited. Rows that
-- no longer exist are found through the trail itself.
CREATE FUNCTION iclear.config_history(product text)
RETURNS TABLE (at timestamptz, role name, table_name text, op text, row_id text, old jsonb, new jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH pid AS (
        SELECT DISTINCT a.row_id FROM iclear.config_audit a
         WHERE a.table_name = 'product' AND coalesce(a.new, a.old) ->> 'name' = $1
        UNION SELECT p.id::text FROM iclear.product p WHERE p.name = $1),
    owned AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE a.table_name IN ('rule', 'rule_category', 'global_rule', 'product_field', 'list_product')
           AND coalesce(a.new, a.old) ->> 'product_id' IN (SELECT row_id FROM pid)),
    children AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name IN ('rule_condition', 'rule_action')
                AND coalesce(a.new, a.old) ->> 'rule_id' IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'rule'))
            OR (a.table_name = 'global_rule_credential'
                AND a.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule')))
    SELECT a.at, a.role, a.table_name, a.op, a.row_id, a.old, a.new
      FROM iclear.config_audit a
     WHERE (a.table_name = 'product' AND a.row_id IN (SELECT row_id FROM pid))
        OR (a.table_name, a.row_id) IN (SELECT * FROM owned UNION SELECT * FROM children)
     ORDER BY a.at, a.id
$$;

-- Configuration as code. export_config(product) is the whole product as one
-- document: objects referenced by name, never by id (rules by name, lists by
-- name, global rules by `key`: the service, or `service:N` for the Nth of
-- one service), no credentials, nulls left out, jsonb's stable key order.
-- import_config(document, dry_run) plans, and applies in one transaction,
-- the changes that make the product equal the document.
CREATE FUNCTION iclear.export_config(product text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- (0.6.0 replaces it: sql/finalize/40_config_as_code.sql since-0.5.0)
    RETURN NULL;
END $$;

-- Refuse a document object with a key outside `allowed`, naming its path.
CREATE FUNCTION iclear.config_keys(obj jsonb, path text, allowed text[], required text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    IF jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'iclear.import_config: % must be a JSON object', path USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x INTO k FROM jsonb_object_keys(obj) x WHERE x <> ALL (allowed) ORDER BY x LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %.% is not a key of this object', path, k
            USING ERRCODE = 'invalid_parameter_value', HINT = 'expected one of: ' || array_to_string(allowed, ', ');
    END IF;
    SELECT x INTO k FROM unnest(required) x WHERE NOT obj ? x OR jsonb_typeof(obj -> x) = 'null' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %.% is required', path, k USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- The elements of `doc -> section` (an array, or absent) with their index.
CREATE FUNCTION iclear.config_items(doc jsonb, section text)
RETURNS TABLE (i integer, o jsonb) LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF doc -> section IS NOT NULL AND jsonb_typeof(doc -> section) <> 'array' THEN
        RAISE EXCEPTION 'iclear.import_config: % must be an array', section USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT (x.n - 1)::integer, x.v FROM jsonb_array_elements(coalesce(doc -> section, '[]')) WITH ORDINALITY x(v, n);
END $$;

-- List names to ids (unknown names refused, naming the path).
CREATE FUNCTION iclear.config_list_ids(names jsonb, path text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
BEGIN
    SELECT n INTO missing FROM jsonb_array_elements_text(names) n
     WHERE NOT EXISTS (SELECT 1 FROM iclear.list l WHERE l.name = n) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.import_config: %: no list is named %', path, quote_literal(missing)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (SELECT coalesce(jsonb_agg(l.id ORDER BY l.id), '[]') FROM iclear.list l
             WHERE l.name IN (SELECT jsonb_array_elements_text(names)));
END $$;

-- Make the product equal `doc` (import_config's work; errors name the path).
-- Its body is the one since 0.5.0, below: a fresh install creates the
-- function here, where the grants of 0.4.0 name it.
CREATE FUNCTION iclear.apply_config(doc jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN NULL; END $$;

-- What changed between two exports: the objects added, changed and removed,
-- each as "<section> <name>".
CREATE FUNCTION iclear.config_plan(before jsonb, after jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH sections(section, id) AS (VALUES ('categories', '{stage,name}'), ('rules', '{name}'),
                                          ('global_rules', '{key}'), ('global_caps', '{service,period}'),
                                          ('fields', '{name}'), ('lists', '{name}')),
    b AS (SELECT s.section, (SELECT string_agg(o ->> k, '/') FROM unnest(s.id::text[]) k) AS name, o
            FROM sections s, jsonb_array_elements(coalesce(before -> s.section, '[]')) o),
    a AS (SELECT s.section, (SELECT string_agg(o ->> k, '/') FROM unnest(s.id::text[]) k) AS name, o
            FROM sections s, jsonb_array_elements(coalesce(after -> s.section, '[]')) o),
    d AS (SELECT coalesce(a.section, b.section) AS section, coalesce(a.name, b.name) AS name,
                 CASE WHEN b.o IS NULL THEN 'added' WHEN a.o IS NULL THEN 'removed'
                      WHEN a.o <> b.o THEN 'changed' END AS what
            FROM a FULL JOIN b ON a.section = b.section AND a.name = b.name
          UNION ALL
          SELECT 'product', after #>> '{product,name}',
                 CASE WHEN before IS NULL THEN 'added'
                      WHEN before -> 'product' <> after -> 'product' THEN 'changed' END)
    SELECT jsonb_build_object(
        'product', after #>> '{product,name}',
        'added', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'added'), '[]'),
        'changed', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'changed'), '[]'),
        'removed', coalesce((SELECT jsonb_agg(d.section || ' ' || d.name ORDER BY d.section, d.name) FROM d WHERE what = 'removed'), '[]'))
$$;

-- Import a document of export_config: returns the plan; with dry_run false,
-- applies it (in the caller's transaction: all of it or, on any error,
-- none). A dry run applies it in a subtransaction, so every validation of
-- the configuration tables runs, and rolls it back.
CREATE FUNCTION iclear.import_config(config jsonb, dry_run boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pname  text := config #>> '{product,name}';
    before jsonb;
    plan   jsonb;
BEGIN
    IF pname IS NOT NULL AND EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    BEGIN
        PERFORM iclear.apply_config(config);
        plan := iclear.config_plan(before, iclear.export_config(pname))
                || jsonb_build_object('dry_run', dry_run);
        IF dry_run THEN
            RAISE EXCEPTION USING ERRCODE = 'ICDRY', MESSAGE = 'iclear.import_config: dry run';
        END IF;
    EXCEPTION WHEN SQLSTATE 'ICDRY' THEN
        NULL; -- rolled back: the plan stays
    END;
    RETURN plan;
END $$;
-- END since-0.4.0

-- BEGIN since-0.5.0
-- (0.6.0: a product's and a global cap's time zone)
CREATE OR REPLACE FUNCTION iclear.export_config(product text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p   iclear.product;
    dup text;
BEGIN
    SELECT * INTO p FROM iclear.product x WHERE x.name = export_config.product;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'iclear.export_config: product % does not exist', quote_literal(export_config.product)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT r.name INTO dup FROM iclear.rule r WHERE r.product_id = p.id GROUP BY r.name HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'iclear.export_config: two rules of % are named %', quote_literal(p.name), quote_literal(dup)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the document references rules by name: rename one of them';
    END IF;
    RETURN (
    WITH g AS (
        SELECT x.*, CASE WHEN count(*) OVER (PARTITION BY x.service) = 1 THEN x.service
                         ELSE x.service || ':' || row_number() OVER (PARTITION BY x.service ORDER BY x.position, x.id)
                    END AS key
          FROM iclear.global_rule x WHERE x.product_id = p.id),
    lists AS (SELECT l.id, l.name FROM iclear.list l)
    SELECT jsonb_strip_nulls(jsonb_build_object(
      'format', 1,
      'product', jsonb_build_object('name', p.name, 'kind', p.kind, 'time_zone', p.time_zone),
      'categories', coalesce((SELECT jsonb_agg(jsonb_build_object('stage', c.stage, 'name', c.name, 'position', c.position)
                                               ORDER BY c.stage, c.position, c.name)
                                FROM iclear.rule_category c WHERE c.product_id = p.id), '[]'),
      'rules', coalesce((SELECT jsonb_agg(
              (to_jsonb(r) - ARRAY['id', 'product_id', 'category_id', 'created_at', 'all_new_since'])
              || jsonb_build_object(
                   'category', (SELECT c.name FROM iclear.rule_category c WHERE c.id = r.category_id),
                   -- All New counts from coalesce(all_new_since, created_at): kept as one date
                   'all_new_since', CASE WHEN r.all_new THEN coalesce(r.all_new_since, r.created_at)
                                         ELSE r.all_new_since END,
                   'conditions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'category', c.category, 'operator', c.operator, 'value', c.value,
                        'parameter', CASE WHEN c.category = 'rule'
                                          THEN (SELECT o.name FROM iclear.rule o WHERE o.id::text = c.parameter)
                                          ELSE c.parameter END) ORDER BY c.id)
                      FROM iclear.rule_condition c WHERE c.rule_id = r.id), '[]'),
                   'actions', coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'action', a.action, 'status', a.status, 'position', a.position,
                        'config', CASE
                            WHEN a.config ? 'list_ids' THEN (a.config - 'list_ids') || jsonb_build_object('lists',
                                (SELECT jsonb_agg(l.name ORDER BY l.name) FROM lists l
                                  WHERE l.id::text IN (SELECT jsonb_array_elements_text(a.config -> 'list_ids'))))
                            WHEN a.config ? 'global_rule_id' THEN (a.config - 'global_rule_id') || jsonb_build_object(
                                'global_rule', (SELECT g.key FROM g WHERE g.id::text = a.config ->> 'global_rule_id'))
                            ELSE a.config END) ORDER BY a.position, a.id)
                      FROM iclear.rule_action a WHERE a.rule_id = r.id), '[]'))
              ORDER BY r.stage, r.position, r.name)
            FROM iclear.rule r WHERE r.product_id = p.id), '[]'),
      'global_rules', coalesce((SELECT jsonb_agg(
              (to_jsonb(g) - ARRAY['id', 'product_id'])
              || jsonb_build_object('settings', CASE
                   WHEN g.settings -> 'add_to_list' ? 'list_ids' THEN jsonb_set(g.settings, '{add_to_list}',
                        ((g.settings -> 'add_to_list') - 'list_ids') || jsonb_build_object('lists',
                        (SELECT coalesce(jsonb_agg(l.name ORDER BY l.name), '[]') FROM lists l
                          WHERE l.id::text IN (SELECT jsonb_array_elements_text(g.settings -> 'add_to_list' -> 'list_ids')))))
                   ELSE g.settings END)
              ORDER BY g.position, g.id)
            FROM g), '[]'),
      'global_caps', coalesce((SELECT jsonb_agg(jsonb_build_object('service', c.service, 'period', c.period,
                                 'start_day', c.start_day, 'cap_limit', c.cap_limit, 'time_zone', c.time_zone)
                                 ORDER BY c.service, c.period)
                                 FROM iclear.global_cap c
                                WHERE c.service IN (SELECT g.service FROM g)), '[]'),
      'fields', coalesce((SELECT jsonb_agg(to_jsonb(f) - ARRAY['id', 'product_id'] ORDER BY f.name)
                            FROM iclear.product_field f WHERE f.product_id = p.id), '[]'),
      'lists', coalesce((SELECT jsonb_agg(jsonb_build_object('name', l.name, 'kind', l.kind, 'field', l.field,
                              'product_level', EXISTS (SELECT 1 FROM iclear.list_product lp
                                                        WHERE lp.list_id = l.id AND lp.product_id = p.id))
                              ORDER BY l.name)
                           FROM iclear.list l
                          WHERE EXISTS (SELECT 1 FROM iclear.list_product lp WHERE lp.list_id = l.id AND lp.product_id = p.id)
                             OR EXISTS (SELECT 1 FROM iclear.rule_action a JOIN iclear.rule r ON r.id = a.rule_id
                                         WHERE r.product_id = p.id AND a.config -> 'list_ids' @> to_jsonb(l.id))
                             OR EXISTS (SELECT 1 FROM g WHERE g.settings -> 'add_to_list' -> 'list_ids' @> to_jsonb(l.id))),
                        '[]')
    )));
END $$;

CREATE OR REPLACE FUNCTION iclear.apply_config(doc jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pid     bigint;
    pname   text;
    before  jsonb;
    path    text;
    it      record;
    c       record;
    r       iclear.rule;
    g       iclear.global_rule;
    rid     bigint;
    cat     bigint;
    gmap    jsonb;
    rmap    jsonb := '{}';
    cfg     jsonb;
    param   text;
BEGIN
    PERFORM iclear.config_keys(doc, 'document',
        ARRAY['format', 'product', 'categories', 'rules', 'global_rules', 'global_caps', 'fields', 'lists'],
        ARRAY['product']);
    PERFORM iclear.config_keys(doc -> 'product', 'product', ARRAY['name', 'kind', 'time_zone'], ARRAY['name']);
    pname := doc #>> '{product,name}';
    IF EXISTS (SELECT 1 FROM iclear.product WHERE name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    BEGIN
        INSERT INTO iclear.product (name, kind, time_zone)
        VALUES (pname, coalesce(doc #>> '{product,kind}', 'post'), coalesce(doc #>> '{product,time_zone}', 'UTC'))
        ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, time_zone = EXCLUDED.time_zone
         WHERE (product.kind, product.time_zone) IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.time_zone);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'iclear.import_config: product: %', SQLERRM USING ERRCODE = SQLSTATE;
    END;
    SELECT id INTO pid FROM iclear.product WHERE name = pname;

    -- lists are shared by products: created or updated, never removed here;
    -- the product's links follow product_level
    FOR it IN SELECT * FROM iclear.config_items(doc, 'lists') LOOP
        path := format('lists[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'kind', 'field', 'product_level'], ARRAY['name', 'kind', 'field']);
        BEGIN
            INSERT INTO iclear.list (name, kind, field) VALUES (it.o ->> 'name', it.o ->> 'kind', it.o ->> 'field')
            ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, field = EXCLUDED.field
             WHERE (list.kind, list.field) IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.field);
            IF coalesce((it.o ->> 'product_level')::boolean, false) THEN
                INSERT INTO iclear.list_product (list_id, product_id)
                SELECT l.id, pid FROM iclear.list l WHERE l.name = it.o ->> 'name' ON CONFLICT DO NOTHING;
            ELSE
                DELETE FROM iclear.list_product lp USING iclear.list l
                 WHERE lp.list_id = l.id AND l.name = it.o ->> 'name' AND lp.product_id = pid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.list_product lp USING iclear.list l
     WHERE lp.list_id = l.id AND lp.product_id = pid
       AND l.name NOT IN (SELECT x.o ->> 'name' FROM iclear.config_items(doc, 'lists') x);

    -- categories by stage and name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'categories') LOOP
        path := format('categories[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['stage', 'name', 'position'], ARRAY['stage', 'name']);
        BEGIN
            UPDATE iclear.rule_category SET position = coalesce((it.o ->> 'position')::int, 0)
             WHERE product_id = pid AND stage = it.o ->> 'stage' AND name = it.o ->> 'name'
               AND position IS DISTINCT FROM coalesce((it.o ->> 'position')::int, 0);
            INSERT INTO iclear.rule_category (product_id, stage, name, position)
            SELECT pid, it.o ->> 'stage', it.o ->> 'name', coalesce((it.o ->> 'position')::int, 0)
             WHERE NOT EXISTS (SELECT 1 FROM iclear.rule_category x
                                WHERE x.product_id = pid AND x.stage = it.o ->> 'stage' AND x.name = it.o ->> 'name');
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- global rules by key, updated in place: their stored credentials stay
    SELECT coalesce(jsonb_object_agg(k.key, k.id), '{}') INTO gmap FROM (
        SELECT x.id, CASE WHEN count(*) OVER (PARTITION BY x.service) = 1 THEN x.service
                          ELSE x.service || ':' || row_number() OVER (PARTITION BY x.service ORDER BY x.position, x.id)
                     END AS key
          FROM iclear.global_rule x WHERE x.product_id = pid) k;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_rules') LOOP
        path := format('global_rules[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['key', 'service', 'status', 'execution', 'lookup_percent', 'position', 'run_time', 'run_on',
                  'run_on_silent_ping', 'no_response', 'settings', 'daily_limit', 'monthly_limit'], ARRAY['service']);
        cfg := coalesce(it.o -> 'settings', '{}');
        IF cfg -> 'add_to_list' ? 'lists' THEN
            cfg := jsonb_set(cfg, '{add_to_list}', ((cfg -> 'add_to_list') - 'lists') || jsonb_build_object('list_ids',
                       iclear.config_list_ids(cfg -> 'add_to_list' -> 'lists', path || '.settings.add_to_list.lists')));
        END IF;
        BEGIN
            g := jsonb_populate_record(NULL::iclear.global_rule, it.o - 'settings' - 'key');
            rid := (gmap ->> coalesce(it.o ->> 'key', it.o ->> 'service'))::bigint;
            IF rid IS NULL THEN
                INSERT INTO iclear.global_rule (product_id, service, status, execution, lookup_percent, position, run_time,
                                                run_on, run_on_silent_ping, no_response, settings, daily_limit, monthly_limit)
                VALUES (pid, g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                RETURNING id INTO rid;
                gmap := gmap || jsonb_build_object(coalesce(it.o ->> 'key', it.o ->> 'service'), rid);
            ELSE
                UPDATE iclear.global_rule x
                   SET (service, status, execution, lookup_percent, position, run_time, run_on, run_on_silent_ping,
                        no_response, settings, daily_limit, monthly_limit)
                     = (g.service, coalesce(g.status, 'active'), coalesce(g.execution, 'sync'),
                        coalesce(g.lookup_percent, 100), coalesce(g.position, 0), coalesce(g.run_time, 'before_filtration'),
                        coalesce(g.run_on, 'ping_and_post'), coalesce(g.run_on_silent_ping, false),
                        coalesce(g.no_response, 'continue'), cfg, g.daily_limit, g.monthly_limit)
                 WHERE x.id = rid;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;

    -- rules by name: their columns first, so conditions can name any of them
    -- (each looked up by the (product_id, name) index: a map grown one rule
    -- at a time made an import quadratic in its rules)
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        path := format('rules[%s]', it.i);
        PERFORM iclear.progress_update(it.i + 1);
        PERFORM iclear.config_keys(it.o, path,
            ARRAY['name', 'stage', 'status', 'position', 'category', 'publisher_id', 'channel_id', 'source_id',
                  'all_new', 'all_new_since', 'publisher_ids', 'exclude_publisher_ids', 'channel_ids',
                  'exclude_channel_ids', 'source_ids', 'exclude_source_ids', 'logical_operator', 'method',
                  'daily_limit', 'monthly_limit', 'per_source_limit', 'cap_counts', 'per_source_scope',
                  'conditions', 'actions'], ARRAY['name']);
        BEGIN
            r := jsonb_populate_record(NULL::iclear.rule, it.o - 'category' - 'conditions' - 'actions');
            r.stage := coalesce(r.stage, 'processing');
            cat := NULL;
            IF it.o ? 'category' THEN
                SELECT x.id INTO cat FROM iclear.rule_category x
                 WHERE x.product_id = pid AND x.stage = r.stage AND x.name = it.o ->> 'category';
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no % category is named %', r.stage, quote_literal(it.o ->> 'category');
                END IF;
            END IF;
            SELECT min(x.id) INTO rid FROM iclear.rule x WHERE x.product_id = pid AND x.name = r.name;
            IF rid IS NULL THEN
                INSERT INTO iclear.rule (product_id, name, stage) VALUES (pid, r.name, r.stage) RETURNING id INTO rid;
            END IF;
            UPDATE iclear.rule x
               SET (stage, status, position, category_id, publisher_id, channel_id, source_id, all_new, all_new_since,
                    publisher_ids, exclude_publisher_ids, channel_ids, exclude_channel_ids, source_ids,
                    exclude_source_ids, logical_operator, method, daily_limit, monthly_limit, per_source_limit,
                    cap_counts, per_source_scope)
                 = (r.stage, coalesce(r.status, 'active'), coalesce(r.position, 0), cat, r.publisher_id, r.channel_id,
                    r.source_id, coalesce(r.all_new, false), r.all_new_since,
                    coalesce(r.publisher_ids, '{}'), coalesce(r.exclude_publisher_ids, '{}'),
                    coalesce(r.channel_ids, '{}'), coalesce(r.exclude_channel_ids, '{}'),
                    coalesce(r.source_ids, '{}'), coalesce(r.exclude_source_ids, '{}'),
                    coalesce(r.logical_operator, 'and'), r.method, r.daily_limit, r.monthly_limit, r.per_source_limit,
                    coalesce(r.cap_counts, 'service_runs'), coalesce(r.per_source_scope, 'new_sources'))
             WHERE x.id = rid;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.rule x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'rules') y);
    DELETE FROM iclear.global_rule x WHERE x.product_id = pid
       AND x.id NOT IN (SELECT (gmap ->> coalesce(y.o ->> 'key', y.o ->> 'service'))::bigint
                          FROM iclear.config_items(doc, 'global_rules') y);
    DELETE FROM iclear.rule_category x WHERE x.product_id = pid
       AND (x.stage, x.name) NOT IN (SELECT y.o ->> 'stage', y.o ->> 'name' FROM iclear.config_items(doc, 'categories') y);

    -- each rule's conditions and actions, replaced where they differ (the
    -- rules before, and the ids now, by name: one map each, read per rule)
    SELECT coalesce(jsonb_object_agg(x.name, x.id), '{}') INTO rmap FROM iclear.rule x WHERE x.product_id = pid;
    SELECT coalesce(jsonb_object_agg(b ->> 'name', jsonb_build_array(b -> 'conditions', b -> 'actions')), '{}')
      INTO before FROM jsonb_array_elements(coalesce(before -> 'rules', '[]')) b;
    FOR it IN SELECT * FROM iclear.config_items(doc, 'rules') LOOP
        IF before -> (it.o ->> 'name')
           = jsonb_build_array(coalesce(it.o -> 'conditions', '[]'), coalesce(it.o -> 'actions', '[]')) THEN
            CONTINUE;
        END IF;
        rid := (rmap ->> (it.o ->> 'name'))::bigint;
        DELETE FROM iclear.rule_condition WHERE rule_id = rid;
        DELETE FROM iclear.rule_action WHERE rule_id = rid;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'conditions') LOOP
            path := format('rules[%s].conditions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['category', 'parameter', 'operator', 'value'], ARRAY['category', 'operator']);
            param := c.o ->> 'parameter';
            IF c.o ->> 'category' = 'rule' THEN
                param := rmap ->> param;
                IF param IS NULL THEN
                    RAISE EXCEPTION 'iclear.import_config: %.parameter: no rule of % is named %', path,
                        quote_literal(pname), quote_literal(c.o ->> 'parameter') USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
            BEGIN
                INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
                VALUES (rid, c.o ->> 'category', coalesce(param, ''), c.o ->> 'operator', coalesce(c.o -> 'value', 'null'));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
        FOR c IN SELECT * FROM iclear.config_items(it.o, 'actions') LOOP
            path := format('rules[%s].actions[%s]', it.i, c.i);
            PERFORM iclear.config_keys(c.o, path, ARRAY['action', 'config', 'status', 'position'], ARRAY['action']);
            cfg := coalesce(c.o -> 'config', '{}');
            IF cfg ? 'lists' THEN
                cfg := (cfg - 'lists') || jsonb_build_object('list_ids', iclear.config_list_ids(cfg -> 'lists', path || '.config.lists'));
            END IF;
            IF cfg ? 'global_rule' THEN
                IF NOT gmap ? (cfg ->> 'global_rule') THEN
                    RAISE EXCEPTION 'iclear.import_config: %.config.global_rule: % has no global rule %', path,
                        quote_literal(pname), quote_literal(cfg ->> 'global_rule') USING ERRCODE = 'invalid_parameter_value';
                END IF;
                cfg := (cfg - 'global_rule') || jsonb_build_object('global_rule_id', (gmap ->> (cfg ->> 'global_rule'))::bigint);
            END IF;
            BEGIN
                INSERT INTO iclear.rule_action (rule_id, action, config, status, position)
                VALUES (rid, c.o ->> 'action', cfg, coalesce(c.o ->> 'status', 'active'), coalesce((c.o ->> 'position')::int, 0));
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
            END;
        END LOOP;
    END LOOP;

    -- product fields by name
    FOR it IN SELECT * FROM iclear.config_items(doc, 'fields') LOOP
        path := format('fields[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['name', 'type', 'required', 'min', 'max', 'pattern', 'allowed'],
                                   ARRAY['name', 'type']);
        BEGIN
            INSERT INTO iclear.product_field (product_id, name, type, required, min, max, pattern, allowed)
            SELECT pid, f.name, f.type, coalesce(f.required, false), f.min, f.max, f.pattern, f.allowed
              FROM jsonb_populate_record(NULL::iclear.product_field, it.o) f
            ON CONFLICT (product_id, name) DO UPDATE
               SET type = EXCLUDED.type, required = EXCLUDED.required, min = EXCLUDED.min, max = EXCLUDED.max,
                   pattern = EXCLUDED.pattern, allowed = EXCLUDED.allowed
             WHERE (product_field.type, product_field.required, product_field.min, product_field.max,
                    product_field.pattern, product_field.allowed)
                   IS DISTINCT FROM (EXCLUDED.type, EXCLUDED.required, EXCLUDED.min, EXCLUDED.max,
                                     EXCLUDED.pattern, EXCLUDED.allowed);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    DELETE FROM iclear.product_field x WHERE x.product_id = pid
       AND x.name NOT IN (SELECT y.o ->> 'name' FROM iclear.config_items(doc, 'fields') y);

    -- global caps (shared by the products of a service): set, never removed here
    FOR it IN SELECT * FROM iclear.config_items(doc, 'global_caps') LOOP
        path := format('global_caps[%s]', it.i);
        PERFORM iclear.config_keys(it.o, path, ARRAY['service', 'period', 'start_day', 'cap_limit', 'time_zone'],
                                   ARRAY['service', 'period', 'cap_limit']);
        BEGIN
            INSERT INTO iclear.global_cap (service, period, start_day, cap_limit, time_zone)
            VALUES (it.o ->> 'service', it.o ->> 'period', coalesce((it.o ->> 'start_day')::int, 1), (it.o ->> 'cap_limit')::bigint,
                    coalesce(it.o ->> 'time_zone', 'UTC'))
            ON CONFLICT (service, period) DO UPDATE
               SET start_day = EXCLUDED.start_day, cap_limit = EXCLUDED.cap_limit, time_zone = EXCLUDED.time_zone
             WHERE (global_cap.start_day, global_cap.cap_limit, global_cap.time_zone)
                   IS DISTINCT FROM (EXCLUDED.start_day, EXCLUDED.cap_limit, EXCLUDED.time_zone);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'iclear.import_config: %: %', path, SQLERRM USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
END $$;

-- Import a document of export_config: returns the plan; with dry_run false,
-- applies it (in the caller's transaction: all of it or, on any error,
-- none). A dry run applies it in a subtransaction, so every validation of
-- the configuration tables runs, and rolls it back; it moves no
-- configuration version, so it holds nothing another operator's edit
-- waits for. Objects other products share (a list that exists, a service's
-- global cap) are listed apart in the plan ("shared"), and a real import
-- changes them only with change_shared => true (SECURITY.md "Configuration
-- as code").
DROP FUNCTION iclear.import_config(jsonb, boolean);
CREATE FUNCTION iclear.import_config(config jsonb, dry_run boolean DEFAULT true, change_shared boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pname  text := config #>> '{product,name}';
    before jsonb;
    plan   jsonb;
    shared jsonb;
BEGIN
    IF pname IS NOT NULL AND EXISTS (SELECT 1 FROM iclear.product p WHERE p.name = pname) THEN
        before := iclear.export_config(pname);
    END IF;
    shared := iclear.config_shared_changes(config);
    IF NOT dry_run AND NOT change_shared AND jsonb_array_length(shared) > 0 THEN
        RAISE EXCEPTION 'iclear.import_config: the document changes what other products share: %',
            (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(shared) x)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass change_shared => true to change them, or leave them out of the document.';
    END IF;
    PERFORM iclear.defer_config_version(true);
    -- (iclear.progress: a step per rule, reported by apply_config)
    PERFORM iclear.progress_start('import_config', pname,
        CASE jsonb_typeof(config -> 'rules') WHEN 'array' THEN jsonb_array_length(config -> 'rules') ELSE 0 END);
    BEGIN
        PERFORM iclear.apply_config(config);
        plan := iclear.config_plan(before, iclear.export_config(pname))
                || jsonb_build_object('shared', shared, 'dry_run', dry_run);
        IF dry_run THEN
            RAISE EXCEPTION USING ERRCODE = 'ICDRY', MESSAGE = 'iclear.import_config: dry run';
        END IF;
    EXCEPTION WHEN SQLSTATE 'ICDRY' THEN
        NULL; -- rolled back: the plan stays
    END;
    PERFORM iclear.defer_config_version(false);
    PERFORM iclear.progress_end();
    RETURN plan;
END $$;

-- The shared objects a document would add or change: a list that exists
-- with another kind or field, a service's global cap added or changed, when
-- another product uses it (links or names the list, has a global rule of
-- the service). A list no other product uses is the document's own.
CREATE FUNCTION iclear.config_shared_changes(doc jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH others AS (SELECT p.id FROM iclear.product p WHERE p.name IS DISTINCT FROM doc #>> '{product,name}')
    SELECT coalesce(jsonb_agg(x ORDER BY x), '[]') FROM (
        SELECT 'lists ' || (o ->> 'name') AS x
          FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'lists') WHEN 'array' THEN doc -> 'lists' ELSE '[]' END) o
          JOIN iclear.list l ON l.name = o ->> 'name'
         WHERE (l.kind, l.field) IS DISTINCT FROM (o ->> 'kind', o ->> 'field')
           AND (EXISTS (SELECT 1 FROM iclear.list_product lp WHERE lp.list_id = l.id AND lp.product_id IN (SELECT id FROM others))
                OR EXISTS (SELECT 1 FROM iclear.rule_action a JOIN iclear.rule r ON r.id = a.rule_id
                            WHERE r.product_id IN (SELECT id FROM others) AND a.config -> 'list_ids' @> to_jsonb(l.id))
                OR EXISTS (SELECT 1 FROM iclear.global_rule g
                            WHERE g.product_id IN (SELECT id FROM others)
                              AND g.settings -> 'add_to_list' -> 'list_ids' @> to_jsonb(l.id)))
        UNION ALL
        SELECT 'global_caps ' || (o ->> 'service') || '/' || (o ->> 'period')
          FROM jsonb_array_elements(CASE jsonb_typeof(doc -> 'global_caps') WHEN 'array' THEN doc -> 'global_caps' ELSE '[]' END) o
         WHERE NOT EXISTS (SELECT 1 FROM iclear.global_cap c
                            WHERE c.service = o ->> 'service' AND c.period = o ->> 'period'
                              AND c.cap_limit::text = o ->> 'cap_limit'
                              AND c.start_day = coalesce((o ->> 'start_day')::int, 1)
                              AND c.time_zone = coalesce(o ->> 'time_zone', 'UTC'))
           AND EXISTS (SELECT 1 FROM iclear.global_rule g
                        WHERE g.service = o ->> 'service' AND g.product_id IN (SELECT id FROM others))) s
$$;

CREATE INDEX rule_product_name ON iclear.rule (product_id, name);

-- A product's configuration changes in order: the product row, its rules
-- (with their conditions and actions), categories, global rules (and their
-- masked credentials), product fields and list links, and the shared
-- objects it uses (its lists, its services' global caps), as audited. Rows
-- that no longer exist are found through the trail itself.
CREATE OR REPLACE FUNCTION iclear.config_history(product text)
RETURNS TABLE (at timestamptz, role name, table_name text, op text, row_id text, old jsonb, new jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH pid AS (
        SELECT DISTINCT a.row_id FROM iclear.config_audit a
         WHERE a.table_name = 'product' AND coalesce(a.new, a.old) ->> 'name' = $1
        UNION SELECT p.id::text FROM iclear.product p WHERE p.name = $1),
    owned AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE a.table_name IN ('rule', 'rule_category', 'global_rule', 'product_field', 'list_product')
           AND coalesce(a.new, a.old) ->> 'product_id' IN (SELECT row_id FROM pid)),
    children AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name IN ('rule_condition', 'rule_action')
                AND coalesce(a.new, a.old) ->> 'rule_id' IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'rule'))
            OR (a.table_name = 'global_rule_credential'
                AND a.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule'))),
    shared AS (
        SELECT DISTINCT a.table_name, a.row_id FROM iclear.config_audit a
         WHERE (a.table_name = 'list'
                AND a.row_id IN (SELECT split_part(o.row_id, ':', 1) FROM owned o WHERE o.table_name = 'list_product'
                                 UNION SELECT jsonb_array_elements_text(coalesce(x.new, x.old) -> 'config' -> 'list_ids')
                                         FROM iclear.config_audit x
                                        WHERE x.table_name = 'rule_action'
                                          AND x.row_id IN (SELECT c.row_id FROM children c WHERE c.table_name = 'rule_action')))
            OR (a.table_name = 'global_cap'
                AND coalesce(a.new, a.old) ->> 'service' IN (
                    SELECT coalesce(g.new, g.old) ->> 'service' FROM iclear.config_audit g
                     WHERE g.table_name = 'global_rule'
                       AND g.row_id IN (SELECT o.row_id FROM owned o WHERE o.table_name = 'global_rule'))))
    SELECT a.at, a.role, a.table_name, a.op, a.row_id, a.old, a.new
      FROM iclear.config_audit a
     WHERE (a.table_name = 'product' AND a.row_id IN (SELECT row_id FROM pid))
        OR (a.table_name, a.row_id) IN (SELECT * FROM owned UNION SELECT * FROM children UNION SELECT * FROM shared)
     ORDER BY a.at, a.id
$$;
-- END since-0.5.0
