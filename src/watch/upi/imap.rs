//! The IMAP watcher: reads the bank's alert e-mails from the merchant's mailbox over TLS, waits
//! with IDLE (or polls when the server has none), and reconnects with backoff. The last UID
//! processed is kept durably per mailbox and UIDVALIDITY, so a restart never reads a mail twice
//! as new (and a credit is unique by UTR anyway).

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio::sync::watch;

use super::mail::judge;
use crate::api::AppState;
use crate::config::ImapConfig;
use crate::store::{WriteOp, write};

fn tls_config(cfg: &ImapConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{path}: {e}"))?;
            roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Runs until `stop` turns true.
pub async fn run(state: Arc<AppState>, cfg: ImapConfig, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(&state, &cfg, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(host = %cfg.host, error = %e, retry_in = ?backoff, "IMAP watcher: connection failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

type ImapSession = async_imap::Session<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// TLS connection, greeting and login: what the watcher and `paywatch doctor` both need.
async fn login(cfg: &ImapConfig) -> Result<ImapSession, String> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(cfg)?));
    let tcp = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from(cfg.host.clone()).map_err(|e| e.to_string())?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut client = async_imap::Client::new(stream);
    client
        .read_response()
        .await
        .map_err(|e| format!("greeting: {e}"))?;
    let password = cfg.password.clone().unwrap_or_default();
    client
        .login(&cfg.username, &password)
        .await
        .map_err(|(e, _)| format!("login: {e}"))
}

/// Logs in and opens the mailbox, then logs out: `paywatch doctor`'s check. Returns the number
/// of messages in the mailbox.
pub async fn check(cfg: &ImapConfig) -> Result<u32, String> {
    let mut sess = login(cfg).await?;
    let mbox = sess
        .select(&cfg.mailbox)
        .await
        .map_err(|e| format!("select {}: {e}", cfg.mailbox))?;
    let _ = sess.logout().await;
    Ok(mbox.exists)
}

async fn session(
    state: &Arc<AppState>,
    cfg: &ImapConfig,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut sess = login(cfg).await?;
    let idle_ok = sess
        .capabilities()
        .await
        .map(|c| c.has_str("IDLE"))
        .unwrap_or(false);
    tracing::info!(host = %cfg.host, mailbox = %cfg.mailbox, idle = idle_ok, "IMAP watcher connected");
    loop {
        let mbox = sess
            .select(&cfg.mailbox)
            .await
            .map_err(|e| format!("select: {e}"))?;
        let cursor_key = format!(
            "imap:{}@{}/{}/{}",
            cfg.username,
            cfg.host,
            cfg.mailbox,
            mbox.uid_validity.unwrap_or(0)
        );
        let last = match state.store.cursor(&cursor_key).map_err(|e| e.to_string())? {
            Some(l) => l,
            None => {
                // First contact with this mailbox: read the last day's mail only, not months of
                // old alerts (and old alerts never pay newer sessions: see the matcher).
                let since = (chrono::Utc::now() - chrono::Duration::days(1)).format("%d-%b-%Y");
                let recent = sess
                    .uid_search(format!("SINCE {since}"))
                    .await
                    .map_err(|e| format!("search: {e}"))?;
                let start = match recent.iter().min() {
                    Some(first) => u64::from(*first).saturating_sub(1),
                    None => u64::from(mbox.uid_next.unwrap_or(1).saturating_sub(1)),
                };
                let op = WriteOp::SetCursor {
                    key: cursor_key.clone(),
                    value: start,
                };
                if let Err(e) = write(state.store.as_ref(), op, None).await {
                    return Err(format!("saving the IMAP cursor: {e}"));
                }
                start
            }
        };
        let fetched: Vec<_> = sess
            .uid_fetch(format!("{}:*", last + 1), "(UID INTERNALDATE RFC822)")
            .await
            .map_err(|e| format!("fetch: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("fetch: {e}"))?;
        let mut newest = last;
        for m in &fetched {
            let Some(uid) = m.uid else { continue };
            if u64::from(uid) <= last {
                continue; // "n:*" returns the last message even when nothing is new
            }
            let received = m.internal_date().map_or_else(
                || chrono::Utc::now().timestamp_millis(),
                |d| d.timestamp_millis(),
            );
            let Some(parser) = state.upi.as_ref() else {
                // Without templates nothing can be judged: keep the mail for later.
                return Err("the UPI alert templates are not loaded".into());
            };
            if let Some(body) = m.body() {
                let verdict = judge(body, parser, cfg.authserv_id.as_deref(), &cfg.accounts);
                if let Err(e) =
                    crate::api::upi::process_email(state, &cfg.merchant, verdict, received).await
                {
                    if e.status.is_server_error() {
                        // Not recorded: stop here so the mail is read again next time.
                        return Err(format!("recording mail {uid}: {}", e.message));
                    }
                    // Refused for good (it cannot apply anywhere): log it and go on.
                    tracing::warn!(uid, error = %e.message, "alert mail refused");
                }
            }
            newest = newest.max(u64::from(uid));
            let op = WriteOp::SetCursor {
                key: cursor_key.clone(),
                value: newest,
            };
            if let Err(e) = write(state.store.as_ref(), op, None).await {
                return Err(format!("saving the IMAP cursor: {e}"));
            }
        }
        if *stop.borrow() {
            let _ = sess.logout().await;
            return Ok(());
        }
        let wait = Duration::from_secs(cfg.poll_interval_secs);
        if idle_ok {
            let mut idle = sess.idle();
            idle.init().await.map_err(|e| format!("IDLE: {e}"))?;
            let stopped = {
                let (waiter, _interrupt) = idle.wait_with_timeout(wait);
                tokio::select! {
                    r = waiter => { r.map_err(|e| format!("IDLE: {e}"))?; false }
                    _ = stop.changed() => true,
                }
            };
            sess = idle.done().await.map_err(|e| format!("IDLE done: {e}"))?;
            if stopped {
                let _ = sess.logout().await;
                return Ok(());
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {
                    let _ = sess.logout().await;
                    return Ok(());
                }
            }
        }
    }
}
