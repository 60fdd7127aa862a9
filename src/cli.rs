//! The command line: `serve`, `keys`. Commands that change state go through the operator API
//! when the daemon runs (it holds the database lock) and straight to the file when it does not.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigSource};
use crate::daemon;
use crate::domain::apikey::{ApiKey, Permission, key_json, new_key};
use crate::store::{OpError, Outcome, RedbStore, Store, StoreError, WriteOp, write};

#[derive(Parser, Debug)]
#[command(
    name = "paywatch",
    version,
    about = "Self-hosted payment daemon for USDT and UPI"
)]
pub struct Cli {
    /// config.toml to use (default: ./config.toml, else the embedded defaults)
    #[arg(long, global = true, env = "PAYWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon
    Serve,
    /// Create, list and revoke merchants' API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bank alert tools
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Write a consistent copy of the database to PATH (a new file), while running or not
    Backup { path: PathBuf },
    /// Check the config, the storage, each chain's RPC URLs, the IMAP login and the listeners;
    /// one line per check, with what to fix. Exit 1 if any check fails.
    Doctor,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Run the UPI alert templates on a text and print what they make of it, as JSON
    Parse {
        /// The SMS sender id (VM-HDFCBK, …), to pick the bank's template
        #[arg(long)]
        sender: Option<String>,
        /// Read the alert text from this file (- for standard input)
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// Also load operator templates from this directory (as upi.templates_dir does)
        #[arg(long)]
        templates_dir: Option<String>,
        /// The alert text
        text: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; prints the secret alone on the last line (it is shown only once)
    Create {
        #[arg(long)]
        merchant: String,
        /// A live key (default: test)
        #[arg(long)]
        live: bool,
        /// Comma-separated permissions (default: sessions:read,sessions:write,events:read).
        /// Powerful, only by name: credits:write (mints payments), webhooks:write (reads and
        /// rotates the webhook signing secrets), refunds:write, * (everything)
        #[arg(long)]
        permissions: Option<String>,
    },
    /// List keys (never their secrets)
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Revoke a key by its id (key_…)
    Revoke { key_id: String },
}

/// A command's failure: the exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let source = match &cli.config {
        Some(p) => ConfigSource::File(p.clone()),
        None => ConfigSource::Default,
    };
    Ok(config::load(&source)?)
}

fn init_logging(config: &Config) {
    // A client that hangs up mid-request is not a server error: keep warp's per-connection
    // messages out of the log unless PAYWATCH_LOG asks for them.
    let filter = std::env::var("PAYWATCH_LOG")
        .unwrap_or_else(|_| format!("{},warp::server=off", config.log.level));
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Alerts(AlertsCommand::Parse {
        sender,
        file,
        text,
        templates_dir,
    }) = &cli.command
    {
        // Needs no configuration: the built-in templates, plus a directory if given.
        return alerts_parse(
            sender.as_deref(),
            file.as_deref(),
            text.as_deref(),
            templates_dir.as_deref(),
        );
    }
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve => {
            init_logging(&config);
            daemon::serve(config)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))
        }
        Command::Keys(k) => keys(&config, k).await,
        Command::Backup { path } => backup(&config, &path).await,
        Command::Doctor => crate::doctor::run(&config)
            .await
            .map_err(|failed| Failure::runtime(format!("{failed} check(s) failed"))),
        Command::Alerts(AlertsCommand::Parse {
            sender,
            file,
            text,
            templates_dir,
        }) => alerts_parse(
            sender.as_deref(),
            file.as_deref(),
            text.as_deref(),
            templates_dir.as_deref(),
        ),
    }
}

async fn backup(config: &Config, path: &std::path::Path) -> Result<(), Failure> {
    let abs = std::path::absolute(path)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?;
    if abs.exists() {
        return Err(Failure::usage(format!(
            "{}: already exists; back up to a new file",
            abs.display()
        )));
    }
    let rows = match target(config)? {
        Target::File(store) => {
            let r = match store.database() {
                None => Err(Failure::runtime(
                    "a PostgreSQL store is backed up with pg_dump or pg_basebackup (docs/postgres.md)"
                        .to_owned(),
                )),
                Some(h) => match h.get() {
                    Some(db) => crate::store::backup::backup(&db, &abs).map_err(Failure::runtime),
                    None => Err(Failure::runtime("the database is not open".to_owned())),
                },
            };
            store.close();
            r?
        }
        Target::Daemon { url, token } => {
            let v = admin_call(
                &url,
                &token,
                reqwest::Method::POST,
                "/admin/v1/backup",
                Some(serde_json::json!({"path": abs.display().to_string()})),
            )
            .await?;
            v["rows"].as_u64().unwrap_or(0)
        }
    };
    println!("backed up {rows} rows to {}", abs.display());
    Ok(())
}

fn alerts_parse(
    sender: Option<&str>,
    file: Option<&std::path::Path>,
    text: Option<&str>,
    templates_dir: Option<&str>,
) -> Result<(), Failure> {
    use std::io::Read as _;
    let text = match (file, text) {
        (Some(p), _) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::runtime(format!("standard input: {e}")))?;
            s
        }
        (Some(p), _) => std::fs::read_to_string(p)
            .map_err(|e| Failure::usage(format!("{}: cannot read: {e}", p.display())))?,
        (None, Some(t)) => t.to_owned(),
        (None, None) => return Err(Failure::usage("give the alert TEXT or --file F")),
    };
    let extra = match templates_dir {
        Some(d) => config::read_template_dir(d)
            .map_err(|e| Failure::usage(format!("--templates-dir: {e}")))?,
        None => Vec::new(),
    };
    let sources: Vec<crate::watch::upi::templates::TemplateSource<'_>> = extra
        .iter()
        .map(|(file, text)| crate::watch::upi::templates::TemplateSource { file, text })
        .collect();
    let parser = crate::watch::upi::templates::Parser::with_overrides(&sources)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let notification = sender.is_some_and(crate::watch::upi::apps::looks_like_package);
    let (a, why) = match sender {
        Some(pkg) if notification => {
            let a = parser.parse_notification(pkg, &text);
            let why = match crate::watch::upi::apps::app_for_package(pkg) {
                Some(app) => vec![
                    format!("merchant app notification: {}", app.name),
                    format!("decided by {}", a.template),
                ],
                None => vec![format!(
                    "{pkg} is not a supported merchant payment app: never money"
                )],
            };
            (a, why)
        }
        _ => {
            let e = parser.explain(sender, &text);
            (e.alert, e.why)
        }
    };
    let v = serde_json::json!({
        "kind": a.kind.as_str(),
        "is_money": a.is_money(),
        "ignore_reason": a.ignore_reason(),
        "bank": a.bank,
        "sender_is_bank": sender.filter(|_| !notification).map(|s| parser.bank_for_sender(s).is_some()),
        "amount": a.amount_paise.map(|p| crate::domain::money::format_units(u128::from(p), 2)),
        "amount_paise": a.amount_paise,
        "utr": a.utr,
        "payer_vpa": a.payer_vpa,
        "template": a.template,
        "why": why,
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// Where the CLI reaches the running daemon: the store directly, or its operator API.
enum Target {
    File(Local),
    Daemon { url: String, token: String },
}

/// A store the CLI opened itself: the redb file (no daemon holds it), or PostgreSQL, which the
/// CLI shares with the running nodes as one more node.
enum Local {
    Redb(RedbStore),
    Postgres(crate::store::PgStore),
}

impl std::ops::Deref for Local {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            Local::Redb(s) => s,
            Local::Postgres(s) => s,
        }
    }
}

impl Local {
    fn close(&self) {
        match self {
            Local::Redb(s) => s.close(),
            Local::Postgres(s) => s.close(),
        }
    }

    fn database(&self) -> Option<crate::store::DbHandle> {
        match self {
            Local::Redb(s) => Some(s.database()),
            Local::Postgres(_) => None,
        }
    }
}

fn target(config: &Config) -> Result<Target, Failure> {
    if let Some(pg) = &config.postgres {
        return crate::store::PgStore::open(pg, 0, Default::default(), 1_000)
            .map(|s| Target::File(Local::Postgres(s)))
            .map_err(|e| Failure::runtime(e.to_string()));
    }
    match RedbStore::open(&config.storage_path, 0) {
        Ok(s) => Ok(Target::File(Local::Redb(s))),
        Err(StoreError::Locked) => {
            let url = daemon::admin_url(config);
            let token = daemon::admin_token(config).map_err(|e| Failure::runtime(e.to_string()))?;
            Ok(Target::Daemon { url, token })
        }
        Err(e) => Err(Failure::runtime(e.to_string())),
    }
}

async fn admin_call(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Failure> {
    let client = reqwest::Client::new();
    let mut rb = client
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.map_err(|e| {
        Failure::runtime(format!(
            "the database is locked by a running daemon, but its operator API at {url} did not answer: {e}"
        ))
    })?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.map_err(|e| {
        Failure::runtime(format!("operator API answered {status} with no JSON: {e}"))
    })?;
    if !status.is_success() {
        let msg = v["error"]["message"].as_str().unwrap_or("error").to_owned();
        return Err(if status.is_client_error() {
            Failure::usage(msg)
        } else {
            Failure::runtime(msg)
        });
    }
    Ok(v)
}

fn op_failure(e: OpError) -> Failure {
    match e {
        OpError::NotFound(_) => Failure::usage(e.to_string()),
        other => Failure::runtime(other.to_string()),
    }
}

async fn keys(config: &Config, cmd: KeysCommand) -> Result<(), Failure> {
    if let KeysCommand::Create { merchant, .. }
    | KeysCommand::List {
        merchant: Some(merchant),
    } = &cmd
        && config.merchant(merchant).is_none()
    {
        return Err(Failure::usage(format!(
            "{}: merchants: no merchant {merchant:?} is configured",
            config.source
        )));
    }
    let target = target(config)?;
    match cmd {
        KeysCommand::Create {
            merchant,
            live,
            permissions,
        } => {
            let perms = match &permissions {
                Some(p) => Permission::parse_list(p)
                    .map_err(|m| Failure::usage(format!("--permissions: {m}")))?,
                None => Permission::DEFAULT.to_vec(),
            };
            let (key, secret) = match target {
                Target::File(store) => {
                    let (key, secret, hash) = new_key(
                        &merchant,
                        live,
                        perms,
                        chrono::Utc::now().timestamp_millis(),
                    );
                    let out = write(
                        &*store,
                        WriteOp::CreateKey {
                            key: Box::new(key),
                            hash,
                        },
                        None,
                    )
                    .await
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                    store.close();
                    match out {
                        Ok(Outcome::Key(k)) => (key_json(&k), secret),
                        Ok(_) => return Err(Failure::runtime("unexpected outcome")),
                        Err(e) => return Err(op_failure(e)),
                    }
                }
                Target::Daemon { url, token } => {
                    let perm_names: Vec<&str> = perms.iter().map(|p| p.as_str()).collect();
                    let v = admin_call(
                        &url,
                        &token,
                        reqwest::Method::POST,
                        "/admin/v1/keys",
                        Some(serde_json::json!({"merchant": merchant, "livemode": live, "permissions": perm_names})),
                    )
                    .await?;
                    let secret = v["secret"].as_str().unwrap_or_default().to_owned();
                    (v, secret)
                }
            };
            println!(
                "created {} for merchant {} ({} mode, permissions {})",
                key["id"].as_str().unwrap_or(""),
                merchant,
                if live { "live" } else { "test" },
                key["permissions"]
            );
            println!("store this secret now; it is not shown again:");
            println!("{secret}");
            Ok(())
        }
        KeysCommand::List { merchant } => {
            let keys: Vec<serde_json::Value> = match target {
                Target::File(store) => {
                    let ks: Vec<ApiKey> = store
                        .list_keys(merchant.as_deref())
                        .map_err(|e| Failure::runtime(e.to_string()))?;
                    store.close();
                    ks.iter().map(key_json).collect()
                }
                Target::Daemon { url, token } => {
                    let path = match &merchant {
                        Some(m) => format!("/admin/v1/keys?merchant={m}"),
                        None => "/admin/v1/keys".to_owned(),
                    };
                    let v = admin_call(&url, &token, reqwest::Method::GET, &path, None).await?;
                    v["data"].as_array().cloned().unwrap_or_default()
                }
            };
            for k in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k["id"].as_str().unwrap_or(""),
                    k["merchant"].as_str().unwrap_or(""),
                    if k["livemode"].as_bool().unwrap_or(false) {
                        "live"
                    } else {
                        "test"
                    },
                    k["prefix"].as_str().unwrap_or(""),
                    k["created_at"].as_str().unwrap_or(""),
                    k["revoked_at"]
                        .as_str()
                        .map_or("active".to_owned(), |r| format!("revoked {r}")),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { key_id } => {
            match target {
                Target::File(store) => {
                    let out = write(
                        &*store,
                        WriteOp::RevokeKey {
                            key_id: key_id.clone(),
                            now_ms: chrono::Utc::now().timestamp_millis(),
                        },
                        None,
                    )
                    .await
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                    store.close();
                    out.map_err(op_failure)?;
                }
                Target::Daemon { url, token } => {
                    admin_call(
                        &url,
                        &token,
                        reqwest::Method::POST,
                        &format!("/admin/v1/keys/{key_id}/revoke"),
                        None,
                    )
                    .await?;
                }
            }
            println!("revoked {key_id}");
            Ok(())
        }
    }
}
