//! A run of weights that the schedule reads: owned (packed at load) or a
//! window of shared read-only bytes (a saved schedule mapped from a file,
//! [`crate::engine::native::section`]), read the same way. The engine never writes weights
//! once they are made, so neither kind is ever copied.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// Read-only bytes several blobs share (a mapped file, or a buffer).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// `T` values: a vector, or `len` values at byte `start` of shared bytes.
pub enum Blob<T> {
    Owned(Vec<T>),
    Shared {
        bytes: SharedBytes,
        start: usize,
        len: usize,
        _t: PhantomData<T>,
    },
}

impl<T: bytemuck::Pod> Blob<T> {
    /// `len` values at byte `start` of `bytes`, if they lie inside and
    /// `start` is aligned for `T`.
    pub fn shared(bytes: SharedBytes, start: usize, len: usize) -> Option<Blob<T>> {
        let size = len.checked_mul(std::mem::size_of::<T>())?;
        let end = start.checked_add(size)?;
        let all: &[u8] = (*bytes).as_ref();
        let window = all.get(start..end)?;
        bytemuck::try_cast_slice::<u8, T>(window).ok()?;
        Some(Blob::Shared {
            bytes,
            start,
            len,
            _t: PhantomData,
        })
    }

    /// Whether the values are a window of shared bytes.
    pub fn is_shared(&self) -> bool {
        matches!(self, Blob::Shared { .. })
    }
}

impl<T> Default for Blob<T> {
    fn default() -> Self {
        Blob::Owned(Vec::new())
    }
}

impl<T> From<Vec<T>> for Blob<T> {
    fn from(v: Vec<T>) -> Self {
        Blob::Owned(v)
    }
}

impl<T: bytemuck::Pod> Deref for Blob<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Blob::Owned(v) => v,
            Blob::Shared {
                bytes, start, len, ..
            } => {
                let all: &[u8] = (**bytes).as_ref();
                // Checked in `Blob::shared`: inside the bytes and aligned.
                bytemuck::cast_slice(&all[*start..*start + *len * std::mem::size_of::<T>()])
            }
        }
    }
}

/// A blob's values are not part of the schedule's serialised form: the
/// section writes them beside it and places them back
/// ([`crate::engine::native::section`]), so here a blob is nothing and reads back empty.
impl<T> serde::Serialize for Blob<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de, T> serde::Deserialize<'de> for Blob<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        Ok(Blob::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_windows_read_as_owned_ones() {
        let v: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
        let bytes: SharedBytes = Arc::new(bytemuck::cast_slice::<f32, u8>(&v).to_vec());
        let b = Blob::<f32>::shared(bytes.clone(), 8, 4).unwrap();
        assert_eq!(&*b, &v[2..6]);
        assert!(b.is_shared());
        // Past the end, or misaligned: refused.
        assert!(Blob::<f32>::shared(bytes.clone(), 8, 7).is_none());
        let base = (*bytes).as_ref().as_ptr() as usize;
        let odd = (0..4).find(|i| !(base + i).is_multiple_of(4)).unwrap();
        assert!(Blob::<f32>::shared(bytes.clone(), odd, 1).is_none());
        assert!(Blob::<f32>::shared(bytes, usize::MAX, 2).is_none());
    }
}
