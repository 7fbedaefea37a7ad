//! An attached row whose unique key is already taken is not processed
//! (review finding 14). Such a row is never inserted: `ON CONFLICT DO
//! NOTHING` (an idempotent retry) skips it, `ON CONFLICT DO UPDATE` updates
//! the row that has the key, and a plain INSERT fails. A BEFORE trigger runs
//! before PostgreSQL checks the key, so without this the retry would be
//! decided, counted, charged and logged a second time.
//!
//! Probed: each valid, immediate unique index of plain columns of which at
//! least one is not filled by a sequence (identity or `nextval` default: a
//! retry gets a new value there, so it never conflicts). Before the probe
//! the lead takes a lock on the key, so a retry racing the first attempt
//! waits for it (bounded by `iclear.counter_lock_wait`) and then sees its
//! row; the probe reads the latest committed rows.

use super::{key_budget_spent, latest, query_value, wait_xact_lock, TEXT};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, PgBuiltInOids};
use pgrx::prelude::*;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub const LOCK_ROW_KEY: i32 = 0x6963_0005;

/// One unique key to probe: its columns and `SELECT EXISTS (...)`.
struct Probe {
    index: u32,
    columns: Vec<String>,
    sql: &'static str,
}

/// A relation and its index list: an index added or dropped is a new entry.
type Table = (u32, Vec<u32>);

thread_local! {
    static PROBES: RefCell<HashMap<Table, Rc<Vec<Probe>>>> = RefCell::new(HashMap::new());
}

const KEYS: &str = r#"
SELECT i.indexrelid::int8,
       array_agg(a.attname::text ORDER BY k.ord),
       array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
  FROM pg_catalog.pg_index i
 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE i.indrelid = $1::int8::oid AND i.indisunique AND i.indisvalid AND i.indimmediate
   AND i.indpred IS NULL AND i.indexprs IS NULL
 GROUP BY i.indexrelid
HAVING bool_or(a.attidentity = '' AND
               coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid) NOT LIKE 'nextval(%', true))"#;

unsafe fn index_oids(rel: pg_sys::Relation) -> Vec<u32> {
    let list = pg_sys::RelationGetIndexList(rel);
    if list.is_null() {
        return Vec::new();
    }
    let oids = (0..(*list).length)
        .map(|i| pg_sys::list_nth_oid(list, i).to_u32())
        .collect();
    pg_sys::list_free(list);
    oids
}

unsafe fn probes(rel: pg_sys::Relation) -> Rc<Vec<Probe>> {
    let relid = (*rel).rd_id.to_u32();
    let key = (relid, index_oids(rel));
    if key.1.is_empty() {
        return Rc::new(Vec::new());
    }
    if let Some(p) = PROBES.with_borrow(|m| m.get(&key).cloned()) {
        return p;
    }
    let name = pgrx::name_data_to_str(&(*(*rel).rd_rel).relname).to_string();
    let schema =
        std::ffi::CStr::from_ptr(pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace))
            .to_string_lossy()
            .into_owned();
    let found: Vec<Probe> = Spi::connect(|c| {
        let rows = c.select(KEYS, None, &[i64::from(relid).into()])?;
        let mut out = Vec::new();
        for r in rows {
            let index: i64 = r.get(1)?.unwrap_or_default();
            let columns: Vec<String> = r.get(2)?.unwrap_or_default();
            let types: Vec<String> = r.get(3)?.unwrap_or_default();
            let conds: Vec<String> = columns
                .iter()
                .zip(&types)
                .enumerate()
                .map(|(i, (c, t))| format!("{} = ${}::text::{t}", quote(c), i + 1))
                .collect();
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM ONLY {}.{} WHERE {})",
                quote(&schema),
                quote(&name),
                conds.join(" AND ")
            );
            out.push(Probe {
                index: index as u32,
                columns,
                // one per unique key of an attached table, for the backend's life
                sql: Box::leak(sql.into_boxed_str()),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_default();
    let found = Rc::new(found);
    PROBES.with_borrow_mut(|m| m.insert(key, found.clone()));
    found
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

/// Is a unique key of `row` already taken in `rel`?
///
/// # Safety
/// `rel` is the trigger's open relation.
pub unsafe fn key_taken(rel: pg_sys::Relation, row: &Map<String, Value>) -> bool {
    let probes = probes(rel);
    if probes.is_empty() {
        return false;
    }
    let relid = (*rel).rd_id.to_u32().to_string();
    // a probe that fails (a key value its type refuses) leaves the row to
    // processing and to PostgreSQL's own check
    super::guarded(std::panic::AssertUnwindSafe(|| taken(&probes, &relid, row))).unwrap_or(false)
}

fn taken(probes: &[Probe], relid: &str, row: &Map<String, Value>) -> bool {
    for p in probes {
        // a NULL in the key never conflicts
        let Some(values) = p
            .columns
            .iter()
            .map(|c| row.get(c).and_then(text))
            .collect::<Option<Vec<String>>>()
        else {
            continue;
        };
        let index = p.index.to_string();
        let mut parts: Vec<&str> = vec![relid, &index];
        parts.extend(values.iter().map(String::as_str));
        // taken before the lead's subtransaction, which `end_lead` cannot
        // release it from: past the budget the key is read unlocked
        if !key_budget_spent() {
            let wait = crate::gucs::counter_lock_wait().as_millis() as u64;
            wait_xact_lock(LOCK_ROW_KEY, &parts, wait);
        }
        let types: Vec<PgBuiltInOids> = values.iter().map(|_| TEXT).collect();
        let args: Vec<DatumWithOid> = values.iter().map(|v| v.as_str().into()).collect();
        if latest(|| query_value::<bool>(p.sql, &types, &args)).unwrap_or(false) {
            return true;
        }
    }
    false
}
