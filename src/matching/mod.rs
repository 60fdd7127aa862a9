//! Choosing a free (pay_to, payable_amount) for a new session. Pure: the store supplies which
//! amounts are held and commits the choice in the same transaction.

use std::collections::BTreeSet;

use crate::domain::method::Direction;

/// The first free payable amount of a `unique_amount` method: `base ± k × step` for the smallest
/// `k < window` not in `held`. `None` when the window is spent (or would go to zero or overflow).
pub fn pick_unique_amount(
    base: u128,
    step: u128,
    window: u32,
    direction: Direction,
    held: &BTreeSet<u128>,
) -> Option<u128> {
    (0..u128::from(window)).find_map(|k| {
        let delta = k.checked_mul(step)?;
        let candidate = match direction {
            Direction::Up => base.checked_add(delta)?,
            Direction::Down => base.checked_sub(delta).filter(|v| *v > 0)?,
        };
        (!held.contains(&candidate)).then_some(candidate)
    })
}

/// The inclusive range of amounts a `unique_amount` allocation can touch.
pub fn unique_amount_range(
    base: u128,
    step: u128,
    window: u32,
    direction: Direction,
) -> (u128, u128) {
    let span = step.saturating_mul(u128::from(window.saturating_sub(1)));
    match direction {
        Direction::Up => (base, base.saturating_add(span)),
        Direction::Down => (base.saturating_sub(span).max(1), base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_free_step() {
        let mut held = BTreeSet::new();
        assert_eq!(
            pick_unique_amount(100, 1, 3, Direction::Up, &held),
            Some(100)
        );
        held.insert(100);
        held.insert(101);
        assert_eq!(
            pick_unique_amount(100, 1, 3, Direction::Up, &held),
            Some(102)
        );
        held.insert(102);
        assert_eq!(pick_unique_amount(100, 1, 3, Direction::Up, &held), None);
        assert_eq!(
            pick_unique_amount(100, 1, 3, Direction::Down, &held),
            Some(99)
        );
        assert_eq!(
            pick_unique_amount(1, 1, 3, Direction::Down, &BTreeSet::from([1])),
            None
        );
        assert_eq!(unique_amount_range(100, 10, 3, Direction::Up), (100, 120));
        assert_eq!(unique_amount_range(100, 10, 3, Direction::Down), (80, 100));
    }
}
