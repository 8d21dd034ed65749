//! Which grant changes of one request may be written together (docs/performance.md).
//!
//! Events are recorded as if one at a time in id order. Most of a batch's grant changes touch
//! nothing another one touches, so their order cannot matter and one statement writes them all.
//! The others (two events of one pair, two activations of one grant key, an extension of a grant
//! that belongs to another event's pair) are written one at a time, in id order, as before.

use std::collections::HashMap;

/// One grant change of one application, as far as ordering is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub activation: bool,
    /// (principal, group).
    pub pair: (&'a str, &'a str),
    /// The grant key an activation starts or extends (a deactivation's named grant lies within
    /// its pair, so the pair covers it).
    pub key: &'a str,
}

/// Which of `changes` (of one application and source family, in id order) depend on another one
/// of them. `existing` maps the grant keys of the activations to the pair of the grant already
/// stored under that key.
pub fn dependent(
    changes: &[Change<'_>],
    existing: &HashMap<String, (String, String)>,
) -> Vec<bool> {
    // The pairs each change touches: its own, and for an extension the pair of the grant it
    // extends (a deactivation of that pair ends the same row).
    let touched: Vec<Vec<(&str, &str)>> = changes
        .iter()
        .map(|c| {
            let mut pairs = vec![c.pair];
            if c.activation {
                if let Some((principal, group)) = existing.get(c.key) {
                    let other = (principal.as_str(), group.as_str());
                    if other != c.pair {
                        pairs.push(other);
                    }
                }
            }
            pairs
        })
        .collect();
    let mut pair_count: HashMap<(&str, &str), usize> = HashMap::new();
    for pairs in &touched {
        for pair in pairs {
            *pair_count.entry(*pair).or_default() += 1;
        }
    }
    let mut key_count: HashMap<&str, usize> = HashMap::new();
    for c in changes.iter().filter(|c| c.activation) {
        *key_count.entry(c.key).or_default() += 1;
    }
    changes
        .iter()
        .zip(&touched)
        .map(|(c, pairs)| {
            pairs.iter().any(|p| pair_count[p] > 1) || (c.activation && key_count[c.key] > 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act<'a>(user: &'a str, key: &'a str) -> Change<'a> {
        Change {
            activation: true,
            pair: (user, "g"),
            key,
        }
    }

    fn deact<'a>(user: &'a str) -> Change<'a> {
        Change {
            activation: false,
            pair: (user, "g"),
            key: "",
        }
    }

    #[test]
    fn distinct_pairs_and_keys_are_independent() {
        let changes = [act("u1", "k1"), act("u2", "k2"), deact("u3")];
        assert_eq!(dependent(&changes, &HashMap::new()), [false; 3]);
    }

    #[test]
    fn one_pair_twice_is_dependent_and_others_are_not() {
        let changes = [act("u1", "k1"), act("u2", "k2"), deact("u1")];
        assert_eq!(dependent(&changes, &HashMap::new()), [true, false, true]);
    }

    #[test]
    fn one_grant_key_twice_is_dependent() {
        let changes = [act("u1", "k"), act("u2", "k"), deact("u3")];
        assert_eq!(dependent(&changes, &HashMap::new()), [true, true, false]);
    }

    #[test]
    fn an_extension_of_another_pairs_grant_depends_on_that_pairs_changes() {
        let existing = HashMap::from([("k".to_owned(), ("u9".to_owned(), "g".to_owned()))]);
        let changes = [act("u1", "k"), deact("u9"), deact("u2")];
        assert_eq!(dependent(&changes, &existing), [true, true, false]);
        // The grant's own pair: nothing more.
        let existing = HashMap::from([("k".to_owned(), ("u1".to_owned(), "g".to_owned()))]);
        assert_eq!(dependent(&changes, &existing), [false; 3]);
    }
}
