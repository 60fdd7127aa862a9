//! Single-thread throughput of `Parser::parse` over the shared fixtures and the UPI corpus.
//!
//! Plain `std::time` measurement: `cargo bench --bench upi_parse`. Prints alerts parsed per second.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use paywatch::watch::upi::templates::Parser;

#[derive(serde::Deserialize)]
struct Fixture {
    sender: Option<String>,
    text: String,
}

fn main() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upi_alerts.jsonl");
    let body = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is required: {e}", path.display()));
    // The shared fixtures plus the repository's corpus (most of it read by the general reading).
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upi_corpus.jsonl");
    let corpus = std::fs::read_to_string(&corpus).unwrap_or_default();
    let fixtures: Vec<Fixture> = body
        .lines()
        .chain(corpus.lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{} alert texts", fixtures.len());

    let started = Instant::now();
    let parser = Parser::builtin().unwrap();
    println!("template compile: {:?}", started.elapsed());

    // `UPI_PARSE_DUMP=<file>`: write every result (with and without the sender) and its
    // explanation, so that a speed-up can be checked to change no output.
    if let Ok(dump) = std::env::var("UPI_PARSE_DUMP") {
        let mut out = String::new();
        for f in &fixtures {
            for sender in [f.sender.as_deref(), None] {
                let e = parser.explain(sender, &f.text);
                assert_eq!(e.alert, parser.parse(sender, &f.text), "{}", f.text);
                out.push_str(&format!(
                    "{sender:?} {:?}\n{:?}\n{:?}\n",
                    f.text, e.alert, e.why
                ));
            }
        }
        std::fs::write(&dump, out).unwrap();
        println!("wrote {dump}");
    }

    // Warm up the lazy DFAs, then measure whole passes for at least two seconds.
    for _ in 0..200 {
        for f in &fixtures {
            black_box(parser.parse(f.sender.as_deref(), &f.text));
        }
    }
    let shared = body.lines().filter(|l| !l.trim().is_empty()).count();
    let runs: [(&str, &[Fixture], bool); 3] = [
        ("all texts, with sender ids", &fixtures, true),
        ("all texts, text only (no sender)", &fixtures, false),
        // The 15 templated banks' texts alone: the figure before the corpus and general reading.
        (
            "shared fixtures only, with sender ids",
            &fixtures[..shared],
            true,
        ),
    ];
    for (label, fixtures, use_sender) in runs {
        let mut parsed: u64 = 0;
        let cpu_started = thread_cpu_ns();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            for f in fixtures {
                let sender = if use_sender {
                    f.sender.as_deref()
                } else {
                    None
                };
                black_box(parser.parse(black_box(sender), black_box(&f.text)));
            }
            parsed += fixtures.len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{label}: {parsed} alerts in {secs:.2}s = {:.0} alerts/s on one thread ({:.2} us/alert)",
            parsed as f64 / secs,
            secs * 1e6 / parsed as f64
        );
        // On a busy machine the wall clock counts time the thread waited for a core; the
        // thread's own CPU time is the per-core figure.
        if let (Some(a), Some(b)) = (cpu_started, thread_cpu_ns()) {
            let cpu = (b - a) as f64 / 1e9;
            println!(
                "{label}: {:.0} alerts per CPU-second ({cpu:.2}s on the CPU of {secs:.2}s)",
                parsed as f64 / cpu
            );
        }
    }
}

/// This thread's time on a CPU, in nanoseconds (Linux: the first field of schedstat).
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
