//! [`Memberships`]: group → member channels, indexed both ways, so that a
//! channel whose inbox is dropped leaves all its groups in one lookup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Group → member channel → `V` (the memory layer keeps the join time, the
/// Redis layer nothing), plus channel → its groups.
#[derive(Debug)]
pub(crate) struct Memberships<V> {
    groups: HashMap<String, HashMap<Arc<str>, V>>,
    by_channel: HashMap<Arc<str>, HashSet<String>>,
}

impl<V> Default for Memberships<V> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            by_channel: HashMap::new(),
        }
    }
}

impl<V> Memberships<V> {
    /// Adds `channel` to `group`, or replaces its value if it is a member.
    pub(crate) fn insert(&mut self, group: &str, channel: &str, value: V) {
        let channel = match self.by_channel.get_key_value(channel) {
            Some((channel, _)) => Arc::clone(channel),
            None => Arc::from(channel),
        };
        self.by_channel
            .entry(Arc::clone(&channel))
            .or_default()
            .insert(group.to_owned());
        match self.groups.get_mut(group) {
            Some(members) => {
                members.insert(channel, value);
            }
            None => {
                self.groups
                    .insert(group.to_owned(), HashMap::from([(channel, value)]));
            }
        }
    }

    /// Removes `channel` from `group`; false if it was not a member.
    pub(crate) fn remove(&mut self, group: &str, channel: &str) -> bool {
        let Some(members) = self.groups.get_mut(group) else {
            return false;
        };
        if members.remove(channel).is_none() {
            return false;
        }
        if members.is_empty() {
            self.groups.remove(group);
        }
        self.forget_group_of(channel, group);
        true
    }

    /// Removes `channel` from every group; returns the groups it was in.
    pub(crate) fn remove_channel(&mut self, channel: &str) -> Vec<String> {
        let Some(groups) = self.by_channel.remove(channel) else {
            return Vec::new();
        };
        for group in &groups {
            if let Some(members) = self.groups.get_mut(group) {
                members.remove(channel);
                if members.is_empty() {
                    self.groups.remove(group);
                }
            }
        }
        groups.into_iter().collect()
    }

    /// Keeps only the members of `group` for which `keep` is true; returns
    /// the members kept.
    pub(crate) fn retain_members(
        &mut self,
        group: &str,
        mut keep: impl FnMut(&V) -> bool,
    ) -> Vec<Arc<str>> {
        let Some(members) = self.groups.get_mut(group) else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        members.retain(|channel, value| {
            let kept = keep(value);
            if !kept {
                dropped.push(Arc::clone(channel));
            }
            kept
        });
        let kept = members.keys().cloned().collect();
        if members.is_empty() {
            self.groups.remove(group);
        }
        for channel in dropped {
            self.forget_group_of(&channel, group);
        }
        kept
    }

    pub(crate) fn contains(&self, group: &str, channel: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|members| members.contains_key(channel))
    }

    /// The members of `group` (none when it has none here).
    pub(crate) fn members_of(&self, group: &str) -> Vec<Arc<str>> {
        self.groups
            .get(group)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `group` has any member here.
    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Every group with its members.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&String, &HashMap<Arc<str>, V>)> {
        self.groups.iter()
    }

    /// How many groups have members.
    pub(crate) fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn forget_group_of(&mut self, channel: &str, group: &str) {
        if let Some(groups) = self.by_channel.get_mut(channel) {
            groups.remove(group);
            if groups.is_empty() {
                self.by_channel.remove(channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Memberships;

    #[test]
    fn a_removed_channel_leaves_every_group() {
        let mut memberships = Memberships::default();
        memberships.insert("a", "c1", ());
        memberships.insert("b", "c1", ());
        memberships.insert("b", "c2", ());
        let mut left = memberships.remove_channel("c1");
        left.sort();
        assert_eq!(left, ["a", "b"]);
        assert!(!memberships.contains("b", "c1"));
        assert!(memberships.contains("b", "c2"));
        assert_eq!(memberships.group_count(), 1);
        assert!(memberships.remove("b", "c2"));
        assert_eq!(memberships.group_count(), 0);
        assert!(memberships.by_channel.is_empty());
    }

    #[test]
    fn retained_members_keep_the_index_in_step() {
        let mut memberships = Memberships::default();
        memberships.insert("g", "old", 1);
        memberships.insert("g", "new", 2);
        assert_eq!(memberships.retain_members("g", |v| *v > 1).len(), 1);
        assert!(memberships.remove_channel("old").is_empty());
        assert_eq!(memberships.remove_channel("new"), ["g"]);
        assert_eq!(memberships.group_count(), 0);
    }
}
