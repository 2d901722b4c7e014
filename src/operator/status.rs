//! The status each RelayPolicy gets, and the Event for each change of verdict. The
//! status is the whole of what the operator says about a policy, written with
//! server-side apply under the field manager `sluice-operator`: fields it stops writing
//! (a resolved `Conflict` condition) disappear.

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};

use super::desired::Verdict;
use crate::policy::model::{Condition, RelayPolicyResource, RelayPolicyStatus};

pub const FIELD_MANAGER: &str = "sluice-operator";

/// Event notes are capped by the API server (1 KiB).
const NOTE_MAX: usize = 1024;

/// A condition's message is for a person: long enough for any one error, and bounded,
/// so that many policies conflicting with one cannot grow its status without end.
const MESSAGE_MAX: usize = 4096;

/// Conflicts named on the policy that won them; the rest are counted.
const CONFLICTS_SHOWN: usize = 5;

/// The status a policy should have. `in_force` is the revision of the snapshot in force.
/// A condition keeps its `lastTransitionTime` while its status stays the same, so an
/// unchanged verdict gives an unchanged status, and no write.
pub fn desired_status(
    policy: &RelayPolicyResource,
    verdict: &Verdict,
    in_force: Option<&str>,
    now: DateTime<Utc>,
) -> RelayPolicyStatus {
    let generation = policy.metadata.generation;
    let current = policy.status.as_ref();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let since = current
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_rfc3339_opts(SecondsFormat::Secs, true));
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: truncate(message, MESSAGE_MAX),
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let ready = match &verdict.refused {
        None => condition(
            "Ready",
            "True",
            "Accepted",
            format!(
                "the rules of this policy are in force ({} users, {} domains)",
                verdict.users, verdict.domains
            ),
        ),
        Some((refusal, message)) => condition("Ready", "False", refusal.reason(), message.clone()),
    };
    let mut conditions = vec![ready];
    if !verdict.conflicts.is_empty() {
        let shown = &verdict.conflicts[..verdict.conflicts.len().min(CONFLICTS_SHOWN)];
        let more = match verdict.conflicts.len() - shown.len() {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        conditions.push(condition(
            "Conflict",
            "True",
            "LaterPolicyRefused",
            format!(
                "this policy stays in force; later policies conflicting with it were refused: {}{more}",
                shown.join("; ")
            ),
        ));
    }
    RelayPolicyStatus {
        observed_generation: generation,
        conditions,
        users: verdict.users,
        domains: verdict.domains,
        revision: match verdict.refused {
            None => in_force.map(str::to_string),
            Some(_) => None,
        },
    }
}

/// The Event for a new status, when the policy's verdict changed or its spec did;
/// `None` when only the snapshot around it moved.
pub fn event(policy: &RelayPolicyResource, status: &RelayPolicyStatus) -> Option<Event> {
    let ready = |s: &RelayPolicyStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let old = policy.status.as_ref();
    if old.and_then(ready) == ready(status)
        && old.and_then(|s| s.observed_generation) == status.observed_generation
    {
        return None;
    }
    let (ok, reason, message) = ready(status)?;
    let accepted = ok == "True";
    let note = match accepted {
        true => format!(
            "accepted: {message}; snapshot revision {}",
            status.revision.as_deref().unwrap_or("-")
        ),
        false => format!("refused: {message}"),
    };
    Some(Event {
        type_: match accepted {
            true => EventType::Normal,
            false => EventType::Warning,
        },
        reason,
        note: Some(truncate(note, NOTE_MAX)),
        action: "Compile".to_string(),
        secondary: None,
    })
}

/// Writes a status by server-side apply, taking the fields over from anyone else.
pub async fn apply(
    api: &Api<RelayPolicyResource>,
    name: &str,
    status: &RelayPolicyStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "RelayPolicy",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&patch))
        .await
        .map(|_| ())
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::desired::Refusal;
    use crate::policy::model::RelayPolicySpec;

    fn verdict(refused: Option<(Refusal, String)>, conflicts: usize) -> Verdict {
        Verdict {
            refused,
            users: 1,
            domains: 2,
            conflicts: (0..conflicts).map(|i| format!("conflict {i}")).collect(),
        }
    }

    #[test]
    fn an_unchanged_verdict_keeps_its_transition_time_and_gives_no_event() {
        let mut p = RelayPolicyResource::new("a", RelayPolicySpec::default());
        p.metadata.generation = Some(3);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let first = desired_status(
            &p,
            &verdict(None, 0),
            Some("rev1"),
            at("2026-01-01T00:00:00Z"),
        );
        assert!(event(&p, &first).is_some());
        p.status = Some(first.clone());
        let later = desired_status(
            &p,
            &verdict(None, 0),
            Some("rev2"),
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(later.conditions, first.conditions);
        assert_eq!(later.revision.as_deref(), Some("rev2"));
        assert!(
            event(&p, &later).is_none(),
            "only the snapshot around it moved"
        );
        let refused = (Refusal::Invalid, "bad".to_string());
        let flipped = desired_status(
            &p,
            &verdict(Some(refused), 0),
            Some("rev2"),
            at("2026-01-03T00:00:00Z"),
        );
        assert_eq!(
            flipped.conditions[0].last_transition_time,
            "2026-01-03T00:00:00Z"
        );
        assert_eq!(flipped.revision, None);
        assert_eq!(event(&p, &flipped).unwrap().type_, EventType::Warning);
    }

    #[test]
    fn messages_and_conflict_lists_are_bounded() {
        let p = RelayPolicyResource::new("a", RelayPolicySpec::default());
        let s = desired_status(&p, &verdict(None, 1000), Some("r"), Utc::now());
        let conflict = &s.conditions[1];
        assert!(
            conflict.message.ends_with("conflict 4; and 995 more"),
            "{}",
            conflict.message
        );
        let long = (Refusal::Invalid, "x".repeat(100_000));
        let s = desired_status(&p, &verdict(Some(long), 0), None, Utc::now());
        assert!(s.conditions[0].message.len() <= MESSAGE_MAX);
        let note = event(&p, &s).unwrap().note.unwrap();
        assert!(note.len() <= NOTE_MAX);
    }
}
