//! The verification history through its views (local tables, or a hub
//! reached with postgres_fdw: `iclear.use_verification_hub`). Every read and
//! write runs guarded, so an unreachable hub is an answer ("no response"),
//! not an aborted lead.

use super::caps::Period;
use super::{exec, guarded, query_value, INT8, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::service::verification_history::SmsRecord;
use pgrx::JsonB;

fn from_epoch(e: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros((e * 1e6) as i64)
}

pub fn signature_recorded_at(signature: &str) -> Result<Option<DateTime<Utc>>, String> {
    guarded(|| {
        query_value::<f64>(
            "SELECT extract(epoch FROM max(recorded_at))::float8 FROM iclear.verification_history
              WHERE signature = $1",
            &[TEXT],
            &[signature.into()],
        )
    })
    .map(|e| e.and_then(from_epoch))
}

pub fn record_signature(product: &str, signature: &str) -> Result<(), String> {
    guarded(|| {
        exec(
            "INSERT INTO iclear.verification_history (product, signature, recorded_at) VALUES ($1, $2, now())",
            &[TEXT, TEXT],
            &[product.into(), signature.into()],
        )
    })
}

/// As `record_signature`, for the product of this id (an accepted lead's
/// signature, `store_signature_on_accept`).
pub fn record_signature_of(product_id: i64, signature: &str) -> Result<(), String> {
    guarded(|| {
        exec(
            "INSERT INTO iclear.verification_history (product, signature, recorded_at)
             SELECT p.name, $2, now() FROM iclear.product p WHERE p.id = $1",
            &[INT8, TEXT],
            &[product_id.into(), signature.into()],
        )
    })
}

pub fn sms_verified(product: &str, phone: &str) -> Result<Option<SmsRecord>, String> {
    let doc = guarded(|| {
        query_value::<JsonB>(
            "SELECT jsonb_build_object('at', extract(epoch FROM verified_at)::float8, 'code', code)
               FROM iclear.sms_verification
              WHERE product = $1 AND phone = $2 AND status = 'verified'
              ORDER BY verified_at DESC LIMIT 1",
            &[TEXT, TEXT],
            &[product.into(), phone.into()],
        )
    })?;
    Ok(doc.and_then(|d| {
        Some(SmsRecord {
            verified_at: from_epoch(d.0["at"].as_f64()?)?,
            code: d.0["code"].as_str()?.to_string(),
        })
    }))
}

/// Seconds during which a phone's pending code is reused rather than a new
/// one sent: re-posts cannot pump SMS or expire a code the person is typing.
const SMS_RESEND_AFTER_S: i64 = 60;

/// A fresh 6-digit code, pending until `iclear.sms_code_ttl` (an older
/// pending code of the phone is expired), and the SMS queued when its caps
/// allow; Err when the `sms` service is not subscribed, or the phone has
/// had `iclear.sms_max_sends` codes in this window. A code sent in the last
/// minute is reused (no new SMS). The history keeps the code's keyed digest
/// (SECURITY.md "SMS codes"); the code itself waits in `sms_outbox` for the
/// worker, which deletes it once sent.
pub fn start_sms(product: &str, phone: &str, lead_id: &str) -> Result<Option<i64>, String> {
    let code = format!("{:06}", rand::random_range(0..1_000_000));
    let ttl = crate::gucs::sms_code_ttl_s();
    let recent = guarded(|| {
        query_value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM iclear.sms_verification
                             WHERE product = $1 AND phone = $2 AND status = 'pending'
                               AND created_at > now() - make_interval(secs => $3)
                               AND (expires_at IS NULL OR expires_at > now()))",
            &[TEXT, TEXT, INT8],
            &[product.into(), phone.into(), SMS_RESEND_AFTER_S.into()],
        )
        .unwrap_or(false)
    })?;
    if recent {
        return Ok(None);
    }
    // without it no code would ever be sent: the lead would wait for nothing
    let subscribed = guarded(|| {
        query_value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM iclear.service WHERE name = 'sms' AND subscription = 'enabled')",
            &[],
            &[],
        )
        .unwrap_or(false)
    })?;
    if !subscribed {
        return Err("the sms service is not subscribed".into());
    }
    let hashed = super::config::schema_at_least(6);
    if hashed {
        let sends = super::cap_limits::phone_cap(product, phone, Period::SmsSent);
        if let (Some(full), _) = super::caps::take(&[sends]) {
            return Err(format!(
                "{} reached",
                super::cap_limits::describe(&full, "sms")
            ));
        }
    }
    if let Some(cap) = super::cap_limits::take_global_caps("sms") {
        return Err(format!("no SMS can be sent: {cap} reached"));
    }
    guarded(|| {
        exec(
            "UPDATE iclear.sms_verification SET status = 'expired'
              WHERE product = $1 AND phone = $2 AND status = 'pending'",
            &[TEXT, TEXT],
            &[product.into(), phone.into()],
        );
        exec(
            if hashed {
                "INSERT INTO iclear.sms_verification (product, phone, code, status, attempts, created_at, expires_at, lead_id)
                 VALUES ($1, $2, iclear.sms_code_digest($1, $2, $3), 'pending', 0, now(),
                         now() + make_interval(secs => $4), $5)"
            } else {
                "INSERT INTO iclear.sms_verification (product, phone, code, status, attempts, created_at, expires_at, lead_id)
                 VALUES ($1, $2, $3, 'pending', 0, now(), now() + make_interval(secs => $4), $5)"
            },
            &[TEXT, TEXT, TEXT, INT8, TEXT],
            &[
                product.into(),
                phone.into(),
                code.as_str().into(),
                ttl.into(),
                lead_id.into(),
            ],
        );
        let job = query_value::<i64>(
            "INSERT INTO iclear.job (kind, product_id, lead_id, payload)
             SELECT 'sms', p.id, $3, jsonb_build_object('product', $1, 'phone', $2)
               FROM iclear.product p
              WHERE p.name = $1
                AND EXISTS (SELECT 1 FROM iclear.service WHERE name = 'sms' AND subscription = 'enabled')
             RETURNING id",
            &[TEXT, TEXT, TEXT],
            &[product.into(), phone.into(), lead_id.into()],
        );
        if let (Some(id), true) = (job, hashed) {
            exec(
                "INSERT INTO iclear.sms_outbox (job_id, code) VALUES ($1, $2)",
                &[INT8, TEXT],
                &[id.into(), code.as_str().into()],
            );
        }
        job
    })
}

/// The keyed digest of an SMS code of `phone` for `product`, as the
/// history keeps it (the code itself on a schema older than 0.6.0).
pub fn sms_code_digest(product: &str, phone: &str, code: &str) -> String {
    if !super::config::schema_at_least(6) {
        return code.to_string();
    }
    query_value::<String>(
        "SELECT iclear.sms_code_digest($1, $2, $3)",
        &[TEXT, TEXT, TEXT],
        &[product.into(), phone.into(), code.into()],
    )
    .unwrap_or_default()
}

/// What the worker needs to send the SMS of job `job_id`: Ok(Ok((endpoint,
/// cost, code))), Ok(Err(why)) when there is nothing to send any more
/// (confirmed, expired, replaced, unsubscribed), Err when the history
/// cannot be read. The code comes from `sms_outbox` (on a 0.5.0 schema,
/// until ALTER EXTENSION UPDATE, from the history, which kept it).
#[allow(clippy::type_complexity)]
pub fn sms_to_send(
    job_id: i64,
    product: &str,
    phone: &str,
) -> Result<Result<(String, f64, String), String>, String> {
    let outbox = super::config::schema_at_least(6);
    let doc = guarded(|| {
        query_value::<JsonB>(
            if outbox { SMS_TO_SEND } else { SMS_TO_SEND_0_5 },
            &[TEXT, TEXT, INT8],
            &[product.into(), phone.into(), job_id.into()],
        )
    })?;
    let Some(d) = doc.map(|d| d.0) else {
        return Ok(Err("the sms service is not subscribed".into()));
    };
    let (Some(endpoint), Some(code)) = (d["endpoint"].as_str(), d["code"].as_str()) else {
        return Ok(Err(
            "no endpoint, or the code is no longer pending (confirmed, expired or replaced)".into(),
        ));
    };
    Ok(Ok((
        endpoint.to_string(),
        d["cost"].as_f64().unwrap_or(0.0),
        code.to_string(),
    )))
}

/// The job's code from the outbox, while the phone's newest code is pending.
const SMS_TO_SEND: &str = "
SELECT jsonb_build_object('endpoint', coalesce(sec.endpoint, s.endpoint), 'cost', s.cost::float8,
         'code', (SELECT o.code FROM iclear.sms_outbox o
                   WHERE o.job_id = $3
                     AND EXISTS (SELECT 1 FROM iclear.sms_verification v
                                  WHERE v.product = $1 AND v.phone = $2 AND v.status = 'pending'
                                    AND (v.expires_at IS NULL OR v.expires_at > now())
                                    AND v.code = iclear.sms_code_digest($1, $2, o.code))))
  FROM iclear.service s LEFT JOIN iclear.service_secret sec ON sec.service = s.name
 WHERE s.name = 'sms' AND s.subscription = 'enabled'";

/// A 0.5.0 schema kept the code itself in the history.
const SMS_TO_SEND_0_5: &str = "
SELECT jsonb_build_object('endpoint', s.endpoint, 'cost', s.cost::float8,
         'code', (SELECT v.code FROM iclear.sms_verification v
                   WHERE v.product = $1 AND v.phone = $2 AND v.status = 'pending'
                     AND (v.expires_at IS NULL OR v.expires_at > now())
                     AND $3::int8 IS NOT NULL
                   ORDER BY v.created_at DESC LIMIT 1))
  FROM iclear.service s WHERE s.name = 'sms' AND s.subscription = 'enabled'";

/// The job's code is sent (or will never be): it leaves the outbox.
pub fn forget_sms_code(job_id: i64) {
    if super::config::schema_at_least(6) {
        exec(
            "DELETE FROM iclear.sms_outbox WHERE job_id = $1",
            &[INT8],
            &[job_id.into()],
        );
    }
}
