//! Where each plan buffer lies on the device, worked out from the plan alone: the buffers of a
//! parameter set (values, gradients, each optimiser state) share one device buffer, their
//! members at aligned offsets in plan order; every other buffer has its own.

use crate::graph::{BufDesc, BufId, Dtype, ParamSet};

/// Bytes a buffer takes: whole 4-byte words, at least one.
pub fn byte_len(d: &BufDesc) -> u64 {
    let bytes = match d.dtype {
        Dtype::U8 => d.len,
        Dtype::F32 | Dtype::U32 => d.len * 4,
    };
    (bytes as u64).next_multiple_of(4).max(4)
}

/// A parameter-set member's place: which set (index into [`Layout::sets`]), its position in the
/// set, and its byte offset there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub set: usize,
    pub position: usize,
    pub offset: u64,
}

#[derive(Clone, Debug)]
pub struct Layout {
    /// Each set's kind and bytes.
    pub sets: Vec<(ParamSet, u64)>,
    /// Per plan buffer: its place in a set, if it belongs to one.
    pub members: Vec<Option<Member>>,
    /// Per plan buffer: its bytes.
    pub sizes: Vec<u64>,
}

impl Layout {
    /// The layout of `descs` with members at multiples of `align` bytes. The sets hold like
    /// lengths in like order, so a parameter has the same offset in each.
    pub fn new(descs: &[BufDesc], align: u64) -> Self {
        let mut sets: Vec<(ParamSet, u64, usize)> = Vec::new();
        let members = descs
            .iter()
            .map(|d| {
                let kind = d.set?;
                let set = sets.iter().position(|s| s.0 == kind).unwrap_or_else(|| {
                    sets.push((kind, 0, 0));
                    sets.len() - 1
                });
                let (_, end, count) = &mut sets[set];
                let member = Member { set, position: *count, offset: *end };
                *end += byte_len(d).next_multiple_of(align);
                *count += 1;
                Some(member)
            })
            .collect();
        Layout {
            sets: sets.into_iter().map(|(kind, bytes, _)| (kind, bytes)).collect(),
            members,
            sizes: descs.iter().map(byte_len).collect(),
        }
    }

    /// A set member's (position in the set, byte offset, bytes).
    pub fn place(&self, id: BufId) -> Option<(usize, u64, u64)> {
        self.members[id.0].map(|m| (m.position, m.offset, self.sizes[id.0]))
    }

    /// The member of set `other` at the place of `id` in its own set.
    pub fn counterpart(&self, id: BufId, other: ParamSet) -> Option<BufId> {
        let m = self.members[id.0]?;
        let set = self.sets.iter().position(|s| s.0 == other)?;
        let found = self.members.iter().position(|o| matches!(o, Some(o) if o.set == set && o.position == m.position));
        found.map(BufId)
    }
}
