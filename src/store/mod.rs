//! Everything that talks to Postgres (SPI). The store loads, counts and
//! persists; it never decides.

pub mod config;
pub mod facts;
pub mod persist;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// Run a statement for its effect. SPI failures are Postgres ERRORs already;
/// a Result error here is an SPI protocol failure, reported as one.
pub fn exec(sql: &str, args: &[DatumWithOid]) {
    if let Err(e) = Spi::run_with_args(sql, args) {
        error!("iclear: SPI failure running {sql:?}: {e}");
    }
}

/// First column of the first row (None when no row or NULL).
pub fn one<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    match Spi::get_one_with_args::<T>(sql, args) {
        Ok(v) => v,
        Err(pgrx::spi::SpiError::InvalidPosition) => None,
        Err(e) => error!("iclear: SPI failure running {sql:?}: {e}"),
    }
}
