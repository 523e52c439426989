//! [`CapacityRules`]: how many events each channel may hold (Channels' `capacity`
//! and `channel_capacity`).
//!
//! Patterns are Python `fnmatch` globs matched against the full channel name,
//! case-sensitive, tried in order; the first match wins, otherwise the default
//! applies. A channel's capacity is fixed when the channel is created.

use std::fmt;

use crate::glob::Glob;

/// The largest capacity accepted: the most a bounded tokio channel can hold.
pub const MAX_CAPACITY: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The default capacity plus per-pattern capacities.
#[derive(Debug, Clone)]
pub struct CapacityRules {
    default: usize,
    patterns: Vec<PatternCapacity>,
}

#[derive(Debug, Clone)]
struct PatternCapacity {
    glob: Glob,
    capacity: usize,
}

/// A capacity outside `1..=MAX_CAPACITY`.
///
/// Channels accepts 0 (and its queues then never fill); here a channel must be
/// able to hold at least one event, so 0 is refused when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidCapacity {
    /// The pattern whose capacity is wrong, or `None` for the default capacity.
    pub pattern: Option<String>,
    /// The capacity given.
    pub capacity: usize,
}

impl fmt::Display for InvalidCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Some(pattern) => write!(f, "capacity for channels matching {pattern:?}")?,
            None => f.write_str("default channel capacity")?,
        }
        write!(
            f,
            " is {}; it must be between 1 and {MAX_CAPACITY}",
            self.capacity
        )
    }
}

impl CapacityRules {
    /// Builds the rules from a default capacity and `(glob pattern, capacity)`
    /// pairs, in priority order.
    ///
    /// # Errors
    /// [`InvalidCapacity`] if any capacity is 0 or above [`MAX_CAPACITY`].
    pub fn new(default: usize, patterns: &[(String, usize)]) -> Result<Self, InvalidCapacity> {
        check(None, default)?;
        let patterns = patterns
            .iter()
            .map(|(pattern, capacity)| {
                check(Some(pattern), *capacity)?;
                Ok(PatternCapacity {
                    glob: Glob::new(pattern),
                    capacity: *capacity,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { default, patterns })
    }

    /// The capacity of `channel`: the first matching pattern's, else the default.
    pub fn capacity_for(&self, channel: &str) -> usize {
        self.patterns
            .iter()
            .find(|rule| rule.glob.matches(channel))
            .map_or(self.default, |rule| rule.capacity)
    }
}

/// Channels' default capacity (100) and no patterns.
impl Default for CapacityRules {
    fn default() -> Self {
        Self {
            default: crate::LayerConfig::DEFAULT_CAPACITY,
            patterns: Vec::new(),
        }
    }
}

fn check(pattern: Option<&String>, capacity: usize) -> Result<(), InvalidCapacity> {
    if (1..=MAX_CAPACITY).contains(&capacity) {
        Ok(())
    } else {
        Err(InvalidCapacity {
            pattern: pattern.cloned(),
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LayerConfigError;

    fn rules(default: usize, patterns: &[(&str, usize)]) -> CapacityRules {
        let patterns: Vec<(String, usize)> = patterns
            .iter()
            .map(|(pattern, capacity)| ((*pattern).to_owned(), *capacity))
            .collect();
        CapacityRules::new(default, &patterns).expect("valid rules")
    }

    #[test]
    fn default_applies_without_a_match() {
        let rules = rules(100, &[("http.request", 200)]);
        assert_eq!(rules.capacity_for("specific.abc!def"), 100);
        assert_eq!(rules.capacity_for("http.request"), 200);
        assert_eq!(rules.capacity_for("http.request.body"), 100);
        assert_eq!(CapacityRules::default().capacity_for("anything"), 100);
    }

    #[test]
    fn first_match_wins() {
        let rules = rules(100, &[("specific.*", 3), ("specific.abc!*", 50), ("*", 7)]);
        assert_eq!(rules.capacity_for("specific.abc!def"), 3);
        assert_eq!(rules.capacity_for("other"), 7);
    }

    #[test]
    fn patterns_are_globs() {
        let rules = rules(
            100,
            &[
                ("chat.room-[0-9]", 5),
                ("chat.[!a-z]*", 6),
                ("Chat.?", 8),
                ("[unclosed", 9),
            ],
        );
        assert_eq!(rules.capacity_for("chat.room-4"), 5);
        assert_eq!(rules.capacity_for("chat.room-42"), 100);
        assert_eq!(rules.capacity_for("chat.Lobby"), 6);
        assert_eq!(rules.capacity_for("Chat.x"), 8);
        assert_eq!(rules.capacity_for("chat.x"), 100, "case-sensitive");
        assert_eq!(rules.capacity_for("[unclosed"), 9);
    }

    #[test]
    fn zero_and_oversized_capacities_are_refused() {
        assert_eq!(
            CapacityRules::new(0, &[]).map(|_| ()),
            Err(InvalidCapacity {
                pattern: None,
                capacity: 0
            })
        );
        let error = CapacityRules::new(100, &[("specific.*".to_owned(), 0)])
            .expect_err("capacity 0 is invalid");
        assert_eq!(
            error.to_string(),
            format!(
                "capacity for channels matching \"specific.*\" is 0; it must be between 1 and \
                 {MAX_CAPACITY}"
            )
        );
        assert!(CapacityRules::new(MAX_CAPACITY + 1, &[]).is_err());
        assert!(CapacityRules::new(MAX_CAPACITY, &[]).is_ok());
        assert!(
            LayerConfigError::from(error)
                .to_string()
                .starts_with("invalid layer configuration")
        );
    }
}
