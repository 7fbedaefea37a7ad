//! A lead table's row as JSON values and back, for the attach trigger.
//!
//! Reading follows `row_to_json`, so a lead's fields are the same whether a
//! table is attached or the row is sent as JSON: numbers stay numbers, dates and
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

/// The columns of `tuple` by name (dropped columns left out), and the
/// first conversion failure if any: a json/jsonb value serde_json cannot
/// hold (a number beyond f64, nesting beyond 128 levels). Such a column is
/// left out of the map; the caller records the row as an error.
///
/// # Safety
/// `tuple` and `tupdesc` are a valid heap tuple and its descriptor.
pub unsafe fn row_values(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
) -> (Map<String, Value>, Option<String>) {
    let desc = PgTupleDesc::from_pg_unchecked(tupdesc);
    let n = desc.len();
    let mut values = vec![Datum::from(0usize); n];
    let mut nulls = vec![false; n];
    pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    let mut row = Map::new();
    let mut others = Vec::new();
    let mut failure = None;
    for (i, att) in desc.iter().enumerate() {
        if att.is_dropped() {
            continue;
        }
        let v = if nulls[i] {
            Ok(Some(Value::Null))
        } else {
            scalar(values[i], att.atttypid)
        };
        match v {
            Ok(Some(v)) => {
                row.insert(att.name().to_string(), v);
            }
            Ok(None) => others.push(att.name().to_string()),
            Err(e) => {
                failure.get_or_insert(format!("column {:?}: {e}", att.name()));
            }
        }
    }
    if !others.is_empty() {
        let datum = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
        let json = pgrx::direct_function_call_as_datum(pg_sys::row_to_json, &[Some(datum)]);
        match json.map(|d| parse(d)) {
            Some(Ok(Value::Object(mut all))) => {
                for name in others {
                    let v = all.remove(&name).unwrap_or(Value::Null);
                    row.insert(name, v);
                }
            }
            Some(Err(e)) => {
                failure.get_or_insert(format!("the row as JSON: {e}"));
            }
            _ => {}
        }
    }
    (row, failure)
}

/// A json (or jsonb output) text datum as a value; serde_json's error, not
/// a panic, for what it cannot hold.
unsafe fn parse(text: Datum) -> Result<Value, String> {
    let s = pg_sys::text_to_cstring(text.cast_mut_ptr());
    serde_json::from_str(&CStr::from_ptr(s).to_string_lossy()).map_err(json_error)
}

/// serde_json's error, with its recursion limit named as the lead's.
fn json_error(e: serde_json::Error) -> String {
    if e.to_string().contains("recursion limit") {
        "a json value is nested deeper than the limit of 128 levels".into()
    } else {
        e.to_string()
    }
}

/// A non-null datum of a common type as JSON; Ok(None) for other types.
unsafe fn scalar(d: Datum, typ: pg_sys::Oid) -> Result<Option<Value>, String> {
    let Ok(t) = B::from_u32(typ.to_u32()) else {
        return Ok(None);
    };
    Ok(Some(match t {
        B::BOOLOID => Value::Bool(d.value() != 0),
        B::INT2OID => i16::from_datum(d, false).into(),
        B::INT4OID => i32::from_datum(d, false).into(),
        B::INT8OID => i64::from_datum(d, false).into(),
        // f32 through its shortest decimal form, as float4out writes it
        B::FLOAT4OID => float(
            f32::from_datum(d, false)
                .unwrap_or(f32::NAN)
                .to_string()
                .parse()
                .unwrap_or(f64::NAN),
        ),
        B::FLOAT8OID => float(f64::from_datum(d, false).unwrap_or(f64::NAN)),
        B::TEXTOID | B::VARCHAROID | B::BPCHAROID => String::from_datum(d, false)
            .map(Value::String)
            .unwrap_or(Value::Null),
        B::JSONOID => parse(d)?,
        B::JSONBOID => match pgrx::direct_function_call_as_datum(pg_sys::jsonb_out, &[Some(d)]) {
            Some(t) => {
                let s = CStr::from_ptr(t.cast_mut_ptr());
                serde_json::from_str(&s.to_string_lossy()).map_err(json_error)?
            }
            None => Value::Null,
        },
        B::NUMERICOID => {
            let text = output(d, typ);
            match serde_json::from_str::<Number>(&text) {
                Ok(n) => Value::Number(n),
                Err(_) => Value::String(text), // NaN, ±Infinity, beyond f64
            }
        }
        B::DATEOID | B::TIMESTAMPOID | B::TIMESTAMPTZOID => {
            let s = pg_sys::JsonEncodeDateTime(std::ptr::null_mut(), d, typ, std::ptr::null());
            Value::String(CStr::from_ptr(s).to_string_lossy().into_owned())
        }
        _ => return Ok(None),
    }))
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
/// refuses (a JSON object for a column that is neither json nor jsonb, say).
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
        let typ = att.atttypid;
        // built-in types are never domains: no catalog lookup for the usual columns
        let domain = B::from_u32(typ.to_u32()).is_err()
            && pg_sys::get_typtype(typ) == pg_sys::TYPTYPE_DOMAIN as std::ffi::c_char;
        if v.is_null() {
            if domain {
                // a NOT NULL or CHECK domain may refuse NULL
                pg_sys::domain_check(
                    Datum::from(0usize),
                    true,
                    typ,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
            out.push((i, Datum::from(0usize), true));
            continue;
        }
        let base = if domain {
            pg_sys::getBaseType(typ)
        } else {
            typ
        };
        let d = match (B::from_u32(base.to_u32()).ok(), domain) {
            (Some(B::JSONBOID), false) => {
                crate::jsonb::datum(v).or_else(|| JsonB(v.clone()).into_datum())
            }
            (Some(B::JSONOID), false) => pgrx::Json(v.clone()).into_datum(),
            // through the domain's input function, which checks it
            (Some(B::JSONBOID | B::JSONOID), true) => {
                Some(input(&v.to_string(), typ, att.atttypmod))
            }
            (Some(B::TEXTOID), false) => text_of(v).replace('\0', "").into_datum(),
            _ if v.is_array() && pg_sys::get_element_type(base) != pg_sys::InvalidOid => {
                Some(input(&array_literal(v), typ, att.atttypmod))
            }
            _ => Some(input(&text_of(v), typ, att.atttypmod)),
        };
        out.push((i, d.unwrap_or(Datum::from(0usize)), d.is_none()));
    }
    out
}

/// A JSON array as an array literal (`{"a","b"}`, nested for nested
/// arrays), as json_populate_record turns a JSON array into an array column.
fn array_literal(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(array_literal).collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Null => "NULL".into(),
        other => {
            let t = text_of(other);
            format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
        }
    }
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

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_arrays_become_array_literals() {
        assert_eq!(array_literal(&json!([])), "{}");
        assert_eq!(
            array_literal(&json!([
                "a",
                "b c",
                "q\"uote",
                "back\\slash",
                null,
                1,
                true
            ])),
            r#"{"a","b c","q\"uote","back\\slash",NULL,"1","true"}"#
        );
        assert_eq!(
            array_literal(&json!([[1, 2], [3, 4]])),
            r#"{{"1","2"},{"3","4"}}"#
        );
    }
}
