//! iclear: filter web leads inside PostgreSQL.
//!
//! Seams (docs/architecture.md "Seams"): `iclear_engine` decides and never touches SPI; `store`
//! talks to Postgres and never decides; `lead` and `row` glue the two for the
//! SQL entry points in `api`.

use pgrx::prelude::*;

pgrx::pg_module_magic!(name, version);

mod api;
mod audit;
mod backtest;
mod call_threads;
mod compat;
mod errors;
mod gucs;
mod jsonb;
mod lead;
mod lead_id;
mod list_values;
mod privilege;
mod progress;
mod remote;
mod row;
mod store;
mod trigger;
mod tuple;
mod worker;

/// Rust's allocations stay out of the backend's glibc heap (measured in
/// the 0.5.0 commit that adds it; docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::define();
    // the worker registers only from shared_preload_libraries (docs/contract.md)
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
    }
}

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
        // the sandbox provider answers on loopback
        vec!["iclear.allowed_endpoints = '127.0.0.1'"]
    }
}
