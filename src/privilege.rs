//! Whose rights each part of iclear's work runs with (SECURITY.md "Whose
//! rights"). It holds the switches of the current user and nothing else:
//! it decides nothing about leads and reads no iclear table.
//!
//! - Processing (the engine's questions, the writes of a lead, the worker's
//!   jobs) runs as `iclear_processor`, a role that is not a superuser and
//!   holds only what processing needs (the grants in sql/finalize.sql).
//! - Whatever a user can define on a lead table (its columns' types and
//!   domains, defaults, constraints, triggers, indexes) runs with the
//!   inserting role's rights, or, where iclear itself writes to or probes
//!   the table, with the table owner's: a user gains no right they did not
//!   have. This is how PostgreSQL runs maintenance on a table (VACUUM,
//!   REFRESH MATERIALIZED VIEW, index builds).
//!
//! Every switch is a security-restricted operation: no SET ROLE, no
//! temporary objects, no LISTEN inside it.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The role processing runs as; `None` on a schema older than 0.6.0,
/// which grants it nothing (its entry points run as the extension owner
/// until `ALTER EXTENSION iclear UPDATE`), even where another database of
/// the cluster has created the role.
pub fn processor() -> Option<pg_sys::Oid> {
    // catalog look-ups, not a query: the caller may not use schema iclear
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"iclear".as_ptr(), true);
        if nsp == pg_sys::InvalidOid
            || pg_sys::get_relname_relid(c"service_secret".as_ptr(), nsp) == pg_sys::InvalidOid
        {
            return None;
        }
        let oid = pg_sys::get_role_oid(c"iclear_processor".as_ptr(), true);
        (oid != pg_sys::InvalidOid).then_some(oid)
    }
}

/// The current user (the role a statement runs as).
pub fn current_user() -> pg_sys::Oid {
    unsafe { pg_sys::GetUserId() }
}

/// Run `f` as `role`, in a security-restricted operation; the user and the
/// security context are restored whether `f` returns or raises.
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .finally(move || unsafe { pg_sys::SetUserIdAndSecContext(user, context) })
        .execute()
}

/// Run `f` as `iclear_processor` (as the current user where the schema has
/// no such role yet).
pub fn as_processor<R>(f: impl FnOnce() -> R) -> R {
    match processor() {
        Some(role) => as_role(role, f),
        None => f(),
    }
}

/// The owner of relation `relid` (None: no such relation).
pub fn owner_of(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return None;
        }
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        Some(owner)
    }
}

/// Run `f` as the owner of relation `relid`: for iclear's own statements on
/// a user's table, whose types, triggers and indexes the owner defined.
pub fn as_owner_of<R>(relid: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    match owner_of(relid) {
        Some(owner) => as_role(owner, f),
        None => f(),
    }
}

/// The name of `role`, for the audit trail.
pub fn role_name(role: pg_sys::Oid) -> String {
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        if name.is_null() {
            return role.to_u32().to_string();
        }
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}
