//! A lead table's row as JSON values and back, for the attach trigger.
//!
//! Reading follows `row_to_json` (what the trigger used to call), so a lead's
//! fields are the same either way: numbers stay numbers, dates and
//! timestamps are ISO 8601 strings, json/jsonb are nested values. Common
//! column types are converted directly; a row with any other type asks
//! `row_to_json` once for those columns. Writing follows
//! `json_populate_record`: json/jsonb columns take the value, others the
//! type's input function applied to the string (or to the JSON text of a
//! number or boolean).

use pgrx::pg_sys::{self, BuiltinOid as B, Datum};
use pgrx::prelude::*;
use pgrx::{JsonB, PgTupleDesc};
use serde_json::{Map, Number, Value};
use std::ffi::{CStr, CString};

/// One replaced column of NEW: (attribute index, datum, is null).
pub type Replacement = (usize, Datum, bool);

/// The columns of `tuple` by name (dropped columns left out).
///
/// # Safety
/// `tuple` and `tupdesc` are a valid heap tuple and its descriptor.
pub unsafe fn row_values(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
) -> Map<String, Value> {
    let desc = PgTupleDesc::from_pg_unchecked(tupdesc);
    let n = desc.len();
    let mut values = vec![Datum::from(0usize); n];
    let mut nulls = vec![false; n];
    pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let mut row = Map::new();
    let mut others = Vec::new();
    for (i, att) in desc.iter().enumerate() {
        if att.is_dropped() {
            continue;
        }
        let v = if nulls[i] {
            Some(Value::Null)
        } else {
            scalar(values[i], att.atttypid)
        };
        match v {
            Some(v) => {
                row.insert(att.name().to_string(), v);
            }
            None => others.push(att.name().to_string()),
        }
    }
    if !others.is_empty() {
        let datum = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
        let json: Option<pgrx::Json> =
            pgrx::direct_function_call(pg_sys::row_to_json, &[Some(datum)]);
        if let Some(Value::Object(mut all)) = json.map(|j| j.0) {
            for name in others {
                let v = all.remove(&name).unwrap_or(Value::Null);
                row.insert(name, v);
            }
        }
    }
    row
}

/// A non-null datum of a common type as JSON; None for other types.
unsafe fn scalar(d: Datum, typ: pg_sys::Oid) -> Option<Value> {
    let t = B::from_u32(typ.to_u32()).ok()?;
    Some(match t {
        B::BOOLOID => Value::Bool(bool::from_datum(d, false)?),
        B::INT2OID => i16::from_datum(d, false)?.into(),
        B::INT4OID => i32::from_datum(d, false)?.into(),
        B::INT8OID => i64::from_datum(d, false)?.into(),
        // f32 through its shortest decimal form, as float4out writes it
        B::FLOAT4OID => float(f32::from_datum(d, false)?.to_string().parse().ok()?),
        B::FLOAT8OID => float(f64::from_datum(d, false)?),
        B::TEXTOID | B::VARCHAROID | B::BPCHAROID => Value::String(String::from_datum(d, false)?),
        B::JSONBOID => JsonB::from_datum(d, false)?.0,
        B::JSONOID => pgrx::Json::from_datum(d, false)?.0,
        B::NUMERICOID => {
            let text = output(d, typ);
            match serde_json::from_str::<Number>(&text) {
                Ok(n) => Value::Number(n),
                Err(_) => Value::String(text), // NaN, Infinity
            }
        }
        B::DATEOID | B::TIMESTAMPOID | B::TIMESTAMPTZOID => {
            let s = pg_sys::JsonEncodeDateTime(std::ptr::null_mut(), d, typ, std::ptr::null());
            Value::String(CStr::from_ptr(s).to_string_lossy().into_owned())
        }
        _ => return None,
    })
}

/// A float as row_to_json writes it: a number, or a string for NaN and ±Infinity.
fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

unsafe fn output(d: Datum, typ: pg_sys::Oid) -> String {
    let mut func = pg_sys::InvalidOid;
    let mut varlena = false;
    pg_sys::getTypeOutputInfo(typ, &mut func, &mut varlena);
    let s = pg_sys::OidOutputFunctionCall(func, d);
    CStr::from_ptr(s).to_string_lossy().into_owned()
}

/// New values for the columns `patch` names; keys that are not columns are
/// ignored. Raises the input function's error for a value the column's type
/// refuses.
///
/// # Safety
/// `tupdesc` is a valid descriptor; the datums live in the current memory context.
pub unsafe fn replacements(
    tupdesc: pg_sys::TupleDesc,
    patch: &Map<String, Value>,
) -> Vec<Replacement> {
    let desc = PgTupleDesc::from_pg_unchecked(tupdesc);
    let mut out = Vec::with_capacity(patch.len());
    for (i, att) in desc.iter().enumerate() {
        if att.is_dropped() {
            continue;
        }
        let Some(v) = patch.get(att.name()) else {
            continue;
        };
        if v.is_null() {
            out.push((i, Datum::from(0usize), true));
            continue;
        }
        let typ = att.atttypid;
        let d = match B::from_u32(typ.to_u32()).ok() {
            Some(B::JSONBOID) => JsonB(v.clone()).into_datum(),
            Some(B::JSONOID) => pgrx::Json(v.clone()).into_datum(),
            Some(B::TEXTOID) => text_of(v).into_datum(),
            _ => Some(input(&text_of(v), typ, att.atttypmod)),
        };
        out.push((i, d.unwrap_or(Datum::from(0usize)), d.is_none()));
    }
    out
}

/// A JSON value as json_populate_record hands it to a non-JSON column.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

unsafe fn input(text: &str, typ: pg_sys::Oid, typmod: i32) -> Datum {
    let mut func = pg_sys::InvalidOid;
    let mut ioparam = pg_sys::InvalidOid;
    pg_sys::getTypeInputInfo(typ, &mut func, &mut ioparam);
    // a NUL cannot reach a column through SQL either
    let c = CString::new(text.replace('\0', "")).unwrap_or_default();
    pg_sys::OidInputFunctionCall(func, c.as_ptr() as *mut _, ioparam, typmod)
}

/// NEW with `repl` applied, palloc'd in the current memory context.
///
/// # Safety
/// `tuple` and `tupdesc` are a valid heap tuple and its descriptor.
pub unsafe fn modified(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    repl: &[Replacement],
) -> pg_sys::HeapTuple {
    let n = (*tupdesc).natts as usize;
    let mut values = vec![Datum::from(0usize); n];
    let mut nulls = vec![false; n];
    let mut replace = vec![false; n];
    for &(i, d, null) in repl {
        values[i] = d;
        nulls[i] = null;
        replace[i] = true;
    }
    pg_sys::heap_modify_tuple(
        tuple,
        tupdesc,
        values.as_mut_ptr(),
        nulls.as_mut_ptr(),
        replace.as_mut_ptr(),
    )
}
