//! Persisting a decision, its filter-log rows and its effects, in the
//! caller's transaction.

use super::probe::text_datum;
use super::{exec, json_datum, INT8, INT8_ARRAY, JSON, JSON_ARRAY, TEXT, TEXT_ARRAY};
use iclear_engine::pipeline::{Effect, LogEntry};
use pgrx::datum::DatumWithOid;
use pgrx::datum::JsonString;
use pgrx::pg_sys::{self, PgBuiltInOids};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

pub struct Record<'a> {
    pub lead_id: &'a str,
    pub product_id: Option<i64>,
    pub stage: &'a str,
    pub status: &'a str,
    pub envelope: &'a Value,
    pub decision: &'a Value,
    pub log: &'a [LogEntry],
    /// Applied with the decision: counter increments in the same statement,
    /// the others after it.
    pub effects: &'a [Effect],
}

/// The log entries as the parameters of `LOG_ROWS`: one array per column
/// (arrays cost less to hand over and unpack than a JSON document).
fn log_columns(log: &[&LogEntry]) -> [DatumWithOid<'static>; 9] {
    // JSON null is SQL NULL, as json_to_recordset made it
    // printed from the borrowed value (a json datum is its text)
    let json = |v: Option<&Value>| {
        v.filter(|v| !v.is_null())
            .map(|v| JsonString(v.to_string()))
    };
    [
        log.iter().map(|e| e.stage).collect::<Vec<_>>().into(),
        log.iter().map(|e| e.origin).collect::<Vec<_>>().into(),
        log.iter().map(|e| e.kind).collect::<Vec<_>>().into(),
        log.iter().map(|e| e.ref_id).collect::<Vec<_>>().into(),
        log.iter()
            .map(|e| e.name.as_deref())
            .collect::<Vec<_>>()
            .into(),
        log.iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>()
            .into(),
        log.iter()
            .map(|e| json(Some(&e.detail)))
            .collect::<Vec<_>>()
            .into(),
        log.iter()
            .map(|e| json(e.request.as_ref()))
            .collect::<Vec<_>>()
            .into(),
        log.iter()
            .map(|e| json(e.response.as_ref()))
            .collect::<Vec<_>>()
            .into(),
    ]
}

const LOG_TYPES: [PgBuiltInOids; 9] = [
    TEXT_ARRAY, TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY, JSON_ARRAY, JSON_ARRAY,
    JSON_ARRAY,
];

/// A store's decision as the hub gathers it (`iclear.store_decision`,
/// published to the hub): the outcome and the paid lookups, with their
/// cost, not the lead (docs/guide/hub.md "Reporting across stores").
fn for_the_hub(store: &str, r: &Record) {
    let services: Vec<Value> = r
        .log
        .iter()
        .filter(|e| e.kind == "service")
        .map(|e| {
            serde_json::json!({"service": e.name, "outcome": e.outcome,
                               "source": e.detail.get("source"), "cost": e.detail.get("cost")})
        })
        .collect();
    let d = r.decision;
    exec(
        "INSERT INTO iclear.store_decision (store, id, lead_id, product, status, reason, rejected_by, services, decided_at)
         SELECT $1, currval('iclear.decision_id_seq'), $2, $3, $4, $5, $6::jsonb, $7::jsonb, now()",
        &[TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT],
        &[
            store.into(),
            r.lead_id.into(),
            d["product"].as_str().or(r.envelope["product"].as_str()).unwrap_or("").into(),
            r.status.into(),
            d["reason"].as_str().into(),
            Some(d["rejected_by"].to_string()).filter(|s| s != "null").as_deref().into(),
            Value::Array(services).to_string().into(),
        ],
    );
}

/// Filter-log rows without a decision (Advanced Rules on Redirect), and
/// the cap slots their rules took.
pub fn save_log(lead_id: &str, product_id: i64, log: &[LogEntry]) {
    super::caps::write_unwritten();
    if log.is_empty() {
        return;
    }
    let mut types = vec![TEXT, INT8];
    types.extend(LOG_TYPES);
    let mut args: Vec<DatumWithOid> = vec![lead_id.into(), product_id.into()];
    args.extend(log_columns(&log.iter().collect::<Vec<_>>()));
    exec(
        "INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name, outcome,
                                        detail, request, response)
         SELECT $1, $2, x.* FROM unnest($3, $4, $5, $6, $7, $8, $9, $10, $11) AS x",
        &types,
        &args,
    );
}

/// The latest non-error decision of `lead_id`: (envelope, decision).
pub fn last_decision(lead_id: &str) -> Option<(Value, Value)> {
    let doc: pgrx::JsonB = super::query_value(
        "SELECT jsonb_build_array(envelope, decision::jsonb - 'steps') FROM iclear.decision
          WHERE lead_id = $1 AND status <> 'error' ORDER BY id DESC LIMIT 1",
        &[TEXT],
        &[lead_id.into()],
    )?;
    envelope_and_decision(doc.0)
}

/// `[envelope, decision]` as a pair.
fn envelope_and_decision(doc: Value) -> Option<(Value, Value)> {
    match doc {
        Value::Array(mut a) if a.len() == 2 => {
            let d = a.pop()?;
            Some((a.pop()?, d))
        }
        _ => None,
    }
}

/// The latest decision (with its envelope) of `lead_id` for `product` as it
/// exists now (a product dropped and made again under its name is another),
/// errors left out.
pub fn last_decision_of(lead_id: &str, product: &str) -> Option<(Value, Value)> {
    let doc: pgrx::JsonB = super::query_value(
        "SELECT jsonb_build_array(d.envelope, d.decision::jsonb - 'steps') FROM iclear.decision d
           JOIN iclear.product p ON p.id = d.product_id
          WHERE d.lead_id = $1 AND p.name = $2 AND d.status <> 'error'
          ORDER BY d.id DESC LIMIT 1",
        &[TEXT, TEXT],
        &[lead_id.into(), product.into()],
    )?;
    envelope_and_decision(doc.0)
}

/// What processing logged of a lead, for redirect rules: the rules that
/// matched (`{"matched": [ids]}`) and the latest answer of each service
/// (`{"services": {name: response}}`).
pub fn processed_log(lead_id: &str) -> Value {
    // a rule's outcome is a step of the decision since 0.6.0
    static WITH_STEPS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        PROCESSED_LOG.replacen("iclear.filter_log f", "iclear.filter_log_all f", 1)
    });
    let sql = if super::config::schema_at_least(6) {
        WITH_STEPS.as_str()
    } else {
        PROCESSED_LOG
    };
    super::query_value::<pgrx::JsonB>(sql, &[TEXT], &[lead_id.into()])
        .map(|j| j.0)
        .unwrap_or(Value::Null)
}

const PROCESSED_LOG: &str = "SELECT jsonb_build_object(
           'matched', coalesce((SELECT jsonb_agg(DISTINCT f.ref_id) FROM iclear.filter_log f
                                 WHERE f.lead_id = $1 AND f.kind = 'rule' AND f.origin <> 'redirect'
                                   AND f.outcome IN ('matched', 'reject', 'paused')), '[]'),
           'services', coalesce((SELECT jsonb_object_agg(s.name, s.response) FROM (
                                   SELECT DISTINCT ON (f.name) f.name, f.response::jsonb AS response
                                     FROM iclear.filter_log f
                                    WHERE f.lead_id = $1 AND f.kind = 'service' AND f.response IS NOT NULL
                                    ORDER BY f.name, f.at DESC, f.id DESC) s), '{}'))";

/// A filter-log row the decision holds instead (`steps`, read through
/// `iclear.filter_log_all`): a rule's, a list's or a field's outcome. Such a
/// row is small and written for most leads, and a row of its own cost
/// about 350 B of WAL with its index entries, against about 100 B in the
/// decision (docs/performance.md). Service answers, SMS and tracking steps
/// stay rows: they carry requests and answers, and the per-service reports
/// read them by time.
fn held_by_decision(e: &LogEntry) -> bool {
    matches!(e.kind, "rule" | "list" | "validation") && e.request.is_none() && e.response.is_none()
}

/// The steps a decision holds: `[stage, origin, kind, ref_id, name,
/// outcome, detail]` each (the columns of filter_log they stand for), or
/// `[i, outcome]` for a rule's step that the decision's trace already
/// tells but for its outcome (`trace_index`): most steps, at a tenth of the
/// bytes. `iclear.filter_log_all` reads both forms.
fn steps(log: &[&LogEntry], trace: Option<&Value>) -> Value {
    let trace = trace.and_then(Value::as_array);
    Value::Array(
        log.iter()
            .map(|e| match trace_index(e, trace) {
                Some(i) => serde_json::json!([i, e.outcome]),
                None => serde_json::json!([
                    e.stage, e.origin, e.kind, e.ref_id, e.name, e.outcome, e.detail
                ]),
            })
            .collect(),
    )
}

/// The index of the trace entry that says all that a rule's step says but
/// its outcome: the rule matched, at this stage, under this name, and ran
/// exactly these actions, in a lead processed in its own transaction
/// (origin `sync`). Checked field by field, so a step is never read back
/// other than it was.
fn trace_index(e: &LogEntry, trace: Option<&Vec<Value>>) -> Option<usize> {
    if e.kind != "rule" || e.origin != "sync" {
        return None;
    }
    let actions = match e.detail.as_object() {
        Some(o) if o.len() == 1 => o.get("actions")?,
        _ => return None,
    };
    trace?.iter().position(|t| {
        t["matched"] == true
            && t["rule_id"].as_i64() == e.ref_id
            && t["stage"] == e.stage
            && t["name"].as_str() == e.name.as_deref()
            && &t["actions"] == actions
    })
}

/// The decision as stored: what the envelope already holds (`fields` and
/// `params` that no action changed) and empty values (null, false, [], {})
/// are left out, and the filter-log steps it holds are added (`steps`).
/// The caller gets the whole decision, without `steps`; readers of the
/// stored one (lead_info, process_redirect) take the rest from the envelope.
fn stored_decision(decision: &Value, envelope: &Value, held: &[&LogEntry]) -> String {
    let Some(d) = decision.as_object() else {
        return decision.to_string();
    };
    let steps = (!held.is_empty()).then(|| steps(held, d.get("trace")));
    let mut kept: BTreeMap<&str, &Value> = d
        .iter()
        .filter(|(k, v)| match v {
            Value::Null | Value::Bool(false) => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => {
                let in_envelope = matches!(k.as_str(), "fields" | "params")
                    && envelope.get(k.as_str()) == Some(*v);
                !o.is_empty() && !in_envelope
            }
            _ => true,
        })
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if let Some(steps) = &steps {
        kept.insert("steps", steps);
    }
    serde_json::to_string(&kept).unwrap_or_else(|_| decision.to_string())
}

/// Statements shaped by a lead's row counts are cached up to these counts;
/// a lead with more takes the array form (`unnest`), which is slower: it
/// materialises each array before inserting.
const MAX_SHAPED_LOG_ROWS: usize = 32;
const MAX_SHAPED_OTHER_ROWS: usize = 8;

/// A saving statement's shape: its log, counter, cap and history rows.
type RowCounts = (usize, usize, usize, usize);

/// The statement that saves a decision with `log` filter-log rows, `counters`
/// counter increments, `caps` cap slots and `history` history rows: a
/// VALUES row each, after the decision's 6 parameters (9 per log row, 3 per
/// increment, 4 per slot, 2 per history row). A VALUES list costs less to
/// run than `unnest` over arrays, and a table the lead writes nothing to is
/// not named (it would be opened all the same).
fn save_statement(log: usize, counters: usize, caps: usize, history: usize) -> &'static str {
    thread_local! {
        static MADE: RefCell<HashMap<RowCounts, &'static str>> =
            RefCell::new(HashMap::new());
    }
    MADE.with_borrow_mut(|made| {
        *made.entry((log, counters, caps, history)).or_insert_with(|| {
            let mut n = 6;
            // `count` rows of `width` parameters each, numbered on from `n`
            let mut rows = |count: usize, width: usize| {
                (0..count)
                    .map(|_| {
                        let row: Vec<String> = (0..width).map(|i| format!("${}", n + i + 1)).collect();
                        n += width;
                        format!("({})", row.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut sql = String::from(
                "WITH d AS (INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision)
                            VALUES ($1, $2, $3, $4, $5, $6))",
            );
            let log_rows = rows(log, 9);
            let counter_rows = rows(counters, 3);
            let cap_rows = rows(caps, 4);
            // each history row's product is the decision's ($2), at now()
            let history_rows = (0..history)
                .map(|_| {
                    let row = format!("(${}, $2, ${}, now())", n + 1, n + 2);
                    n += 2;
                    row
                })
                .collect::<Vec<_>>()
                .join(", ");
            if counters > 0 {
                sql += &format!(
                    ", c AS (INSERT INTO iclear.counter_delta (name, key, by) VALUES {counter_rows})"
                );
            }
            if caps > 0 {
                sql += &format!(
                    ", u AS (INSERT INTO iclear.cap_use (scope, ref_id, period, bucket) VALUES {cap_rows})"
                );
            }
            if history > 0 {
                sql += &format!(
                    ", h AS (INSERT INTO iclear.lead_history (key, product_id, status, at) VALUES {history_rows})"
                );
            }
            if log > 0 {
                // each row's first two columns are the lead's
                let log_rows = log_rows.replace("(", "($1, $2, ");
                sql += &format!(
                    " INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name,
                                                     outcome, detail, request, response) VALUES {log_rows}"
                );
            } else {
                sql += " SELECT";
            }
            Box::leak(sql.into_boxed_str())
        })
    })
}

/// The array form of the statement, for a lead with more rows than the
/// shaped statements are cached for.
const SAVE_UNNESTED: &str =
    "WITH d AS (INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision)
                VALUES ($1, $2, $3, $4, $5, $6)),
          c AS (INSERT INTO iclear.counter_delta (name, key, by)
                SELECT * FROM unnest($16::text[], $17::text[], $18::int8[])),
          u AS (INSERT INTO iclear.cap_use (scope, ref_id, period, bucket)
                SELECT * FROM unnest($19::text[], $20::int8[], $21::text[], $22::text[]))
     INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name, outcome,
                                    detail, request, response)
     SELECT $1, $2, x.* FROM unnest($7, $8, $9, $10, $11, $12, $13, $14, $15) AS x";

/// A JSON value as a json parameter (SQL NULL for JSON null), printed from
/// the borrowed value.
fn json_param(v: Option<&Value>) -> DatumWithOid<'static> {
    v.filter(|v| !v.is_null())
        .map(|v| JsonString(v.to_string()))
        .into()
}

/// One statement writes the decision, all its log rows, its counter
/// increments and its cap slots (each statement costs an executor
/// start-up); the other effects follow.
pub fn save(r: &Record) {
    // a schema older than 0.6.0 (until ALTER EXTENSION UPDATE) has no
    // filter_log_all to read a decision's steps through: rows for all
    let (rows, held): (Vec<&LogEntry>, Vec<&LogEntry>) = if super::config::schema_at_least(6) {
        r.log.iter().partition(|e| !held_by_decision(e))
    } else {
        (r.log.iter().collect(), Vec::new())
    };
    let mut types = vec![TEXT, INT8, TEXT, TEXT, JSON, JSON];
    let mut args: Vec<DatumWithOid> = vec![
        r.lead_id.into(),
        r.product_id.into(),
        r.stage.into(),
        r.status.into(),
        json_datum(r.envelope.to_string()),
        json_datum(stored_decision(r.decision, r.envelope, &held)),
    ];
    if !super::config::schema_at_least(5) {
        // a 0.4.0 (or older) schema, until ALTER EXTENSION UPDATE
        types.extend(LOG_TYPES);
        args.extend(log_columns(&rows));
        exec(
            "WITH d AS (INSERT INTO iclear.decision (lead_id, product_id, stage, status, envelope, decision)
                        VALUES ($1, $2, $3, $4, $5, $6))
             INSERT INTO iclear.filter_log (lead_id, product_id, stage, origin, kind, ref_id, name, outcome,
                                            detail, request, response)
             SELECT $1, $2, x.* FROM unnest($7, $8, $9, $10, $11, $12, $13, $14, $15) AS x",
            &types,
            &args,
        );
        if let Some(product_id) = r.product_id {
            apply(r.effects, r.lead_id, product_id);
        }
        return;
    }
    let mut counters = Vec::new();
    let mut others = Vec::new();
    for e in r.effects {
        match e {
            Effect::IncrementCounter { name, key, by } => {
                counters.push((name.as_str(), key.as_str(), *by))
            }
            _ => others.push(e),
        }
    }
    let caps = super::caps::take_unwritten();
    if rows.len() > MAX_SHAPED_LOG_ROWS
        || counters.len() > MAX_SHAPED_OTHER_ROWS
        || caps.len() > MAX_SHAPED_OTHER_ROWS
    {
        types.extend(LOG_TYPES);
        args.extend(log_columns(&rows));
        types.extend([TEXT_ARRAY, TEXT_ARRAY, INT8_ARRAY]);
        args.extend([
            counters.iter().map(|c| c.0).collect::<Vec<_>>().into(),
            counters.iter().map(|c| c.1).collect::<Vec<_>>().into(),
            counters.iter().map(|c| c.2).collect::<Vec<_>>().into(),
        ]);
        types.extend([TEXT_ARRAY, INT8_ARRAY, TEXT_ARRAY, TEXT_ARRAY]);
        args.extend([
            caps.iter().map(|c| c.0).collect::<Vec<_>>().into(),
            caps.iter().map(|c| c.1).collect::<Vec<_>>().into(),
            caps.iter().map(|c| c.2).collect::<Vec<_>>().into(),
            caps.iter().map(|c| c.3.as_str()).collect::<Vec<_>>().into(),
        ]);
        exec(SAVE_UNNESTED, &types, &args);
    } else {
        // the history rows go with the decision (one statement less), after
        // their keys' locks (a 0.5.0 schema has no history)
        let mut history = Vec::new();
        if r.product_id.is_some() && super::config::schema_at_least(6) {
            let (recorded, rest): (Vec<&Effect>, Vec<&Effect>) = others
                .into_iter()
                .partition(|e| matches!(e, Effect::RecordHistory { .. }));
            others = rest;
            if recorded.len() > MAX_SHAPED_OTHER_ROWS {
                others.extend(recorded);
            } else {
                for e in recorded {
                    if let Effect::RecordHistory {
                        key,
                        values,
                        status,
                    } = e
                    {
                        history.push((super::history::locked_digest(key, values), *status));
                    }
                }
            }
        }
        for e in &rows {
            types.extend([TEXT, TEXT, TEXT, INT8, TEXT, TEXT, JSON, JSON, JSON]);
            args.extend([
                e.stage.into(),
                e.origin.into(),
                e.kind.into(),
                e.ref_id.into(),
                e.name.as_deref().into(),
                e.outcome.as_str().into(),
                json_param(Some(&e.detail)),
                json_param(e.request.as_ref()),
                json_param(e.response.as_ref()),
            ]);
        }
        for (name, key, by) in &counters {
            types.extend([TEXT, TEXT, INT8]);
            args.extend([(*name).into(), (*key).into(), (*by).into()]);
        }
        for (scope, ref_id, period, bucket) in &caps {
            types.extend([TEXT, INT8, TEXT, TEXT]);
            args.extend([
                (*scope).into(),
                (*ref_id).into(),
                (*period).into(),
                bucket.as_str().into(),
            ]);
        }
        for (digest, status) in &history {
            types.extend([INT8, TEXT]);
            args.extend([(*digest).into(), (*status).into()]);
        }
        exec(
            save_statement(rows.len(), counters.len(), caps.len(), history.len()),
            &types,
            &args,
        );
    }
    if let super::config::HubRole::Store(store) = super::config::hub_role() {
        for_the_hub(&store, r);
    }
    if let Some(product_id) = r.product_id {
        apply(others, r.lead_id, product_id);
        if r.status == "paused" {
            if let Some(phone) = r.decision["verification"]["phone"].as_str() {
                super::paused::record(r.lead_id, product_id, phone);
            }
        }
    }
}

/// The effects of one lead's outcome (`lead_id`, `product_id` for the rows
/// that name the lead).
pub fn apply<'e>(effects: impl IntoIterator<Item = &'e Effect>, lead_id: &str, product_id: i64) {
    for e in effects {
        match e {
            // Another open transaction adding the same value holds its lock,
            // or (past the budget of key locks) has its row in the index: it
            // is being added, and waiting for that transaction could deadlock
            // a multi-row insert, so this lead leaves it to that one. A value
            // already there is not written again.
            Effect::AddToList { list_id, value } => {
                if super::try_xact_lock(super::LOCK_LIST_ENTRY, &[&list_id.to_string(), value])
                    && !list_value_written_elsewhere(*list_id, value)
                {
                    exec(
                        "INSERT INTO iclear.list_entry (list_id, value, added_by) VALUES ($1, $2, 'iclear')
                         ON CONFLICT DO NOTHING",
                        &[INT8, TEXT],
                        &[(*list_id).into(), value.as_str().into()],
                    );
                    // a store's addition waits for the worker to take it to
                    // the hub, which gives it to every other store
                    if let super::config::HubRole::Store(_) = super::config::hub_role() {
                        exec(
                            "INSERT INTO iclear.list_entry_out (list_id, value) VALUES ($1, $2)",
                            &[INT8, TEXT],
                            &[(*list_id).into(), value.as_str().into()],
                        );
                    }
                }
            }
            // Appended, never updated: concurrent increments of one key never
            // wait on each other (the worker folds them into counter_total).
            Effect::IncrementCounter { name, key, by } if super::config::schema_at_least(5) => {
                exec(
                    "INSERT INTO iclear.counter_delta (name, key, by) VALUES ($1, $2, $3)",
                    &[TEXT, TEXT, INT8],
                    &[name.as_str().into(), key.as_str().into(), (*by).into()],
                )
            }
            // the table of a 0.4.0 (or older) schema, until ALTER EXTENSION UPDATE
            Effect::IncrementCounter { name, key, by } => exec(
                "INSERT INTO iclear.counter (name, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (name, key) DO UPDATE
                 SET value = iclear.counter.value + EXCLUDED.value, updated_at = now()",
                &[TEXT, TEXT, INT8],
                &[name.as_str().into(), key.as_str().into(), (*by).into()],
            ),
            // As for list entries: a lead writing the same answer now wins.
            Effect::CacheResponse { service, key, data } => {
                let keys = [
                    (pg_sys::F_TEXTEQ, text_datum(service)),
                    (pg_sys::F_TEXTEQ, text_datum(key)),
                ];
                if super::try_xact_lock(super::LOCK_CACHE, &[service, key])
                    && !super::written_elsewhere(c"lookup_cache", c"lookup_cache_pkey", &keys, false)
                {
                    exec(
                        "INSERT INTO iclear.lookup_cache (service, lookup_key, response, fetched_at)
                         VALUES ($1, $2, $3::jsonb, now())
                         ON CONFLICT (service, lookup_key)
                         DO UPDATE SET response = EXCLUDED.response, fetched_at = EXCLUDED.fetched_at",
                        &[TEXT, TEXT, TEXT],
                        &[
                            service.as_str().into(),
                            key.as_str().into(),
                            // (the adapters drop a vendor's NUL characters)
                            data.to_string().into(),
                        ],
                    )
                }
            }
            // Queued in the lead's transaction (a rolled-back lead tracks
            // nothing) while the tracking service is subscribed; the worker
            // delivers it with the queue's lease and attempts.
            Effect::Track { event, payload } => exec(
                "INSERT INTO iclear.job (kind, product_id, lead_id, payload)
                 SELECT 'tracking', $2, $1,
                        jsonb_build_object('event', $3::text, 'payload', $4::jsonb, 'lead_id', $1::text,
                                           'product', (SELECT p.name FROM iclear.product p WHERE p.id = $2))
                  WHERE EXISTS (SELECT 1 FROM iclear.service s
                                 WHERE s.name = 'tracking' AND s.subscription = 'enabled' AND s.endpoint IS NOT NULL)",
                &[TEXT, INT8, TEXT, TEXT],
                &[
                    lead_id.into(),
                    product_id.into(),
                    event.as_str().into(),
                    payload.to_string().into(),
                ],
            ),
            // The history the Verification History rule reads: local, or
            // the shared hub's (use_verification_hub), as record_verification
            // writes it. A hub that cannot be written loses the record, not
            // the lead: its decision stands, and a WARNING says so.
            // (a 0.5.0 schema has no history: its rules hold no history
            // condition either)
            Effect::RecordHistory {
                key,
                values,
                status,
            } if super::config::schema_at_least(6) => {
                super::history::record(product_id, status, key, values)
            }
            Effect::RecordHistory { .. } => {}
            Effect::RecordSignature { signature } => {
                if let Err(e) = super::verification::record_signature_of(product_id, signature) {
                    pgrx::warning!("iclear: the signature of lead {lead_id} was not stored: {e}");
                }
            }
            Effect::ConsentEvidence {
                session_id,
                outcome,
                expires_at,
                response,
            } => exec(
                "INSERT INTO iclear.consent_evidence (lead_id, product_id, session_id, outcome, expires_at, response)
                 VALUES ($1, $2, $3, $4, $5::timestamptz, $6::json)",
                &[TEXT, INT8, TEXT, TEXT, TEXT, TEXT],
                &[
                    lead_id.into(),
                    product_id.into(),
                    session_id.as_str().into(),
                    outcome.as_str().into(),
                    expires_at.as_deref().into(),
                    response.to_string().into(),
                ],
            ),
        }
    }
    // the last of a lead's (or a job's) writes: the key locks it took past
    // its transaction's budget go back (`store::end_lead`)
    super::end_lead();
}

/// `value` is on list `list_id` already, or another open transaction is
/// adding it (`store::written_elsewhere`); looked up as `list_entry_normalize`
/// stores it.
fn list_value_written_elsewhere(list_id: i64, value: &str) -> bool {
    let stored = iclear_engine::facts::normalize_list_value(value);
    let keys = [
        (pg_sys::F_INT8EQ, pg_sys::Datum::from(list_id)),
        (pg_sys::F_TEXTEQ, text_datum(&stored)),
    ];
    super::written_elsewhere(c"list_entry", c"list_entry_pkey", &keys, true)
}

/// Persist the `error` decision of a lead that could not be processed (or
/// finished): no log rows, no effects.
pub fn save_error(lead_id: &str, product: &str, envelope: &Value, decision: &Value) {
    let product_id: Option<i64> = super::query_value(
        "SELECT id FROM iclear.product WHERE name = $1",
        &[TEXT],
        &[product.into()],
    );
    save(&Record {
        lead_id,
        product_id,
        stage: decision["stage"].as_str().unwrap_or("post"),
        status: "error",
        envelope,
        decision,
        log: &[],
        effects: &[],
    });
}
