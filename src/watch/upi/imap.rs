//! The IMAP watcher: reads the bank's alert e-mails from the merchant's mailbox over TLS, waits
//! with IDLE (or polls when the server has none), and reconnects with backoff. The last UID
//! processed is kept durably per mailbox and UIDVALIDITY, so a restart never reads a mail twice
//! as new (and a credit is unique by UTR anyway).

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio::sync::watch;

use super::mail::{MailVerdict, Mailbox, from_accepted_bank, judge};
use super::templates::Parser;
use crate::config::{Config, ImapConfig};
use crate::store::{SharedStore, WriteOp, write};

/// What the mailbox watcher needs from the running daemon.
#[derive(Clone)]
pub struct Context {
    pub store: SharedStore,
    /// The bank alert templates (`None` when they failed to compile: mails wait).
    pub parser: Option<Arc<Parser>>,
    pub config: Arc<Config>,
}

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
pub async fn run(state: Context, cfg: ImapConfig, mut stop: watch::Receiver<bool>) {
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

/// How many mails' headers one FETCH asks for.
const FETCH_CHUNK: usize = 50;

/// Hands one judged mail to the ingest path. A refusal for good is logged and skipped; a server
/// error stops the round so the mail is read again next time.
async fn record(
    state: &Context,
    cfg: &ImapConfig,
    uid: u32,
    verdict: MailVerdict,
    delivered_at_ms: i64,
) -> Result<(), String> {
    let Some(merchant) = state.config.merchant(&cfg.merchant) else {
        return Err(format!(
            "recording mail {uid}: the IMAP merchant {:?} is not configured",
            cfg.merchant
        ));
    };
    let (store, parser) = (state.store.as_ref(), state.parser.as_deref());
    if let Err(e) =
        super::ingest::process_email(store, parser, merchant, verdict, delivered_at_ms).await
    {
        if e.is_transient() {
            return Err(format!("recording mail {uid}: {e}"));
        }
        tracing::warn!(uid, error = %e, "alert mail refused");
    }
    Ok(())
}

async fn session(
    state: &Context,
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
        // Headers first, in bounded chunks of UIDs: a body is fetched only for a mail from a
        // bank this mailbox accepts and within the size limit, so a flood of large or foreign
        // mail costs headers only.
        let mut uids: Vec<u32> = sess
            .uid_search(format!("UID {}:*", last + 1))
            .await
            .map_err(|e| format!("search: {e}"))?
            .into_iter()
            .filter(|u| u64::from(*u) > last) // "n:*" returns the last message even when nothing is new
            .collect();
        uids.sort_unstable();
        let Some(parser) = state.parser.as_deref() else {
            // Without templates nothing can be judged: keep the mail for later.
            return Err("the UPI alert templates are not loaded".into());
        };
        let mailbox = Mailbox {
            authserv_id: cfg.authserv_id.as_deref().unwrap_or_default(),
            banks: &cfg.banks,
            accounts: &cfg.accounts,
            addresses: &cfg.addresses,
            max_delay_ms: i64::try_from(cfg.max_mail_delay_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        };
        let mut newest = last;
        for chunk in uids.chunks(FETCH_CHUNK) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let heads: Vec<_> = sess
                .uid_fetch(&set, "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER])")
                .await
                .map_err(|e| format!("fetch: {e}"))?
                .try_collect()
                .await
                .map_err(|e| format!("fetch: {e}"))?;
            let mut heads: Vec<_> = heads.iter().filter(|m| m.uid.is_some()).collect();
            heads.sort_by_key(|m| m.uid);
            for m in heads {
                let Some(uid) = m.uid else { continue };
                if u64::from(uid) <= last {
                    continue;
                }
                let received = m.internal_date().map_or_else(
                    || chrono::Utc::now().timestamp_millis(),
                    |d| d.timestamp_millis(),
                );
                let from_bank = m
                    .header()
                    .is_some_and(|h| from_accepted_bank(h, parser, &cfg.banks));
                if !from_bank {
                    tracing::debug!(
                        uid,
                        "IMAP watcher: not from an accepted bank, body not fetched"
                    );
                } else if m.size.is_none_or(|s| s > cfg.max_message_bytes) {
                    let reason = format!(
                        "mail of {} bytes is over upi.imap.max_message_bytes ({}): not fetched",
                        m.size
                            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                        cfg.max_message_bytes
                    );
                    let verdict = MailVerdict::Untrusted(reason);
                    record(state, cfg, uid, verdict, received).await?;
                } else {
                    let bodies: Vec<_> = sess
                        .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                        .await
                        .map_err(|e| format!("fetch: {e}"))?
                        .try_collect()
                        .await
                        .map_err(|e| format!("fetch: {e}"))?;
                    if let Some(body) = bodies
                        .iter()
                        .find(|b| b.uid == Some(uid))
                        .and_then(|b| b.body())
                    {
                        let verdict = judge(body, parser, &mailbox, received);
                        record(state, cfg, uid, verdict, received).await?;
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
