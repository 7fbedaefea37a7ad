//! Everything that talks to Postgres (SPI). The store loads, counts and
//! persists; it never decides.
//!
//! Statements on a lead's path are prepared once per backend and kept
//! (`SPI_keepplan`): parsing and planning them for every lead cost more than
//! running them. The plan cache revalidates them after DDL.

pub mod config;
pub mod facts;
pub mod persist;
pub mod verification;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgBuiltInOids;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub const INT8: PgBuiltInOids = PgBuiltInOids::INT8OID;
pub const TEXT: PgBuiltInOids = PgBuiltInOids::TEXTOID;
pub const JSON: PgBuiltInOids = PgBuiltInOids::JSONOID;

/// serde_json's output as a `json` datum. A json value is stored as its
/// text, so handing over text that serde_json wrote skips json_in's re-parse
/// (the text is valid JSON by construction).
pub fn json_datum(text: String) -> DatumWithOid<'static> {
    unsafe { DatumWithOid::new(text, pgrx::pg_sys::BuiltinOid::JSONOID.value()) }
}

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

fn plan(sql: &'static str, types: &[PgBuiltInOids]) -> Rc<OwnedPreparedStatement> {
    if let Some(p) = PLANS.with_borrow(|m| m.get(sql).cloned()) {
        return p;
    }
    let oids: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
    let p = Spi::connect(|c| c.prepare_mut(sql, &oids).map(|p| p.keep()))
        .unwrap_or_else(|e| error!("iclear: cannot prepare {sql:?}: {e}"));
    let p = Rc::new(p);
    PLANS.with_borrow_mut(|m| m.insert(sql, p.clone()));
    p
}

/// Run a prepared statement for its effect. `types` are the parameter types.
pub fn exec(sql: &'static str, types: &[PgBuiltInOids], args: &[DatumWithOid]) {
    let p = plan(sql, types);
    if let Err(e) = Spi::connect_mut(|c| c.update(&*p, None, args).map(|_| ())) {
        error!("iclear: SPI failure running {sql:?}: {e}");
    }
}

/// First column of the first row of a prepared statement (None: no row or NULL).
pub fn one<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[PgBuiltInOids],
    args: &[DatumWithOid],
) -> Option<T> {
    let p = plan(sql, types);
    match Spi::connect_mut(|c| c.update(&*p, Some(1), args)?.first().get_one::<T>()) {
        Ok(v) => v,
        Err(pgrx::spi::SpiError::InvalidPosition) => None,
        Err(e) => error!("iclear: SPI failure running {sql:?}: {e}"),
    }
}

/// First two columns of the first row of a prepared statement.
pub fn two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &'static str,
) -> (Option<A>, Option<B>) {
    let p = plan(sql, &[]);
    match Spi::connect_mut(|c| c.update(&*p, Some(1), &[])?.first().get_two::<A, B>()) {
        Ok(v) => v,
        Err(e) => error!("iclear: SPI failure running {sql:?}: {e}"),
    }
}

/// Run `f` in a subtransaction: an ERROR inside (a postgres_fdw hub that is
/// down, say) rolls back only what `f` did and comes back as its message,
/// so the lead's transaction goes on.
pub fn guarded<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    use pgrx::pg_sys;
    unsafe {
        let ctx = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
        PgTryBuilder::new(move || {
            let r = f();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            Ok(r)
        })
        .catch_others(move |e| {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            })
        })
        .execute()
    }
}
