//! `paywatch doctor`: checks what a self-hoster gets wrong (a chain id, a dead RPC, an IMAP
//! password, a port in use) and prints one line per check with what to fix.

use std::time::Duration;

use crate::config::{Chain, Config};
use crate::redact::redact_url as redact;
use crate::store::{RedbStore, StoreError};
use crate::watch::evm::rpc::{ChainRpc, RpcError};

/// One check's verdict.
enum Verdict {
    Ok(String),
    Warn(String),
    Fail(String),
}

struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, check: &str, v: Verdict) {
        let (tag, text) = match v {
            Verdict::Ok(t) => ("ok  ", t),
            Verdict::Warn(t) => ("warn", t),
            Verdict::Fail(t) => {
                self.failed += 1;
                ("FAIL", t)
            }
        };
        println!("{tag}  {check}: {text}");
    }
}

/// Runs every check and prints a line for each; `Err` holds how many failed (the CLI turns it
/// into its exit status), so the doctor needs nothing from the CLI.
pub async fn run(config: &Config) -> Result<(), usize> {
    let mut r = Report { failed: 0 };
    r.line(
        "config",
        Verdict::Ok(format!(
            "{} ({} merchant(s), {} watched chain(s))",
            config.source,
            config.merchants.len(),
            config.chains.len()
        )),
    );
    let daemon_running = storage(&mut r, config);
    for chain in &config.chains {
        check_chain(&mut r, chain).await;
    }
    match &config.imap {
        Some(im) => {
            let check = format!("upi.imap {}@{}", im.username, im.host);
            let v = match crate::watch::upi::imap::check(im).await {
                Ok(n) => Verdict::Ok(format!("logged in, {} holds {n} message(s)", im.mailbox)),
                Err(e) => Verdict::Fail(format!(
                    "{e} — fix: check upi.imap host/port, username and password(_file), and that the mailbox {:?} exists",
                    im.mailbox
                )),
            };
            r.line(&check, v);
        }
        None => r.line("upi.imap", Verdict::Ok("not configured".into())),
    }
    listeners(&mut r, config, daemon_running).await;
    if r.failed > 0 {
        return Err(r.failed);
    }
    Ok(())
}

/// Opens the database (or finds the daemon holding it); returns whether the daemon runs.
fn storage(r: &mut Report, config: &Config) -> bool {
    if let Some(pg) = &config.postgres {
        for (check, v) in crate::store::postgres::doctor(pg) {
            let v = match v {
                crate::store::postgres::Check::Ok(m) => Verdict::Ok(m),
                crate::store::postgres::Check::Fail(m) => Verdict::Fail(m),
            };
            r.line(check, v);
        }
        // Other nodes may run anywhere; whether one runs here is the listeners' check to tell.
        return false;
    }
    let path = config.storage_path.display().to_string();
    match RedbStore::open(&config.storage_path, 0) {
        Ok(s) => {
            s.close();
            r.line(
                "storage",
                Verdict::Ok(format!("{path} opens and is writable")),
            );
            false
        }
        Err(StoreError::Locked) => {
            r.line(
                "storage",
                Verdict::Ok(format!("{path} is in use by the running daemon")),
            );
            true
        }
        Err(e) => {
            r.line(
                "storage",
                Verdict::Fail(format!(
                    "{path}: {e} — fix: storage.path must be in a directory the daemon's user can write (StateDirectory under systemd)"
                )),
            );
            false
        }
    }
}

async fn check_chain(r: &mut Report, chain: &Chain) {
    for (i, url) in chain.rpc_urls.iter().enumerate() {
        let check = format!("chains.{}.rpc_urls.{i} ({})", chain.name, redact(url));
        let mut rpc = match ChainRpc::new(
            chain.chain_id,
            std::slice::from_ref(url),
            &chain.rpc_headers,
            Duration::from_secs(10),
        ) {
            Ok(rpc) => rpc,
            Err(e) => {
                r.line(&check, Verdict::Fail(e));
                continue;
            }
        };
        let first = match rpc.head().await {
            Ok(h) => h,
            Err(e) => {
                let fix = match &e {
                    RpcError::WrongChain { got, .. } => format!(
                        "serves chain id {got}, not {} — fix: point it at a node of chain {} (or correct chains.{}.chain_id)",
                        chain.chain_id, chain.chain_id, chain.name
                    ),
                    RpcError::AllDown(_)
                    | RpcError::RateLimited(_)
                    | RpcError::Range(_)
                    | RpcError::Refused(_) => {
                        format!(
                            "no answer ({}) — fix: check the URL, its API key and the firewall; list several URLs for failover",
                            rpc.last_error.clone().unwrap_or_else(|| e.to_string())
                        )
                    }
                };
                r.line(&check, Verdict::Fail(fix));
                continue;
            }
        };
        if chain.test {
            r.line(
                &check,
                Verdict::Ok(format!("chain id {}, head {first}", chain.chain_id)),
            );
            continue;
        }
        // A live chain's head must move: a node stuck in sync answers but sees no payments.
        let wait = Duration::from_millis((chain.block_time_ms * 3 / 2).clamp(500, 15_000));
        tokio::time::sleep(wait).await;
        let v = match rpc.head().await {
            Ok(h) if h > first => {
                Verdict::Ok(format!("chain id {}, head {h} (advancing)", chain.chain_id))
            }
            Ok(h) => Verdict::Warn(format!(
                "chain id {}, head {h} did not advance in {:.1} s — the node may be stuck or still syncing",
                chain.chain_id,
                wait.as_secs_f64()
            )),
            Err(e) => Verdict::Fail(format!("stopped answering: {e}")),
        };
        r.line(&check, v);
    }
}

async fn listeners(r: &mut Report, config: &Config, daemon_running: bool) {
    if daemon_running {
        let url = crate::daemon::admin_url(config);
        let ok = reqwest::Client::new()
            .get(format!("{url}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|resp| resp.status().is_success());
        r.line(
            "listeners",
            if ok {
                Verdict::Ok(format!("the running daemon answers at {url}"))
            } else {
                Verdict::Fail(format!(
                    "the database is locked but {url}/healthz does not answer — fix: is the daemon hung? check journalctl -u paywatch"
                ))
            },
        );
        return;
    }
    for (key, addr) in [
        ("server.listen", config.listen),
        ("server.admin_listen", config.admin_listen),
    ] {
        let v = match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => Verdict::Ok(format!("{addr} is free")),
            Err(e) => Verdict::Fail(format!(
                "{addr}: {e} — fix: another process holds the port; choose another {key}"
            )),
        };
        r.line(key, v);
    }
}
