//! A plan's buffers in host memory, for the backends that run on the CPU: each op moves its
//! outputs out ([`HostBuffers::take`]) while it reads the others, then puts them back.

use crate::error::{Error, Result};
use crate::graph::{BufDesc, BufId, Dtype};

enum Buf {
    F32(Vec<f32>),
    U8(Vec<u8>),
    U32(Vec<u32>),
}

pub struct HostBuffers(Vec<Buf>);

impl HostBuffers {
    /// Every buffer of `descs`, zeroed.
    pub fn new(descs: &[BufDesc]) -> Self {
        HostBuffers(
            descs
                .iter()
                .map(|d| match d.dtype {
                    Dtype::F32 => Buf::F32(vec![0.0; d.len]),
                    Dtype::U8 => Buf::U8(vec![0; d.len]),
                    Dtype::U32 => Buf::U32(vec![0; d.len]),
                })
                .collect(),
        )
    }

    #[inline]
    pub fn f(&self, id: BufId) -> &[f32] {
        match &self.0[id.0] {
            Buf::F32(v) => v,
            _ => panic!("buffer {} is not f32", id.0),
        }
    }
    #[inline]
    pub fn u8(&self, id: BufId) -> &[u8] {
        match &self.0[id.0] {
            Buf::U8(v) => v,
            _ => panic!("buffer {} is not u8", id.0),
        }
    }
    #[inline]
    pub fn u32(&self, id: BufId) -> &[u32] {
        match &self.0[id.0] {
            Buf::U32(v) => v,
            _ => panic!("buffer {} is not u32", id.0),
        }
    }
    /// Moves an f32 buffer out so that it can be written while others are read; see [`Self::put`].
    #[inline]
    pub fn take(&mut self, id: BufId) -> Vec<f32> {
        match &mut self.0[id.0] {
            Buf::F32(v) => std::mem::take(v),
            _ => panic!("buffer {} is not f32", id.0),
        }
    }
    #[inline]
    pub fn put(&mut self, id: BufId, v: Vec<f32>) {
        self.0[id.0] = Buf::F32(v);
    }
    #[inline]
    pub fn take_u32(&mut self, id: BufId) -> Vec<u32> {
        match &mut self.0[id.0] {
            Buf::U32(v) => std::mem::take(v),
            _ => panic!("buffer {} is not u32", id.0),
        }
    }
    #[inline]
    pub fn put_u32(&mut self, id: BufId, v: Vec<u32>) {
        self.0[id.0] = Buf::U32(v);
    }
    #[inline]
    pub fn take_opt(&mut self, id: Option<BufId>) -> Option<Vec<f32>> {
        id.map(|id| self.take(id))
    }
    #[inline]
    pub fn put_opt(&mut self, id: Option<BufId>, v: Option<Vec<f32>>) {
        if let (Some(id), Some(v)) = (id, v) {
            self.put(id, v);
        }
    }

    pub fn upload_f32(&mut self, id: BufId, data: &[f32]) -> Result<()> {
        match &mut self.0[id.0] {
            Buf::F32(v) => copy_into(id, v, data),
            _ => Err(Error::Model(format!("buffer {} is not f32", id.0))),
        }
    }
    pub fn upload_u8(&mut self, id: BufId, data: &[u8]) -> Result<()> {
        match &mut self.0[id.0] {
            Buf::U8(v) => copy_into(id, v, data),
            _ => Err(Error::Model(format!("buffer {} is not u8", id.0))),
        }
    }
    pub fn upload_u32(&mut self, id: BufId, data: &[u32]) -> Result<()> {
        match &mut self.0[id.0] {
            Buf::U32(v) => copy_into(id, v, data),
            _ => Err(Error::Model(format!("buffer {} is not u32", id.0))),
        }
    }
}

fn copy_into<T: Copy>(id: BufId, dst: &mut [T], data: &[T]) -> Result<()> {
    if data.len() > dst.len() {
        return Err(Error::Model(format!("{} values do not fit buffer {} ({})", data.len(), id.0, dst.len())));
    }
    dst[..data.len()].copy_from_slice(data);
    Ok(())
}
