//! The SQL entry points (docs/contract.md) and the configuration checks the
//! validation triggers call.

use crate::errors::Error;
use crate::lead::{self, LeadError};
use crate::row::AttachOptions;
use crate::store;
use iclear_engine::actions::Action;
use iclear_engine::conditions::Condition;
use iclear_engine::config::RuleStage;
use iclear_engine::service::Settings;
use iclear_engine::ConfigError;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

fn refuse(table: &str, e: ConfigError) -> ! {
    Error::Check(e.within(table).to_string()).raise()
}

pub(crate) fn raise(e: LeadError) -> ! {
    let message = e.to_string();
    match e {
        LeadError::Input(_) => Error::Input(message),
        LeadError::Config(_) => Error::Config(message),
        LeadError::Unavailable(_) => Error::Unavailable(message),
    }
    .raise()
}

/// A `jsonb` argument read within limits (review finding 10): past
/// `limits::LEAD_BYTES` of jsonb, or nested deeper than the JSON reader's
/// 128 levels, it is refused with an error naming the limit (pgrx's `JsonB`
/// would read any size, and fail on depth with a panic's message).
pub struct LeadJson(pub Value);

unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for LeadJson {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(LeadJson);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"),
    ));
}

impl pgrx::FromDatum for LeadJson {
    unsafe fn from_polymorphic_datum(
        datum: pgrx::pg_sys::Datum,
        is_null: bool,
        _: pgrx::pg_sys::Oid,
    ) -> Option<LeadJson> {
        use iclear_engine::envelope::limits;
        use iclear_engine::error::InputError;
        if is_null {
            return None;
        }
        let varlena = datum.cast_mut_ptr::<pgrx::pg_sys::varlena>();
        let detoasted = pgrx::pg_sys::pg_detoast_datum_packed(varlena);
        let size = pgrx::varsize_any_exhdr(detoasted);
        let refuse = |why: String| -> ! { raise(LeadError::Input(InputError::new("lead", why))) };
        if size > limits::LEAD_BYTES {
            refuse(format!(
                "is {size} bytes of jsonb, over the limit of {} bytes",
                limits::LEAD_BYTES
            ));
        }
        let text = pgrx::direct_function_call::<&std::ffi::CStr>(
            pgrx::pg_sys::jsonb_out,
            &[Some(pgrx::pg_sys::Datum::from(detoasted))],
        )
        .unwrap_or_else(|| refuse("cannot be read as jsonb".into()));
        let parsed = serde_json::from_str::<Value>(&text.to_string_lossy());
        pgrx::pg_sys::pfree(text.as_ptr() as *mut std::ffi::c_void);
        if detoasted != varlena {
            pgrx::pg_sys::pfree(detoasted as *mut std::ffi::c_void);
        }
        match parsed {
            Ok(v) => Some(LeadJson(v)),
            Err(e) if e.to_string().contains("recursion limit") => {
                refuse("is nested deeper than the limit of 128 levels".into())
            }
            Err(e) => refuse(format!("cannot be read: {e}")),
        }
    }
}

// Unboxed like pgrx's own FromDatum types (pgrx::callconv's argue_from_datum).
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for LeadJson {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        arg.unbox_arg_using_from_datum()
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        arg.unbox_arg_using_from_datum().into()
    }
}

/// Process one lead envelope; returns the decision (docs/contract.md).
#[pg_extern(volatile, parallel_unsafe)]
fn process(lead: LeadJson) -> JsonB {
    match lead::process_posted(&lead.0) {
        Ok(d) => JsonB(d),
        Err(e) => raise(e),
    }
}

/// Store the signature of a verified lead; returns it (hex). Runs as its
/// owner, so the `iclear_verifier` role needs no table privileges.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_verification(product: &str, lead: JsonB) -> String {
    match lead::record_verification(product, &lead.0) {
        Ok(s) => s,
        Err(e) => raise(e),
    }
}

/// Advanced Rules on Redirect for an already processed lead.
#[pg_extern(volatile, parallel_unsafe)]
fn process_redirect(lead_id: &str, redirect: LeadJson) -> JsonB {
    match lead::process_redirect(lead_id, &redirect.0) {
        Ok(d) => JsonB(d),
        Err(e) => raise(e),
    }
}

/// Replay the product's stored leads of [since, until) against its
/// configuration with `changes` (the shape of export_config): nothing is
/// written, nothing is sent. See src/backtest.rs for the result.
#[pg_extern(volatile, parallel_unsafe)]
fn backtest(
    product: &str,
    since: pgrx::datum::TimestampWithTimeZone,
    until: default!(pgrx::datum::TimestampWithTimeZone, "now()"),
    changes: default!(JsonB, "'{}'"),
) -> JsonB {
    JsonB(crate::backtest::backtest(product, since, until, &changes.0))
}

/// Resume the leads of `product` paused on `phone`, which was just verified
/// (iclear.confirm_sms and iclear.record_sms_verification call it; nobody
/// else may: it would resume leads without a code). Returns the leads
/// finished.
#[pg_extern(volatile, parallel_unsafe)]
fn resume_paused_leads(product: &str, phone: &str) -> i32 {
    let taken = store::paused::take_verified(product, phone);
    lead::finish_paused(taken, iclear_engine::pipeline::PauseEnd::Verified) as i32
}

fn options(v: &JsonB) -> AttachOptions {
    AttachOptions::parse(&v.0).unwrap_or_else(|e| Error::Input(e).raise())
}

/// Tell every backend that the configuration changed (the configuration
/// tables' triggers call it; see src/store/config.rs).
#[pg_extern(volatile, parallel_unsafe)]
fn config_changed() {
    store::config::announce_change();
}

/// Refuse invalid attach options, naming the key.
#[pg_extern(immutable, parallel_safe)]
fn check_attach_options(options: JsonB) {
    self::options(&options);
}

/// Refuse an invalid rule condition, naming the setting.
#[pg_extern(immutable, parallel_safe)]
fn check_condition(category: &str, parameter: &str, operator: &str, value: Option<JsonB>) {
    let value = value.map(|v| v.0).unwrap_or(Value::Null);
    if let Err(e) = Condition::new(0, category, parameter, operator, value) {
        refuse("rule_condition", e)
    }
}

/// Refuse an invalid rule action (unknown, wrong stage, bad config).
#[pg_extern(immutable, parallel_safe)]
fn check_action(stage: Option<&str>, action: &str, config: JsonB) {
    let Some(stage) = stage else {
        refuse(
            "rule_action",
            ConfigError::new("rule_id", "names no existing rule"),
        )
    };
    let stage = RuleStage::parse(stage).unwrap_or_else(|e| refuse("rule", e));
    if let Err(e) = Action::new(0, stage, action, &config.0) {
        refuse("rule_action", e)
    }
}

/// The list ids an action refers to (for the foreign-key check).
#[pg_extern(immutable, parallel_safe)]
fn action_list_ids(action: &str, config: JsonB) -> Vec<i64> {
    match Action::new(0, RuleStage::Processing, action, &config.0)
        .or_else(|_| Action::new(0, RuleStage::Redirect, action, &config.0))
    {
        Ok(a) => a.list_ids().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Refuse invalid global rule settings for `service`.
#[pg_extern(immutable, parallel_safe)]
fn check_global_rule_settings(service: &str, settings: JsonB) {
    if let Err(e) = Settings::parse(service, &settings.0) {
        refuse("global_rule", e)
    }
}

/// Refuse an invalid product field definition (a `product_field` row as
/// jsonb), naming the column.
#[pg_extern(immutable, parallel_safe)]
fn check_product_field(field: JsonB) {
    let doc: iclear_engine::validation::FieldDoc = serde_json::from_value(field.0)
        .unwrap_or_else(|e| refuse("product_field", ConfigError::new("row", e.to_string())));
    if let Err(e) = doc.build() {
        refuse("product_field", e)
    }
}

/// The installed iclear version.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Refuse a service endpoint that is not an http(s) URL, or that the egress
/// policy (`iclear.allowed_endpoints`) does not allow, naming the setting.
#[pg_extern(stable, parallel_safe)]
fn check_endpoint(endpoint: &str) {
    let refused = |why: String| -> ! {
        Error::Check(format!("invalid setting service.endpoint: {why}")).raise()
    };
    if let Err(e) = crate::gucs::apply_egress_policy() {
        refused(e)
    }
    if let Err(e) = iclear_services::egress::policy().check_endpoint(endpoint) {
        refused(format!("{}: {e}", iclear_services::egress::shown(endpoint)))
    }
}

/// An endpoint as iclear shows, logs and audits it: its user, password and
/// query values masked.
#[pg_extern(immutable, parallel_safe)]
fn shown_endpoint(endpoint: &str) -> String {
    iclear_services::egress::shown(endpoint)
}

/// Internal (confirm_sms): may a code be tried for `phone` of `product`?
/// False once `iclear.sms_max_failed` wrong codes were tried in the window.
#[pg_extern(volatile, parallel_unsafe)]
fn sms_locked_out(product: &str, phone: &str) -> bool {
    use crate::store::{cap_limits, caps};
    let cap = cap_limits::phone_cap(product, phone, caps::Period::SmsFailed);
    caps::held(&cap) >= cap.limit
}

/// Internal (confirm_sms): count a wrong code tried for `phone` of
/// `product`. It stays counted even when the caller rolls back (SECURITY.md
/// "SMS codes").
#[pg_extern(volatile, parallel_unsafe)]
fn count_sms_failure(product: &str, phone: &str) {
    use crate::store::{cap_limits, caps};
    let cap = cap_limits::phone_cap(product, phone, caps::Period::SmsFailed);
    let (full, take) = caps::take(&[cap]);
    if full.is_none() {
        caps::keep(take);
        caps::write_unwritten();
    }
}

/// While on, configuration changes of this transaction bump the
/// configuration version once, when it is turned off (import_config uses
/// it; a commit with a bump still deferred is refused).
#[pg_extern(volatile, parallel_unsafe)]
fn defer_config_version(on: bool) {
    store::config::defer_version(on);
}

/// Internal (bump_config_version): is the version bump deferred?
#[pg_extern(volatile, parallel_unsafe)]
fn config_version_deferred() -> bool {
    store::config::version_deferred()
}

/// The consumer of an erasure request, refused naming the argument.
fn consumer(email: Option<&str>, phone: Option<&str>) -> iclear_engine::erasure::Consumer {
    iclear_engine::erasure::Consumer::new(email, phone)
        .unwrap_or_else(|e| Error::Input(format!("iclear.forget: {e}")).raise())
}

/// Internal (forget): does `doc` name the consumer in any of its strings?
#[pg_extern(immutable, parallel_safe)]
fn erasure_mentions(doc: Option<pgrx::Json>, email: Option<&str>, phone: Option<&str>) -> bool {
    doc.is_some_and(|d| consumer(email, phone).mentioned_in(&d.0))
}

/// Internal (forget): `doc` with every string that names the consumer
/// replaced by "[erased]".
#[pg_extern(immutable, parallel_safe)]
fn erasure_erased(
    doc: Option<pgrx::Json>,
    email: Option<&str>,
    phone: Option<&str>,
) -> Option<pgrx::Json> {
    doc.map(|d| pgrx::Json(consumer(email, phone).erase(d.0).0))
}

/// Internal (forget): the verification signature of a stored lead envelope
/// under its product's template (NULL: none).
#[pg_extern(stable, parallel_safe)]
fn lead_signature(product: &str, envelope: pgrx::Json) -> Option<String> {
    lead::verification_signature(product, &envelope.0)
        .ok()
        .flatten()
}

/// Internal (the credential check of global_rule): the credential the
/// settings (with the stored credentials merged in) lack, if any.
#[pg_extern(immutable, parallel_safe)]
fn missing_credential(service: &str, settings: JsonB) -> Option<&'static str> {
    Settings::parse(service, &settings.0)
        .ok()
        .and_then(|s| s.missing_credential())
}

/// Fill the lead history of `product` from its decisions since `since`
/// (a new `history` condition with a longer window than was kept). Its
/// rows from `since` are replaced. Returns the rows written. Runs as
/// iclear_processor, whose table the history is.
#[pg_extern(volatile, parallel_unsafe)]
fn rebuild_history(product: &str, since: pgrx::datum::TimestampWithTimeZone) -> i64 {
    let id = crate::privilege::as_processor(|| store::backtest::product_id(product))
        .unwrap_or_else(|| {
            Error::Input(format!(
                "iclear.rebuild_history: product {product:?} does not exist"
            ))
            .raise()
        });
    crate::progress::reporting(
        crate::progress::Command::RebuildHistory,
        Some(id),
        0,
        || crate::privilege::as_processor(|| store::history::rebuild(id, since)),
    )
}

/// Internal (forget): the history digests a consumer's email and phone make.
#[pg_extern(stable, parallel_safe)]
fn erasure_history_digests(email: Option<&str>, phone: Option<&str>) -> Vec<i64> {
    store::history::erasure_digests(email, phone)
}

/// `iclear.progress_start(command, product, total)`: for the SQL functions
/// that report their progress (import_config, maintain, forget).
#[pg_extern(volatile, parallel_unsafe)]
fn progress_start(command: &str, product: Option<&str>, total: i64) {
    let Some(c) = crate::progress::Command::parse(command) else {
        Error::Input(format!(
            "iclear.progress_start: unknown command {command:?}"
        ))
        .raise()
    };
    let product_id = product.and_then(store::backtest::product_id);
    crate::progress::start(c, product_id, total);
}
