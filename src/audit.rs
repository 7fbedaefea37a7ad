//! The audit trigger of the configuration tables, `iclear.audit_config()`:
//! every INSERT, UPDATE and DELETE (and each TRUNCATE) becomes a row of
//! `iclear.config_audit` that nobody else may write (SECURITY.md "The audit
//! trail"). It holds the trigger's entry point only: what a row records
//! (credentials masked, its key) is `iclear.audit_write` in SQL.
//!
//! The trigger runs as the role that made the change, so `role` is that role
//! (after SET ROLE too, and inside a SECURITY DEFINER function the definer,
//! as `current_user` says). The row is then written with the audit table
//! owner's rights, in a security-restricted operation, by a function no
//! other role may call: the roles that change the configuration cannot
//! write the trail themselves.

use crate::errors::Error;
use crate::privilege;
use crate::store::{self, JSON, TEXT};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_iclear_audit_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// A tuple of `rel` as a `json` text (row_to_json: the table's own columns,
/// all of built-in types).
unsafe fn row_json(tuple: pg_sys::HeapTuple, rel: pg_sys::Relation) -> Option<String> {
    if tuple.is_null() {
        return None;
    }
    let datum = pg_sys::heap_copy_tuple_as_datum(tuple, (*rel).rd_att);
    let json = pgrx::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(datum)])?;
    let text = pg_sys::text_to_cstring(json.cast_mut_ptr());
    Some(CStr::from_ptr(text).to_string_lossy().into_owned())
}

/// # Safety
/// Called by Postgres as a trigger function.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn iclear_audit_trigger(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let ctx = (*fcinfo).context;
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
        Error::TriggerMisuse("iclear.audit_config: not called as a trigger".into()).raise();
    }
    let td = ctx as *mut pg_sys::TriggerData;
    let rel = (*td).tg_relation;
    let nsp = pg_sys::get_namespace_oid(c"iclear".as_ptr(), true);
    let ev = (*td).tg_event;
    if (*(*rel).rd_rel).relnamespace != nsp
        || ev & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER
    {
        Error::TriggerMisuse(
            "iclear.audit_config: audits iclear's configuration tables only, AFTER they change"
                .into(),
        )
        .raise();
    }
    let table = pgrx::name_data_to_str(&(*(*rel).rd_rel).relname).to_string();
    let (op, old, new) = match ev & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => ("INSERT", None, row_json((*td).tg_trigtuple, rel)),
        pg_sys::TRIGGER_EVENT_DELETE => ("DELETE", row_json((*td).tg_trigtuple, rel), None),
        pg_sys::TRIGGER_EVENT_UPDATE => (
            "UPDATE",
            row_json((*td).tg_trigtuple, rel),
            row_json((*td).tg_newtuple, rel),
        ),
        _ => ("TRUNCATE", None, None),
    };
    let actor = privilege::role_name(privilege::current_user());
    let audit = pg_sys::get_relname_relid(c"config_audit".as_ptr(), nsp);
    privilege::as_owner_of(audit, || {
        store::exec(
            "SELECT iclear.audit_write($1, $2, $3, $4::jsonb, $5::jsonb)",
            &[TEXT, TEXT, TEXT, JSON, JSON],
            &[
                actor.as_str().into(),
                table.as_str().into(),
                op.into(),
                old.map(store::json_datum).unwrap_or_else(null_json),
                new.map(store::json_datum).unwrap_or_else(null_json),
            ],
        )
    });
    pg_sys::Datum::from(0usize)
}

fn null_json() -> pgrx::datum::DatumWithOid<'static> {
    pgrx::datum::DatumWithOid::null_oid(pg_sys::BuiltinOid::JSONOID.value())
}
