//! A map from [`ConnId`] to per-connection state, stored densely: a
//! `ConnId` is a slab key (small, reused), so a vector indexed by it holds
//! each entry in its own size with no hashing and no spare buckets. At
//! 19 000 connections a `HashMap` spent ~30–80 bytes more per entry.

use super::ConnId;

/// Per-connection values, indexed by [`ConnId`].
#[derive(Debug)]
pub(crate) struct ConnMap<T> {
    /// `slots[id]` is the value of connection `id`, if it has one.
    slots: Vec<Option<T>>,
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap { slots: Vec::new() }
    }
}

impl<T> ConnMap<T> {
    /// The value of `conn`.
    pub(crate) fn get(&self, conn: &ConnId) -> Option<&T> {
        self.slots.get(conn.0)?.as_ref()
    }

    /// The value of `conn`, mutably.
    pub(crate) fn get_mut(&mut self, conn: &ConnId) -> Option<&mut T> {
        self.slots.get_mut(conn.0)?.as_mut()
    }

    /// Sets the value of `conn`, returning the one it replaces.
    pub(crate) fn insert(&mut self, conn: ConnId, value: T) -> Option<T> {
        if self.slots.len() <= conn.0 {
            self.slots.resize_with(conn.0 + 1, || None);
        }
        self.slots[conn.0].replace(value)
    }

    /// The value of `conn`, inserting `make()` first if it has none.
    pub(crate) fn get_or_insert_with(&mut self, conn: ConnId, make: impl FnOnce() -> T) -> &mut T {
        if self.get(&conn).is_none() {
            self.insert(conn, make());
        }
        self.slots[conn.0].as_mut().expect("just inserted")
    }

    /// Removes and returns the value of `conn`.
    pub(crate) fn remove(&mut self, conn: &ConnId) -> Option<T> {
        let old = self.slots.get_mut(conn.0)?.take();
        if old.is_some() {
            // Trim vacant slots at the end, so the vector shrinks back after
            // a peak (the slab hands out low ids first).
            while self.slots.last().is_some_and(Option::is_none) {
                self.slots.pop();
            }
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_and_shrinks_from_the_end() {
        let mut map = ConnMap::default();
        assert_eq!(map.insert(ConnId(3), "c"), None);
        assert_eq!(map.insert(ConnId(0), "a"), None);
        assert_eq!(map.insert(ConnId(3), "C"), Some("c"));
        assert_eq!(map.get(&ConnId(3)), Some(&"C"));
        assert_eq!(map.get(&ConnId(1)), None);
        assert_eq!(map.get(&ConnId(99)), None);
        *map.get_or_insert_with(ConnId(1), || "b") = "B";
        assert_eq!(map.get(&ConnId(1)), Some(&"B"));
        assert_eq!(map.remove(&ConnId(3)), Some("C"));
        assert_eq!(map.remove(&ConnId(3)), None);
        assert_eq!(map.slots.len(), 2);
        map.remove(&ConnId(0));
        map.remove(&ConnId(1));
        assert!(map.slots.is_empty());
    }
}
