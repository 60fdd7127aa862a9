//! Typed configuration: embedded defaults → `config.toml` → `PAYWATCH_*` environment, validated
//! once at start with errors that name the file, line, key and problem.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::domain::address;
use crate::domain::method::{Currency, Direction, Method, Rail, Strategy};
use crate::domain::money::{parse_units, pow10};
use crate::domain::xpub::Xpub;

/// The repository's own `config.toml`, used when no file is given and none is in the directory.
pub const EMBEDDED_CONFIG: &str = include_str!("../config.toml");

/// A configuration problem, printed as one line: `config.toml:14: chains.local.rpc_urls: …`.
#[derive(Debug, Error)]
#[error("{origin}: {key}: {problem}")]
pub struct ConfigError {
    /// `config.toml:14`, `config.toml`, or `environment PAYWATCH_X`.
    pub origin: String,
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    pub admin_listen: String,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
    /// A header (e.g. `X-Forwarded-For`) naming the client, believed only from `trusted_proxies`.
    pub trusted_proxy_header: Option<String>,
    /// Addresses or CIDR ranges of the reverse proxies in front of the public listener.
    pub trusted_proxies: Vec<String>,
    /// Host header values the operator listener accepts (DNS-rebinding guard); empty means the
    /// listen address, `localhost` and `127.0.0.1`/`[::1]` with its port.
    pub admin_allowed_hosts: Vec<String>,
    /// An HTTP/1 or HTTP/2 connection with no request in flight is closed after this long.
    pub idle_timeout_secs: u64,
    /// Live status streams one client may hold open at once.
    pub streams_per_client: usize,
    /// Claims (`POST /c/{id}/claim`) one client may make per minute.
    pub claims_per_minute: u32,
    /// Payment link opens (`/l/{id}`) one client may make per minute: each creates a session
    /// that holds a payment slot until it ends.
    pub link_opens_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            admin_token: None,
            admin_token_file: None,
            trusted_proxy_header: None,
            trusted_proxies: Vec::new(),
            admin_allowed_hosts: Vec::new(),
            idle_timeout_secs: 60,
            streams_per_client: 4,
            claims_per_minute: 10,
            link_opens_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `redb` (one file, one node: the default) or `postgres` (several nodes, one database).
    pub backend: String,
    pub path: String,
    /// Writes waiting for the writer at most; past it a write is refused (503), so an overload
    /// cannot grow memory without bound.
    pub writer_queue: usize,
    /// PostgreSQL: the connection URL, or a file holding it (it carries the password).
    pub url: Option<String>,
    pub url_file: Option<String>,
    /// PostgreSQL: read connections per node.
    pub pool_size: u32,
    /// PostgreSQL: statements running longer are cancelled.
    pub statement_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "redb".into(),
            path: "data/paywatch.redb".into(),
            writer_queue: 10_000,
            url: None,
            url_file: None,
            pool_size: 8,
            statement_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub allow_private_targets: bool,
    pub retry_schedule_secs: Vec<u64>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private_targets: false,
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 72000, 86400],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Default `expires_in` of a session, seconds.
    pub default_expires_in: u64,
    /// How long after a session ends its (pay_to, amount) stays reserved for late payments.
    pub grace_period_secs: u64,
    /// How often the sweeper looks for sessions to expire.
    pub sweep_interval_ms: u64,
    /// The shortest `expires_in` a merchant may ask for (API contract: 300); lower it only to
    /// rehearse expiry in tests.
    pub min_expires_in: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            default_expires_in: 1800,
            grace_period_secs: 86_400,
            sweep_interval_ms: 1000,
            min_expires_in: 300,
        }
    }
}

/// `[retention]`: how long records that only serve as history are kept (0 = forever).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Ignored alerts (OTPs, promotions, debits), seconds.
    pub ignored_alert_secs: u64,
    /// Events whose every delivery succeeded, with those deliveries, seconds.
    pub event_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            ignored_alert_secs: 30 * 86_400,
            event_secs: 30 * 86_400,
        }
    }
}

impl RetentionConfig {
    /// The store's retention, in milliseconds.
    pub fn store(&self) -> crate::store::Retention {
        let ms = |s: u64| {
            i64::try_from(s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1000)
        };
        crate::store::Retention {
            ignored_alerts_ms: ms(self.ignored_alert_secs),
            events_ms: ms(self.event_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `plain` or `json`.
    pub format: String,
    /// A `tracing` filter such as `info` or `paywatch=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "plain".into(),
            level: "info".into(),
        }
    }
}

/// `[chains.NAME]` as written: every key optional, because a preset in `watchers/chains/` (or the
/// entry's `preset = "…"`) supplies what is not given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The built-in preset to start from; defaults to the entry's own name when a preset has it.
    pub preset: Option<String>,
    pub chain_id: Option<u64>,
    pub test: Option<bool>,
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    pub token: Option<String>,
    pub token_contract: Option<String>,
    pub decimals: Option<u32>,
    pub confirmations: Option<u32>,
    pub poll_interval_ms: Option<u64>,
    /// TRON: Base58Check `T…` addresses at the edges.
    pub tron: Option<bool>,
    pub block_time_ms: Option<u64>,
    /// Blocks per `eth_getLogs` request (halved when an RPC refuses a range).
    pub max_log_range: Option<u64>,
    /// Where the first run starts when no checkpoint exists (default: the head at first start).
    pub start_block: Option<u64>,
    /// A WebSocket URL whose new-heads subscription wakes the poll at once (optional).
    pub ws_url: Option<String>,
    /// Request headers per RPC URL (a provider's API key: TronGrid's `TRON-PRO-API-KEY`).
    #[serde(default)]
    pub rpc_headers: Vec<RpcHeaderConfig>,
    /// `"finalized"`: a block is final once the chain's `finalized` tag has passed it (and it
    /// has `confirmations`, the floor); `"confirmations"`: the count alone.
    pub finality: Option<String>,
    /// The poll interval while no session on this chain awaits payment.
    pub idle_poll_interval_ms: Option<u64>,
    /// A payment counts only once a second RPC URL returns the same receipt.
    pub second_opinion: Option<bool>,
}

/// `[[chains.NAME.rpc_headers]]`: one header sent to one of the chain's `rpc_urls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcHeaderConfig {
    pub url: String,
    pub name: String,
    pub value: Option<String>,
    /// A file holding the value (trimmed), so the key need not sit in config.toml.
    pub value_file: Option<String>,
}

/// A header value that is a credential: never shown by `Debug`, so never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(redacted)")
    }
}

/// One resolved header for one RPC URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcHeader {
    pub url: String,
    pub name: String,
    pub value: SecretValue,
}

/// How a chain's blocks become final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// The `finalized` block tag, with the confirmation count as the floor and the fallback.
    Finalized,
    /// The confirmation count alone.
    Confirmations,
}

impl ChainConfig {
    /// `self` over `base`: what this entry gives wins.
    fn over(&self, base: ChainConfig) -> ChainConfig {
        ChainConfig {
            preset: self.preset.clone().or(base.preset),
            chain_id: self.chain_id.or(base.chain_id),
            test: self.test.or(base.test),
            rpc_urls: if self.rpc_urls.is_empty() {
                base.rpc_urls
            } else {
                self.rpc_urls.clone()
            },
            token: self.token.clone().or(base.token),
            token_contract: self.token_contract.clone().or(base.token_contract),
            decimals: self.decimals.or(base.decimals),
            confirmations: self.confirmations.or(base.confirmations),
            poll_interval_ms: self.poll_interval_ms.or(base.poll_interval_ms),
            tron: self.tron.or(base.tron),
            block_time_ms: self.block_time_ms.or(base.block_time_ms),
            max_log_range: self.max_log_range.or(base.max_log_range),
            start_block: self.start_block.or(base.start_block),
            ws_url: self.ws_url.clone().or(base.ws_url),
            rpc_headers: if self.rpc_headers.is_empty() {
                base.rpc_headers
            } else {
                self.rpc_headers.clone()
            },
            finality: self.finality.clone().or(base.finality),
            idle_poll_interval_ms: self.idle_poll_interval_ms.or(base.idle_poll_interval_ms),
            second_opinion: self.second_opinion.or(base.second_opinion),
        }
    }
}

/// A chain and the token watched on it, resolved against its preset and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The config key (`local`, `polygon`): the `network` merchants see.
    pub name: String,
    pub chain_id: u64,
    pub test: bool,
    pub rpc_urls: Vec<String>,
    pub token: String,
    /// The token contract's 20 bytes.
    pub contract: [u8; 20],
    pub decimals: u32,
    pub confirmations: u32,
    pub poll_interval_ms: u64,
    pub tron: bool,
    pub block_time_ms: u64,
    pub max_log_range: u64,
    pub start_block: Option<u64>,
    pub ws_url: Option<String>,
    pub rpc_headers: Vec<RpcHeader>,
    pub finality: Finality,
    /// Equal to `poll_interval_ms` unless the chain polls slower when no session waits.
    pub idle_poll_interval_ms: u64,
    pub second_opinion: bool,
}

impl Chain {
    /// The contract in the chain's edge form (EIP-55, or `T…` on TRON).
    pub fn contract_display(&self) -> String {
        crate::domain::address::display(&self.contract, self.tron)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub vpa: Option<String>,
    pub payee_name: Option<String>,
    pub merchant_code: Option<String>,
    /// The VPA is a person's, not a merchant's: the UPI link carries no `mc`/`tr`, which apps
    /// refuse on personal VPAs ("this transaction may be risky").
    pub personal_vpa: Option<bool>,
    pub chain: Option<String>,
    pub pay_to: Option<String>,
    pub pay_to_pool: Option<Vec<String>>,
    /// The account's extended public key, for the `xpub` strategy.
    pub xpub: Option<String>,
    pub strategy: Option<String>,
    pub step: Option<String>,
    pub window: Option<u32>,
    pub direction: Option<Direction>,
    pub underpayment_tolerance: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default)]
    pub methods: BTreeMap<String, MethodConfig>,
}

/// How an SMS-forwarder app posts alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestFormat {
    /// paywatch's own `{"source": "sms", "sender", "text", "received_at"}`.
    Sms,
    /// SMS Gateway for Android: `{"event": "sms:received", "payload": {…}}`, `X-Signature`.
    SmsGateway,
    /// "SMS to URL forwarder": its JSON template `{"from", "text", "receivedStamp", …}`.
    SmsToUrl,
    /// SmsForwarder: a form body `from`, `content`, `timestamp`, `sign`.
    Smsforwarder,
}

/// One forwarder allowed to post alerts without an API key: `[upi.ingest.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSource {
    #[serde(skip)]
    pub name: String,
    pub merchant: String,
    /// Sent as `?token=…` or `X-Paywatch-Token` (Bearer is for API keys).
    pub token: String,
    pub format: IngestFormat,
    /// The app's signing key (SMS Gateway) or secret (SmsForwarder); required for those.
    pub signing_key: Option<String>,
}

/// The mailbox that receives the bank's alert e-mails: `[upi.imap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    #[serde(default = "imaps_port")]
    pub port: u16,
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<String>,
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// Whose UPI method the credits belong to.
    pub merchant: String,
    /// The last digits of the merchant's bank account(s), as alerts mask them ("XX1234" → "1234"):
    /// an alert must name one, so a genuine bank mail about someone else's account cannot pay.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// A PEM file of extra CAs to trust (a self-signed mail server).
    pub ca_file: Option<String>,
    /// The receiving server's authserv-id: required, and only the topmost Authentication-Results
    /// header counts, and only when it carries this id (a sender can forge any header below).
    pub authserv_id: Option<String>,
    /// The banks (template names, e.g. "HDFC") whose alerts this mailbox accepts; a mail from
    /// another bank, even genuinely signed, is refused.
    #[serde(default)]
    pub banks: Vec<String>,
    /// The mailbox's own addresses (default: `username` when it is an address): a mail must be
    /// addressed to one (To/Cc, and Delivered-To when present), not forwarded from elsewhere.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// How far a mail's own dates (Date, DKIM `t=`) may be from its delivery: an old alert re-sent
    /// later is refused.
    #[serde(default = "mail_delay_secs")]
    pub max_mail_delay_secs: u64,
    /// Mails larger than this are not fetched (bank alerts are small).
    #[serde(default = "mail_bytes")]
    pub max_message_bytes: u32,
    /// Polling interval when the server has no IDLE, and the IDLE refresh interval.
    #[serde(default = "poll_secs")]
    pub poll_interval_secs: u64,
}

fn imaps_port() -> u16 {
    993
}
fn inbox() -> String {
    "INBOX".into()
}
fn poll_secs() -> u64 {
    60
}
fn mail_delay_secs() -> u64 {
    3600
}
fn mail_bytes() -> u32 {
    512 * 1024
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct UpiConfig {
    ingest: BTreeMap<String, IngestSource>,
    imap: Option<ImapConfig>,
    /// A directory of operator alert templates (`*.toml`): a template for a bank replaces the
    /// built-in one, a new bank is added. No recompiling to support a bank.
    templates_dir: Option<String>,
    /// Extra DLT SMS headers, one line each: `HEADER = "bank"` (a registry id such as
    /// "indusind", or a new bank's name).
    sms_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    upi: UpiConfig,
    server: ServerConfig,
    storage: StorageConfig,
    api: ApiConfig,
    webhooks: WebhooksConfig,
    sessions: SessionsConfig,
    retention: RetentionConfig,
    log: LogConfig,
    chains: BTreeMap<String, ChainConfig>,
    merchants: Vec<MerchantConfig>,
    /// `[rates."USDT/INR"]`: exchange rates for sessions priced in another currency.
    rates: BTreeMap<String, crate::rates::RateConfig>,
}

/// A merchant as the daemon uses it: its methods resolved against the chains.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub allowed_domains: Vec<String>,
    pub methods: Vec<Method>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    pub listen: SocketAddr,
    pub public_url: String,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    /// The listener and per-client limits of `[server]`, as written.
    pub server: ServerConfig,
    /// `server.trusted_proxies`, parsed: (network, prefix length).
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    pub storage_path: PathBuf,
    pub writer_queue: usize,
    /// `Some` when `storage.backend = "postgres"`: the connection it uses instead of the file.
    pub postgres: Option<crate::store::PgOptions>,
    pub api: ApiConfig,
    pub webhooks: WebhooksConfig,
    pub sessions: SessionsConfig,
    pub retention: RetentionConfig,
    pub log: LogConfig,
    pub merchants: Vec<Merchant>,
    /// Chains with a watcher: those a merchant method uses.
    pub chains: Vec<Chain>,
    /// Forwarders that post UPI alerts with an ingest token (their credits pay live sessions).
    pub ingest: Vec<IngestSource>,
    /// The alert mailbox, with its password resolved.
    pub imap: Option<ImapConfig>,
    /// Operator alert templates: (file, TOML text), already checked to compile.
    pub upi_templates: Vec<(String, String)>,
    /// Operator SMS headers `[upi.sms_headers]`: (header, bank), already checked.
    pub upi_headers: Vec<(String, String)>,
    /// The exchange-rate pairs of `[rates]`, validated.
    pub rates: Vec<crate::rates::RatePair>,
}

impl Config {
    /// The alert parser: built-in templates plus the operator's.
    pub fn upi_parser(
        &self,
    ) -> Result<crate::watch::upi::templates::Parser, crate::watch::upi::templates::TemplateError>
    {
        let sources: Vec<crate::watch::upi::templates::TemplateSource<'_>> = self
            .upi_templates
            .iter()
            .map(|(file, text)| crate::watch::upi::templates::TemplateSource { file, text })
            .collect();
        crate::watch::upi::templates::Parser::with_overrides(&sources)?
            .with_headers(&self.upi_headers)
    }
}

/// Reads every `*.toml` in `dir`, sorted by name.
/// The alert templates as configured (built-in plus `upi.templates_dir`), for checks that need
/// the bank names.
fn read_upi_parser(dir: &Option<String>) -> Result<crate::watch::upi::templates::Parser, String> {
    let files = match dir {
        Some(d) => read_template_dir(d)?,
        None => Vec::new(),
    };
    let sources: Vec<crate::watch::upi::templates::TemplateSource<'_>> = files
        .iter()
        .map(|(file, text)| crate::watch::upi::templates::TemplateSource { file, text })
        .collect();
    crate::watch::upi::templates::Parser::with_overrides(&sources).map_err(|e| e.to_string())
}

pub fn read_template_dir(dir: &str) -> Result<Vec<(String, String)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {dir}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|t| (p.display().to_string(), t))
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .collect()
}

impl Config {
    pub fn merchant(&self, id: &str) -> Option<&Merchant> {
        self.merchants.iter().find(|m| m.id == id)
    }

    /// Where the running daemon records its operator listener's address (it may be OS-chosen).
    pub fn admin_addr_path(&self) -> PathBuf {
        self.storage_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("admin.addr")
    }

    /// Where the admin token lives when it is not set in config: next to the database.
    pub fn admin_token_path(&self) -> PathBuf {
        self.admin_token_file.clone().unwrap_or_else(|| {
            self.storage_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("admin.token")
        })
    }
}

/// Where to read configuration from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file the operator named (it must exist).
    File(PathBuf),
    /// `./config.toml` if present, else the embedded defaults.
    Default,
}

/// Loads, overrides from the environment and validates.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
    let (name, text) = match source {
        ConfigSource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                origin: p.display().to_string(),
                key: "(file)".into(),
                problem: format!("cannot read: {e}"),
            })?;
            (p.display().to_string(), text)
        }
        ConfigSource::Default => match std::fs::read_to_string("config.toml") {
            Ok(t) => ("config.toml".to_owned(), t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                "(embedded config.toml)".to_owned(),
                EMBEDDED_CONFIG.to_owned(),
            ),
            Err(e) => {
                return Err(ConfigError {
                    origin: "config.toml".into(),
                    key: "(file)".into(),
                    problem: format!("cannot read: {e}"),
                });
            }
        },
    };
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PAYWATCH_") && !IGNORED_ENV.contains(&k.as_str()))
        .collect();
    parse(&name, &text, &env)
}

/// Variables with the prefix that are not config keys.
const IGNORED_ENV: [&str; 3] = ["PAYWATCH_CONFIG", "PAYWATCH_LOG", "PAYWATCH_ADMIN_URL"];

/// Parses `text` (named `name` in errors) with `env` overrides applied.
pub fn parse(name: &str, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let locator = Locator::new(name, text);
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let origin = e
            .span()
            .map(|s| format!("{name}:{}", line_of(text, s.start)))
            .unwrap_or_else(|| name.to_owned());
        ConfigError {
            origin,
            key: "(syntax)".into(),
            problem: e.message().trim().to_owned(),
        }
    })?;
    let mut root = toml::Value::Table(table);
    let mut env_keys = BTreeMap::new();
    for (var, value) in env {
        let path = apply_env(&mut root, var, value)?;
        env_keys.insert(path, var.clone());
    }
    let locate = |key: &str| -> String {
        env_keys
            .iter()
            .find(|(p, _)| key == p.as_str() || key.starts_with(&format!("{p}.")))
            .map(|(_, var)| format!("environment {var}"))
            .unwrap_or_else(|| locator.origin(key))
    };
    resolve_secret_files(&mut root, "", &locate)?;
    let raw: RawConfig = serde_path_to_error::deserialize(root).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(top)".to_owned() } else { key };
        let mut problem = e.into_inner().message().trim().to_owned();
        if let Some(rest) = problem.strip_prefix("unknown field ") {
            problem = format!("unknown key {rest}");
        }
        ConfigError {
            origin: locate(&key),
            key,
            problem,
        }
    })?;
    validate(raw, name, &locate)
}

/// Secrets that may instead be read from a file: `KEY_file = "/path"` sets `KEY` to the file's
/// contents (trimmed), so the secret need not sit in config.toml or the environment.
/// (`server.admin_token_file` predates the rule and keeps its own meaning: the token's file,
/// created on first start when missing.)
const SECRET_KEYS: [&str; 3] = ["token", "signing_key", "password"];

/// Applies the `_file` rule everywhere outside `[chains]` (whose `token` is a symbol).
fn resolve_secret_files(
    v: &mut toml::Value,
    path: &str,
    locate: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::Table(t) => {
            for secret in SECRET_KEYS {
                let file_key = format!("{secret}_file");
                if path == "chains" || path.starts_with("chains.") {
                    break;
                }
                let Some(f) = t.get(&file_key) else {
                    continue;
                };
                let dotted = if path.is_empty() {
                    file_key.clone()
                } else {
                    format!("{path}.{file_key}")
                };
                let Some(file) = f.as_str().map(str::to_owned) else {
                    return Err(err(locate, &dotted, "must be a file path (a string)"));
                };
                if t.contains_key(secret) {
                    return Err(err(
                        locate,
                        &dotted,
                        format!("set {secret} or {file_key}, not both"),
                    ));
                }
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| err(locate, &dotted, format!("cannot read {file}: {e}")))?;
                let secret_value = text.trim();
                if secret_value.is_empty() {
                    return Err(err(locate, &dotted, format!("{file} is empty")));
                }
                let secret_value = toml::Value::String(secret_value.to_owned());
                t.remove(&file_key);
                t.insert(secret.to_owned(), secret_value);
            }
            for (k, child) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                resolve_secret_files(child, &p, locate)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                resolve_secret_files(child, &format!("{path}.{i}"), locate)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// Finds the line a dotted key is on, using the document's spans.
struct Locator<'a> {
    name: &'a str,
    text: &'a str,
    doc: Option<toml_edit::Document<String>>,
}

impl<'a> Locator<'a> {
    fn new(name: &'a str, text: &'a str) -> Self {
        Locator {
            name,
            text,
            doc: toml_edit::Document::parse(text.to_owned()).ok(),
        }
    }

    fn origin(&self, key: &str) -> String {
        let Some(doc) = &self.doc else {
            return self.name.to_owned();
        };
        let mut item = doc.as_item();
        let mut best = None;
        for seg in key.split('.') {
            let next = match seg.parse::<usize>() {
                Ok(i) => item.get(i),
                Err(_) => item.get(seg),
            };
            match next {
                Some(n) => {
                    item = n;
                    if let Some(span) = item.span() {
                        best = Some(span.start);
                    }
                }
                None => break,
            }
        }
        match best {
            Some(offset) => format!("{}:{}", self.name, line_of(self.text, offset)),
            None => self.name.to_owned(),
        }
    }
}

/// Applies `PAYWATCH_SERVER__LISTEN=…` as `server.listen`; returns the dotted key.
fn apply_env(root: &mut toml::Value, var: &str, value: &str) -> Result<String, ConfigError> {
    let bad = |problem: String| ConfigError {
        origin: format!("environment {var}"),
        key: var.to_owned(),
        problem,
    };
    let rest = var.trim_start_matches("PAYWATCH_");
    let segs: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if segs.iter().any(String::is_empty) {
        return Err(bad("empty key segment".into()));
    }
    let mut cur: &mut toml::Value = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    let new = env_value(t.get(seg.as_str()), value);
                    t.insert(seg.clone(), new);
                    return Ok(segs.join("."));
                }
                t.entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(a) => {
                let idx: usize = seg
                    .parse()
                    .map_err(|_| bad(format!("{seg:?} must be an array index")))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .ok_or_else(|| bad(format!("index {idx} is past the {len} entries")))?;
                if last {
                    *slot = env_value(Some(slot), value);
                    return Ok(segs.join("."));
                }
                slot
            }
            _ => return Err(bad(format!("{} is not a table", segs[..i].join(".")))),
        };
    }
    Err(bad("no key".into()))
}

/// An environment value takes the type of what it replaces; strings stay strings.
fn env_value(existing: Option<&toml::Value>, value: &str) -> toml::Value {
    if let Some(toml::Value::String(_)) = existing {
        return toml::Value::String(value.to_owned());
    }
    let probe = format!("v = {value}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

fn err(locate: &dyn Fn(&str) -> String, key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: locate(key),
        key: key.to_owned(),
        problem: problem.into(),
    }
}

fn parse_addr(
    locate: &dyn Fn(&str) -> String,
    key: &str,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        err(
            locate,
            key,
            format!("{value:?} is not an address such as 127.0.0.1:8080"),
        )
    })
}

fn validate(
    raw: RawConfig,
    name: &str,
    locate: &dyn Fn(&str) -> String,
) -> Result<Config, ConfigError> {
    let listen = parse_addr(locate, "server.listen", &raw.server.listen)?;
    let admin_listen = parse_addr(locate, "server.admin_listen", &raw.server.admin_listen)?;
    if listen == admin_listen && listen.port() != 0 {
        return Err(err(
            locate,
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    let public_url = raw.server.public_url.trim_end_matches('/').to_owned();
    match url::Url::parse(&public_url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            return Err(err(
                locate,
                "server.public_url",
                format!("{public_url:?} is not an absolute http(s) URL"),
            ));
        }
    }
    if raw.server.admin_token.is_some() && raw.server.admin_token_file.is_some() {
        return Err(err(
            locate,
            "server.admin_token",
            "set admin_token or admin_token_file, not both",
        ));
    }
    if let Some(t) = &raw.server.admin_token
        && t.len() < 16
    {
        return Err(err(
            locate,
            "server.admin_token",
            "must be at least 16 characters",
        ));
    }
    if raw.storage.path.trim().is_empty() {
        return Err(err(locate, "storage.path", "must not be empty"));
    }
    if raw.storage.writer_queue == 0 {
        return Err(err(locate, "storage.writer_queue", "must be at least 1"));
    }
    let postgres = postgres_options(&raw.storage, locate)?;
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.server.trusted_proxies.iter().enumerate() {
        let net = parse_cidr(p).ok_or_else(|| {
            err(
                locate,
                &format!("server.trusted_proxies.{i}"),
                format!("{p:?} is not an IP address or CIDR range such as 10.0.0.0/8"),
            )
        })?;
        trusted_proxies.push(net);
    }
    if let Some(h) = &raw.server.trusted_proxy_header
        && http::HeaderName::from_bytes(h.as_bytes()).is_err()
    {
        return Err(err(
            locate,
            "server.trusted_proxy_header",
            format!("{h:?} is not a header name"),
        ));
    }
    if raw.server.trusted_proxy_header.is_some() && trusted_proxies.is_empty() {
        return Err(err(
            locate,
            "server.trusted_proxies",
            "trusted_proxy_header needs the proxies' addresses here",
        ));
    }
    if raw.server.idle_timeout_secs == 0 {
        return Err(err(
            locate,
            "server.idle_timeout_secs",
            "must be at least 1",
        ));
    }
    if raw.server.streams_per_client == 0 {
        return Err(err(
            locate,
            "server.streams_per_client",
            "must be at least 1",
        ));
    }
    if raw.server.claims_per_minute == 0 {
        return Err(err(
            locate,
            "server.claims_per_minute",
            "must be at least 1",
        ));
    }
    if raw.server.link_opens_per_minute == 0 {
        return Err(err(
            locate,
            "server.link_opens_per_minute",
            "must be at least 1",
        ));
    }
    if raw.api.rate_limit_per_second == 0 {
        return Err(err(
            locate,
            "api.rate_limit_per_second",
            "must be at least 1",
        ));
    }
    if raw.api.rate_limit_burst < raw.api.rate_limit_per_second.min(1) {
        return Err(err(locate, "api.rate_limit_burst", "must be at least 1"));
    }
    if raw.webhooks.retry_schedule_secs.is_empty() {
        return Err(err(
            locate,
            "webhooks.retry_schedule_secs",
            "needs at least one retry",
        ));
    }
    if !(1..=86_400).contains(&raw.sessions.min_expires_in) {
        return Err(err(
            locate,
            "sessions.min_expires_in",
            "must be between 1 and 86400 seconds",
        ));
    }
    if !(raw.sessions.min_expires_in..=86_400).contains(&raw.sessions.default_expires_in) {
        return Err(err(
            locate,
            "sessions.default_expires_in",
            "must be between sessions.min_expires_in (300 by default) and 86400 seconds",
        ));
    }
    if raw.sessions.sweep_interval_ms == 0 {
        return Err(err(
            locate,
            "sessions.sweep_interval_ms",
            "must be at least 1",
        ));
    }
    if !matches!(raw.log.format.as_str(), "plain" | "json") {
        return Err(err(locate, "log.format", "must be \"plain\" or \"json\""));
    }
    let mut chains = BTreeMap::new();
    for (id, chain) in &raw.chains {
        chains.insert(id.clone(), resolve_chain(locate, id, chain)?);
    }
    if raw.merchants.is_empty() {
        return Err(err(
            locate,
            "merchants",
            "at least one [[merchants]] entry is needed",
        ));
    }
    let mut merchants: Vec<Merchant> = Vec::new();
    let mut used_chains: Vec<Chain> = Vec::new();
    for (i, m) in raw.merchants.iter().enumerate() {
        let key = format!("merchants.{i}");
        if !valid_slug(&m.id) {
            return Err(err(
                locate,
                &format!("{key}.id"),
                format!("{:?} must be 1-40 of a-z, 0-9, _ and -", m.id),
            ));
        }
        if merchants.iter().any(|x| x.id == m.id) {
            return Err(err(
                locate,
                &format!("{key}.id"),
                format!("merchant {:?} is defined twice", m.id),
            ));
        }
        if m.name.trim().is_empty() || m.name.chars().count() > 100 {
            return Err(err(
                locate,
                &format!("{key}.name"),
                "must be 1 to 100 characters",
            ));
        }
        for (j, d) in m.allowed_domains.iter().enumerate() {
            if d.is_empty() || d.contains('/') || d.contains(':') || d.contains(' ') {
                return Err(err(
                    locate,
                    &format!("{key}.allowed_domains.{j}"),
                    format!("{d:?} must be a bare host name such as shop.example.com"),
                ));
            }
        }
        let mut methods = Vec::new();
        for (mname, mc) in &m.methods {
            if !mc.enabled {
                continue;
            }
            let mkey = format!("{key}.methods.{mname}");
            methods.push(resolve_method(locate, &mkey, mname, mc, &m.name, &chains)?);
        }
        for method in &methods {
            if let Rail::Token { network, .. } = &method.rail
                && let Some(c) = chains.get(network)
                && !used_chains.iter().any(|u: &Chain| u.name == c.name)
            {
                used_chains.push(c.clone());
            }
        }
        merchants.push(Merchant {
            id: m.id.clone(),
            name: m.name.clone(),
            allowed_domains: m.allowed_domains.clone(),
            methods,
        });
    }
    let mut ingest = Vec::new();
    for (src_name, src) in &raw.upi.ingest {
        let key = format!("upi.ingest.{src_name}");
        let Some(m) = merchants.iter().find(|m| m.id == src.merchant) else {
            return Err(err(
                locate,
                &format!("{key}.merchant"),
                format!("no merchant {:?} is configured", src.merchant),
            ));
        };
        if !m
            .methods
            .iter()
            .any(|me| matches!(me.rail, Rail::Upi { .. }))
        {
            return Err(err(
                locate,
                &format!("{key}.merchant"),
                format!("merchant {:?} has no UPI method", src.merchant),
            ));
        }
        if src.token.len() < 16 {
            return Err(err(
                locate,
                &format!("{key}.token"),
                "must be at least 16 characters",
            ));
        }
        let needs_key = matches!(
            src.format,
            IngestFormat::SmsGateway | IngestFormat::Smsforwarder
        );
        if needs_key && src.signing_key.as_deref().is_none_or(str::is_empty) {
            return Err(err(
                locate,
                &format!("{key}.signing_key"),
                "is required for this format (the app signs every request with it)",
            ));
        }
        if ingest.iter().any(|s: &IngestSource| s.token == src.token) {
            return Err(err(
                locate,
                &format!("{key}.token"),
                "is used by another source",
            ));
        }
        let mut s = src.clone();
        s.name = src_name.clone();
        ingest.push(s);
    }
    let imap = match raw.upi.imap.clone() {
        None => None,
        Some(mut im) => {
            if !merchants.iter().any(|m| {
                m.id == im.merchant
                    && m.methods
                        .iter()
                        .any(|me| matches!(me.rail, Rail::Upi { .. }))
            }) {
                return Err(err(
                    locate,
                    "upi.imap.merchant",
                    format!("no merchant {:?} with a UPI method", im.merchant),
                ));
            }
            match (&im.password, &im.password_file) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        locate,
                        "upi.imap.password",
                        "set password or password_file, not both",
                    ));
                }
                (None, None) => {
                    return Err(err(
                        locate,
                        "upi.imap.password_file",
                        "a password or password_file is required",
                    ));
                }
                (None, Some(f)) => {
                    let pw = std::fs::read_to_string(f).map_err(|e| {
                        err(
                            locate,
                            "upi.imap.password_file",
                            format!("cannot read {f}: {e}"),
                        )
                    })?;
                    im.password = Some(pw.trim().to_owned());
                }
                (Some(_), None) => {}
            }
            if im.accounts.is_empty()
                || im
                    .accounts
                    .iter()
                    .any(|a| a.len() < 3 || !a.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(err(
                    locate,
                    "upi.imap.accounts",
                    "list the last digits (3 or more) of the merchant's bank account(s), e.g. [\"1234\"]: an alert must name one",
                ));
            }
            if im.poll_interval_secs == 0 {
                return Err(err(
                    locate,
                    "upi.imap.poll_interval_secs",
                    "must be at least 1",
                ));
            }
            if im
                .authserv_id
                .as_deref()
                .is_none_or(|a| a.trim().is_empty())
            {
                return Err(err(
                    locate,
                    "upi.imap.authserv_id",
                    "is required: the receiving server's id in its Authentication-Results header (only that topmost header is believed)",
                ));
            }
            let parser = read_upi_parser(&raw.upi.templates_dir)
                .map_err(|p| err(locate, "upi.templates_dir", p))?;
            if im.banks.is_empty() {
                return Err(err(
                    locate,
                    "upi.imap.banks",
                    "list the bank(s) whose alerts this mailbox receives, e.g. [\"HDFC\"]",
                ));
            }
            if let Some(b) = im
                .banks
                .iter()
                .find(|b| !parser.banks().any(|k| k.eq_ignore_ascii_case(b)))
            {
                return Err(err(
                    locate,
                    "upi.imap.banks",
                    format!(
                        "{b:?} is not a bank with a template (known: {})",
                        parser.banks().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if im.addresses.is_empty() && im.username.contains('@') {
                im.addresses = vec![im.username.clone()];
            }
            if im.addresses.is_empty() || im.addresses.iter().any(|a| !a.contains('@')) {
                return Err(err(
                    locate,
                    "upi.imap.addresses",
                    "list the mailbox's e-mail address(es), e.g. [\"alerts@shop.example\"]: a mail must be addressed to one",
                ));
            }
            if im.max_mail_delay_secs == 0 {
                return Err(err(
                    locate,
                    "upi.imap.max_mail_delay_secs",
                    "must be at least 1",
                ));
            }
            if im.max_message_bytes < 1024 {
                return Err(err(
                    locate,
                    "upi.imap.max_message_bytes",
                    "must be at least 1024",
                ));
            }
            Some(im)
        }
    };
    let upi_headers: Vec<(String, String)> = raw
        .upi
        .sms_headers
        .iter()
        .map(|(h, b)| (h.clone(), b.clone()))
        .collect();
    let upi_templates = match &raw.upi.templates_dir {
        Some(dir) => read_template_dir(dir).map_err(|p| err(locate, "upi.templates_dir", p))?,
        None => Vec::new(),
    };
    {
        let sources: Vec<crate::watch::upi::templates::TemplateSource<'_>> = upi_templates
            .iter()
            .map(|(file, text)| crate::watch::upi::templates::TemplateSource { file, text })
            .collect();
        let parser = crate::watch::upi::templates::Parser::with_overrides(&sources)
            .map_err(|e| err(locate, "upi.templates_dir", e.to_string()))?;
        parser.with_headers(&upi_headers).map_err(|e| match e {
            crate::watch::upi::templates::TemplateError::Header { header, problem } => {
                err(locate, &format!("upi.sms_headers.{header}"), problem)
            }
            other => err(locate, "upi.sms_headers", other.to_string()),
        })?;
    }
    let mut rates = Vec::new();
    for (pair, c) in &raw.rates {
        let r = crate::rates::config::resolve(pair, c).map_err(|(k, problem)| {
            let key = if k.is_empty() {
                format!("rates.{pair}")
            } else {
                format!("rates.{pair}.{k}")
            };
            err(locate, &key, problem)
        })?;
        rates.push(r);
    }
    Ok(Config {
        rates,
        upi_templates,
        upi_headers,
        imap,
        ingest,
        source: name.to_owned(),
        listen,
        public_url,
        admin_listen,
        admin_token: raw.server.admin_token.clone(),
        admin_token_file: raw.server.admin_token_file.clone().map(PathBuf::from),
        server: raw.server,
        trusted_proxies,
        storage_path: PathBuf::from(raw.storage.path),
        writer_queue: raw.storage.writer_queue,
        postgres,
        api: raw.api,
        webhooks: raw.webhooks,
        sessions: raw.sessions,
        retention: raw.retention,
        log: raw.log,
        merchants,
        chains: used_chains,
    })
}

/// `[storage]` for PostgreSQL: exactly one of `url` and `url_file`, a URL libpq would accept
/// (never echoed: it carries the password), a pool and a timeout within reason. The keys are
/// refused with the redb backend so a half-switched config does not silently stay on the file.
fn postgres_options(
    s: &StorageConfig,
    locate: &dyn Fn(&str) -> String,
) -> Result<Option<crate::store::PgOptions>, ConfigError> {
    match s.backend.as_str() {
        "redb" => {
            for (set, key) in [
                (s.url.is_some(), "storage.url"),
                (s.url_file.is_some(), "storage.url_file"),
            ] {
                if set {
                    return Err(err(locate, key, "is only used with backend = \"postgres\""));
                }
            }
            return Ok(None);
        }
        "postgres" => {}
        other => {
            return Err(err(
                locate,
                "storage.backend",
                format!("{other:?} is not a storage backend; use \"redb\" or \"postgres\""),
            ));
        }
    }
    let url = match (&s.url, &s.url_file) {
        (Some(_), Some(_)) => {
            return Err(err(locate, "storage.url", "set url or url_file, not both"));
        }
        (None, None) => {
            return Err(err(
                locate,
                "storage.url",
                "backend = \"postgres\" needs url (or url_file), e.g. postgres://paywatch@db/paywatch",
            ));
        }
        (Some(u), None) => u.trim().to_owned(),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| err(locate, "storage.url_file", format!("cannot read {f}: {e}")))?;
            let u = text.trim().to_owned();
            if u.is_empty() {
                return Err(err(locate, "storage.url_file", format!("{f} is empty")));
            }
            u
        }
    };
    let key = if s.url.is_some() {
        "storage.url"
    } else {
        "storage.url_file"
    };
    match url.parse::<postgres::Config>() {
        Ok(c) if !c.get_hosts().is_empty() => {}
        Ok(_) => return Err(err(locate, key, "names no host to connect to")),
        // The parser's message may quote the URL, password included: say only what is wrong.
        Err(_) => {
            return Err(err(
                locate,
                key,
                "is not a PostgreSQL connection URL (postgres://user:password@host:port/database)",
            ));
        }
    }
    if !(1..=1000).contains(&s.pool_size) {
        return Err(err(
            locate,
            "storage.pool_size",
            "must be between 1 and 1000",
        ));
    }
    if !(1..=3_600_000).contains(&s.statement_timeout_ms) {
        return Err(err(
            locate,
            "storage.statement_timeout_ms",
            "must be between 1 and 3600000 (one hour)",
        ));
    }
    Ok(Some(crate::store::PgOptions {
        url,
        pool_size: s.pool_size,
        statement_timeout_ms: s.statement_timeout_ms,
    }))
}

/// `10.0.0.1` or `10.0.0.0/8` (IPv4 or IPv6) to (address, prefix length).
fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

fn valid_slug(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn resolve_chain(
    locate: &dyn Fn(&str) -> String,
    id: &str,
    given: &ChainConfig,
) -> Result<Chain, ConfigError> {
    let key = format!("chains.{id}");
    if !valid_slug(id) {
        return Err(err(
            locate,
            &key,
            "chain names are 1-40 of a-z, 0-9, _ and -",
        ));
    }
    let preset_name = given.preset.clone().or_else(|| {
        crate::watch::evm::preset::find(id)
            .is_some()
            .then(|| id.to_owned())
    });
    let c = match &preset_name {
        Some(p) => {
            let base = crate::watch::evm::preset::find(p).ok_or_else(|| {
                err(
                    locate,
                    &format!("{key}.preset"),
                    format!(
                        "{p:?} is not a built-in preset (there are: {})",
                        crate::watch::evm::preset::names().join(", ")
                    ),
                )
            })?;
            given.over(base)
        }
        None => given.clone(),
    };
    let need = |field: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(err(
                locate,
                &key,
                format!("{field} is required (this chain is not a built-in preset)"),
            ))
        }
    };
    need("chain_id", c.chain_id.is_some())?;
    need("token_contract", c.token_contract.is_some())?;
    need("decimals", c.decimals.is_some())?;
    if c.rpc_urls.is_empty() {
        return Err(err(
            locate,
            &format!("{key}.rpc_urls"),
            "give at least one JSON-RPC URL (several = failover)",
        ));
    }
    for (i, u) in c.rpc_urls.iter().enumerate() {
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => {}
            _ => {
                return Err(err(
                    locate,
                    &format!("{key}.rpc_urls.{i}"),
                    format!("{:?} is not an http(s) URL", crate::redact::redact_url(u)),
                ));
            }
        }
    }
    if let Some(u) = &c.ws_url {
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "ws" | "wss") => {}
            _ => {
                return Err(err(
                    locate,
                    &format!("{key}.ws_url"),
                    format!("{:?} is not a ws(s) URL", crate::redact::redact_url(u)),
                ));
            }
        }
    }
    let tron = c.tron.unwrap_or(false);
    if tron && c.ws_url.is_some() {
        return Err(err(
            locate,
            &format!("{key}.ws_url"),
            "TRON's JSON-RPC is served over HTTP only (no subscriptions): remove ws_url; the chain is polled",
        ));
    }
    let rpc_headers = resolve_rpc_headers(locate, &key, &c)?;
    let contract_text = c.token_contract.clone().unwrap_or_default();
    let contract = crate::domain::address::parse(&contract_text, tron)
        .map_err(|p| err(locate, &format!("{key}.token_contract"), p.to_string()))?;
    let decimals = c.decimals.unwrap_or(6);
    if decimals > 30 {
        return Err(err(locate, &format!("{key}.decimals"), "must be 0 to 30"));
    }
    let confirmations = c.confirmations.unwrap_or(1);
    if !(1..=1000).contains(&confirmations) {
        return Err(err(
            locate,
            &format!("{key}.confirmations"),
            "must be 1 to 1000 (1 = counted as soon as mined)",
        ));
    }
    let poll_interval_ms = c.poll_interval_ms.unwrap_or(1000);
    if !(50..=600_000).contains(&poll_interval_ms) {
        return Err(err(
            locate,
            &format!("{key}.poll_interval_ms"),
            "must be 50 to 600000",
        ));
    }
    let max_log_range = c.max_log_range.unwrap_or(1000);
    if !(1..=1_000_000).contains(&max_log_range) {
        return Err(err(
            locate,
            &format!("{key}.max_log_range"),
            "must be 1 to 1000000 blocks",
        ));
    }
    if tron && max_log_range > TRON_MAX_LOG_RANGE {
        return Err(err(
            locate,
            &format!("{key}.max_log_range"),
            format!("TRON's JSON-RPC refuses ranges over {TRON_MAX_LOG_RANGE} blocks"),
        ));
    }
    let finality = match c.finality.as_deref() {
        None | Some("confirmations") => Finality::Confirmations,
        Some("finalized") => Finality::Finalized,
        Some(other) => {
            return Err(err(
                locate,
                &format!("{key}.finality"),
                format!("{other:?} is not \"finalized\" or \"confirmations\""),
            ));
        }
    };
    let idle_poll_interval_ms = c.idle_poll_interval_ms.unwrap_or(poll_interval_ms);
    if !(poll_interval_ms..=3_600_000).contains(&idle_poll_interval_ms) {
        return Err(err(
            locate,
            &format!("{key}.idle_poll_interval_ms"),
            format!("must be from poll_interval_ms ({poll_interval_ms}) to 3600000"),
        ));
    }
    let second_opinion = c.second_opinion.unwrap_or(false);
    if second_opinion && c.rpc_urls.len() < 2 {
        return Err(err(
            locate,
            &format!("{key}.second_opinion"),
            "needs at least two rpc_urls (the second opinion comes from another provider)",
        ));
    }
    let token = c.token.clone().unwrap_or_else(|| "USDT".into());
    if token.is_empty()
        || token.len() > 16
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
    {
        return Err(err(
            locate,
            &format!("{key}.token"),
            "must be a ticker of 1-16 letters and digits",
        ));
    }
    Ok(Chain {
        name: id.to_owned(),
        chain_id: c.chain_id.unwrap_or_default(),
        test: c.test.unwrap_or(true),
        rpc_urls: c.rpc_urls.clone(),
        token,
        contract,
        decimals,
        confirmations,
        poll_interval_ms,
        tron,
        block_time_ms: c.block_time_ms.unwrap_or(poll_interval_ms),
        max_log_range,
        start_block: c.start_block,
        ws_url: c.ws_url.clone(),
        rpc_headers,
        finality,
        idle_poll_interval_ms,
        second_opinion,
    })
}

/// TRON's JSON-RPC (java-tron `maxBlockRange`) refuses `eth_getLogs` over more blocks.
const TRON_MAX_LOG_RANGE: u64 = 5000;

/// The `rpc_headers` of a chain: each names one of its `rpc_urls`, a valid header name, and
/// exactly one of `value` / `value_file`. Values are secrets: no error quotes them.
fn resolve_rpc_headers(
    locate: &dyn Fn(&str) -> String,
    key: &str,
    c: &ChainConfig,
) -> Result<Vec<RpcHeader>, ConfigError> {
    let mut out = Vec::new();
    for (i, h) in c.rpc_headers.iter().enumerate() {
        let at = |f: &str| format!("{key}.rpc_headers.{i}.{f}");
        if !c.rpc_urls.contains(&h.url) {
            return Err(err(
                locate,
                &at("url"),
                format!(
                    "{:?} is not one of this chain's rpc_urls",
                    crate::redact::redact_url(&h.url)
                ),
            ));
        }
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(err(
                locate,
                &at("name"),
                format!("{:?} is not a valid HTTP header name", h.name),
            ));
        }
        let value = match (&h.value, &h.value_file) {
            (Some(v), None) => v.clone(),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| err(locate, &at("value_file"), format!("cannot read {f}: {e}")))?;
                let v = text.trim();
                if v.is_empty() {
                    return Err(err(locate, &at("value_file"), format!("{f} is empty")));
                }
                v.to_owned()
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    locate,
                    &at("value"),
                    "set value or value_file, not both",
                ));
            }
            (None, None) => {
                return Err(err(locate, &at("value"), "give value or value_file"));
            }
        };
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(err(
                locate,
                &at(if h.value.is_some() {
                    "value"
                } else {
                    "value_file"
                }),
                "the value holds characters a header cannot carry (a line break, say)",
            ));
        }
        out.push(RpcHeader {
            url: h.url.clone(),
            name: h.name.clone(),
            value: SecretValue(value),
        });
    }
    Ok(out)
}

/// A VPA: `name@handle`, as NPCI allows.
pub fn valid_vpa(vpa: &str) -> bool {
    let Some((user, handle)) = vpa.split_once('@') else {
        return false;
    };
    (2..=256).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && (2..=64).contains(&handle.len())
        && handle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        && handle
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
}

fn resolve_method(
    locate: &dyn Fn(&str) -> String,
    key: &str,
    name: &str,
    mc: &MethodConfig,
    merchant_name: &str,
    chains: &BTreeMap<String, Chain>,
) -> Result<Method, ConfigError> {
    if !valid_slug(name) {
        return Err(err(
            locate,
            key,
            "method names are 1-40 of a-z, 0-9, _ and -",
        ));
    }
    let e = |field: &str, problem: String| err(locate, &format!("{key}.{field}"), problem);
    let is_upi = name == "upi" || mc.vpa.is_some();
    if !is_upi && mc.personal_vpa.is_some() {
        return Err(e(
            "personal_vpa",
            "is for UPI methods (those with a vpa)".into(),
        ));
    }
    let (rail, currency, test) = if is_upi {
        if mc.chain.is_some() {
            return Err(e("chain", "a UPI method has no chain".into()));
        }
        let vpa = mc
            .vpa
            .clone()
            .ok_or_else(|| e("vpa", "is required for a UPI method".into()))?;
        if !valid_vpa(&vpa) {
            return Err(e(
                "vpa",
                format!("{vpa:?} is not a VPA such as shop@okbank"),
            ));
        }
        let payee_name = mc
            .payee_name
            .clone()
            .unwrap_or_else(|| merchant_name.to_owned());
        if let Some(mcc) = &mc.merchant_code
            && (mcc.len() != 4 || !mcc.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(e(
                "merchant_code",
                "must be a 4-digit merchant category code".into(),
            ));
        }
        let personal = mc.personal_vpa.unwrap_or(false);
        if personal && mc.merchant_code.is_some() {
            return Err(e(
                "personal_vpa",
                "a personal VPA has no merchant_code: remove one of the two".into(),
            ));
        }
        (
            Rail::Upi {
                vpa,
                payee_name,
                merchant_code: mc.merchant_code.clone(),
                personal,
            },
            Currency::Inr,
            // UPI has no test rail: the same method serves both modes (see docs/api.md).
            false,
        )
    } else {
        let chain_name = mc.chain.clone().ok_or_else(|| {
            e(
                "chain",
                "is required (name a [chains.*] entry), or give vpa for UPI".into(),
            )
        })?;
        let chain = chains
            .get(&chain_name)
            .ok_or_else(|| e("chain", format!("no [chains.{chain_name}] is configured")))?;
        (
            Rail::Token {
                network: chain_name.clone(),
                chain_id: chain.chain_id,
                symbol: chain.token.clone(),
                contract: chain.contract_display(),
                decimals: chain.decimals,
                confirmations: chain.confirmations,
                tron: chain.tron,
            },
            Currency::Usd,
            chain.test,
        )
    };
    let decimals = match &rail {
        Rail::Upi { .. } => 2,
        Rail::Token { decimals, .. } => *decimals,
    };
    let units = |field: &str, v: &str| -> Result<u128, ConfigError> {
        parse_units(v, decimals).map_err(|p| e(field, format!("{v:?}: {p}")))
    };
    let strategy_name = mc.strategy.as_deref().unwrap_or("unique_amount");
    let strategy = match strategy_name {
        "unique_amount" => {
            let pay_to = match &rail {
                Rail::Upi { vpa, .. } => vpa.clone(),
                Rail::Token { tron, .. } => {
                    let p = mc.pay_to.clone().ok_or_else(|| {
                        e(
                            "pay_to",
                            "is required for the unique_amount strategy".into(),
                        )
                    })?;
                    let bytes =
                        address::parse(&p, *tron).map_err(|p| e("pay_to", p.to_string()))?;
                    address::display(&bytes, *tron)
                }
            };
            let default_step = if is_upi {
                1
            } else {
                pow10(decimals.saturating_sub(6)).unwrap_or(1)
            };
            let step = match &mc.step {
                Some(s) => units("step", s)?,
                None => default_step,
            };
            if step == 0 {
                return Err(e("step", "must be greater than zero".into()));
            }
            let window = mc.window.unwrap_or(if is_upi { 100 } else { 1000 });
            if !(1..=100_000).contains(&window) {
                return Err(e("window", "must be 1 to 100000 steps".into()));
            }
            Strategy::UniqueAmount {
                pay_to,
                step,
                window,
                direction: mc.direction.unwrap_or(Direction::Up),
            }
        }
        "address_pool" => {
            let pool = mc.pay_to_pool.clone().unwrap_or_default();
            if pool.is_empty() {
                return Err(e(
                    "pay_to_pool",
                    "needs at least one address for the address_pool strategy".into(),
                ));
            }
            for (i, a) in pool.iter().enumerate() {
                if is_upi && !valid_vpa(a) {
                    return Err(e(
                        &format!("pay_to_pool.{i}"),
                        format!("{a:?} is not a VPA"),
                    ));
                }
            }
            let pool = match &rail {
                Rail::Upi { .. } => pool,
                Rail::Token { tron, .. } => pool
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        address::parse(a, *tron)
                            .map(|b| address::display(&b, *tron))
                            .map_err(|p| e(&format!("pay_to_pool.{i}"), p.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Strategy::AddressPool { addresses: pool }
        }
        "xpub" => {
            if is_upi {
                return Err(e(
                    "strategy",
                    "\"xpub\" is for token methods; UPI uses unique_amount or address_pool".into(),
                ));
            }
            let text = mc.xpub.clone().ok_or_else(|| {
                e(
                    "xpub",
                    "is required for the xpub strategy (the account's extended public key)".into(),
                )
            })?;
            let xpub = Xpub::parse(&text).map_err(|p| e("xpub", p.to_string()))?;
            Strategy::Xpub { xpub }
        }
        other => {
            return Err(e(
                "strategy",
                format!("{other:?} is not one of unique_amount, address_pool, xpub"),
            ));
        }
    };
    let underpayment_tolerance = match &mc.underpayment_tolerance {
        Some(t) => units("underpayment_tolerance", t)?,
        None => 0,
    };
    Ok(Method {
        name: name.to_owned(),
        rail,
        currency,
        strategy,
        test,
        underpayment_tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let c = parse("config.toml", EMBEDDED_CONFIG, &[]).expect("embedded config");
        assert_eq!(c.merchants.len(), 1);
        assert_eq!(c.merchants[0].methods.len(), 2);
    }

    #[test]
    fn errors_name_line_key_and_problem() {
        let text = "[server]\nlisten = \"nope\"\n[[merchants]]\nid = \"m\"\nname = \"M\"\n";
        let e = parse("c.toml", text, &[]).expect_err("bad listen");
        assert_eq!(e.to_string().split(": ").next(), Some("c.toml:2"));
        assert_eq!(e.key, "server.listen");

        let text = "[server]\nlisen = \"x\"\n";
        let e = parse("c.toml", text, &[]).expect_err("typo");
        assert_eq!(e.key, "server.lisen");
        assert!(e.problem.contains("unknown key"), "{}", e.problem);

        let text = "[api]\nrate_limit_burst = \"x\"\n";
        let e = parse("c.toml", text, &[]).expect_err("type");
        assert_eq!(e.key, "api.rate_limit_burst");
        assert_eq!(e.origin, "c.toml:2");
    }

    #[test]
    fn env_overrides_apply_and_are_named_in_errors() {
        let env = vec![(
            "PAYWATCH_SERVER__LISTEN".to_owned(),
            "127.0.0.1:9999".to_owned(),
        )];
        let c = parse("config.toml", EMBEDDED_CONFIG, &env).expect("override");
        assert_eq!(c.listen.port(), 9999);
        let env = vec![(
            "PAYWATCH_API__RATE_LIMIT_BURST".to_owned(),
            "many".to_owned(),
        )];
        let e = parse("config.toml", EMBEDDED_CONFIG, &env).expect_err("bad env");
        assert_eq!(e.origin, "environment PAYWATCH_API__RATE_LIMIT_BURST");
        let env = vec![("PAYWATCH_MERCHANTS__0__NAME".to_owned(), "Other".to_owned())];
        let c = parse("config.toml", EMBEDDED_CONFIG, &env).expect("array index");
        assert_eq!(c.merchants[0].name, "Other");
    }

    fn with_chain(chain: &str, method: &str) -> String {
        format!(
            "{chain}\n[[merchants]]\nid = \"m\"\nname = \"M\"\n[merchants.methods.usdt]\n{method}\n"
        )
    }

    #[test]
    fn chain_presets_fill_what_is_not_given() {
        let text = with_chain(
            "[chains.bsc]\nrpc_urls = [\"https://bsc.example\"]\nconfirmations = 30",
            "chain = \"bsc\"\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
        );
        let c = parse("c.toml", &text, &[]).expect("preset");
        let chain = &c.chains[0];
        assert_eq!(
            (
                chain.chain_id,
                chain.decimals,
                chain.confirmations,
                chain.test
            ),
            (56, 18, 30, false)
        );
        // A USDC entry on a preset chain: the preset's network, another token.
        let text = with_chain(
            "[chains.base_usdc]\npreset = \"base\"\nrpc_urls = [\"https://b.example\"]\ntoken = \"USDC\"\ntoken_contract = \"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913\"",
            "chain = \"base_usdc\"\nstrategy = \"address_pool\"\npay_to_pool = [\"0x70997970c51812dc3a010c7d01b50e0d17dc79c8\"]",
        );
        let c = parse("c.toml", &text, &[]).expect("usdc");
        assert_eq!(
            (c.chains[0].chain_id, c.chains[0].token.as_str()),
            (8453, "USDC")
        );
        let Strategy::AddressPool { addresses } = &c.merchants[0].methods[0].strategy else {
            panic!("pool");
        };
        assert_eq!(
            addresses[0], "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "stored checksummed"
        );

        let e = parse(
            "c.toml",
            &with_chain("[chains.x]\npreset = \"polygn\"", "chain = \"x\""),
            &[],
        )
        .expect_err("unknown preset");
        assert_eq!(e.key, "chains.x.preset");
        assert!(e.problem.contains("polygon"), "{}", e.problem);
        let e = parse(
            "c.toml",
            &with_chain("[chains.polygon]", "chain = \"polygon\""),
            &[],
        )
        .expect_err("no rpc");
        assert_eq!(e.key, "chains.polygon.rpc_urls");
    }

    #[test]
    fn tron_and_xpub_methods_are_checked() {
        let tron = "[chains.tron]\nrpc_urls = [\"https://api.trongrid.io/jsonrpc\"]";
        let c = parse(
            "c.toml",
            &with_chain(
                tron,
                "chain = \"tron\"\npay_to = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\"",
            ),
            &[],
        )
        .expect("tron");
        let m = &c.merchants[0].methods[0];
        assert!(matches!(m.rail, Rail::Token { tron: true, .. }));
        assert_eq!(
            m.destination_key("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),
            "evm:728126428:0xa614f803b6fd780986a42c78ec9c7f77e6ded13c:0xa614f803b6fd780986a42c78ec9c7f77e6ded13c"
        );
        let e = parse(
            "c.toml",
            &with_chain(
                tron,
                "chain = \"tron\"\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
            ),
            &[],
        )
        .expect_err("hex on tron");
        assert_eq!(e.key, "merchants.0.methods.usdt.pay_to");
        let local = "[chains.l]\nchain_id = 31337\nrpc_urls = [\"http://127.0.0.1:8545\"]\ntoken_contract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\ndecimals = 6";
        let e = parse(
            "c.toml",
            &with_chain(local, "chain = \"l\"\nstrategy = \"xpub\"\nxpub = \"xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi\""),
            &[],
        )
        .expect_err("private key");
        assert_eq!(e.key, "merchants.0.methods.usdt.xpub");
        assert!(e.problem.contains("PRIVATE"), "{}", e.problem);
    }

    #[test]
    fn vpas() {
        assert!(valid_vpa("demo@okbank"));
        assert!(valid_vpa("shop.name-1@ybl"));
        assert!(!valid_vpa("demo"));
        assert!(!valid_vpa("a@b"));
        assert!(!valid_vpa("de mo@okbank"));
    }

    #[test]
    fn chain_provider_settings_are_checked_and_keys_never_shown() {
        let tron = |extra: &str| {
            with_chain(
                &format!(
                    "[chains.tron]\nrpc_urls = [\"https://api.trongrid.io/jsonrpc\", \"https://b.example/rpc\"]\n{extra}"
                ),
                "chain = \"tron\"\npay_to = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\"",
            )
        };
        let fails = |extra: &str, key: &str, says: &str| {
            let e = parse("c.toml", &tron(extra), &[]).expect_err(extra);
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.to_string().contains(says), "{extra}: {e}");
            assert!(!e.to_string().contains("sekret"), "a value shown: {e}");
        };
        fails(
            "ws_url = \"wss://tron.example\"",
            "chains.tron.ws_url",
            "HTTP only",
        );
        fails("max_log_range = 5001", "chains.tron.max_log_range", "5000");
        fails(
            "finality = \"soon\"",
            "chains.tron.finality",
            "not \"finalized\"",
        );
        fails(
            "idle_poll_interval_ms = 10",
            "chains.tron.idle_poll_interval_ms",
            "from poll_interval_ms",
        );
        let header = |body: &str| format!("[[chains.tron.rpc_headers]]\n{body}");
        fails(
            &header(
                "url = \"https://elsewhere.example\"\nname = \"TRON-PRO-API-KEY\"\nvalue = \"sekret1\"",
            ),
            "chains.tron.rpc_headers.0.url",
            "not one of this chain's rpc_urls",
        );
        fails(
            &header(
                "url = \"https://api.trongrid.io/jsonrpc\"\nname = \"bad name\"\nvalue = \"sekret1\"",
            ),
            "chains.tron.rpc_headers.0.name",
            "not a valid HTTP header name",
        );
        fails(
            &header("url = \"https://api.trongrid.io/jsonrpc\"\nname = \"K\""),
            "chains.tron.rpc_headers.0.value",
            "give value or value_file",
        );
        let dir = std::env::temp_dir().join(format!("pw-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "sekret-line-1\nsekret-line-2\n").unwrap();
        fails(
            &header(&format!(
                "url = \"https://api.trongrid.io/jsonrpc\"\nname = \"K\"\nvalue_file = \"{}\"",
                f.display()
            )),
            "chains.tron.rpc_headers.0.value_file",
            "a line break",
        );
        fails(
            &header(&format!(
                "url = \"https://api.trongrid.io/jsonrpc\"\nname = \"K\"\nvalue = \"sekret1\"\nvalue_file = \"{}\"",
                f.display()
            )),
            "chains.tron.rpc_headers.0.value",
            "not both",
        );
        std::fs::write(&f, "  sekret-trongrid-key\n").unwrap();
        let c = parse(
            "c.toml",
            &tron(&header(&format!(
                "url = \"https://api.trongrid.io/jsonrpc\"\nname = \"TRON-PRO-API-KEY\"\nvalue_file = \"{}\"",
                f.display()
            ))),
            &[],
        )
        .expect("headers");
        let chain = &c.chains[0];
        assert_eq!(chain.rpc_headers[0].value.0, "sekret-trongrid-key");
        assert_eq!(chain.finality, Finality::Finalized, "the preset's");
        assert_eq!(chain.idle_poll_interval_ms, 30_000);
        assert!(
            !format!("{chain:?}").contains("sekret"),
            "Debug shows the key"
        );
        let _ = std::fs::remove_dir_all(&dir);
        // One URL cannot give a second opinion.
        let one = with_chain(
            "[chains.tron]\nrpc_urls = [\"https://api.trongrid.io/jsonrpc\"]\nsecond_opinion = true",
            "chain = \"tron\"\npay_to = \"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t\"",
        );
        let e = parse("c.toml", &one, &[]).expect_err("one url");
        assert_eq!(e.key, "chains.tron.second_opinion");
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    fn storage(lines: &str) -> String {
        format!("[storage]\n{lines}\n[[merchants]]\nid = \"m\"\nname = \"M\"\n")
    }

    fn refused(lines: &str) -> ConfigError {
        parse("c.toml", &storage(lines), &[]).expect_err(lines)
    }

    #[test]
    fn postgres_storage_is_read_and_its_mistakes_named() {
        let c = parse(
            "c.toml",
            &storage("backend = \"postgres\"\nurl = \"postgres://pw:secret@db.internal/pay\"\npool_size = 3"),
            &[],
        )
        .expect("a postgres config");
        let pg = c.postgres.expect("postgres options");
        assert_eq!(pg.pool_size, 3);
        assert_eq!(pg.statement_timeout_ms, 5_000);
        assert!(
            parse("c.toml", &storage(""), &[])
                .unwrap()
                .postgres
                .is_none()
        );

        let e = refused("backend = \"sqlite\"");
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("c.toml:2", "storage.backend")
        );
        let e = refused("backend = \"postgres\"");
        assert_eq!(e.key, "storage.url");
        assert!(e.problem.contains("needs url"), "{}", e.problem);
        let e = refused("backend = \"postgres\"\nurl = \"mysql://root:hunter2@x/y\"");
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("c.toml:3", "storage.url")
        );
        assert!(
            !e.to_string().contains("hunter2"),
            "the password leaked: {e}"
        );
        let e = refused("url = \"postgres://db/pay\"");
        assert_eq!(e.key, "storage.url");
        assert!(e.problem.contains("only used with"), "{}", e.problem);
        let e = refused("backend = \"postgres\"\nurl = \"postgres://db/pay\"\npool_size = 0");
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("c.toml:4", "storage.pool_size")
        );
        let e = refused(
            "backend = \"postgres\"\nurl = \"postgres://db/pay\"\nstatement_timeout_ms = 0",
        );
        assert_eq!(e.key, "storage.statement_timeout_ms");
        let e = refused("backend = \"postgres\"\nurl_file = \"/nonexistent/pg-url\"");
        assert_eq!(e.key, "storage.url_file");
        assert!(
            e.problem.contains("cannot read /nonexistent/pg-url"),
            "{}",
            e.problem
        );
        let e = refused("backend = \"postgres\"\nurl = \"postgres://db/pay\"\nurl_file = \"/x\"");
        assert!(e.problem.contains("not both"), "{}", e.problem);
    }

    #[test]
    fn the_url_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pg-url");
        std::fs::write(&f, "postgres://pw:s3cret@db/pay\n").unwrap();
        let c = parse(
            "c.toml",
            &storage(&format!(
                "backend = \"postgres\"\nurl_file = \"{}\"",
                f.display()
            )),
            &[],
        )
        .expect("url_file");
        assert_eq!(c.postgres.unwrap().url, "postgres://pw:s3cret@db/pay");
    }
}
