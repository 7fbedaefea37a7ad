//! The attach trigger (docs/architecture.md "Attaching"), `iclear.lead_trigger()`: a BEFORE INSERT
//! row trigger in Rust. NEW becomes a lead envelope (src/row.rs), the lead
//! is processed, and the decision is written back into NEW's columns.
//!
//! Processing, and turning its outcome into column values, run in a
//! subtransaction: when either fails, that work is rolled back, an `error`
//! decision is recorded instead, and the row is inserted all the same
//! (`on_error: raise` opts out). Converting the row directly, rather than
//! through `row_to_json` and `json_populate_record`, saves two text round
//! trips on every insert.
//!
//! The trigger runs as the inserting role (it is not SECURITY DEFINER):
//! reading the row and writing the outcome back (the columns' input
//! functions and domain checks) keep that role's rights, the table's unique
//! keys are probed with its owner's, and only processing itself switches to
//! `iclear_processor` (src/privilege.rs).

use crate::api::raise;
use crate::errors::Error;
use crate::lead;
use crate::privilege;
use crate::row::{self, AttachOptions, OnError, Rejected};
use crate::store;
use crate::tuple::{self, Replacement};
use pgrx::pg_sys;
use pgrx::prelude::*;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_iclear_lead_trigger() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// # Safety
/// Called by Postgres as a trigger function.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn iclear_lead_trigger(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let td = trigger_data(fcinfo);
    let (product, options) = trigger_args(td);
    let tuple = (*td).tg_trigtuple;
    let rel = (*td).tg_relation;
    let tupdesc = (*rel).rd_att;
    let (row, unreadable) = tuple::row_values(tuple, tupdesc);
    let unreadable = unreadable.map(|e| format!("iclear: the row cannot be read as a lead: {e}"));
    // a row whose unique key is taken is never inserted: it is not processed
    if unreadable.is_none()
        && privilege::as_owner_of((*rel).rd_id, || store::taken_keys::key_taken(rel, &row))
    {
        (*fcinfo).isnull = false;
        return pg_sys::Datum::from(tuple);
    }
    let outcome = match attach_options(&options) {
        Ok(opts) if opts.on_error == Some(OnError::Raise) => match unreadable {
            Some(e) => Error::Input(e).raise(),
            None => process(&product, &opts, &row, td),
        },
        Ok(opts) => match unreadable {
            Some(e) => failed(&product, &opts, &row, tupdesc, &e),
            // a lead that loses a deadlock is processed again before it is
            // recorded as an error
            None => store::guarded_retrying(LEAD_TRIES, || process(&product, &opts, &row, td))
                .unwrap_or_else(|e| failed(&product, &opts, &row, tupdesc, &e)),
        },
        Err(e) => failed(&product, &AttachOptions::default(), &row, tupdesc, &e),
    };
    (*fcinfo).isnull = false;
    match outcome {
        Outcome::Skip => pg_sys::Datum::from(0usize),
        Outcome::Keep(repl) if repl.is_empty() => pg_sys::Datum::from(tuple),
        Outcome::Keep(repl) => pg_sys::Datum::from(tuple::modified(tuple, tupdesc, &repl)),
    }
}

/// Tries of a lead whose processing loses a deadlock or a serialization
/// conflict (store::guarded_retrying).
const LEAD_TRIES: u32 = 3;

enum Outcome {
    /// Insert NEW with these columns replaced.
    Keep(Vec<Replacement>),
    /// A rejected row of a table attached with `rejected: skip`.
    Skip,
}

unsafe fn trigger_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::TriggerData {
    let ctx = (*fcinfo).context;
    if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_TriggerData {
        Error::TriggerMisuse("iclear.lead_trigger: not called as a trigger".into()).raise();
    }
    let td = ctx as *mut pg_sys::TriggerData;
    let ev = (*td).tg_event;
    let before_row_insert = ev & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE
        && ev & pg_sys::TRIGGER_EVENT_ROW != 0
        && ev & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_INSERT;
    if !before_row_insert {
        Error::TriggerMisuse(
            "iclear.lead_trigger: must be a BEFORE INSERT ... FOR EACH ROW trigger (use iclear.attach)".into(),
        )
        .raise();
    }
    td
}

/// (product, options text): the arguments iclear.attach gives the trigger.
unsafe fn trigger_args(td: *mut pg_sys::TriggerData) -> (String, String) {
    let t = (*td).tg_trigger;
    let n = (*t).tgnargs as usize;
    let arg = |i: usize| -> String {
        if i < n {
            CStr::from_ptr(*(*t).tgargs.add(i))
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        }
    };
    if n == 0 {
        Error::TriggerMisuse(
            "iclear.lead_trigger: needs the product as its argument (use iclear.attach)".into(),
        )
        .raise();
    }
    let options = if n > 1 { arg(1) } else { "{}".to_string() };
    (arg(0), options)
}

thread_local! {
    /// Parsed options by their text: every insert into a table passes the same text.
    static OPTIONS: RefCell<HashMap<String, Rc<AttachOptions>>> = RefCell::new(HashMap::new());
}

fn attach_options(text: &str) -> Result<Rc<AttachOptions>, String> {
    if let Some(o) = OPTIONS.with_borrow(|m| m.get(text).cloned()) {
        return Ok(o);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("iclear.attach options: {e}"))?;
    let o = Rc::new(AttachOptions::parse(&v)?);
    OPTIONS.with_borrow_mut(|m| m.insert(text.to_string(), o.clone()));
    Ok(o)
}

/// Process the row as `iclear_processor`; its outcome as column values,
/// made with the inserting role's rights (an ERROR on failure).
unsafe fn process(
    product: &str,
    opts: &AttachOptions,
    row: &Map<String, Value>,
    td: *mut pg_sys::TriggerData,
) -> Outcome {
    let rel = (*td).tg_relation;
    let patch = privilege::as_processor(|| {
        let env = row::envelope(product, opts, row);
        let decision = match lead::process(&env) {
            Ok(d) => d,
            Err(e) => raise(e),
        };
        // a paused lead's row gets its final decision when the pause ends: it
        // is found by its id column (a row without an id cannot be found)
        if decision["status"] == "paused" && env.get("lead_id").is_some() {
            if let Some(id) = decision["lead_id"].as_str() {
                store::paused::record_row(id, (*rel).rd_id, opts.id_column());
            }
        }
        if opts.rejected == Some(Rejected::Skip) && decision["status"] == "rejected" {
            return None;
        }
        match row::patch(opts, row, &env, &decision) {
            Value::Object(patch) => Some(patch),
            _ => unreachable!("row::patch returns an object"),
        }
    });
    match patch {
        Some(patch) => Outcome::Keep(tuple::replacements((*rel).rd_att, &patch)),
        None => Outcome::Skip,
    }
}

/// Processing failed with `message`: record an `error` decision and put it
/// on the row. Should the record fail, the row says why; should the row's
/// columns refuse the decision, they get the status alone; should they
/// refuse even that, the row is inserted as it came.
unsafe fn failed(
    product: &str,
    opts: &AttachOptions,
    row: &Map<String, Value>,
    tupdesc: pg_sys::TupleDesc,
    message: &str,
) -> Outcome {
    let recorded = store::guarded(AssertUnwindSafe(|| {
        privilege::as_processor(|| record_error(product, opts, row, message))
    }));
    let decision = match recorded {
        Ok(d) => d,
        Err(e) => json!({"status": "error", "reason": message, "record_error": e}),
    };
    let full = json!({"iclear_status": "error", "iclear_decision": decision});
    let bare = json!({"iclear_status": "error"});
    let repl = [full, bare].iter().find_map(|patch| {
        store::guarded(AssertUnwindSafe(|| {
            tuple::replacements(tupdesc, patch.as_object().expect("an object"))
        }))
        .ok()
    });
    Outcome::Keep(repl.unwrap_or_default())
}

/// Persist the `error` decision of a row whose processing failed; returns it.
pub(crate) fn record_error(
    product: &str,
    opts: &AttachOptions,
    row: &Map<String, Value>,
    message: &str,
) -> Value {
    let (lead_id, envelope, decision) = row::error_decision(product, opts, row, message);
    store::persist::save_error(&lead_id, product, &envelope, &decision);
    decision
}
