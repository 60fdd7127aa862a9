//! A real HTTP/1.1 webhook receiver on loopback: records every request and answers with the
//! status the test scripts (e.g. 500 three times, then 200).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

#[derive(Default)]
struct State {
    got: Vec<Received>,
    /// Statuses to answer, in order; 200 once empty. 0 means: never answer (a hung receiver).
    script: VecDeque<u16>,
    /// Once the script is used up: the percentage of requests answered 500 at random (0 = none).
    fail_percent: u32,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (an OS-chosen port, or `port`).
    pub async fn start(port: u16, script: &[u16]) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            got: vec![],
            script: script.iter().copied().collect(),
            fail_percent: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            state,
            task: Arc::new(task),
        }
    }

    pub fn stop(&self) {
        self.task.abort();
    }

    /// From now on (once the script is used up), answer `percent`% of requests with 500 at random.
    pub fn fail_randomly(&self, percent: u32) {
        self.state.lock().unwrap().fail_percent = percent.min(100);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// Waits until `pred` holds over what was received, or panics after `secs`.
    pub async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "receiver: {what} did not happen within {secs} s; got {} requests",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let mut headers = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let status = {
            let mut s = state.lock().unwrap();
            s.got.push(Received {
                path,
                headers,
                body,
            });
            match s.script.pop_front() {
                Some(st) => st,
                None if s.fail_percent > 0 && rand::random_range(0..100u32) < s.fail_percent => 500,
                None => 200,
            }
        };
        if status == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
        );
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
