//! A throwaway PostgreSQL cluster for tests: Debian's `initdb` in a temporary directory,
//! `pg_ctl start` on a free loopback port, one fresh database per test. PostgreSQL refuses to
//! run as root, so as root (CI) the server runs as the system user `paywatch-pg`, created when
//! missing. A watchdog shell stops the cluster and removes its directory when the test process
//! exits, however it exits (the test harness runs no destructors of statics). Shared by the
//! library's unit tests and `tests/common` through `#[path]`, so it uses only std. Never skips:
//! a missing PostgreSQL panics with what to install.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system user the server runs as when the tests run as root.
pub const PG_USER: &str = "paywatch-pg";

/// A running cluster: where it listens and who may connect (trust on loopback).
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    /// The server options it was started with (to start it again on the same port).
    opts: String,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

/// A cluster of the caller's own (to stop and restart without disturbing other tests).
pub fn own_cluster() -> Cluster {
    Cluster::start()
}

/// A fresh, empty database on the process's cluster; its connection URL.
pub fn fresh_database() -> String {
    let c = cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    c.psql("postgres", &format!("CREATE DATABASE {name}"));
    c.url(&name)
}

fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PAYWATCH_PG_BIN") {
        return PathBuf::from(d);
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, b)) => b,
        None => panic!(
            "PostgreSQL is not installed: no /usr/lib/postgresql/<version>/bin/initdb. \
             Install Debian's `postgresql` (scripts/test does) or set PAYWATCH_PG_BIN"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command that runs `program` as the cluster's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn ensure_user() {
    if !is_root() {
        return;
    }
    let known = Command::new("id")
        .arg(PG_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if known {
        return;
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ])
        .status()
        .is_ok_and(|s| s.success());
    // Another test process may have created it at the same moment.
    let known = Command::new("id")
        .arg(PG_USER)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        made || known,
        "cannot create the system user {PG_USER} that runs the test PostgreSQL (PostgreSQL refuses root)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(mut c: Command, what: &str) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    fn start() -> Cluster {
        let bin = bin_dir();
        ensure_user();
        let dir = std::env::temp_dir().join(format!(
            "paywatch-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg(format!("{PG_USER}:")).arg(&dir);
                    c
                },
                "chown of the cluster directory",
            );
        }
        let data = dir.join("data");
        let mut init = as_owner(&bin.join("initdb"));
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-N",
        ]);
        run(init, "initdb");
        // The port is free when chosen but may be taken before the server binds: retry.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
                 -c max_connections=300 -c shared_buffers=32MB -c fsync=on",
                dir.display()
            );
            let mut start = as_owner(&bin.join("pg_ctl"));
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-o", &opts, "-w", "-t", "60", "start"]);
            let out = start.output().expect("pg_ctl start");
            if out.status.success() {
                let c = Cluster {
                    port,
                    dir: dir.clone(),
                    bin: bin.clone(),
                    opts: opts.clone(),
                };
                c.watchdog();
                return c;
            }
            last = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed five times:\n{last}");
    }

    /// Stops the cluster and removes its directory once this process is gone.
    fn watchdog(&self) {
        let stop = if is_root() {
            format!("runuser -u {PG_USER} -- ")
        } else {
            String::new()
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             {stop}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        // Left running on purpose: it outlives this process to stop the cluster after it.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watchdog");
    }

    /// The URL of `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL command with psql; its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ]);
        run(c, &format!("psql {sql:?}"))
    }

    /// Starts the server again after `stop_immediate`, on the same port (crash recovery runs).
    pub fn start_again(&self) {
        let mut c = as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &self.opts, "-w", "-t", "60", "start"]);
        run(c, "pg_ctl start (again)");
    }

    /// Stops the server at once (`-m immediate`: as a crash), to be started again.
    pub fn stop_immediate(&self) {
        let mut c = as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(c, "pg_ctl stop");
    }
}
