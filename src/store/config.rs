//! Product configuration, cached per backend and keyed by the configuration
//! version (sql/bootstrap.sql), so a lead does not re-read every
//! configuration table. Nor does it read the version: every change also
//! invalidates the version table in the relation cache (`config_changed`),
//! and the backend reads the version again only after such an invalidation.
//! Postgres delivers it with the usual guarantees: to this backend at the
//! next command (and again if the change rolls back), to the others at
//! commit, before their next transaction starts. Two windows remain, both
//! bounded: a statement already running (one INSERT of many rows, a COPY)
//! keeps the configuration it started with, and a transaction that starts
//! in the instant between another's commit and its invalidation uses the
//! old configuration for that one transaction.

use super::{query_pair, query_value, INT8, TEXT};
use chrono::{DateTime, Utc};
use iclear_engine::config::ProductConfig;
use iclear_engine::ConfigError;
use pgrx::pg_sys;
use pgrx::JsonB;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
struct Cache {
    /// (configuration version, oid of the version table): the oid changes
    /// when the extension is dropped and created again in this backend.
    version: (i64, i64),
    products: HashMap<String, Rc<ProductConfig>>,
    /// source id -> created_at; sources only change through config-versioned edits
    sources: HashMap<i64, DateTime<Utc>>,
    /// Which release's tables the schema has (see `schema_at_least`).
    schema_level: Option<u8>,
    /// Whether this database is a store of a hub, or a hub (`hub_role`).
    hub_role: Option<HubRole>,
}

/// This database's place in a hub-and-stores topology (docs/guide/hub.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubRole {
    Standalone,
    /// A store of a hub, by its name: it writes its decisions for the hub
    /// and spends global caps from the hub's leases.
    Store(String),
    /// A hub with stores: its own leads spend what the stores do not hold.
    Hub,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    /// Invalidations of the version table received (or possibly missed) so
    /// far, and how many of them the cache has been checked against.
    static INVALIDATIONS: Cell<u64> = const { Cell::new(1) };
    static CHECKED: Cell<u64> = const { Cell::new(0) };
    static VERSION_TABLE: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    static LISTENING: Cell<bool> = const { Cell::new(false) };
}

/// Relation cache callback: any invalidation of the version table (or of
/// the whole cache, InvalidOid) means the version must be read again.
unsafe extern "C-unwind" fn on_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || relid == VERSION_TABLE.get() {
        INVALIDATIONS.set(INVALIDATIONS.get() + 1);
    }
}

/// Invalidate the version table in every backend's relation cache (called
/// by iclear.bump_config_version). Looked up by name each time: the table
/// this backend last read may have been dropped with the extension since.
pub fn announce_change() {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"iclear".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return;
        }
        let oid = pg_sys::get_relname_relid(c"config_version".as_ptr(), nsp);
        if oid != pg_sys::InvalidOid {
            pg_sys::CacheInvalidateRelcacheByRelid(oid);
        }
    }
}

/// Read the version again before the next lead, invalidation or not: the
/// entry points of older schemas use it, whose configuration triggers do
/// not call `config_changed` (src/compat.rs).
pub fn forget_checked() {
    INVALIDATIONS.set(INVALIDATIONS.get() + 1);
}

/// Read the configuration version if an invalidation came since the last
/// read, clearing the cache when it moved.
fn refresh() {
    if !LISTENING.get() {
        unsafe {
            pg_sys::CacheRegisterRelcacheCallback(
                Some(on_invalidation),
                pg_sys::Datum::from(0usize),
            )
        };
        LISTENING.set(true);
    }
    let seen = INVALIDATIONS.get();
    if CHECKED.get() == seen {
        return;
    }
    let (v, oid) =
        query_pair::<i64, i64>("SELECT version, tableoid::int8 FROM iclear.config_version");
    let v = (v.unwrap_or(0), oid.unwrap_or(0));
    VERSION_TABLE.set(pg_sys::Oid::from(v.1 as u32));
    CACHE.with_borrow_mut(|c| {
        if c.version != v {
            *c = Cache {
                version: v,
                ..Cache::default()
            };
        }
        // (joining or leaving a hub announces a change without a new version)
        c.hub_role = None;
    });
    // An invalidation that arrived during the read leaves `seen` behind it.
    // Under REPEATABLE READ or SERIALIZABLE the read used the transaction's
    // snapshot, which may predate an invalidation taken in mid-transaction:
    // read again in the next transaction rather than trust it.
    if unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32 {
        CHECKED.set(seen);
    }
}

const LOAD: &str = r#"
SELECT jsonb_build_object(
  'id', p.id, 'name', p.name, 'kind', p.kind, 'time_zone', p.time_zone,
  'rules', coalesce((
     SELECT jsonb_agg(to_jsonb(r) || jsonb_build_object(
              'conditions', coalesce((SELECT jsonb_agg(to_jsonb(c) ORDER BY c.id)
                                        FROM iclear.rule_condition c WHERE c.rule_id = r.id), '[]'),
              'actions', coalesce((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.position, a.id)
                                     FROM iclear.rule_action a
                                    WHERE a.rule_id = r.id AND a.status = 'active'), '[]'))
            ORDER BY cat.position NULLS FIRST, cat.id NULLS FIRST, r.position, r.id)
       FROM iclear.rule r
       LEFT JOIN iclear.rule_category cat ON cat.id = r.category_id
      WHERE r.product_id = p.id AND r.status IN ('active', 'shadow')), '[]'),
  'lists', coalesce((
     SELECT jsonb_agg(jsonb_build_object('id', l.id, 'name', l.name, 'kind', l.kind, 'field', l.field,
              'product_level', EXISTS (SELECT 1 FROM iclear.list_product lp
                                        WHERE lp.list_id = l.id AND lp.product_id = p.id))
            ORDER BY l.id)
       FROM iclear.list l), '[]'),
  'global_rules', coalesce((
     SELECT jsonb_agg(to_jsonb(g) || jsonb_build_object(
              'subscription', s.subscription, 'cost', s.cost,
              'endpoint', coalesce(sec.endpoint, s.endpoint),
              'settings', g.settings || coalesce(cr.credentials, '{}'))
            ORDER BY g.position, g.id)
       FROM iclear.global_rule g JOIN iclear.service s ON s.name = g.service
       LEFT JOIN iclear.service_secret sec ON sec.service = s.name
       LEFT JOIN iclear.global_rule_credential cr ON cr.global_rule_id = g.id
      WHERE g.product_id = p.id), '[]'),
  'fields', coalesce((
     SELECT jsonb_agg(to_jsonb(f) ORDER BY f.id) FROM iclear.product_field f
      WHERE f.product_id = p.id), '[]'),
  'tracking', EXISTS (SELECT 1 FROM iclear.service t
                       WHERE t.name = 'tracking' AND t.subscription = 'enabled' AND t.endpoint IS NOT NULL),
  'config_version', (SELECT v.version FROM iclear.config_version v),
  'history_keys', coalesce((SELECT jsonb_agg(DISTINCT c.parameter) FROM iclear.rule_condition c
                             WHERE c.category = 'history'), '[]'))
FROM iclear.product p WHERE p.name = $1"#;

/// The parts of `LOAD` that read 0.6.0's tables: an endpoint's secret, a
/// product's time zone, and the rule caps' meaning (an older schema's
/// rules count as 0.5.0 counted: every match, every source).
const WITH_SECRETS: [(&str, &str); 4] = [
    ("coalesce(sec.endpoint, s.endpoint)", "s.endpoint"),
    (
        "\n       LEFT JOIN iclear.service_secret sec ON sec.service = s.name",
        "",
    ),
    (" 'time_zone', p.time_zone,", ""),
    (
        "SELECT jsonb_agg(to_jsonb(r) || jsonb_build_object(",
        "SELECT jsonb_agg(to_jsonb(r) || '{\"cap_counts\": \"matches\", \"per_source_scope\": \"all_sources\"}' || jsonb_build_object(",
    ),
];

/// The parts of `LOAD` that read 0.5.0's tables: credentials, product fields.
const WITH_CREDENTIALS: [&str; 3] = [
    ",\n              'settings', g.settings || coalesce(cr.credentials, '{}')",
    "\n       LEFT JOIN iclear.global_rule_credential cr ON cr.global_rule_id = g.id",
    ",\n  'fields', coalesce((\n     SELECT jsonb_agg(to_jsonb(f) ORDER BY f.id) FROM iclear.product_field f\n      WHERE f.product_id = p.id), '[]')",
];

/// `LOAD` for the 0.5.0 schema (level 5), which kept an endpoint whole, and
/// for the 0.4.0 schema (level 4), which kept credentials in the settings.
fn load_older(level: u8) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] = [const { std::sync::OnceLock::new() }; 2];
    SQL[usize::from(level >= 5)].get_or_init(|| {
        let mut sql = WITH_SECRETS
            .iter()
            .fold(LOAD.to_string(), |sql, (part, old)| sql.replace(part, old));
        if level < 5 {
            sql = WITH_CREDENTIALS
                .iter()
                .fold(sql, |sql, part| sql.replace(part, ""));
        }
        debug_assert!(!sql.contains("service_secret") && !sql.contains("time_zone"));
        debug_assert!(level >= 5 || !sql.contains("credential") && !sql.contains("product_field"));
        sql
    })
}

/// Does the installed schema have the tables of release 0.`level`.0 (4, 5
/// or 6)? Between installing a new library (and restarting) and `ALTER
/// EXTENSION iclear UPDATE`, the old schema's leads go on through the old
/// tables (src/compat.rs); the update moves the configuration version, so
/// this is asked again after it.
pub fn schema_at_least(level: u8) -> bool {
    refresh();
    let known = CACHE.with_borrow(|c| c.schema_level);
    let found = known.unwrap_or_else(|| {
        let found = query_value::<i32>(
            "SELECT CASE WHEN pg_catalog.to_regclass('iclear.service_secret') IS NOT NULL THEN 6
                         WHEN pg_catalog.to_regclass('iclear.sent_mark') IS NOT NULL THEN 5
                         ELSE 4 END",
            &[],
            &[],
        )
        .unwrap_or(4) as u8;
        CACHE.with_borrow_mut(|c| c.schema_level = Some(found));
        found
    });
    found >= level
}

/// This database's place in a hub-and-stores topology, read once per
/// configuration version (join_hub, leave_hub and hub_add_store announce a
/// change).
pub fn hub_role() -> HubRole {
    if !schema_at_least(6) {
        return HubRole::Standalone;
    }
    refresh();
    if let Some(r) = CACHE.with_borrow(|c| c.hub_role.clone()) {
        return r;
    }
    let (store, hub) = query_pair::<String, bool>(
        "SELECT (SELECT m.store FROM iclear.hub_membership m), EXISTS (SELECT 1 FROM iclear.hub_store)",
    );
    let role = match (store, hub) {
        (Some(s), _) => HubRole::Store(s),
        (None, Some(true)) => HubRole::Hub,
        _ => HubRole::Standalone,
    };
    CACHE.with_borrow_mut(|c| c.hub_role = Some(role.clone()));
    role
}

/// The configuration of `product`, or None when there is no such product.
pub fn product(name: &str) -> Result<Option<Rc<ProductConfig>>, ConfigError> {
    let cached = crate::gucs::config_cache();
    if cached {
        refresh();
        if let Some(p) = CACHE.with_borrow(|c| c.products.get(name).cloned()) {
            return Ok(Some(p));
        }
    }
    let Some(cfg) = load(name)? else {
        return Ok(None);
    };
    let cfg = Rc::new(cfg);
    if cached {
        CACHE.with_borrow_mut(|c| c.products.insert(name.to_string(), cfg.clone()));
    }
    Ok(Some(cfg))
}

/// The configuration of `product` as the tables hold it now, bypassing the
/// cache (a backtest reads a configuration it then rolls back).
pub fn load(name: &str) -> Result<Option<ProductConfig>, ConfigError> {
    let sql = if schema_at_least(6) {
        LOAD
    } else if schema_at_least(5) {
        load_older(5)
    } else {
        load_older(4)
    };
    let Some(doc) = query_value::<JsonB>(sql, &[TEXT], &[name.into()]) else {
        return Ok(None);
    };
    ProductConfig::from_json(doc.0).map(Some)
}

/// When source `id` was registered (None: never seen); registers nothing.
pub fn source_seen_at(id: i64) -> Option<DateTime<Utc>> {
    let seen: Option<f64> = query_value(
        "SELECT extract(epoch FROM created_at)::float8 FROM iclear.source WHERE id = $1",
        &[INT8],
        &[id.into()],
    );
    seen.and_then(|e| DateTime::from_timestamp_micros((e * 1e6) as i64))
}

/// Register a source on its first lead; returns when it was first seen.
pub fn register_source(
    id: i64,
    publisher_id: Option<i64>,
    channel_id: Option<i64>,
    given: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let cached = crate::gucs::config_cache();
    if let Some(t) = CACHE
        .with_borrow(|c| c.sources.get(&id).copied())
        .filter(|_| cached)
    {
        return given.unwrap_or(t);
    }
    let seen: Option<f64> = query_value(
        "SELECT extract(epoch FROM created_at)::float8 FROM iclear.source WHERE id = $1",
        &[INT8],
        &[id.into()],
    );
    // A first sight: registered unless another open transaction is
    // registering it right now, as its lock or its row in the index says
    // (waiting for it could deadlock a multi-row insert that meets new
    // sources in the other order).
    let epoch = seen.or_else(|| {
        let keys = [(pg_sys::F_INT8EQ, pg_sys::Datum::from(id))];
        if !super::try_xact_lock(super::LOCK_SOURCE, &[&id.to_string()])
            || super::written_elsewhere(c"source", c"source_pkey", &keys, false)
        {
            return None;
        }
        query_value(
            "WITH ins AS (INSERT INTO iclear.source (id, publisher_id, channel_id, created_at)
                          VALUES ($1, $2, $3, coalesce(to_timestamp($4::int8 / 1e6), now()))
                          ON CONFLICT (id) DO NOTHING RETURNING created_at)
             SELECT extract(epoch FROM created_at)::float8 FROM ins
             UNION ALL
             SELECT extract(epoch FROM created_at)::float8 FROM iclear.source WHERE id = $1
             LIMIT 1",
            &[INT8, INT8, INT8, INT8],
            &[
                id.into(),
                publisher_id.into(),
                channel_id.into(),
                given.map(|t| t.timestamp_micros()).into(),
            ],
        )
    });
    // None only when a concurrent transaction is registering it.
    let t = epoch
        .and_then(|e| DateTime::from_timestamp_micros((e * 1e6) as i64))
        .unwrap_or_else(Utc::now);
    if cached {
        CACHE.with_borrow_mut(|c| c.sources.insert(id, t));
    }
    // the lead store's own date, when the lead carries it, over the row's
    given.unwrap_or(t)
}

/// The endpoint of `service` while it is subscribed (the whole URL, its
/// secret parts included).
pub fn subscribed_endpoint(service: &str) -> Option<String> {
    if !schema_at_least(6) {
        return query_value::<String>(
            "SELECT endpoint FROM iclear.service WHERE name = $1 AND subscription = 'enabled'",
            &[TEXT],
            &[service.into()],
        );
    }
    query_value::<String>(
        "SELECT coalesce(sec.endpoint, s.endpoint) FROM iclear.service s
           LEFT JOIN iclear.service_secret sec ON sec.service = s.name
          WHERE s.name = $1 AND s.subscription = 'enabled'",
        &[TEXT],
        &[service.into()],
    )
}

// ------------------------------------------------- deferred version bumps

thread_local! {
    /// `iclear.defer_config_version(true)` is in force: the configuration
    /// tables' statements do not bump the version one by one.
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
    /// The shallowest (sub)transaction nesting level with a bump deferred
    /// and not made yet (0: none).
    static PENDING: Cell<i32> = const { Cell::new(0) };
    static CALLBACKS: Cell<bool> = const { Cell::new(false) };
}

fn nest_level() -> i32 {
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT if PENDING.get() > 0 => {
            DEFERRED.set(false);
            PENDING.set(0);
            crate::errors::Error::Internal(
                "iclear: configuration changes were made while iclear.defer_config_version(true) was in force; call iclear.defer_config_version(false) before committing".into(),
            )
            .raise()
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_PARALLEL_ABORT
        | XACT_EVENT_PREPARE => {
            DEFERRED.set(false);
            PENDING.set(0);
        }
        _ => {}
    }
}

unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    let level = nest_level();
    let pending = PENDING.get();
    match event {
        // the changes of a committed subtransaction are its parent's now
        SUBXACT_EVENT_COMMIT_SUB if pending >= level => PENDING.set(level - 1),
        // those of a rolled-back one are gone: nothing to announce for them
        SUBXACT_EVENT_ABORT_SUB if pending >= level => PENDING.set(0),
        _ => {}
    }
}

/// `iclear.defer_config_version(on)`: while on, the configuration tables'
/// statements leave the version alone (an import of thousands of rules
/// updated, and held, the version row at every statement); off makes the
/// one bump they deferred. A transaction that tries to commit with bumps
/// deferred is refused, so no change goes unannounced, and a rolled-back
/// subtransaction's changes (a dry run's) need none.
pub fn defer_version(on: bool) {
    if !CALLBACKS.get() {
        unsafe {
            pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
        }
        CALLBACKS.set(true);
    }
    DEFERRED.set(on);
    if !on && PENDING.get() > 0 {
        PENDING.set(0);
        // as bump_config_version does it: with the processor's rights
        crate::privilege::as_processor(|| {
            super::exec(
                "UPDATE iclear.config_version SET version = nextval('iclear.config_version_seq')",
                &[],
                &[],
            )
        });
        announce_change();
    }
}

/// Asked by `iclear.bump_config_version`: is the bump deferred? (It is
/// then owed, at this nesting level.)
pub fn version_deferred() -> bool {
    if !DEFERRED.get() {
        return false;
    }
    let level = nest_level();
    let pending = PENDING.get();
    if pending == 0 || level < pending {
        PENDING.set(level);
    }
    true
}
