//! The value kept in shared data for one slot: the owner's fingerprint and the
//! bucket's theoretical arrival time (TAT), 21 bytes, little-endian.

/// Version byte of the slot value layout.
const SLOT_VERSION: u8 = 1;
/// Length of an encoded slot value: version, owner, TAT ms, TAT fraction.
const SLOT_LEN: usize = 1 + 8 + 8 + 4;

/// Decoded slot value (layout version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotState {
    /// Fingerprint of the caller the slot belongs to.
    pub(super) owner: u64,
    /// TAT, whole milliseconds.
    pub(super) tat_ms: u64,
    /// TAT, fraction of a millisecond in `1/limit` units.
    pub(super) tat_frac: u32,
}

impl SlotState {
    pub(super) fn encode(&self) -> [u8; SLOT_LEN] {
        let mut out = [0u8; SLOT_LEN];
        out[0] = SLOT_VERSION;
        out[1..9].copy_from_slice(&self.owner.to_le_bytes());
        out[9..17].copy_from_slice(&self.tat_ms.to_le_bytes());
        out[17..21].copy_from_slice(&self.tat_frac.to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<SlotState> {
        let b: &[u8; SLOT_LEN] = bytes.try_into().ok()?;
        if b[0] != SLOT_VERSION {
            return None;
        }
        Some(SlotState {
            owner: u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
            tat_ms: u64::from_le_bytes([b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16]]),
            tat_frac: u32::from_le_bytes([b[17], b[18], b[19], b[20]]),
        })
    }
}
