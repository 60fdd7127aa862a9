//! A real local EVM chain: anvil from the npm package `@foundry-rs/anvil` (scripts/test installs
//! it in tests/chain), on an OS-chosen port, with the project's own ERC-20 test token.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolValue;
use serde_json::{Value, json};

/// anvil's default accounts (mnemonic "test test … junk", m/44'/60'/0'/0/i), unlocked.
pub const ACCOUNTS: [&str; 6] = [
    "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
    "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
    "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65",
    "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc",
];

/// The xpub of anvil's accounts (m/44'/60'/0'/0).
pub const ACCOUNTS_XPUB: &str = "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64uooBfJ4tNAzFsEbodRTx4";

/// Where the first and second contracts deployed from account 0 land (nonce 0 and 1).
pub const TOKEN_6: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
pub const TOKEN_18: &str = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512";

pub fn binary() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        p.exists(),
        "anvil is missing at {}: run scripts/test (it runs `npm ci` in tests/chain), or `cd tests/chain && npm ci`",
        p.display()
    );
    p
}

pub struct Anvil {
    child: Child,
    pub port: u16,
    pub url: String,
    http: reqwest::Client,
    /// The test dated the next block itself (`evm_setNextBlockTimestamp`): `transfer` leaves it.
    dated: AtomicBool,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Anvil {
    /// Starts anvil (automine on) and waits until it answers.
    pub async fn start() -> Anvil {
        Anvil::start_on(free_port()).await
    }

    /// Starts anvil on `port` (e.g. again after stopping it: a fresh chain at the same URL).
    pub async fn start_on(port: u16) -> Anvil {
        Anvil::start_with(port, &["--chain-id", "31337"]).await
    }

    /// Starts anvil on `port` (0: one chosen here) with `args` (`--chain-id 728126428` for
    /// TRON's id, `--block-time 1` for interval mining).
    pub async fn start_with(port: u16, args: &[&str]) -> Anvil {
        let port = if port == 0 { free_port() } else { port };
        let child = Command::new(binary())
            .args(["--port", &port.to_string(), "--silent"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn anvil");
        let a = Anvil {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            dated: AtomicBool::new(false),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = a.try_rpc("eth_blockNumber", json!([])).await
                && r.is_string()
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "anvil did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let r = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        match v.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(v["result"].clone()),
        }
    }

    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        if method == "evm_setNextBlockTimestamp" {
            self.dated.store(true, Ordering::SeqCst);
        }
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Stops the node: its URL refuses connections until a new one starts on the port.
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }

    pub async fn head(&self) -> u64 {
        let v = self.rpc("eth_blockNumber", json!([])).await;
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    pub async fn mine(&self, blocks: u64) {
        self.dated.store(false, Ordering::SeqCst);
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]))
            .await;
    }

    pub async fn automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await;
    }

    pub async fn snapshot(&self) -> Value {
        self.rpc("evm_snapshot", json!([])).await
    }

    pub async fn revert(&self, id: Value) {
        let ok = self.rpc("evm_revert", json!([id])).await;
        assert_eq!(ok, json!(true), "evm_revert");
    }

    /// Sends a transaction from an unlocked account; returns its hash (mined at once when
    /// automine is on).
    pub async fn send(&self, from: &str, to: Option<&str>, data: Vec<u8>) -> String {
        let mut tx =
            json!({"from": from, "data": format!("0x{}", hex::encode(data)), "gas": "0x1000000"});
        if let Some(t) = to {
            tx["to"] = json!(t);
        }
        let h = self.rpc("eth_sendTransaction", json!([tx])).await;
        h.as_str().unwrap().to_owned()
    }

    pub async fn receipt(&self, tx: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.rpc("eth_getTransactionReceipt", json!([tx])).await;
            if !r.is_null() {
                assert_eq!(r["status"], json!("0x1"), "transaction failed: {r}");
                return r;
            }
            assert!(Instant::now() < deadline, "no receipt for {tx}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deploys the test ERC-20 (tests/fixtures/TestToken.sol) from account 0; returns its address.
    pub async fn deploy_token(&self, symbol: &str, decimals: u8) -> String {
        let bin = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/TestToken.bin"),
        )
        .expect("TestToken.bin");
        let mut code = hex::decode(bin.trim()).expect("hex bytecode");
        code.extend(
            (symbol.to_owned(), symbol.to_owned(), U256::from(decimals)).abi_encode_params(),
        );
        let tx = self.send(ACCOUNTS[0], None, code).await;
        let r = self.receipt(&tx).await;
        r["contractAddress"].as_str().unwrap().to_owned()
    }

    /// `mint(to, value)`.
    pub async fn mint(&self, token: &str, to: &str, value: u128) {
        let mut data = selector("mint(address,uint256)").to_vec();
        data.extend((addr(to), U256::from(value)).abi_encode_params());
        let tx = self.send(ACCOUNTS[0], Some(token), data).await;
        self.receipt(&tx).await;
    }

    /// Dates the next block at the current second, unless the test dated it itself. anvil's
    /// clock may run more than a second behind the wall clock (seen under load, and after
    /// `evm_revert`), and a transfer pays only sessions created no later than its block's second:
    /// a payment sent right after its session was created would otherwise look older than it.
    async fn date_next_block_now(&self) {
        if self.dated.swap(false, Ordering::SeqCst) {
            return;
        }
        let latest = self
            .rpc("eth_getBlockByNumber", json!(["latest", false]))
            .await;
        let latest = u64::from_str_radix(
            latest["timestamp"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
        self.try_rpc("evm_setNextBlockTimestamp", json!([now.max(latest)]))
            .await
            .unwrap_or_else(|e| panic!("evm_setNextBlockTimestamp: {e}"));
    }

    /// `transfer(to, value)` from `from`; returns the transaction hash (not waited for). Its
    /// block is dated now (see `date_next_block_now`).
    pub async fn transfer(&self, token: &str, from: &str, to: &str, value: u128) -> String {
        self.date_next_block_now().await;
        let mut data = selector("transfer(address,uint256)").to_vec();
        data.extend((addr(to), U256::from(value)).abi_encode_params());
        self.send(from, Some(token), data).await
    }
}

fn addr(a: &str) -> Address {
    a.parse().expect("address")
}

fn selector(sig: &str) -> [u8; 4] {
    let h = alloy::primitives::keccak256(sig.as_bytes());
    [h[0], h[1], h[2], h[3]]
}
