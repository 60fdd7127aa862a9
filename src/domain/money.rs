//! Exact money: integers in minor or base units, decimal strings only at the edges.

use thiserror::Error;

/// Why a decimal string is not an amount.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("amount must be a decimal number such as \"149.99\"")]
    Malformed,
    #[error("amount has more than {0} decimal places")]
    TooPrecise(u32),
    #[error("amount is too large")]
    Overflow,
}

/// `10^exp` as u128, or `None` past u128's range.
pub fn pow10(exp: u32) -> Option<u128> {
    10u128.checked_pow(exp)
}

/// Formats base units with `decimals` places: `format_units(149990137, 6) == "149.990137"`.
pub fn format_units(value: u128, decimals: u32) -> String {
    if decimals == 0 {
        return value.to_string();
    }
    let Some(scale) = pow10(decimals) else {
        return value.to_string();
    };
    let whole = value / scale;
    let frac = value % scale;
    format!("{whole}.{frac:0width$}", width = decimals as usize)
}

/// Parses a non-negative decimal string into base units with `decimals` places.
/// Accepts fewer places than `decimals` ("149.9" with 2 → 14990), never more, never a sign.
pub fn parse_units(text: &str, decimals: u32) -> Result<u128, MoneyError> {
    let text = text.trim();
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(MoneyError::Malformed);
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MoneyError::Malformed);
    }
    if text.contains('.') && frac.is_empty() {
        return Err(MoneyError::Malformed);
    }
    if frac.len() > decimals as usize {
        return Err(MoneyError::TooPrecise(decimals));
    }
    let scale = pow10(decimals).ok_or(MoneyError::Overflow)?;
    let whole_v: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| MoneyError::Overflow)?
    };
    let mut frac_v: u128 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let place = pow10(decimals - 1 - i as u32).ok_or(MoneyError::Overflow)?;
        frac_v += u128::from(b - b'0') * place;
    }
    whole_v
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or(MoneyError::Overflow)
}

/// Converts an amount in a currency's minor units (2 places) into a token's base units.
pub fn minor_to_base(minor: u64, decimals: u32) -> Option<u128> {
    if decimals >= 2 {
        u128::from(minor).checked_mul(pow10(decimals - 2)?)
    } else {
        // A token coarser than cents cannot express every amount exactly.
        let div = pow10(2 - decimals)?;
        let m = u128::from(minor);
        (m % div == 0).then_some(m / div)
    }
}

/// Converts base units back to the currency's minor units, rounding down (never overstate money).
pub fn base_to_minor(base: u128, decimals: u32) -> u64 {
    let v = if decimals >= 2 {
        pow10(decimals - 2).map_or(0, |d| base / d)
    } else {
        pow10(2 - decimals).map_or(u128::MAX, |m| base.saturating_mul(m))
    };
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(format_units(149_990_137, 6), "149.990137");
        assert_eq!(format_units(14_987, 2), "149.87");
        assert_eq!(format_units(5, 2), "0.05");
        assert_eq!(format_units(7, 0), "7");
        assert_eq!(parse_units("149.87", 2), Ok(14_987));
        assert_eq!(parse_units("149.9", 2), Ok(14_990));
        assert_eq!(parse_units("149", 2), Ok(14_900));
        assert_eq!(parse_units(".5", 2), Ok(50));
        assert_eq!(parse_units("1.005", 2), Err(MoneyError::TooPrecise(2)));
        assert_eq!(parse_units("-1", 2), Err(MoneyError::Malformed));
        assert_eq!(parse_units("1e3", 2), Err(MoneyError::Malformed));
        assert_eq!(parse_units("1.", 2), Err(MoneyError::Malformed));
        assert_eq!(parse_units("", 2), Err(MoneyError::Malformed));
    }

    #[test]
    fn converts_between_minor_and_base() {
        assert_eq!(minor_to_base(14_999, 6), Some(149_990_000));
        assert_eq!(minor_to_base(14_999, 18), Some(149_990_000_000_000_000_000));
        assert_eq!(base_to_minor(149_990_137, 6), 14_999);
        assert_eq!(minor_to_base(150, 1), Some(15));
        assert_eq!(minor_to_base(155, 1), None);
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(v in any::<u64>(), d in 0u32..19) {
            let v = u128::from(v);
            prop_assert_eq!(parse_units(&format_units(v, d), d), Ok(v));
        }
    }
}
