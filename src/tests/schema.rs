// One source for each rule (issue 15 item 4): the SQL CHECK lists are the
// engine's spellings, and a list value is normalised alike in SQL and Rust.

/// Each enumerated column's CHECK list equals the engine's list for it.
#[pg_test]
fn check_lists_are_the_engines_spellings() {
    for (column, engine) in iclear_engine::spellings::COLUMNS {
        let (table, col) = column.split_once('.').unwrap();
        let sql: Vec<String> = Spi::get_one_with_args::<Vec<String>>(
            "SELECT array_agg(DISTINCT m[1] ORDER BY m[1])
               FROM pg_constraint c
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey),
                    regexp_matches(pg_get_constraintdef(c.oid), '''([^'']+)''', 'g') AS m
              WHERE c.contype = 'c' AND c.conrelid = ('iclear.' || $1)::regclass AND a.attname = $2
                AND cardinality(c.conkey) = 1",
            &[table.into(), col.into()],
        )
        .unwrap()
        .unwrap_or_default();
        let mut engine: Vec<String> = engine.iter().map(|s| s.to_string()).collect();
        engine.sort();
        assert_eq!(sql, engine, "{column}: the SQL CHECK list and the engine's");
    }
}

/// A list entry is stored as the engine probes it: trimmed of ASCII
/// whitespace (a trailing tab included), lowercased, a long value keyed by
/// its digest; a lead whose value differs only so is on the list.
#[pg_test]
fn list_values_normalise_alike_in_sql_and_rust() {
    use iclear_engine::facts::{normalize_list_value, stored_key};
    setup();
    run("INSERT INTO iclear.list (name, kind, field) VALUES ('bad', 'dnpl', 'email')");
    run("INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p");
    let long = format!("{}@x.co", "a".repeat(600));
    for raw in [
        "Bad@X.co\t",
        "\n\r two@x.co \u{b}\u{c}",
        "TAB\tinside@x.co",
        long.as_str(),
    ] {
        let stored = Spi::get_one_with_args::<String>(
            "INSERT INTO iclear.list_entry (list_id, value) SELECT id, $1 FROM iclear.list RETURNING value",
            &[raw.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(stored, stored_key(normalize_list_value(raw)), "{raw:?}");
    }
    for (email, status) in [
        ("bad@x.co", "rejected"),
        ("TWO@X.CO", "rejected"),
        ("tab\tinside@x.co", "rejected"),
        (long.as_str(), "rejected"),
        ("good@x.co", "accepted"),
    ] {
        let d = process(json!({"product": "payday_us", "fields": {"email": email}}));
        assert_eq!(d["status"], status, "{email:?}");
    }
}

/// Every table, view and function of the extension says what it is
/// (`COMMENT ON`, shown by `\d+` and `\df+`).
#[pg_test]
fn every_object_has_a_comment() {
    let missing = Spi::get_one::<Vec<String>>(
        "SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM (
           SELECT c.oid::regclass::text AS x
             FROM pg_class c
             JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'iclear'
            WHERE c.relkind IN ('r', 'p', 'v') AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
           UNION ALL
           SELECT p.oid::regprocedure::text
             FROM pg_proc p
             JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'iclear'
            WHERE p.pronamespace <> 'tests'::regnamespace
              AND coalesce(obj_description(p.oid, 'pg_proc'), '') = '') s",
    )
    .unwrap()
    .unwrap_or_default();
    assert!(missing.is_empty(), "no COMMENT ON: {missing:?}");
}

/// The tables every lead writes have no CHECK constraint: Postgres rebuilds
/// a CHECK expression from its stored text for every INSERT statement (a
/// capped lead's `cap_use` row paid 4% of its insert path for two), and only
/// iclear writes these rows, from enums.
#[pg_test]
fn the_insert_path_tables_have_no_check_constraints() {
    let checks = Spi::get_one::<Vec<String>>(
        "SELECT array_agg(conrelid::regclass || ': ' || conname ORDER BY 1)
           FROM pg_constraint
          WHERE contype = 'c' AND conrelid = ANY (ARRAY['iclear.decision', 'iclear.filter_log',
                'iclear.counter_delta', 'iclear.cap_use']::regclass[])",
    )
    .unwrap()
    .unwrap_or_default();
    assert!(checks.is_empty(), "{checks:?}");
}
