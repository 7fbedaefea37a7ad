//! iclear: filter web leads inside PostgreSQL.
//!
//! Seams (design §8): `iclear_engine` decides and never touches SPI; `store`
//! talks to Postgres and never decides; `lead` and `row` glue the two for the
//! SQL entry points in `api`.

use pgrx::prelude::*;

pgrx::pg_module_magic!(name, version);

mod api;
mod lead;
mod row;
mod store;

extension_sql_file!("../sql/bootstrap.sql", bootstrap);
extension_sql_file!("../sql/finalize.sql", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
