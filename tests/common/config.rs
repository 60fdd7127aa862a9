//! Typed test configurations: a test names the parts that differ (a chain, a merchant's
//! methods, one setting) and the shared base is written once, instead of each test file
//! carrying its own copy of the whole config.toml.

use std::path::Path;

use toml::{Table, Value};

use super::ADMIN_TOKEN;

/// A config.toml under construction.
pub struct TestConfig {
    doc: Table,
}

/// `[(key, value)]` as a TOML table.
pub fn table<const N: usize>(pairs: [(&str, Value); N]) -> Table {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl TestConfig {
    /// Loopback listeners on OS-chosen ports, the test admin token, the database in `dir`,
    /// sessions that may expire within a second and a sweep every 100 ms, callbacks to loopback
    /// retried every second, and `info` logs (what the failing test prints).
    pub fn base(dir: &Path) -> TestConfig {
        let db = dir.join("paywatch.redb").display().to_string();
        let mut doc = Table::new();
        doc.insert(
            "server".into(),
            Value::Table(table([
                ("listen", "127.0.0.1:0".into()),
                ("admin_listen", "127.0.0.1:0".into()),
                ("public_url", "http://pay.test".into()),
                ("admin_token", ADMIN_TOKEN.into()),
            ])),
        );
        doc.insert("storage".into(), Value::Table(table([("path", db.into())])));
        doc.insert(
            "sessions".into(),
            Value::Table(table([
                ("min_expires_in", 1.into()),
                ("sweep_interval_ms", 100.into()),
            ])),
        );
        doc.insert(
            "log".into(),
            Value::Table(table([("level", "info".into())])),
        );
        doc.insert(
            "webhooks".into(),
            Value::Table(table([
                ("allow_private_targets", true.into()),
                ("retry_schedule_secs", Value::Array(vec![1.into(); 3])),
            ])),
        );
        TestConfig { doc }
    }

    /// Sets `dotted.path` (tables made as needed), e.g. `set("log.level", "warn")`.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a key");
        let mut t = &mut self.doc;
        for k in keys {
            t = t
                .entry(k.to_owned())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{path}: {k} is not a table"));
        }
        t.insert(last.to_owned(), value.into());
        self
    }

    /// Adds `[chains.<name>]`.
    pub fn chain(self, name: &str, chain: Chain) -> Self {
        self.set(&format!("chains.{name}"), Value::Table(chain.0))
    }

    /// Adds a `[[merchants]]` entry with its `[merchants.methods.<name>]`.
    pub fn merchant(mut self, id: &str, name: &str, methods: Vec<(&str, Table)>) -> Self {
        let mut m = table([("id", id.into()), ("name", name.into())]);
        m.insert(
            "methods".into(),
            Value::Table(
                methods
                    .into_iter()
                    .map(|(n, t)| (n.to_owned(), Value::Table(t)))
                    .collect(),
            ),
        );
        let list = self
            .doc
            .entry("merchants")
            .or_insert_with(|| Value::Array(Vec::new()));
        list.as_array_mut()
            .expect("merchants is an array")
            .push(Value::Table(m));
        self
    }

    /// The config.toml text.
    pub fn text(&self) -> String {
        toml::to_string(&self.doc).expect("a TOML document")
    }
}

/// A `[chains.<name>]` table.
pub struct Chain(Table);

impl Chain {
    /// A chain that is not a preset: every field given, polled every 100 ms.
    pub fn custom(
        chain_id: u64,
        rpc_urls: &[&str],
        token_contract: &str,
        decimals: u32,
        confirmations: u32,
    ) -> Chain {
        Chain(table([
            ("chain_id", Value::Integer(i64::try_from(chain_id).unwrap())),
            (
                "rpc_urls",
                Value::Array(rpc_urls.iter().map(|u| (*u).into()).collect()),
            ),
            ("token", "USDT".into()),
            ("token_contract", token_contract.into()),
            ("decimals", Value::Integer(i64::from(decimals))),
            ("confirmations", Value::Integer(i64::from(confirmations))),
            ("poll_interval_ms", 100.into()),
        ]))
    }

    /// Sets (or replaces) one field; `remove` drops one.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Chain {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    pub fn remove(mut self, key: &str) -> Chain {
        self.0.remove(key);
        self
    }
}

/// A `unique_amount` token method on `chain` paying `pay_to`.
pub fn token_method(chain: &str, pay_to: &str) -> Table {
    table([("chain", chain.into()), ("pay_to", pay_to.into())])
}
