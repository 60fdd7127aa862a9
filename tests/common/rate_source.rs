//! A test double of an exchange-rate HTTP API (the real ones are out of reach from the
//! suite): a real HTTP/1.1 server on loopback answering `{"data":{"price":<value>}}` as such
//! APIs do, whose value the test sets and which the test can take down (answers 503) and
//! bring back. Records the headers of every request.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    /// The JSON value answered at /data/price (a number or a string), `None`: down (503).
    value: Option<serde_json::Value>,
    headers: Vec<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct RateSource {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl RateSource {
    pub async fn start(value: serde_json::Value) -> RateSource {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            value: Some(value),
            headers: vec![],
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&got).to_string();
                    let headers: HashMap<String, String> = text
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let value = {
                        let mut s = st.lock().unwrap();
                        s.headers.push(headers);
                        s.value.clone()
                    };
                    let (status, body) = match value {
                        Some(v) => (
                            "200 OK",
                            serde_json::json!({"data": {"price": v}}).to_string(),
                        ),
                        None => ("503 Service Unavailable", "{\"error\":\"down\"}".to_owned()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        RateSource {
            url: format!("http://127.0.0.1:{port}/v1/price"),
            state,
        }
    }

    pub fn set(&self, value: Option<serde_json::Value>) {
        self.state.lock().unwrap().value = value;
    }

    pub fn headers(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().headers.clone()
    }
}
