//! Prices in a currency other than the one a method settles in: an exact rational rate, the
//! conversion of a price into the method's amount (rounded up, in the merchant's favour), and
//! the price a session keeps beside what it asks. Pure: the rate's source is `rates`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// ISO 4217 currencies a session may be priced in. All have two minor digits, so a price in
/// minor units converts into a method's minor units (paise, cents) with the decimals cancelling;
/// a zero- or three-digit currency (JPY, KWD) would need its own exponent and is not offered.
pub const PRICE_CURRENCIES: &[&str] = &[
    "inr", "usd", "eur", "gbp", "aed", "sgd", "aud", "cad", "chf", "hkd", "nzd", "sar", "myr",
    "thb", "zar",
];

/// Whether `code` (lowercase) is a currency a session may be priced in.
pub fn is_price_currency(code: &str) -> bool {
    PRICE_CURRENCIES.contains(&code)
}

/// Largest number of decimal places a rate or spread may carry (keeps the arithmetic in u128).
pub const MAX_RATE_DECIMALS: u32 = 12;

/// Why a decimal string is not a rate.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RateError {
    #[error("{0:?} is not a positive decimal number such as \"84.25\"")]
    Malformed(String),
    #[error("{0:?} has more than {MAX_RATE_DECIMALS} decimal places")]
    TooPrecise(String),
    #[error("{0:?} is not a percentage below 50% such as \"0.5%\"")]
    Spread(String),
    #[error("the amount is too large to convert at this rate")]
    Overflow,
}

/// A non-negative exact rational `num / den` (den > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    pub num: u128,
    pub den: u128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Ratio {
    fn reduced(num: u128, den: u128) -> Ratio {
        let g = gcd(num, den).max(1);
        Ratio {
            num: num / g,
            den: den / g,
        }
    }

    /// Parses a decimal string ("84.25", "0.0119") exactly; zero is refused (a rate of zero
    /// would make every price free or infinite).
    pub fn parse_positive(text: &str) -> Result<Ratio, RateError> {
        let t = text.trim();
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !ok(whole) || !ok(frac) || (t.contains('.') && frac.is_empty()) {
            return Err(RateError::Malformed(text.to_owned()));
        }
        if frac.len() > MAX_RATE_DECIMALS as usize || whole.len() > 15 {
            return Err(RateError::TooPrecise(text.to_owned()));
        }
        let den = 10u128.pow(frac.len() as u32);
        let digits = format!("{whole}{frac}");
        let num: u128 = digits
            .parse()
            .map_err(|_| RateError::Malformed(text.to_owned()))?;
        if num == 0 {
            return Err(RateError::Malformed(text.to_owned()));
        }
        Ok(Ratio::reduced(num, den))
    }

    /// The inverse rate (USD per INR from INR per USD).
    pub fn inverse(self) -> Ratio {
        Ratio {
            num: self.den,
            den: self.num,
        }
    }

    fn lt(self, o: Ratio) -> bool {
        // Both sides fit: numerators and denominators stay below 10^27 (see `median`).
        self.num.saturating_mul(o.den) < o.num.saturating_mul(self.den)
    }

    /// The decimal text of the rate: exact when it terminates, else rounded down to
    /// `MAX_RATE_DECIMALS` places (for display only; conversions use the ratio).
    pub fn to_decimal(self) -> String {
        let whole = self.num / self.den;
        let mut rem = self.num % self.den;
        let mut frac = String::new();
        while rem != 0 && frac.len() < MAX_RATE_DECIMALS as usize {
            rem = rem.saturating_mul(10);
            frac.push(char::from(b'0' + (rem / self.den) as u8));
            rem %= self.den;
        }
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    }
}

/// The median of the answers: the middle one, or the mean of the two middle ones.
pub fn median(mut rates: Vec<Ratio>) -> Option<Ratio> {
    let n = rates.len();
    if n == 0 {
        return None;
    }
    rates.sort_by(|a, b| {
        if a.lt(*b) {
            std::cmp::Ordering::Less
        } else if b.lt(*a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    if n % 2 == 1 {
        return rates.get(n / 2).copied();
    }
    let (a, b) = (rates.get(n / 2 - 1)?, rates.get(n / 2)?);
    let num = a
        .num
        .checked_mul(b.den)?
        .checked_add(b.num.checked_mul(a.den)?)?;
    let den = a.den.checked_mul(b.den)?.checked_mul(2)?;
    Some(Ratio::reduced(num, den))
}

/// Parses a spread: `"0.5%"` → 5/1000. Below 50%: anything larger is a typo.
pub fn parse_spread(text: &str) -> Result<Ratio, RateError> {
    let t = text.trim();
    let Some(p) = t.strip_suffix('%') else {
        return Err(RateError::Spread(text.to_owned()));
    };
    if p.trim() == "0" {
        return Ok(Ratio { num: 0, den: 1 });
    }
    let r = Ratio::parse_positive(p).map_err(|_| RateError::Spread(text.to_owned()))?;
    if r.num.saturating_mul(2) >= r.den.saturating_mul(100) {
        return Err(RateError::Spread(text.to_owned()));
    }
    Ok(Ratio::reduced(r.num, r.den.saturating_mul(100)))
}

/// The amount in the method's minor units for `price_minor` at `rate` (price-currency units per
/// one method unit) with `spread` added: `ceil(price · (1 + spread) / rate)`. Rounded up, so
/// the merchant never receives less than the price at the quoted rate.
pub fn convert(price_minor: u64, rate: Ratio, spread: Ratio) -> Result<u64, RateError> {
    let o = || RateError::Overflow;
    // price · (sd + sn) · rate.den / (sd · rate.num)
    let num = u128::from(price_minor)
        .checked_mul(spread.den.checked_add(spread.num).ok_or_else(o)?)
        .and_then(|v| v.checked_mul(rate.den))
        .ok_or_else(o)?;
    let den = spread.den.checked_mul(rate.num).ok_or_else(o)?;
    if den == 0 {
        return Err(RateError::Overflow);
    }
    let q = num.div_ceil(den);
    u64::try_from(q).map_err(|_| o())
}

/// The part of a tolerance given in the price's currency that the method's amount may fall
/// short by: `floor(tolerance / rate)` (rounded down: a tolerance never grows by rounding).
pub fn convert_down(price_minor: u64, rate: Ratio) -> u64 {
    let v = u128::from(price_minor)
        .checked_mul(rate.den)
        .map_or(u128::MAX, |n| n / rate.num.max(1));
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// What a session priced in another currency keeps: the price as asked and the locked rate it
/// was converted at (the session's `amount`/`currency` are what the methods ask).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// In the price currency's minor units.
    pub amount: u64,
    /// ISO 4217, lowercase (`inr`).
    pub currency: String,
    /// Price-currency units per one unit of what the methods settle in, as quoted (before the
    /// spread), exact decimal text.
    pub rate: String,
    /// The spread added in the merchant's favour (`"0.5%"`).
    pub spread: String,
    /// The pair as configured (`USDT/INR`) and where the rate came from (`fixed`, or the
    /// sources' hosts).
    pub rate_source: String,
    /// When the rate was quoted (ms since the epoch).
    pub rate_at_ms: i64,
    /// The pair's tolerances, given in the price currency, converted at the locked rate into
    /// the session's (settlement) minor units: short by at most this still counts as paid
    /// (`None`: the method's own tolerance) …
    #[serde(default)]
    pub underpayment_tolerance: Option<u64>,
    /// … and over by at most this is `paid`, not `overpaid`.
    #[serde(default)]
    pub overpayment_tolerance: u64,
}

/// An amount in a price currency (minor units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceAmount {
    pub amount: u64,
    pub currency: String,
}

impl Price {
    /// What `settle_minor` of the methods' currency is worth in the price currency at the
    /// session's locked rate, rounded down (a refund's value in the price, never overstated).
    pub fn value_of(&self, settle_minor: u64) -> Option<PriceAmount> {
        let rate = Ratio::parse_positive(&self.rate).ok()?;
        let v = u128::from(settle_minor).checked_mul(rate.num)? / rate.den;
        Some(PriceAmount {
            amount: u64::try_from(v).ok()?,
            currency: self.currency.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Ratio {
        Ratio::parse_positive(s).expect("rate")
    }

    #[test]
    fn parses_rates_exactly() {
        assert_eq!(r("84.25"), Ratio { num: 337, den: 4 });
        assert_eq!(r("2"), Ratio { num: 2, den: 1 });
        assert_eq!(r("84.25").to_decimal(), "84.25");
        for bad in ["", "-1", "1e3", "1.", ".5", "0", "0.000", "abc", "1.2.3"] {
            assert!(Ratio::parse_positive(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Ratio::parse_positive("1.0000000000001"),
            Err(RateError::TooPrecise(_))
        ));
    }

    #[test]
    fn the_issue_example_asks_ten_usdt() {
        // ₹842.50 at 84.25 INR per USDT, no spread: exactly 10.00.
        assert_eq!(
            convert(84_250, r("84.25"), parse_spread("0%").expect("spread")),
            Ok(1000)
        );
        // With 0.5% added: 10.05.
        assert_eq!(
            convert(84_250, r("84.25"), parse_spread("0.5%").expect("spread")),
            Ok(1005)
        );
    }

    #[test]
    fn conversion_rounds_up_in_the_merchants_favour() {
        let none = Ratio { num: 0, den: 1 };
        // ₹1.00 at 84.25: 1.1869… cents → 2 cents, never 1.
        assert_eq!(convert(100, r("84.25"), none), Ok(2));
        // An inverse rate: $1.00 at 0.0119 USD per INR → ₹84.0336… → 8404 paise.
        assert_eq!(convert(100, r("0.0119"), none), Ok(8404));
        assert_eq!(convert_down(100, r("84.25")), 1);
        assert!(convert(u64::MAX, r("0.000000000001"), none).is_err());
    }

    #[test]
    fn a_refund_is_valued_at_the_locked_rate_rounded_down() {
        let p = Price {
            amount: 84_250,
            currency: "inr".into(),
            rate: "84.25".into(),
            spread: "0.5%".into(),
            rate_source: "USDT/INR fixed".into(),
            rate_at_ms: 0,
            underpayment_tolerance: None,
            overpayment_tolerance: 0,
        };
        assert_eq!(p.value_of(1000).map(|v| v.amount), Some(84_250));
        assert_eq!(p.value_of(1).map(|v| v.amount), Some(84));
    }

    #[test]
    fn median_of_odd_and_even_answers() {
        assert_eq!(median(vec![r("85"), r("84"), r("90")]), Some(r("85")));
        assert_eq!(median(vec![r("84"), r("85")]), Some(r("84.5")));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn spreads_are_percentages_below_half() {
        assert_eq!(parse_spread("0.5%"), Ok(Ratio { num: 1, den: 200 }));
        assert_eq!(parse_spread("0%"), Ok(Ratio { num: 0, den: 1 }));
        for bad in ["0.5", "50%", "-1%", "abc%", "%"] {
            assert!(parse_spread(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the price and rate, the converted amount at the rate covers the price.
        #[test]
        fn converted_amounts_cover_the_price(price in 1u64..10_000_000_000, num in 1u128..100_000_000, scale in 0u32..6) {
            let rate = Ratio::reduced(num, 10u128.pow(scale));
            let none = Ratio { num: 0, den: 1 };
            let paid = convert(price, rate, none).expect("fits");
            // paid · rate ≥ price, and one minor unit less would not be.
            proptest::prop_assert!(u128::from(paid) * rate.num >= u128::from(price) * rate.den);
            proptest::prop_assert!(u128::from(paid.saturating_sub(1)) * rate.num < u128::from(price) * rate.den || paid == 0);
        }
    }
}
