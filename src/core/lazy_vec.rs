//! A vector for per-connection state that is usually empty: one pointer
//! (8 bytes) in the connection's record instead of a `Vec`'s 24, and no
//! allocation until the first element. Every open connection holds its
//! record in the core's slab, idle or not, so the 16 bytes saved per field
//! count at every connection; the price is one more allocation (the
//! `Vec`'s header) while the vector is in use, which only the connections
//! that use the feature (`maxRate`, JSON-array batching) pay.
//!
//! It reads like a `Vec` (it derefs to a slice and has the `Vec` methods
//! the core uses), so the code that uses it reads the same.

use std::ops::{Deref, DerefMut};

/// A `Vec<T>` that costs one null pointer while empty.
#[derive(Debug, Clone)]
pub(crate) struct LazyVec<T> {
    /// The elements, once there were any. An emptied vector keeps its
    /// buffer (as a `Vec` does) until it is taken or dropped. Boxed on
    /// purpose: the extra allocation is the price of an 8-byte field.
    #[allow(clippy::box_collection)]
    inner: Option<Box<Vec<T>>>,
}

impl<T> Default for LazyVec<T> {
    fn default() -> Self {
        LazyVec { inner: None }
    }
}

impl<T> LazyVec<T> {
    /// An empty vector; allocates nothing.
    pub(crate) const fn new() -> LazyVec<T> {
        LazyVec { inner: None }
    }

    /// The elements.
    pub(crate) fn as_slice(&self) -> &[T] {
        self
    }

    /// Appends `value`, allocating on the first push.
    pub(crate) fn push(&mut self, value: T) {
        self.inner.get_or_insert_default().push(value);
    }

    /// Keeps the elements for which `keep` is true, in order.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(inner) = &mut self.inner {
            inner.retain(keep);
        }
    }

    /// Removes the element at `index`, replacing it with the last one.
    ///
    /// # Panics
    ///
    /// If `index` is out of bounds, as `Vec::swap_remove` does.
    pub(crate) fn swap_remove(&mut self, index: usize) -> T {
        match &mut self.inner {
            Some(inner) => inner.swap_remove(index),
            None => panic!("swap_remove index {index} of an empty vector"),
        }
    }

    /// Removes every element (keeping the buffer, as `Vec::clear` does).
    pub(crate) fn clear(&mut self) {
        if let Some(inner) = &mut self.inner {
            inner.clear();
        }
    }
}

impl<T> Deref for LazyVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.inner.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T> DerefMut for LazyVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.inner.as_deref_mut().map_or(&mut [], Vec::as_mut_slice)
    }
}

impl<T> IntoIterator for LazyVec<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.inner
            .map(|inner| *inner)
            .unwrap_or_default()
            .into_iter()
    }
}

impl<'a, T> IntoIterator for &'a LazyVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut LazyVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_lazy_vec_is_one_pointer_and_allocates_nothing() {
        assert_eq!(std::mem::size_of::<LazyVec<[u8; 100]>>(), 8);
        let v: LazyVec<u32> = LazyVec::new();
        assert!(v.inner.is_none());
        assert!(v.is_empty());
        assert_eq!(v.iter().count(), 0);
        assert_eq!(v.into_iter().count(), 0);
    }

    #[test]
    fn it_behaves_like_a_vec() {
        let mut v = LazyVec::default();
        for i in 0..5 {
            v.push(i);
        }
        assert_eq!(&*v, &[0, 1, 2, 3, 4]);
        v.retain(|&i| i != 1);
        assert_eq!(v.swap_remove(0), 0);
        assert_eq!(&*v, &[4, 2, 3]);
        for i in &mut v {
            *i *= 10;
        }
        v[0] += 1;
        assert_eq!(v.iter().copied().max(), Some(41));
        assert_eq!(
            std::mem::take(&mut v).into_iter().collect::<Vec<_>>(),
            [41, 20, 30]
        );
        assert!(v.is_empty() && v.inner.is_none());
        v.push(7);
        v.clear();
        assert_eq!(v.len(), 0);
    }
}
