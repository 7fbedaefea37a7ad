//! The trigger that keeps `iclear.list_entry.value` as the engine probes it,
//! `iclear.list_entry_normalize()`: a phone list's numbers by their digits,
//! any other value trimmed and lowercased, a long one by its digest. It is
//! the engine's own rule (`keys::normalize_list_value_as`), so SQL and the
//! probes cannot disagree, and it is C, not PL/pgSQL, so that a COPY of a
//! national do-not-call registry (a million rows) stays a bulk load: the
//! list's field is read once per list and transaction, not per row.

use crate::errors::Error;
use crate::store::{query_value, INT8};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_iclear_list_entry_normalize() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

thread_local! {
    /// (local transaction id, list id -> is the list on a phone field).
    static PHONE_LISTS: RefCell<(u32, HashMap<i64, bool>)> = RefCell::new((0, HashMap::new()));
}

/// Is list `id` on a phone field? Read once per transaction.
fn phone_list(id: i64) -> bool {
    let lxid = unsafe { (*pg_sys::MyProc).lxid };
    if let Some(known) = PHONE_LISTS.with_borrow_mut(|(seen, lists)| {
        if *seen != lxid {
            *seen = lxid;
            lists.clear();
        }
        lists.get(&id).copied()
    }) {
        return known;
    }
    let phone = query_value::<bool>(
        "SELECT l.field OPERATOR(pg_catalog.~*) 'phone' FROM iclear.list l WHERE l.id = $1",
        &[INT8],
        &[id.into()],
    )
    .unwrap_or(false);
    PHONE_LISTS.with_borrow_mut(|(_, lists)| lists.insert(id, phone));
    phone
}

/// # Safety
/// Called by Postgres as a BEFORE INSERT or UPDATE row trigger of
/// `iclear.list_entry`.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn iclear_list_entry_normalize(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let ctx = (*fcinfo).context;
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
        Error::TriggerMisuse("iclear.list_entry_normalize: not called as a trigger".into()).raise();
    }
    let td = ctx as *mut pg_sys::TriggerData;
    let ev = (*td).tg_event;
    let row_before = ev & pg_sys::TRIGGER_EVENT_ROW != 0
        && ev & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE;
    let op = ev & pg_sys::TRIGGER_EVENT_OPMASK;
    if !row_before || !(op == pg_sys::TRIGGER_EVENT_INSERT || op == pg_sys::TRIGGER_EVENT_UPDATE) {
        Error::TriggerMisuse(
            "iclear.list_entry_normalize: a BEFORE INSERT or UPDATE row trigger only".into(),
        )
        .raise();
    }
    let tuple = if op == pg_sys::TRIGGER_EVENT_UPDATE {
        (*td).tg_newtuple
    } else {
        (*td).tg_trigtuple
    };
    let rel = (*td).tg_relation;
    let desc = (*rel).rd_att;
    let attnum = |name: &std::ffi::CStr| pg_sys::attnameAttNum(rel, name.as_ptr(), false);
    let (list_att, value_att) = (attnum(c"list_id"), attnum(c"value"));
    if list_att <= 0 || value_att <= 0 {
        Error::TriggerMisuse("iclear.list_entry_normalize: not a list_entry table".into()).raise();
    }
    let natts = (*desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let (li, vi) = (list_att as usize - 1, value_att as usize - 1);
    if nulls[vi] {
        // NOT NULL says so, naming the column
        return pg_sys::Datum::from(tuple);
    }
    let raw = String::from_datum(values[vi], false).unwrap_or_default();
    let list_id = if nulls[li] {
        None
    } else {
        i64::from_datum(values[li], false)
    };
    crate::progress::list_row();
    let phone = list_id.is_some_and(phone_list);
    let normalized = iclear_engine::keys::normalize_list_value_as(phone, &raw);
    if normalized.is_empty() {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_CHECK_VIOLATION,
            "invalid setting list_entry.value: must not be empty"
        );
    }
    if normalized == raw {
        return pg_sys::Datum::from(tuple);
    }
    let mut col = value_att;
    let mut datum = normalized.into_datum().expect("a text datum");
    let mut isnull = false;
    let changed =
        pg_sys::heap_modify_tuple_by_cols(tuple, desc, 1, &mut col, &mut datum, &mut isnull);
    pg_sys::Datum::from(changed)
}
