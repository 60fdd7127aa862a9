//! Allocating a new session's payment slots: for each method, a (pay_to, payable amount) no
//! other session awaiting payment holds, checked for every method before anything is written.

use std::collections::BTreeSet;

use super::reservations::res_key;
use super::session::save_session;
use super::tx::{R, Tx};
use super::{Ctx, Effect, OpError, Outcome};
use crate::domain::address::{self, lower_hex};
use crate::domain::method::{Direction, Method, Rail, Strategy};
use crate::domain::money::{format_units, minor_to_base};
use crate::domain::session::{PaymentOption, Session};
use crate::domain::uri;
use crate::matching::{pick_unique_amount, unique_amount_range};

/// The session holding (dest, amount) in this mode right now, or holding the whole address. A
/// reused slot has one holder, its most recent session: see `create_session`.
pub(super) fn holder(
    t: &mut dyn Tx,
    dest: &str,
    livemode: bool,
    amount: u128,
    now: i64,
) -> R<Option<String>> {
    let dest = res_key(dest, livemode);
    for key in [amount, 0] {
        if let Some(r) = t.reservation(&dest, key)?.filter(|r| r.is_held(now)) {
            return Ok(Some(r.session_id));
        }
    }
    Ok(None)
}

/// Amounts at `dest` within [lo, hi] held now, plus any held by this very operation.
fn held_amounts(
    t: &mut dyn Tx,
    dest: &str,
    lo: u128,
    hi: u128,
    now: i64,
    pending: &[(String, u128)],
) -> R<BTreeSet<u128>> {
    let mut held: BTreeSet<u128> = t.held_in(dest, lo, hi, now)?.into_iter().collect();
    held.extend(pending.iter().filter(|(d, _)| d == dest).map(|(_, a)| *a));
    Ok(held)
}

fn address_busy(t: &mut dyn Tx, dest: &str, now: i64, pending: &[(String, u128)]) -> R<bool> {
    Ok(pending.iter().any(|(d, _)| d == dest) || t.any_held(dest, now)?)
}

pub(super) fn create_session(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    mut s: Session,
    methods: &[Method],
) -> R<Result<Outcome, OpError>> {
    let now = cx.now;
    let note = s
        .description
        .clone()
        .or_else(|| s.client_reference_id.clone())
        .unwrap_or_default();
    let mut pending: Vec<(String, u128)> = Vec::new();
    // (xpub, index, address) of xpub addresses handed out, written only once every method
    // found a slot.
    let mut xpub_writes: Vec<(String, u32, String)> = Vec::new();
    let mut options = Vec::with_capacity(methods.len());
    for m in methods {
        let decimals = m.decimals();
        let Some(base) = minor_to_base(s.amount, decimals) else {
            return Ok(Err(OpError::Invalid(format!(
                "amount {} cannot be expressed in {} with {decimals} decimals",
                s.amount, m.name
            ))));
        };
        let (pay_to, payable, res_amount) = match &m.strategy {
            Strategy::UniqueAmount {
                pay_to,
                step,
                window,
                direction,
            } => {
                let dest = res_key(&m.destination_key(pay_to), s.livemode);
                if t.reservation(&dest, 0)?.is_some_and(|r| r.is_held(now)) {
                    return Ok(Err(no_slot(
                        m,
                        s.amount,
                        "its address is held whole",
                        "retry when that session ends",
                    )));
                }
                let (lo, hi) = unique_amount_range(base, *step, *window, *direction);
                let held = held_amounts(t, &dest, lo, hi, now, &pending)?;
                let label = (m.name.as_str(), s.livemode, decimals);
                match pick_slot(t, cx, &dest, label, base, *step, *window, *direction, &held)? {
                    Some(p) => (pay_to.clone(), p, p),
                    None => {
                        cx.effects.push(Effect::SlotsExhausted {
                            method: m.name.clone(),
                        });
                        return Ok(Err(no_slot(
                            m,
                            s.amount,
                            &format!(
                                "all {window} payable amounts of this price ({window} steps of {}) are held by sessions awaiting payment or paid within the grace period",
                                format_units(*step, decimals)
                            ),
                            &format!(
                                "capacity per price is the method's window: raise `window` of method {} in the config (each step is one more step the payable amount may drift from the price), or retry when sessions end",
                                m.name
                            ),
                        )));
                    }
                }
            }
            Strategy::AddressPool { addresses } => {
                let mut chosen = None;
                for a in addresses {
                    let key = res_key(&m.destination_key(a), s.livemode);
                    if !address_busy(t, &key, now, &pending)? {
                        chosen = Some(a.clone());
                        break;
                    }
                }
                if chosen.is_none() {
                    // Every address is held: reuse the one released longest ago by a session
                    // that received nothing, if any.
                    let mut best: Option<(i64, &String)> = None;
                    for a in addresses {
                        let key = res_key(&m.destination_key(a), s.livemode);
                        if pending.iter().any(|(d, _)| *d == key)
                            || !t.held_in(&key, 0, u128::MAX, now)?.is_empty()
                        {
                            continue;
                        }
                        if let Some((_, u)) = t.reusable_in(&key, 0, 0, now)?.first().copied()
                            && best.is_none_or(|(b, _)| u < b)
                        {
                            best = Some((u, a));
                        }
                    }
                    chosen = best.map(|(_, a)| a.clone());
                }
                match chosen {
                    Some(a) => (a, base, 0),
                    None => {
                        cx.effects.push(Effect::SlotsExhausted {
                            method: m.name.clone(),
                        });
                        return Ok(Err(no_slot(
                            m,
                            s.amount,
                            &format!(
                                "all {} pool addresses are held by sessions awaiting payment or paid within the grace period",
                                addresses.len()
                            ),
                            &format!(
                                "add addresses to pay_to_pool of method {} in the config, or retry when sessions end",
                                m.name
                            ),
                        )));
                    }
                }
            }
            Strategy::Xpub { xpub } => {
                let used = xpub_writes
                    .iter()
                    .filter(|(k, _, _)| k == xpub.as_str())
                    .count() as u64;
                let next = t.xpub_next(xpub.as_str())? + used;
                let derived = u32::try_from(next)
                    .ok()
                    .and_then(|i| xpub.address(i).ok().map(|a| (i, a)));
                let Some((index, bytes)) = derived else {
                    return Ok(Err(no_slot(
                        m,
                        s.amount,
                        "the xpub has no derivable address left at this index",
                        "configure a new xpub for this method",
                    )));
                };
                let tron = matches!(m.rail, Rail::Token { tron: true, .. });
                xpub_writes.push((xpub.as_str().to_owned(), index, lower_hex(&bytes)));
                (address::display(&bytes, tron), base, 0)
            }
        };
        let dest = m.destination_key(&pay_to);
        pending.push((res_key(&dest, s.livemode), res_amount));
        let (network, chain_id, token, token_contract) = match &m.rail {
            Rail::Token {
                network,
                chain_id,
                symbol,
                contract,
                ..
            } => (
                Some(network.clone()),
                Some(*chain_id),
                Some(symbol.clone()),
                Some(contract.clone()),
            ),
            Rail::Upi { .. } => (None, None, None, None),
        };
        options.push(PaymentOption {
            method: m.name.clone(),
            network,
            chain_id,
            token,
            token_contract,
            uri: uri::for_method(m, &pay_to, payable, &s.id, &note),
            pay_to,
            payable_base: payable,
            decimals,
            destination: dest,
            reservation_amount: res_amount,
            confirmations_required: m.confirmations(),
            // At least 90% must arrive whatever the configured tolerance: an absolute tolerance
            // sized for fees must not let a small session complete on dust. A priced session's
            // tolerance is the pair's, in the price currency, converted at the locked rate.
            underpayment_tolerance: s
                .price
                .as_ref()
                .and_then(|p| p.underpayment_tolerance)
                .map_or(m.underpayment_tolerance, |t| {
                    minor_to_base(t, decimals).unwrap_or(0)
                })
                .min(payable / 10),
            overpayment_tolerance: s.price.as_ref().map_or(0, |p| {
                minor_to_base(p.overpayment_tolerance, decimals).unwrap_or(0)
            }),
        });
    }
    // Everything is free: now write.
    for (xpub, index, addr) in &xpub_writes {
        t.put_xpub_address(xpub, *index, addr)?;
    }
    for (dest, amount) in &pending {
        // A pair past its grace but not yet swept, or freed by a session that received nothing,
        // is reused: the store drops its release entries. This session is now its only holder.
        if let Some(old) = t.hold(dest, *amount, &s.id)?
            && old.reusable
            && old.is_held(now)
        {
            cx.effects.push(Effect::SlotReused);
        }
    }
    s.payment_options = options;
    s.seq = t.next_seq()?;
    save_session(t, cx, None, &s)?;
    Ok(Ok(Outcome::Session(Box::new(s))))
}

/// The 503's text: which limit was hit, why, and what fixes it.
fn no_slot(m: &Method, amount: u64, why: &str, fix: &str) -> OpError {
    OpError::NoSlot(format!(
        "no payment slot is free for {} at amount {amount}: {why}; {fix}",
        m.name
    ))
}

/// Whether `a` is one of the amounts a `unique_amount` allocation at `base` may hand out.
fn on_grid(base: u128, step: u128, direction: Direction, a: u128) -> bool {
    let delta = match direction {
        Direction::Up => a.checked_sub(base),
        Direction::Down => base.checked_sub(a),
    };
    delta.is_some_and(|d| d % step == 0)
}

/// The payable amount for a new session at `base`: the first step nobody holds; else, only when
/// none is left, the step released longest ago by a session that received nothing (so a late
/// payment to a freed slot still reaches its session for as long as possible). Reports the
/// price's capacity use for the metrics and the console.
#[allow(clippy::too_many_arguments)]
fn pick_slot(
    t: &mut dyn Tx,
    cx: &mut Ctx<'_>,
    dest: &str,
    (method, livemode, decimals): (&str, bool, u32),
    base: u128,
    step: u128,
    window: u32,
    direction: Direction,
    held: &BTreeSet<u128>,
) -> R<Option<u128>> {
    let (lo, hi) = unique_amount_range(base, step, window, direction);
    let reusable: Vec<(u128, i64)> = t
        .reusable_in(dest, lo, hi, cx.now)?
        .into_iter()
        .filter(|(a, _)| on_grid(base, step, direction, *a) && !held.contains(a))
        .collect();
    let mut taken = held.clone();
    taken.extend(reusable.iter().map(|(a, _)| *a));
    let fresh = pick_unique_amount(base, step, window, direction, &taken);
    let picked = fresh.or_else(|| {
        reusable
            .iter()
            .min_by_key(|(a, u)| (*u, *a))
            .map(|(a, _)| *a)
    });
    let fixed = held
        .iter()
        .filter(|a| on_grid(base, step, direction, **a))
        .count();
    let freed = reusable.len() - usize::from(picked.is_some() && fresh.is_none());
    cx.effects.push(Effect::SlotUsage {
        method: method.to_owned(),
        livemode,
        base,
        used: fixed + usize::from(picked.is_some()),
        freed,
        window,
        decimals,
    });
    Ok(picked)
}
