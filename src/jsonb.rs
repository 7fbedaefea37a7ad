//! A JSON value as a jsonb datum, built with PostgreSQL's own jsonb builder
//! (`pushJsonbValue`) instead of printed to text and parsed back by
//! `jsonb_in`: the decision written into every attached row's
//! `iclear_decision` is a few hundred bytes of JSON, and the round trip
//! was a tenth of the trigger's time (`make bench`).

use pgrx::pg_sys::{self, Datum};
use pgrx::IntoDatum;
use serde_json::{Number, Value};
use std::ffi::CString;

/// The value as jsonb, or None where the text path must decide: a scalar
/// at the top, a string holding NUL (jsonb refuses it, with the error
/// `jsonb_in` gives), or a database whose encoding is not UTF-8 (`jsonb_in`
/// converts the text).
pub fn datum(v: &Value) -> Option<Datum> {
    if !matches!(v, Value::Object(_) | Value::Array(_)) || has_nul(v) {
        return None;
    }
    unsafe {
        if pg_sys::GetDatabaseEncoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
            return None;
        }
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        let built = push_container(&mut state, v);
        Some(Datum::from(pg_sys::JsonbValueToJsonb(built)))
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, x)| k.contains('\0') || has_nul(x)),
        _ => false,
    }
}

/// Push an object or array; returns the built container. The strings are
/// borrowed from `v`, which outlives `JsonbValueToJsonb` (it copies them).
unsafe fn push_container(
    state: &mut *mut pg_sys::JsonbParseState,
    v: &Value,
) -> *mut pg_sys::JsonbValue {
    use pg_sys::JsonbIteratorToken::*;
    let null = std::ptr::null_mut();
    match v {
        Value::Object(m) => {
            pg_sys::pushJsonbValue(state, WJB_BEGIN_OBJECT, null);
            for (k, x) in m {
                let mut key = string(k);
                pg_sys::pushJsonbValue(state, WJB_KEY, &mut key);
                push_member(state, x, WJB_VALUE);
            }
            pg_sys::pushJsonbValue(state, WJB_END_OBJECT, null)
        }
        Value::Array(a) => {
            pg_sys::pushJsonbValue(state, WJB_BEGIN_ARRAY, null);
            for x in a {
                push_member(state, x, WJB_ELEM);
            }
            pg_sys::pushJsonbValue(state, WJB_END_ARRAY, null)
        }
        _ => unreachable!("only containers are pushed"),
    }
}

unsafe fn push_member(
    state: &mut *mut pg_sys::JsonbParseState,
    x: &Value,
    token: pg_sys::JsonbIteratorToken::Type,
) {
    match x {
        Value::Object(_) | Value::Array(_) => {
            push_container(state, x);
        }
        scalar => {
            let mut j = scalar_value(scalar);
            pg_sys::pushJsonbValue(state, token, &mut j);
        }
    }
}

unsafe fn scalar_value(v: &Value) -> pg_sys::JsonbValue {
    let mut j: pg_sys::JsonbValue = std::mem::zeroed();
    match v {
        Value::Null => j.type_ = pg_sys::jbvType::jbvNull,
        Value::Bool(b) => {
            j.type_ = pg_sys::jbvType::jbvBool;
            j.val.boolean = *b;
        }
        Value::Number(n) => {
            j.type_ = pg_sys::jbvType::jbvNumeric;
            j.val.numeric = numeric(n).cast_mut_ptr();
        }
        Value::String(s) => j = string(s),
        _ => unreachable!("containers are pushed"),
    }
    j
}

fn string(s: &str) -> pg_sys::JsonbValue {
    let mut j: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    j.type_ = pg_sys::jbvType::jbvString;
    j.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
        len: s.len() as i32,
        val: s.as_ptr() as *mut std::ffi::c_char,
    };
    j
}

/// A JSON number as numeric, through `numeric_in` as `jsonb_in` makes it.
fn numeric(n: &Number) -> Datum {
    let text = CString::new(n.to_string()).expect("a number has no NUL");
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::numeric_in,
            &[
                Some(Datum::from(text.as_ptr())),
                pg_sys::InvalidOid.into_datum(),
                (-1i32).into_datum(),
            ],
        )
        .expect("numeric_in returns a value")
    }
}
