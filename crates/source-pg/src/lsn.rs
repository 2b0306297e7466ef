//! Log sequence numbers.

use std::fmt;
use std::str::FromStr;

use crate::PgError;

/// A PostgreSQL log sequence number: a byte position in the WAL, as a `u64`.
///
/// Its text form is PostgreSQL's: the high and the low 32 bits in upper-case hexadecimal without
/// leading zeros, separated by a slash, such as `0/16B3748` (`pg_lsn` output, `IDENTIFY_SYSTEM`,
/// `BASE_BACKUP` results). Parsing accepts 1 to 8 hex digits of either case on each side.
///
/// ```
/// use tidemark_source_pg::Lsn;
/// let lsn: Lsn = "0/16B3748".parse().unwrap();
/// assert_eq!(lsn.0, 0x16B_3748);
/// assert_eq!(lsn.to_string(), "0/16B3748");
/// assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/0");
/// assert!("16B3748".parse::<Lsn>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, PostgreSQL's `InvalidXLogRecPtr`.
    pub const INVALID: Lsn = Lsn(0);

    /// The start of the WAL segment holding this position.
    pub fn segment_start(self, segment_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % segment_size.max(1))
    }

    /// The offset of this position inside its WAL segment.
    pub fn segment_offset(self, segment_size: u64) -> u64 {
        self.0 % segment_size.max(1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Lsn, PgError> {
        let bad = || PgError::protocol(format!("invalid LSN {s:?}: expected hex HIGH/LOW such as 0/16B3748"));
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(part(hi)?) << 32) | u64::from(part(lo)?)))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!("a/b".parse::<Lsn>().unwrap(), Lsn(0xA_0000_000B));
        for bad in ["", "/", "0/", "/0", "0/0/0", "g/0", "123456789/0", "-1/0", " 0/0", "0x1/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(Lsn(0x0100_0028).segment_start(16 << 20), Lsn(0x0100_0000));
        assert_eq!(Lsn(0x0100_0028).segment_offset(16 << 20), 0x28);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in any::<u64>()) {
            let text = Lsn(v).to_string();
            prop_assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(v));
            prop_assert_eq!(text.to_lowercase().parse::<Lsn>().unwrap(), Lsn(v));
        }

        #[test]
        fn order_is_numeric(a in any::<u64>(), b in any::<u64>()) {
            prop_assert_eq!(Lsn(a).cmp(&Lsn(b)), a.cmp(&b));
        }
    }
}
