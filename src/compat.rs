//! Entry points that only the SQL of older versions calls. A new library
//! is installed before `ALTER EXTENSION iclear UPDATE` runs; until then a
//! 0.3.0 (or older) schema's plpgsql attach trigger calls these, so they
//! stay exported, and leads keep flowing. No 0.4.0 SQL creates them
//! (`sql = false`); the 0.3.0 -> 0.4.0 upgrade drops them. The old schema's
//! configuration triggers send no invalidation, so these read the
//! configuration version for every lead, as 0.3.0 did.

use crate::api::raise;
use crate::lead;
use crate::row::{self, AttachOptions};
use pgrx::prelude::*;
use pgrx::{Json, JsonB};
use serde_json::{Map, Value};

fn row_object(row: &Value) -> &Map<String, Value> {
    row.as_object().unwrap_or_else(|| {
        crate::errors::Error::Input("iclear: row must be a JSON object".into()).raise()
    })
}

/// The 0.3.0 trigger's processing step: `row_to_json(NEW)` in, the patch
/// for `json_populate_record` out.
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn process_row(product: &str, options: JsonB, row: Json) -> Json {
    crate::store::config::forget_checked();
    let opts =
        AttachOptions::parse(&options.0).unwrap_or_else(|e| crate::errors::Error::Input(e).raise());
    let row = row_object(&row.0);
    let env = row::envelope(product, &opts, row);
    match lead::process(&env) {
        Ok(decision) => Json(row::patch(&opts, row, &env, &decision)),
        Err(e) => raise(e),
    }
}

/// The 0.3.0 trigger's error step: record an `error` decision, return its patch.
#[pg_extern(sql = false, volatile, parallel_unsafe)]
fn record_error(product: &str, options: JsonB, row: Json, message: &str) -> Json {
    let opts = AttachOptions::parse(&options.0).unwrap_or_default();
    let decision = crate::trigger::record_error(product, &opts, row_object(&row.0), message);
    Json(serde_json::json!({"iclear_status": "error", "iclear_decision": decision}))
}
