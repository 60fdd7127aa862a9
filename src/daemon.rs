//! Wiring: storage, listeners, the sweeper, and a graceful shutdown on SIGTERM/SIGINT.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::domain::ids::random_base62;
use crate::store::{Outcome, PgStore, RedbStore, SharedStore, StoreError, WriteOp, write};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin token file {path}: {source}")]
    AdminToken {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Locale(#[from] crate::checkout::i18n::LocaleError),
}

/// Reads the admin token from its file, creating one (mode 0600) on first start.
pub fn ensure_admin_token(path: &Path) -> Result<String, DaemonError> {
    let err = |source| DaemonError::AdminToken {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 16 => return Ok(t.trim().to_owned()),
        Ok(t) if !t.trim().is_empty() => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the admin token must be at least 16 characters",
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let token = format!("pwadm_{}", random_base62(40));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(token.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(token)
}

/// The admin token in force: from config, or from (or into) its file.
pub fn admin_token(config: &Config) -> Result<String, DaemonError> {
    match &config.admin_token {
        Some(t) => Ok(t.clone()),
        None => ensure_admin_token(&config.admin_token_path()),
    }
}

async fn shutdown_signal() -> Result<(), DaemonError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Expires sessions on time and releases reservations whose grace has passed.
async fn sweeper(store: SharedStore, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let due = match store.next_sweep_ms(api::IDEMPOTENCY_TTL_MS) {
            Ok(next) => next.is_some_and(|t| t <= now),
            Err(_) => true, // let the write report the storage problem
        };
        let mut more = due;
        while more {
            let op = WriteOp::Sweep {
                now_ms: chrono::Utc::now().timestamp_millis(),
                idempotency_ttl_ms: api::IDEMPOTENCY_TTL_MS,
                limit: 1000,
            };
            more = match write(store.as_ref(), op, None).await {
                Ok(Ok(Outcome::Swept {
                    expired,
                    released,
                    forgotten,
                })) => {
                    if expired > 0 || released > 0 || forgotten > 0 {
                        tracing::debug!(expired, released, forgotten, "sweep");
                    }
                    expired == 1000 || released == 1000 || forgotten == 1000
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed; will retry");
                    false
                }
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Half the watchdog timeout systemd asked for (WATCHDOG_USEC), if it asked.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The store the daemon opened: the redb file (one node) or PostgreSQL (several).
enum Opened {
    Redb(Arc<RedbStore>),
    Postgres(Arc<PgStore>),
}

impl Opened {
    fn shared(&self) -> SharedStore {
        match self {
            Opened::Redb(s) => s.clone(),
            Opened::Postgres(s) => s.clone(),
        }
    }

    /// The file for online backups (PostgreSQL is backed up with its own tools).
    fn database(&self) -> Option<crate::store::DbHandle> {
        match self {
            Opened::Redb(s) => Some(s.database()),
            Opened::Postgres(_) => None,
        }
    }

    fn describe(&self, config: &Config) -> String {
        match self {
            Opened::Redb(_) => config.storage_path.display().to_string(),
            Opened::Postgres(_) => "postgres".to_owned(),
        }
    }

    fn close(&self) {
        match self {
            Opened::Redb(s) => s.close(),
            Opened::Postgres(s) => s.close(),
        }
    }
}

/// Where the running daemon's operator API listens: `PAYWATCH_ADMIN_URL`, else the address it
/// recorded at start (ports may be OS-chosen), else `server.admin_listen`.
pub fn admin_url(config: &Config) -> String {
    std::env::var("PAYWATCH_ADMIN_URL")
        .ok()
        .or_else(|| {
            std::fs::read_to_string(config.admin_addr_path())
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| format!("http://{}", config.admin_listen))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), DaemonError> {
    // The pages' words are parsed here, so a broken locale file stops the start, not a page.
    crate::checkout::i18n::check()?;
    let grace_ms = i64::try_from(config.sessions.grace_period_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let store = match &config.postgres {
        Some(pg) => Opened::Postgres(Arc::new(PgStore::open(
            pg,
            grace_ms,
            config.retention.store(),
            config.writer_queue,
        )?)),
        None => Opened::Redb(Arc::new(RedbStore::open_with(
            &config.storage_path,
            grace_ms,
            config.retention.store(),
            config.writer_queue,
        )?)),
    };
    let file_token = match config.admin_token {
        Some(_) => None,
        None => Some(admin_token(&config)?),
    };
    let config = Arc::new(config);
    let shared: SharedStore = store.shared();
    let state = AppState::new(config.clone(), shared.clone(), store.database(), file_token);
    let (stop_tx, stop_rx) = watch::channel(false);

    let idle = Duration::from_secs(config.server.idle_timeout_secs);
    let (public_addr, public_task) = api::serve(
        config.listen,
        idle,
        api::public_routes(state.clone()),
        wait_for(stop_rx.clone()),
        state.closing.clone(),
    )
    .await
    .map_err(|source| DaemonError::Bind {
        addr: config.listen,
        source,
    })?;
    let (admin_addr, admin_task) = api::serve(
        config.admin_listen,
        idle,
        api::admin_routes(state.clone()),
        wait_for(stop_rx.clone()),
        state.closing.clone(),
    )
    .await
    .map_err(|source| DaemonError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    // A live secret without a test one was made before secrets were per mode, when any test
    // key could read it: say so (once, at the upgrade) so the merchant rotates it.
    for m in &config.merchants {
        let inherited = shared
            .merchant_secrets(&m.id, false)
            .is_ok_and(|s| s.is_empty())
            && shared
                .merchant_secrets(&m.id, true)
                .is_ok_and(|s| !s.is_empty());
        if inherited {
            tracing::warn!(
                merchant = %m.id,
                "the live webhook signing secret predates per-mode secrets and test keys could read it: rotate it with a live key (POST /v1/webhook_secret/rotate); see docs/security.md"
            );
        }
    }
    // One default secret per merchant and mode, so a test key never holds the live one.
    for (m, livemode) in config
        .merchants
        .iter()
        .flat_map(|m| [(m, true), (m, false)])
    {
        let op = WriteOp::EnsureMerchantSecret {
            merchant_id: m.id.clone(),
            livemode,
            secret: crate::domain::webhook::new_secret(),
        };
        match write(shared.as_ref(), op, None).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(merchant = %m.id, error = %e, "cannot create the default webhook secret")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let notify_task = tokio::spawn(crate::notify::worker::run(
        shared.clone(),
        crate::notify::worker::Settings {
            allow_private_targets: config.webhooks.allow_private_targets,
            retry_schedule_secs: config.webhooks.retry_schedule_secs.clone(),
        },
        stop_rx.clone(),
    ));
    let imap_task = config.imap.clone().map(|im| {
        tokio::spawn(crate::watch::upi::imap::run(
            crate::watch::upi::imap::Context {
                store: state.store.clone(),
                parser: state.upi.clone(),
                config: state.config.clone(),
            },
            im,
            stop_rx.clone(),
        ))
    });
    let mut chain_tasks = Vec::new();
    for chain in &config.chains {
        match crate::watch::evm::watcher::ChainWatcher::new(
            chain.clone(),
            &config.merchants,
            shared.clone(),
            state.chains.clone(),
        ) {
            Ok(w) => chain_tasks.push(tokio::spawn(w.run(stop_rx.clone()))),
            Err(e) => {
                tracing::error!(chain = %chain.name, error = %e, "cannot start the chain watcher")
            }
        }
    }
    let rates_task = tokio::spawn(state.rates.clone().run(stop_rx.clone()));
    let sweep_task = tokio::spawn(sweeper(
        shared.clone(),
        Duration::from_millis(config.sessions.sweep_interval_ms),
        stop_rx.clone(),
    ));
    tracing::info!(
        %public_addr, %admin_addr, storage = %store.describe(&config), config = %config.source,
        "paywatch ready"
    );
    if let Err(e) = std::fs::write(config.admin_addr_path(), format!("http://{admin_addr}\n")) {
        tracing::warn!(error = %e, "cannot record the operator address; the CLI will use admin_listen");
    }
    // One machine-readable line for scripts and tests (ports may have been chosen by the OS).
    println!("listening public={public_addr} admin={admin_addr}");
    let _ = std::io::stdout().flush();

    // systemd (Type=notify): ready only now that storage is open and both listeners are bound;
    // then ping the watchdog from this loop for as long as the runtime and the store answer.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_interval().map(|every| {
        let store = shared.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                if store.next_sweep_ms(0).is_ok() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        })
    });
    shutdown_signal().await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = public_task.await;
    let _ = admin_task.await;
    let _ = sweep_task.await;
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    let _ = notify_task.await;
    let _ = rates_task.await;
    if let Some(t) = imap_task {
        let _ = t.await;
    }
    for t in chain_tasks {
        let _ = t.await;
    }
    drop(state);
    drop(shared);
    store.close();
    tracing::info!("stopped cleanly");
    Ok(())
}
