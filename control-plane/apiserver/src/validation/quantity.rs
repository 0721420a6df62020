//! Resource quantities (`500m`, `1Gi`, `2e3`): parsed to a signed count of nano-units so
//! that requests can be compared with limits and containers classed by QoS.

/// A parsed quantity, in units of 10⁻⁹ (saturating at the `i128` range, far beyond any
/// real resource amount). Digits below a nano-unit round up, as Kubernetes rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(pub i128);

/// Kubernetes's message for a string that is not a quantity.
pub const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity string; `None` when it is not one.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if frac_part.contains('.') {
            return None;
        }
        // Decimal digits as mantissa × 10^exp10.
        let mut mantissa: i128 = 0;
        let mut exp10: i64 = 0;
        let mut lost = false;
        for c in int_part.chars().chain(frac_part.chars()) {
            let d = i128::from(c.to_digit(10)? as u8);
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
                Some(m) if m < i128::MAX / 1_000_000 => mantissa = m,
                _ => {
                    // Too many digits to hold: drop this one into the exponent.
                    exp10 += 1;
                    lost |= d != 0;
                }
            }
        }
        exp10 -= frac_part.len() as i64;
        let mut binary: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => binary = 10,
            "Mi" => binary = 20,
            "Gi" => binary = 30,
            "Ti" => binary = 40,
            "Pi" => binary = 50,
            "Ei" => binary = 60,
            other => {
                let e = other.strip_prefix(['e', 'E'])?;
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let n: i64 = e.parse().ok()?;
                exp10 = exp10.checked_add(n)?;
            }
        }
        // nanos = mantissa × 2^binary × 10^(exp10 + 9)
        let mut value = mantissa;
        value = value.saturating_mul(1i128 << binary);
        let scale = exp10 + 9;
        if scale >= 0 {
            for _ in 0..scale.min(60) {
                value = value.saturating_mul(10);
            }
            if scale > 60 && value != 0 {
                value = i128::MAX;
            }
        } else {
            let mut remainder = false;
            for _ in 0..(-scale).min(60) {
                remainder |= value % 10 != 0;
                value /= 10;
            }
            if -scale > 60 {
                remainder |= value != 0;
                value = 0;
            }
            if remainder || lost {
                value = value.saturating_add(1);
            }
        }
        Some(Quantity(if negative { -value } else { value }))
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whether the quantity is a whole number of units.
    pub fn is_integer(self) -> bool {
        self.0 % NANO == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_quantity_parse() {
        let q = |s| Quantity::parse(s).unwrap().0;
        assert_eq!(q("1"), NANO);
        assert_eq!(q("500m"), NANO / 2);
        assert_eq!(q("0.5"), NANO / 2);
        assert_eq!(q("1Ki"), 1024 * NANO);
        assert_eq!(q("1Gi"), (1 << 30) * NANO);
        assert_eq!(q("2k"), 2000 * NANO);
        assert_eq!(q("1e3"), 1000 * NANO);
        assert_eq!(q("1E-3"), NANO / 1000);
        assert_eq!(q("-1"), -NANO);
        assert_eq!(q(".5"), NANO / 2);
        assert_eq!(q("1n"), 1);
        assert_eq!(q("0.1n"), 1, "rounds up below a nano-unit");
        assert!(q("1000m") == q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("9999999999999999999999999999999999999999Ei") > q("1Ei"));
        for bad in ["", "abc", "1.2.3", "1Kb", "1e", "e3", "1ee3", "."] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
        assert!(Quantity::parse("1.5").is_some_and(|x| !x.is_integer()));
    }
}
