//! Leads paused for SMS verification (`iclear.paused_lead`): recorded with
//! their paused decision, taken once when their phone is confirmed or their
//! code expires, and the attached row they came from updated with the final
//! decision. Taking a row deletes it, so two sessions never finish one lead.

use super::{exec, query_value, INT8, TEXT};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// A paused lead taken to be finished.
#[derive(Debug)]
pub struct PausedLead {
    pub lead_id: String,
    /// The attached table the lead's row is in, and its id column (None:
    /// the lead came through `iclear_process`, or its row has no id).
    pub row: Option<(pg_sys::Oid, String)>,
}

/// Record a lead that just paused on `phone`. It waits as long as the
/// phone's pending code; other leads paused on the same phone wait as long
/// (confirming the newest code verifies the phone for all of them).
pub fn record(lead_id: &str, product_id: i64, phone: &str) {
    exec(
        "WITH e AS (
           SELECT coalesce((SELECT max(v.expires_at) FROM iclear.sms_verification v
                             WHERE v.product = p.name AND v.phone = $3 AND v.status = 'pending'),
                           now() + make_interval(secs => current_setting('iclear.sms_code_ttl')::int)) AS at
             FROM iclear.product p WHERE p.id = $2),
         others AS (
           UPDATE iclear.paused_lead l SET expires_at = greatest(l.expires_at, e.at)
             FROM e WHERE l.product_id = $2 AND l.phone = $3 AND l.lead_id <> $1)
         INSERT INTO iclear.paused_lead (lead_id, product_id, phone, expires_at)
         SELECT $1, $2, $3, e.at FROM e
         ON CONFLICT (lead_id) DO UPDATE
            SET product_id = EXCLUDED.product_id, phone = EXCLUDED.phone,
                paused_at = now(), expires_at = EXCLUDED.expires_at",
        &[TEXT, INT8, TEXT],
        &[lead_id.into(), product_id.into(), phone.into()],
    );
}

/// The paused lead came from a row of `table` (an attached table) whose
/// `id_column` holds its lead id.
pub fn record_row(lead_id: &str, table: pg_sys::Oid, id_column: &str) {
    exec(
        "UPDATE iclear.paused_lead SET lead_table = $2::oid::regclass, id_column = $3 WHERE lead_id = $1",
        &[TEXT, INT8, TEXT],
        &[
            lead_id.into(),
            i64::from(table.to_u32()).into(),
            id_column.into(),
        ],
    );
}

fn taken(doc: Option<JsonB>) -> Vec<PausedLead> {
    let rows = doc.map(|d| d.0).unwrap_or(Value::Null);
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|r| PausedLead {
            lead_id: r["lead_id"].as_str().unwrap_or_default().to_string(),
            row: match (r["lead_table"].as_i64(), r["id_column"].as_str()) {
                (Some(t), Some(c)) => Some((pg_sys::Oid::from(t as u32), c.to_string())),
                _ => None,
            },
        })
        .collect()
}

/// Take the leads of `product` paused on `phone` (just verified). A lead a
/// concurrent session is finishing is waited for, then not taken.
pub fn take_verified(product: &str, phone: &str) -> Vec<PausedLead> {
    taken(query_value::<JsonB>(
        "WITH t AS (DELETE FROM iclear.paused_lead l USING iclear.product p
                     WHERE p.name = $1 AND l.product_id = p.id AND l.phone = $2
                    RETURNING l.lead_id, l.lead_table::oid::int8 AS lead_table, l.id_column, l.paused_at)
         SELECT jsonb_agg(to_jsonb(t) ORDER BY t.paused_at) FROM t",
        &[TEXT, TEXT],
        &[product.into(), phone.into()],
    ))
}

/// Take up to `limit` leads whose code expired unconfirmed. Rows another
/// session holds are skipped (it is finishing them).
pub fn take_expired(limit: i64) -> Vec<PausedLead> {
    taken(query_value::<JsonB>(
        "WITH t AS (DELETE FROM iclear.paused_lead l
                     WHERE l.lead_id IN (SELECT x.lead_id FROM iclear.paused_lead x
                                          WHERE x.expires_at < now()
                                          ORDER BY x.expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                    RETURNING l.lead_id, l.lead_table::oid::int8 AS lead_table, l.id_column, l.expires_at)
         SELECT jsonb_agg(to_jsonb(t) ORDER BY t.expires_at) FROM t",
        &[INT8],
        &[limit.into()],
    ))
}

/// Write the final decision into the lead's row of its attached table: its
/// `iclear_status` and `iclear_decision` columns, those of them it has.
/// Returns the rows updated. The UPDATE runs as the table's owner: the
/// table's triggers, domains and constraints are the owner's code, and run
/// with the owner's rights, never with iclear's (src/privilege.rs); the
/// table's schema may be closed to every other role.
pub fn update_row(
    table: pg_sys::Oid,
    id_column: &str,
    lead_id: &str,
    status: &str,
    outcome: &Value,
) -> i64 {
    crate::privilege::as_owner_of(table, || {
        let statement: Option<String> = query_value(
            "SELECT format('UPDATE %s SET %s WHERE %I = $3::%s', t.oid::regclass,
                           string_agg(format('%I = $%s::%s', a.attname,
                                             CASE a.attname WHEN 'iclear_status' THEN 1 ELSE 2 END,
                                             format_type(a.atttypid, a.atttypmod)), ', '),
                           $2, (SELECT format_type(i.atttypid, i.atttypmod) FROM pg_attribute i
                                 WHERE i.attrelid = t.oid AND i.attname = $2 AND NOT i.attisdropped))
               FROM pg_class t JOIN pg_attribute a ON a.attrelid = t.oid
              WHERE t.oid = $1::oid AND a.attname IN ('iclear_status', 'iclear_decision')
                AND NOT a.attisdropped
              GROUP BY t.oid",
            &[INT8, TEXT],
            &[i64::from(table.to_u32()).into(), id_column.into()],
        );
        let Some(statement) = statement else {
            return 0; // no outcome columns: nothing to write
        };
        Spi::connect_mut(|c| {
            c.update(
                &statement,
                None,
                &[status.into(), JsonB(outcome.clone()).into(), lead_id.into()],
            )
            .map(|t| t.len() as i64)
        })
        .unwrap_or_else(|e| {
            crate::errors::Error::Internal(format!(
                "iclear: the paused lead's row in table {} cannot be updated: {e}",
                table.to_u32()
            ))
            .raise()
        })
    })
}
