//! The core's table of open connections: a slab whose keys are [`ConnId`]s
//! carrying a per-slot generation. The slab reuses a freed slot for the next
//! connection at once; the generation, bumped when a connection leaves its
//! slot, makes every handle of the old connection miss from then on, so a
//! late input for a dead connection can never act on its successor.

use slab::Slab;

use super::ConnId;

/// Open connections by [`ConnId`].
#[derive(Debug)]
pub(crate) struct ConnSlab<T> {
    /// The values; the slab key is the handle's index.
    slab: Slab<T>,
    /// `generations[index]`: the generation of the current (or next)
    /// holder of slot `index`. Kept for vacant slots too, which is why it
    /// lives beside the slab rather than in its entries.
    generations: Vec<u32>,
}

impl<T> ConnSlab<T> {
    /// An empty table.
    pub(crate) fn new() -> ConnSlab<T> {
        ConnSlab {
            slab: Slab::new(),
            generations: Vec::new(),
        }
    }

    /// Stores `value` in a free slot and returns its handle.
    pub(crate) fn insert(&mut self, value: T) -> ConnId {
        let index = self.slab.insert(value);
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        ConnId::new(index, self.generations[index])
    }

    /// Whether `conn` is the current holder of its slot.
    fn is_current(&self, conn: ConnId) -> bool {
        self.generations.get(conn.index()) == Some(&conn.generation())
    }

    /// The connection `conn` (none for a stale handle).
    pub(crate) fn get(&self, conn: ConnId) -> Option<&T> {
        if !self.is_current(conn) {
            return None;
        }
        self.slab.get(conn.index())
    }

    /// The connection `conn`, mutably (none for a stale handle).
    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut T> {
        if !self.is_current(conn) {
            return None;
        }
        self.slab.get_mut(conn.index())
    }

    /// Removes `conn` and frees its slot for a new generation.
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<T> {
        if !self.is_current(conn) {
            return None;
        }
        let value = self.slab.try_remove(conn.index())?;
        let generation = &mut self.generations[conn.index()];
        *generation = generation.wrapping_add(1);
        Some(value)
    }

    /// Every open connection with its handle.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slab
            .iter()
            .map(|(index, value)| (ConnId::new(index, self.generations[index]), value))
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no connection is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

impl<T> std::ops::Index<ConnId> for ConnSlab<T> {
    type Output = T;

    fn index(&self, conn: ConnId) -> &T {
        self.get(conn)
            .expect("indexed only with the handle of an open connection")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_new_generation_and_the_old_handle_misses() {
        let mut table = ConnSlab::new();
        let first = table.insert("first");
        assert_eq!(table.remove(first), Some("first"));
        let second = table.insert("second");
        assert_eq!(first.index(), second.index(), "the slot is reused");
        assert_ne!(first, second);
        assert_eq!(table.get(first), None);
        assert_eq!(table.remove(first), None);
        assert_eq!(table.get(second), Some(&"second"));
        assert_eq!(table.iter().map(|(id, _)| id).collect::<Vec<_>>(), [second]);
    }

    /// The whole core, through its public inputs: a handle kept past its
    /// connection's end (a late command from the dead socket's task) must
    /// neither subscribe, close nor otherwise touch the connection that took
    /// its slot over.
    #[test]
    fn a_stale_conn_id_is_ignored_after_its_slot_is_reused() {
        use std::net::{IpAddr, Ipv4Addr};
        use std::time::Instant;

        use crate::core::{Core, CoreConfig, Identity, Open, Output};

        let open = || Open {
            identity: Identity::unrestricted("u"),
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            channels: Vec::new(),
            deflate: None,
        };
        let outputs = Core::outputs_until_timeout;
        let now = Instant::now();
        let mut core = Core::new(CoreConfig::default(), now, 0);
        let old = core.handle_open(now, open()).expect("admitted");
        outputs(&mut core);
        core.handle_closed(now, old);
        outputs(&mut core);
        let new = core.handle_open(now, open()).expect("admitted");
        assert_eq!(old.index(), new.index(), "the slot is reused");
        assert_ne!(old, new, "but the handle is not");
        outputs(&mut core);
        // The `connected` frame is written: anything queued next would leave.
        core.handle_write_complete(now, new);
        outputs(&mut core);

        core.handle_text(
            now,
            old,
            br#"{"type":"subscribe","channels":["lines"],"id":1}"#,
        );
        core.handle_peer_close(now, old);
        core.handle_closed(now, old);
        let outputs = outputs(&mut core);
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o, Output::Transmit(_) | Output::Disconnect(_))),
            "a stale handle produced output: {outputs:?}"
        );
        assert!(core.inspect(old).is_none());
        let live = core.inspect(new).expect("the new connection is untouched");
        assert!(
            live.channels.is_empty(),
            "subscribed through a stale handle"
        );
        assert!(!live.closing, "closed through a stale handle");
        assert_eq!(core.stats().connections, 1);
    }
}
