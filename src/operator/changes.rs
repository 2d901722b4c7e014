//! Noticing the changes that matter to the snapshot in the operator's watch streams: a
//! RelayPolicy's spec (or age, which orders conflicts) appearing, changing or going, and
//! a Secret's data changing. Everything else is ignored, above all the operator's own
//! status writes, which would otherwise make every status write start a recompile.
//!
//! Each change bumps one version number; the reconciler compiles again when the version
//! it compiled at is older, and every policy is reconciled again after a bump.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::policy::model::RelayPolicyResource;

/// The version of what the snapshot is compiled from; cloned into every tracker.
#[derive(Clone)]
pub struct Changes {
    version: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            version: watch::Sender::new(0),
        }
    }
}

impl Changes {
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Bumps the version: something that matters changed (or leadership came, and the
    /// world must be looked at again).
    pub fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// What of an object matters, as a digest.
pub trait Digest {
    fn digest(&self) -> u64;
}

impl Digest for RelayPolicyResource {
    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        serde_json::to_vec(&self.spec)
            .unwrap_or_default()
            .hash(&mut h);
        self.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .hash(&mut h);
        h.finish()
    }
}

impl Digest for Secret {
    fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        if let Some(data) = &self.data {
            for (k, v) in data {
                (k, &v.0).hash(&mut h);
            }
        }
        if let Some(data) = &self.string_data {
            data.hash(&mut h);
        }
        h.finish()
    }
}

/// Follows one watch stream and bumps [`Changes`] when an object that matters changes.
pub struct Tracker {
    changes: Changes,
    seen: HashMap<String, u64>,
    /// The objects of a re-list in progress (`Init` … `InitDone`): whatever the old list
    /// had and the new one lacks was deleted meanwhile.
    relist: Option<HashMap<String, u64>>,
}

impl Tracker {
    pub fn new(changes: Changes) -> Self {
        Tracker {
            changes,
            seen: HashMap::new(),
            relist: None,
        }
    }

    pub fn observe<K: Digest + ResourceExt>(&mut self, event: &Event<K>) {
        let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Event::Apply(o) => {
                if self.seen.insert(key(o), o.digest()) != Some(o.digest()) {
                    self.changes.bump();
                }
            }
            Event::Delete(o) => {
                if self.seen.remove(&key(o)).is_some() {
                    self.changes.bump();
                }
            }
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(o) => {
                self.relist
                    .get_or_insert_default()
                    .insert(key(o), o.digest());
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                if listed != self.seen {
                    self.seen = listed;
                    self.changes.bump();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::RelayPolicySpec;

    fn policy(name: &str, relay: &str) -> RelayPolicyResource {
        let mut p = RelayPolicyResource::new(
            name,
            RelayPolicySpec {
                relay_domains: vec![relay.into()],
                ..Default::default()
            },
        );
        p.metadata.namespace = Some("mail".into());
        p
    }

    #[test]
    fn only_spec_changes_and_deletions_bump() {
        let changes = Changes::default();
        let mut t = Tracker::new(changes.clone());
        t.observe(&Event::<RelayPolicyResource>::Init);
        t.observe(&Event::InitApply(policy("a", "a.example")));
        t.observe(&Event::<RelayPolicyResource>::InitDone);
        assert_eq!(changes.version(), 1);
        // The operator's own status write: the same spec.
        let mut with_status = policy("a", "a.example");
        with_status.status = Some(Default::default());
        t.observe(&Event::Apply(with_status));
        assert_eq!(changes.version(), 1);
        t.observe(&Event::Apply(policy("a", "b.example")));
        assert_eq!(changes.version(), 2);
        // A re-list that finds the same objects changes nothing; one that misses an
        // object is a deletion.
        t.observe(&Event::<RelayPolicyResource>::Init);
        t.observe(&Event::InitApply(policy("a", "b.example")));
        t.observe(&Event::<RelayPolicyResource>::InitDone);
        assert_eq!(changes.version(), 2);
        t.observe(&Event::<RelayPolicyResource>::Init);
        t.observe(&Event::<RelayPolicyResource>::InitDone);
        assert_eq!(changes.version(), 3);
        t.observe(&Event::Delete(policy("a", "b.example")));
        assert_eq!(changes.version(), 3, "already gone");
    }
}
