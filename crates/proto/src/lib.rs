//! Wire records of ringmatch: the fixed-layout, little-endian, versioned `Command` (128 bytes;
//! the 64-byte version 1 still reads) and `Event` (128 bytes) that are the only formats
//! crossing a thread, the disk or the network.
//!
//! Every record starts with a format version byte and a type code. Decoding checks every byte
//! that has a meaning: the version, type codes, enum values, flag bits and reserved space. A bad
//! record is a typed [`DecodeError`], never a panic, so a record read from a socket or a damaged
//! file can be rejected cleanly. The byte layout is documented in `docs/wire-format.md`; the
//! tests in this crate pin it with hand-written byte vectors.
//!
//! This crate deliberately knows nothing of threads, files, sockets, order books or JSON. The
//! snake-case names of enum values live here only so every front end spells them the same.

mod command;
mod event;

pub use command::{Command, CommandType, OrderKind, SelfTradePrevention, Side, TimeInForce};
pub use event::{CancelReason, Event, EventType, OcoLeg, Reason, RejectReason};

/// Version of the command record this build writes. Bumped on any change of meaning of any
/// byte; version 2 doubled the record (to make room for order fields) and version 1 records
/// still read.
pub const COMMAND_VERSION: u8 = 2;

/// Version of the event record. Bumped on any change of meaning of any byte.
pub const EVENT_VERSION: u8 = 1;

/// Size of one encoded [`Command`] in bytes (version 2).
pub const COMMAND_SIZE_BYTES: usize = 128;

/// Size of a version 1 command record, which this build still reads.
pub const COMMAND_V1_SIZE_BYTES: usize = 64;

/// Size of one encoded [`Event`] in bytes.
pub const EVENT_SIZE_BYTES: usize = 128;

const _: () = assert!(COMMAND_SIZE_BYTES.is_power_of_two());
const _: () = assert!(COMMAND_V1_SIZE_BYTES.is_power_of_two());
const _: () = assert!(EVENT_SIZE_BYTES.is_power_of_two());

/// Why a byte slice is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is shorter than one record.
    #[error("record too short: need {needed_bytes} bytes, got {got_bytes}")]
    Short {
        /// Bytes one record takes.
        needed_bytes: usize,
        /// Bytes that were given.
        got_bytes: usize,
    },
    /// The version byte names no version this build reads.
    #[error("unsupported record version {0}")]
    Version(u8),
    /// The type code names no command or event type.
    #[error("unknown {record} type code {code}")]
    UnknownType {
        /// `command` or `event`.
        record: &'static str,
        /// The byte found.
        code: u8,
    },
    /// A field holds a value outside its enum.
    #[error("bad value {value} for field `{field}`")]
    BadEnum {
        /// Name of the field.
        field: &'static str,
        /// The byte found.
        value: u8,
    },
    /// A flags byte has bits set that this version does not define.
    #[error("undefined flag bits {0:#04x}")]
    BadFlags(u8),
    /// Reserved space is not zero.
    #[error("reserved byte at offset {offset} is not zero")]
    Reserved {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
}

/// Defines a closed `u8`-coded enum with stable codes and snake-case names.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable numeric code.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// The value for a numeric code.
            pub fn from_code(code: u8) -> Result<Self, DecodeError> {
                match code {
                    $( $code => Ok($name::$variant), )+
                    value => Err(DecodeError::BadEnum { field: $field, value }),
                }
            }

            /// The snake-case name used in JSON and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value for a snake-case name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use wire_enum;

/// Little-endian reads and writes at an offset of a buffer already known to be long enough
/// (they panic otherwise); shared by every binary layout of the project.
pub mod le {
    /// The `u16` at `offset`.
    pub fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    /// The `u32` at `offset`.
    pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&bytes[offset..offset + 4]);
        u32::from_le_bytes(raw)
    }

    /// The `u64` at `offset`.
    pub fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[offset..offset + 8]);
        u64::from_le_bytes(raw)
    }

    /// The `i64` at `offset`.
    pub fn i64_at(bytes: &[u8], offset: usize) -> i64 {
        u64_at(bytes, offset) as i64
    }

    /// Writes `value` at `offset`.
    pub fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes `value` at `offset`.
    pub fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes `value` at `offset`.
    pub fn put_i64(bytes: &mut [u8], offset: usize, value: i64) {
        put_u64(bytes, offset, value as u64);
    }

    /// The offset of the first non-zero byte in `bytes[start..end]`, if any.
    pub fn first_non_zero(bytes: &[u8], start: usize, end: usize) -> Option<usize> {
        bytes[start..end]
            .iter()
            .position(|&b| b != 0)
            .map(|index| start + index)
    }
}
