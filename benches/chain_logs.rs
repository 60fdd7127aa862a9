//! Transfer logs decoded and matched per second, single thread: what the chain watcher does for
//! every log of a block before anything touches storage. `cargo bench --bench chain_logs`.
//!
//! Per log: decode the `Transfer` (topics and data as the node returned them), filter by the
//! watched recipients, and for a watched recipient build its destination key and look the
//! (destination, amount) up in the same in-memory reservation index the matcher uses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use alloy::primitives::{Bytes, LogData};
use paywatch::domain::address::lower_hex;
use paywatch::store::{Reservation, ReservationIndex};
use paywatch::watch::evm::decode::{TRANSFER_TOPIC, address_topic, decode_transfer};

const WATCHED: usize = 1_000;
const AMOUNTS_PER_ADDRESS: u128 = 10;
const LOGS: usize = 100_000;

fn addr(i: u64) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[..8].copy_from_slice(&i.to_be_bytes());
    a[12..].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    a
}

fn log(to: [u8; 20], value: u128) -> LogData {
    let mut data = [0u8; 32];
    data[16..].copy_from_slice(&value.to_be_bytes());
    LogData::new_unchecked(
        vec![
            TRANSFER_TOPIC,
            address_topic(&addr(999_999)),
            address_topic(&to),
        ],
        Bytes::copy_from_slice(&data),
    )
}

fn main() {
    let contract = lower_hex(&addr(7));
    let mut owners: HashMap<[u8; 20], u32> = HashMap::new();
    let mut index = ReservationIndex::default();
    for i in 0..WATCHED as u64 {
        let a = addr(i);
        owners.insert(a, 0);
        for k in 0..AMOUNTS_PER_ADDRESS {
            let dest = format!("evm:31337:{contract}:{}", lower_hex(&a));
            index.insert(
                &dest,
                1_000_000 + k,
                Reservation {
                    session_id: format!("cs_{i}_{k}"),
                    held_until_ms: None,
                    reusable: false,
                },
            );
        }
    }
    for (label, ours_every) in [
        ("1 in 10 logs to a watched address (a busy token)", 10u64),
        ("every log to a watched address (worst case)", 1),
    ] {
        let logs: Vec<LogData> = (0..LOGS as u64)
            .map(|i| {
                if i % ours_every == 0 {
                    log(addr(i % WATCHED as u64), 1_000_000 + u128::from(i % 20))
                } else {
                    log(addr(1_000_000 + i), 5_000_000)
                }
            })
            .collect();
        let mut dest = String::with_capacity(128);
        let run = |dest: &mut String| -> (u64, u64) {
            let mut matched = 0u64;
            let mut watched = 0u64;
            for l in &logs {
                let Some(t) = decode_transfer(l.topics(), &l.data) else {
                    continue;
                };
                if !owners.contains_key(&t.to) {
                    continue;
                }
                watched += 1;
                dest.clear();
                let _ = write!(dest, "evm:31337:{contract}:0x");
                let mut hexbuf = [0u8; 40];
                if hex::encode_to_slice(t.to, &mut hexbuf).is_ok() {
                    dest.push_str(std::str::from_utf8(&hexbuf).unwrap_or_default());
                }
                if index.get(dest, t.value).is_some() {
                    matched += 1;
                }
            }
            (watched, matched)
        };
        let (watched, matched) = run(&mut dest);
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            black_box(run(&mut dest));
            n += LOGS as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{label}: {:.1} M logs/s decoded and matched ({watched} watched, {matched} matched per pass of {LOGS})",
            n as f64 / secs / 1e6
        );
    }
}
