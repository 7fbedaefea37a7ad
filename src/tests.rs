//! `#[pg_test]`s of the SQL functions. Each runs in a transaction that is
//! rolled back; errors are captured with `pg_temp.err(sql)` so one test can
//! assert several refusals.

#[pgrx::pg_schema]
mod tests {
    use iclear_services::sandbox::Sandbox;
    use pgrx::prelude::*;
    use pgrx::JsonB;
    use serde_json::{json, Value};

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn json(sql: &str) -> Value {
        Spi::get_one::<JsonB>(sql).unwrap().unwrap().0
    }

    fn int(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    /// The error message of `sql`, or None when it succeeds.
    fn err(sql: &str) -> Option<String> {
        run(
            "CREATE OR REPLACE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE q; RETURN NULL; EXCEPTION WHEN OTHERS THEN RETURN SQLERRM; END $$",
        );
        Spi::get_one_with_args::<String>("SELECT pg_temp.err($1)", &[sql.into()]).unwrap()
    }

    fn setup() {
        run("INSERT INTO iclear.product (name) VALUES ('payday_us')");
    }

    fn process(lead: Value) -> Value {
        Spi::get_one_with_args::<JsonB>("SELECT iclear_process($1)", &[JsonB(lead).into()])
            .unwrap()
            .unwrap()
            .0
    }

    fn rule(stage: &str, name: &str, position: i32) -> i64 {
        int(&format!(
            "INSERT INTO iclear.rule (product_id, stage, name, position)
             SELECT id, '{stage}', '{name}', {position} FROM iclear.product WHERE name = 'payday_us' RETURNING id"
        ))
    }

    fn condition(rule: i64, category: &str, parameter: &str, operator: &str, value: Value) {
        Spi::run_with_args(
            "INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value) VALUES ($1, $2, $3, $4, $5)",
            &[rule.into(), category.into(), parameter.into(), operator.into(), JsonB(value).into()],
        )
        .unwrap();
    }

    fn action(rule: i64, action: &str, config: Value) {
        Spi::run_with_args(
            "INSERT INTO iclear.rule_action (rule_id, action, config, position)
             VALUES ($1, $2, $3, (SELECT count(*) FROM iclear.rule_action WHERE rule_id = $1))",
            &[rule.into(), action.into(), JsonB(config).into()],
        )
        .unwrap();
    }

    // One file per feature (pg_graphql's layout), included: pg_schema's
    // input cannot hold file modules. They share the helpers above.
    include!("tests/core.rs");
    include!("tests/rules.rs");
    include!("tests/attach.rs");
    include!("tests/reporting.rs");
    include!("tests/services.rs");
    include!("tests/verification.rs");
    include!("tests/pause.rs");
    include!("tests/seeds.rs");
    include!("tests/changing_rules.rs");
    include!("tests/schema.rs");
    include!("tests/errors.rs");
    include!("tests/history.rs");
    include!("tests/compliance.rs");
    include!("tests/alerts.rs");
}
