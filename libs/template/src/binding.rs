//! The tree that variable names are bound into, as Octostache binds them.
//!
//! `Octopus.Action[Package A].Name` becomes root → `Octopus` → `Action` → index `Package A` →
//! `Name`. Dotted steps and indexer steps live in separate maps, so `Test.Foo` and `Test[Foo]` are
//! different variables. Every lookup ignores case, and both maps keep insertion order because
//! `#{each}` iterates indexes in the order they were first set.

use std::collections::HashMap;
use std::sync::Arc;

/// Folds a name for case-insensitive comparison, one character at a time.
///
/// .NET's `OrdinalIgnoreCase` uses simple (one-to-one) case mapping, so characters whose upper
/// case is several characters (`ß` → `SS`) are kept as they are rather than expanded.
pub(crate) fn fold_case(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for character in name.chars() {
        let mut upper = character.to_uppercase();
        match (upper.next(), upper.next()) {
            (Some(single), None) => folded.push(single),
            _ => folded.push(character),
        }
    }
    folded
}

/// An insertion-ordered map with case-insensitive string keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct CiMap<V> {
    entries: Vec<(String, V)>,
    positions: HashMap<String, usize>,
}

impl<V> CiMap<V> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        let position = *self.positions.get(&fold_case(key))?;
        self.entries.get(position).map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let position = *self.positions.get(&fold_case(key))?;
        self.entries.get_mut(position).map(|(_, value)| value)
    }

    /// Sets a value, keeping the position (and first spelling) of an existing key.
    pub(crate) fn insert(&mut self, key: &str, value: V) {
        let folded = fold_case(key);
        if let Some(&position) = self.positions.get(&folded)
            && let Some(entry) = self.entries.get_mut(position)
        {
            entry.1 = value;
            return;
        }
        self.positions.insert(folded, self.entries.len());
        self.entries.push((key.to_owned(), value));
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<V> {
        let position = self.positions.remove(&fold_case(key))?;
        if position >= self.entries.len() {
            return None;
        }
        let (_, value) = self.entries.remove(position);
        // Removal is rare (variables are mostly set once), so re-indexing the tail is fine.
        for index in self.positions.values_mut() {
            if *index > position {
                *index -= 1;
            }
        }
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn first(&self) -> Option<&V> {
        self.entries.first().map(|(_, value)| value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }
}

/// One node of the variable tree: an optional value plus dotted and indexed children.
#[derive(Clone, Debug, Default)]
pub(crate) struct Binding {
    pub(crate) item: Option<String>,
    pub(crate) children: CiMap<Arc<Binding>>,
    pub(crate) indexable: CiMap<Arc<Binding>>,
}

impl Binding {
    /// A node holding only a value.
    pub(crate) fn leaf(item: impl Into<String>) -> Arc<Binding> {
        Arc::new(Binding {
            item: Some(item.into()),
            ..Binding::default()
        })
    }
}

/// One step of a bound variable name.
pub(crate) enum PathStep<'a> {
    Identifier(&'a str),
    Index(&'a str),
}

/// Adds `value` at `path` under `root`, creating the nodes on the way.
///
/// An indexer node is created holding its own index as its value, as Octostache does: that is
/// why `#{each a in Octopus.Action}#{a}#{/each}` prints the index names.
pub(crate) fn bind(root: &mut Binding, path: &[PathStep<'_>], value: &str) {
    // A loop rather than recursion: names come from users and may be long.
    let mut node = root;
    for step in path {
        let (map, key, fresh) = match step {
            PathStep::Identifier(name) => (&mut node.children, *name, Binding::default()),
            PathStep::Index(index) => (
                &mut node.indexable,
                *index,
                Binding {
                    item: Some((*index).to_owned()),
                    ..Binding::default()
                },
            ),
        };
        if map.get(key).is_none() {
            map.insert(key, Arc::new(fresh));
        }
        node = match map.get_mut(key) {
            // The tree is being built and nothing else holds its nodes yet, so this never clones.
            Some(child) => Arc::make_mut(child),
            None => return,
        };
    }
    node.item = Some(value.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_keep_first_spelling_and_order() {
        let mut map = CiMap::default();
        map.insert("Beta", 1);
        map.insert("alpha", 2);
        map.insert("BETA", 3);
        assert_eq!(map.get("beta"), Some(&3));
        let keys: Vec<&str> = map.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["Beta", "alpha"]);
        assert_eq!(map.remove("BeTa"), Some(3));
        assert_eq!(map.get("ALPHA"), Some(&2));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn case_folding_does_not_expand_sharp_s() {
        assert_eq!(fold_case("straße"), "STRAßE");
        assert_ne!(fold_case("straße"), fold_case("STRASSE"));
    }
}
