//! The screening steps between the rule stages: field validation after
//! pre-validation, then the product's PL/DNPL.

use super::*;

/// Product-level PL/DNPL (docs/architecture.md "The pipeline" step 3).
pub(super) fn check_lists(cfg: &ProductConfig, lead: &mut Lead, facts: &mut dyn Facts) {
    let lists: Vec<_> = cfg.lists.iter().filter(|l| l.product_level).collect();
    let values: Vec<Option<String>> = lists
        .iter()
        .map(|l| {
            lead.fields
                .get(&l.field)
                .and_then(value_text)
                .map(|v| crate::keys::normalize_list_value_of(&l.field, &v))
                .filter(|v| !v.is_empty())
        })
        .collect();
    // One question for all lists; the store decides how to look them up.
    let probes: Vec<(i64, String)> = lists
        .iter()
        .zip(&values)
        .filter_map(|(l, v)| v.clone().map(|v| (l.id, v)))
        .collect();
    let hits = if probes.is_empty() {
        Vec::new()
    } else {
        facts.lists_containing(&probes)
    };
    for (list, value) in lists.into_iter().zip(values) {
        let on_list = hits.contains(&list.id);
        let reject = match (list.kind, &value) {
            (ListKind::Dnpl, Some(_)) => on_list,
            (ListKind::Dnpl, None) => false,
            (ListKind::Pl, Some(_)) => !on_list,
            (ListKind::Pl, None) => true,
        };
        if reject {
            let reason = match list.kind {
                ListKind::Dnpl => {
                    format!("{} is on the do-not-present list {}", list.field, list.name)
                }
                ListKind::Pl => format!("{} is not on the present list {}", list.field, list.name),
            };
            lead.log.push(LogEntry {
                stage: "lists",
                origin: "sync",
                kind: "list",
                ref_id: Some(list.id),
                name: Some(list.name.clone()),
                outcome: "reject".into(),
                detail: json!({"field": list.field, "kind": if list.kind == ListKind::Pl {"pl"} else {"dnpl"}}),
                ..LogEntry::default()
            });
            lead.reject(
                reason,
                json!({"kind": "list", "id": list.id, "name": list.name}),
            );
            return;
        }
    }
}

/// The product's field definitions, after pre-validation (which may repair
/// raw data) and before the lists: the first field that fails rejects the
/// lead, logged in the pre-validation stage (pre_screen_reject_log).
pub(super) fn validate(cfg: &ProductConfig, lead: &mut Lead) {
    for f in &cfg.fields {
        if let Some(why) = f.check(lead.fields.get(&f.name)) {
            lead.log.push(LogEntry {
                stage: "pre_validation",
                origin: lead.origin,
                kind: "validation",
                ref_id: Some(f.id),
                name: Some(f.name.clone()),
                outcome: "reject".into(),
                detail: json!({"reason": why}),
                ..LogEntry::default()
            });
            lead.reject(
                format!("field {}: {why}", f.name),
                json!({"kind": "validation", "id": f.id, "name": f.name}),
            );
            return;
        }
    }
}
