//! Kubernetes resource quantities (`"100m"`, `"0.5"`, `"128Mi"`, `"1G"`, `"1e3"`), parsed
//! exactly and rounded up the way `resource.Quantity.MilliValue()` / `Value()` do.
//!
//! Grammar (apimachinery `pkg/api/resource/quantity.go`):
//!
//! ```text
//! quantity  ::= [+-] number suffix
//! number    ::= digits | digits "." [digits] | "." digits
//! suffix    ::= "" | binarySI | decimalSI | ("e" | "E") [+-] digits
//! binarySI  ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI ::= n | u | m | k | M | G | T | P | E
//! ```
//!
//! A parsed quantity is `± mantissa × 10^exp10 × 2^exp2` with an integer mantissa, so
//! `"0.1"` is `1 × 10^-1` and `"1.5Gi"` is `15 × 10^-1 × 2^30` — no floating point, so
//! `"0.1"` CPU is exactly 100 millicores.

use std::fmt;
use std::str::FromStr;

/// A parsed quantity. Compare quantities through [`Quantity::milli_value`] or
/// [`Quantity::value`]; the representation itself is not normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity {0:?}: no number")]
    NoNumber(String),
    #[error("quantity {0:?}: unknown suffix")]
    BadSuffix(String),
}

/// Largest decimal exponent accepted (`1e1000` would only ever saturate anyway).
const MAX_EXPONENT: i32 = 1000;

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&c) = bytes.first() {
            if c == b'+' || c == b'-' {
                negative = c == b'-';
                i = 1;
            }
        }
        let mut mantissa: u128 = 0;
        let mut exp10: i32 = 0;
        let mut digits = 0usize;
        let mut seen_dot = false;
        let mut dropped_nonzero = false;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_digit() {
                digits += 1;
                let d = u128::from(c - b'0');
                match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
                    Some(m) => {
                        mantissa = m;
                        if seen_dot {
                            exp10 -= 1;
                        }
                    }
                    // Beyond 38 significant digits: drop the digit but keep the magnitude;
                    // the mantissa is rounded up below if anything non-zero was dropped,
                    // so that the rounded-up values stay upper bounds.
                    None => {
                        if !seen_dot {
                            exp10 += 1;
                        }
                        dropped_nonzero |= d != 0;
                    }
                }
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if digits == 0 {
            return Err(QuantityError::NoNumber(s.to_string()));
        }
        if dropped_nonzero {
            mantissa = mantissa.saturating_add(1);
        }
        let suffix = &s[i..];
        let bad = || QuantityError::BadSuffix(s.to_string());
        let (e10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            _ => {
                let rest = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))
                    .ok_or_else(bad)?;
                let (sign, num) = match rest.as_bytes().first() {
                    Some(b'-') => (-1, &rest[1..]),
                    Some(b'+') => (1, &rest[1..]),
                    _ => (1, rest),
                };
                if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let e: i32 = num.parse().map_err(|_| bad())?;
                if e > MAX_EXPONENT {
                    return Err(bad());
                }
                (sign * e, 0)
            }
        };
        Ok(Quantity {
            negative: negative && mantissa != 0,
            mantissa,
            exp10: exp10 + e10,
            exp2,
        })
    }
}

impl Quantity {
    /// The value in thousandths, rounded up (towards +∞), saturating at the bounds of
    /// `i64` — CPU in millicores.
    pub fn milli_value(&self) -> i64 {
        self.scaled_ceil(3)
    }

    /// The value rounded up (towards +∞), saturating at the bounds of `i64` — bytes of
    /// memory, a count of pods.
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// `ceil(self × 10^scale)`.
    fn scaled_ceil(&self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        let e10 = self.exp10 + scale;
        // Magnitude rounded away from zero when positive (ceil) and towards zero when
        // negative (ceil of a negative number).
        let magnitude: Option<u128> = if e10 >= 0 {
            pow10(e10 as u32)
                .and_then(|p| self.mantissa.checked_mul(p))
                .and_then(|m| shl(m, self.exp2))
        } else {
            match shl(self.mantissa, self.exp2) {
                None => None,
                Some(num) => match pow10(e10.unsigned_abs()) {
                    // The divisor exceeds any mantissa: the magnitude is in (0, 1).
                    None => Some(u128::from(!self.negative)),
                    Some(den) => {
                        let q = num / den;
                        let r = num % den;
                        Some(if r != 0 && !self.negative { q + 1 } else { q })
                    }
                },
            }
        };
        match magnitude {
            Some(m) if self.negative => i64::try_from(m).map(|v| -v).unwrap_or(i64::MIN),
            Some(m) => i64::try_from(m).unwrap_or(i64::MAX),
            None if self.negative => i64::MIN,
            None => i64::MAX,
        }
    }
}

fn pow10(e: u32) -> Option<u128> {
    10u128.checked_pow(e)
}

fn shl(m: u128, bits: u32) -> Option<u128> {
    if bits == 0 {
        return Some(m);
    }
    if m.leading_zeros() < bits {
        None
    } else {
        Some(m << bits)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{}e{}", self.mantissa, self.exp10)?;
        if self.exp2 != 0 {
            write!(f, "*2^{}", self.exp2)?;
        }
        Ok(())
    }
}

/// Millicores of a CPU quantity string (`None` if it does not parse).
pub fn parse_milli(s: &str) -> Option<i64> {
    s.parse::<Quantity>().ok().map(|q| q.milli_value())
}

/// Whole units (bytes, counts) of a quantity string (`None` if it does not parse).
pub fn parse_value(s: &str) -> Option<i64> {
    s.parse::<Quantity>().ok().map(|q| q.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        s.parse::<Quantity>().unwrap().milli_value()
    }
    fn value(s: &str) -> i64 {
        s.parse::<Quantity>().unwrap().value()
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("5."), 5000);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("0.1"), 100);
        assert_eq!(milli("1.001"), 1001);
        assert_eq!(milli("+1"), 1000);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("0m"), 0);
        assert_eq!(milli("1k"), 1_000_000);
        assert_eq!(milli("250000u"), 250);
        assert_eq!(milli("1500000n"), 2, "1.5 millicores round up to 2");
        assert_eq!(milli("0.0001"), 1, "anything above zero is at least 1m");
    }

    #[test]
    fn memory_forms() {
        assert_eq!(value("128Mi"), 128 * 1024 * 1024);
        assert_eq!(value("1Ki"), 1024);
        assert_eq!(value("1Gi"), 1 << 30);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("1Ei"), 1 << 60);
        assert_eq!(value("1G"), 1_000_000_000);
        assert_eq!(value("1M"), 1_000_000);
        assert_eq!(value("1T"), 1_000_000_000_000);
        assert_eq!(value("2P"), 2_000_000_000_000_000);
        assert_eq!(value("1E"), 1_000_000_000_000_000_000);
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1E3"), 1000);
        assert_eq!(value("12e+2"), 1200);
        assert_eq!(value("1e-3"), 1, "rounded up");
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(value("129e6"), 129_000_000);
        assert_eq!(value("100"), 100);
        assert_eq!(value("0.5Ki"), 512);
        assert_eq!(value("1m"), 1, "a thousandth of a byte rounds up to one");
    }

    #[test]
    fn negatives_round_towards_positive_infinity() {
        assert_eq!(milli("-100m"), -100);
        assert_eq!(value("-1.5"), -1);
        assert_eq!(value("-1Ki"), -1024);
        assert_eq!(value("-0"), 0);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        assert_eq!(value("8Ei"), i64::MAX);
        assert_eq!(milli("1e30"), i64::MAX);
        assert_eq!(value("-1e30"), i64::MIN);
        assert_eq!(value("1e-900"), 1);
        assert_eq!(value("1e1000"), i64::MAX);
        assert_eq!(
            value("123456789012345678901234567890123456789012345"),
            i64::MAX
        );
        // More digits than a u128 holds, fractional: still rounds up to an upper bound.
        assert_eq!(value("0.000000000000000000000000000000000000000001"), 1);
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "", "m", ".", "-", "1.2.3", "1KB", "1K", "1ki", "1 Mi", " 1", "1e", "1e+", "1e3.5",
            "1Mi2", "abc", "1.5.Gi", "1e1001", "--1", "0x10",
        ] {
            assert!(s.parse::<Quantity>().is_err(), "{s:?} should not parse");
        }
        assert_eq!(parse_milli("nope"), None);
        assert_eq!(parse_milli("250m"), Some(250));
        assert_eq!(parse_value("64Mi"), Some(64 << 20));
    }
}
