//! A map from [`ConnId`] to per-connection state, stored densely: a
//! `ConnId`'s index is a slab key (small, reused), so a vector indexed by it
//! holds each entry in its own size with no hashing and no spare buckets. At
//! 19 000 connections a `HashMap` spent ~30–80 bytes more per entry. Each
//! entry keeps the generation of the handle it was stored under, so a stale
//! handle (same index, older generation) finds nothing.

use super::ConnId;

/// Per-connection values, indexed by [`ConnId`].
#[derive(Debug)]
pub(crate) struct ConnMap<T> {
    /// `slots[index]` is the value of the connection holding slot `index`,
    /// with that connection's generation, if it has one.
    slots: Vec<Option<(u32, T)>>,
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap { slots: Vec::new() }
    }
}

impl<T> ConnMap<T> {
    /// The value of `conn` (none for a stale handle).
    pub(crate) fn get(&self, conn: &ConnId) -> Option<&T> {
        match self.slots.get(conn.index())? {
            Some((generation, value)) if *generation == conn.generation() => Some(value),
            _ => None,
        }
    }

    /// The value of `conn`, mutably (none for a stale handle).
    pub(crate) fn get_mut(&mut self, conn: &ConnId) -> Option<&mut T> {
        match self.slots.get_mut(conn.index())? {
            Some((generation, value)) if *generation == conn.generation() => Some(value),
            _ => None,
        }
    }

    /// Sets the value of `conn`, returning the one it replaces: `conn`'s
    /// own, or a stale one left in the slot by an older generation.
    pub(crate) fn insert(&mut self, conn: ConnId, value: T) -> Option<T> {
        let index = conn.index();
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index]
            .replace((conn.generation(), value))
            .map(|(_, old)| old)
    }

    /// The value of `conn`, inserting `make()` first if it has none.
    pub(crate) fn get_or_insert_with(&mut self, conn: ConnId, make: impl FnOnce() -> T) -> &mut T {
        if self.get(&conn).is_none() {
            self.insert(conn, make());
        }
        self.get_mut(&conn).expect("just inserted")
    }

    /// Removes and returns the value of `conn` (nothing for a stale handle).
    pub(crate) fn remove(&mut self, conn: &ConnId) -> Option<T> {
        let slot = self.slots.get_mut(conn.index())?;
        if slot
            .as_ref()
            .is_none_or(|(generation, _)| *generation != conn.generation())
        {
            return None;
        }
        let old = slot.take().map(|(_, value)| value);
        // Trim vacant slots at the end, so the vector shrinks back after a
        // peak (the slab hands out low indexes first).
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: usize) -> ConnId {
        ConnId::new(index, 0)
    }

    #[test]
    fn behaves_like_a_map_and_shrinks_from_the_end() {
        let mut map = ConnMap::default();
        assert_eq!(map.insert(id(3), "c"), None);
        assert_eq!(map.insert(id(0), "a"), None);
        assert_eq!(map.insert(id(3), "C"), Some("c"));
        assert_eq!(map.get(&id(3)), Some(&"C"));
        assert_eq!(map.get(&id(1)), None);
        assert_eq!(map.get(&id(99)), None);
        *map.get_or_insert_with(id(1), || "b") = "B";
        assert_eq!(map.get(&id(1)), Some(&"B"));
        assert_eq!(map.remove(&id(3)), Some("C"));
        assert_eq!(map.remove(&id(3)), None);
        assert_eq!(map.slots.len(), 2);
        map.remove(&id(0));
        map.remove(&id(1));
        assert!(map.slots.is_empty());
    }

    #[test]
    fn a_stale_handle_finds_nothing_in_a_reused_slot() {
        let mut map = ConnMap::default();
        let old = ConnId::new(2, 0);
        let new = ConnId::new(2, 1);
        map.insert(new, "new");
        assert_eq!(map.get(&old), None);
        assert_eq!(map.get_mut(&old), None);
        assert_eq!(map.remove(&old), None, "a stale handle removes nothing");
        assert_eq!(map.get(&new), Some(&"new"));
    }
}
