//! A real PostgreSQL 15 cluster for integration tests: initdb'd as the
//! postgres user into a temporary directory, loopback only, on a free port,
//! with iclear preloaded. Dropping it stops the server and removes the data.

use postgres::{Client, NoTls};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = "/usr/lib/postgresql/15/bin";

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn is_postgres_user() -> bool {
    Command::new("id")
        .arg("-un")
        .output()
        .map(|o| o.stdout == b"postgres\n")
        .unwrap_or(false)
}

/// Run a server binary as the postgres user (Postgres refuses root).
pub fn as_postgres(bin: &str, args: &[&str]) -> Output {
    let path = format!("{BIN}/{bin}");
    let out = if is_postgres_user() {
        Command::new(&path).args(args).output()
    } else {
        Command::new("sudo")
            .arg("-u")
            .arg("postgres")
            .arg(&path)
            .args(args)
            .output()
    }
    .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    out
}

/// Run a client binary (pg_dump, psql, ...) as the current user.
pub fn client(bin: &str, args: &[&str]) -> Output {
    Command::new(format!("{BIN}/{bin}"))
        .args(args)
        .output()
        .expect("client binary")
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The server options it was started with (for `restart`).
    opts: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with("")
    }

    /// A cluster with extra server options (`-c name=value ...`).
    pub fn start_with(extra: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "iclear-it-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let d = dir.to_str().unwrap();
        let out = as_postgres(
            "initdb",
            &[
                "--no-sync",
                "-D",
                d,
                "-U",
                "postgres",
                "--auth=trust",
                "--locale=C.UTF-8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // free_port() lets the port go before the server binds it, so another
        // test's cluster or sandbox can take it meanwhile: try a new one then
        let log = format!("{d}/server.log");
        for attempt in 1.. {
            let port = free_port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=/tmp \
                 -c shared_preload_libraries=iclear -c fsync=off -c max_connections=40 \
                 -c iclear.allowed_endpoints=127.0.0.1 {extra}"
            );
            let out = as_postgres("pg_ctl", &["-D", d, "-l", &log, "-o", &opts, "-w", "start"]);
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            if out.status.success() {
                return Cluster { dir, port, opts };
            }
            assert!(
                attempt < 5 && server_log.contains("Address already in use"),
                "pg_ctl start: {} {server_log}",
                String::from_utf8_lossy(&out.stdout),
            );
        }
        unreachable!()
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub fn connect(&self, db: &str) -> Client {
        Client::connect(&self.url(db), NoTls).unwrap_or_else(|e| panic!("connect {db}: {e}"))
    }

    /// Connect to `db` as `role` (a LOGIN role; the cluster trusts loopback).
    pub fn connect_as(&self, db: &str, role: &str) -> Client {
        let url = format!("host=127.0.0.1 port={} user={role} dbname={db}", self.port);
        Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("connect {db} as {role}: {e}"))
    }

    /// A fresh database with iclear created in it.
    pub fn database(&self, db: &str) -> Client {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
        let mut c = self.connect(db);
        c.batch_execute("CREATE EXTENSION iclear").unwrap();
        c
    }

    /// The server log so far (for assertion messages).
    pub fn log(&self) -> String {
        let p = self.dir.join("server.log");
        std::fs::read_to_string(&p)
            .or_else(|_| {
                Command::new("sudo")
                    .args(["cat", p.to_str().unwrap()])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            })
            .unwrap_or_default()
    }

    /// Connect, retrying while the server restarts (after a crash) for up to `secs`.
    pub fn connect_retry(&self, db: &str, secs: u64) -> Client {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            match Client::connect(&self.url(db), NoTls) {
                Ok(c) => return c,
                Err(e) if std::time::Instant::now() > until => panic!("connect {db}: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }

    /// Stop the server (`mode`: fast, immediate, ...) and start it again
    /// with the same options and port.
    pub fn restart(&self, mode: &str) {
        let d = self.dir.to_str().unwrap();
        let out = as_postgres("pg_ctl", &["-D", d, "-m", mode, "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode}: {}",
            self.log()
        );
        let log = format!("{d}/server.log");
        let out = as_postgres(
            "pg_ctl",
            &["-D", d, "-l", &log, "-o", &self.opts, "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", self.log());
    }

    /// Stop the server (`mode`: fast, immediate, ...), leaving it down.
    pub fn stop(&self, mode: &str) {
        let d = self.dir.to_str().unwrap();
        let out = as_postgres("pg_ctl", &["-D", d, "-m", mode, "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop -m {mode}: {}",
            self.log()
        );
    }

    /// Start a server `stop` left down, with the same options and port.
    pub fn start_again(&self) {
        let d = self.dir.to_str().unwrap();
        let log = format!("{d}/server.log");
        let out = as_postgres(
            "pg_ctl",
            &["-D", d, "-l", &log, "-o", &self.opts, "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", self.log());
    }

    /// pg_amcheck over the iclear schema of `db` (heap, and btree indexes
    /// against it); panics with its report when it finds corruption.
    pub fn amcheck(&self, db: &str) {
        let port = self.port_arg();
        let out = client(
            "pg_amcheck",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "--schema",
                "iclear",
                "--install-missing",
                "--heapallindexed",
            ],
        );
        assert!(
            out.status.success(),
            "pg_amcheck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client binary's arguments to connect to `db` as postgres.
    pub fn conn_args(&self, db: &str) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.port_arg(),
            "-U",
            "postgres",
            "-d",
            db,
        ]
        .map(String::from)
        .to_vec()
    }

    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap().to_string();
        as_postgres("pg_ctl", &["-D", &d, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir).or_else(|_| {
            Command::new("sudo")
                .args(["-u", "postgres", "rm", "-rf", &d])
                .status()
                .map(|_| ())
        });
    }
}

/// (iclear.version() of the loaded library, extversion of the installed extension).
pub fn versions(c: &mut Client) -> (String, String) {
    let r = c
        .query_one(
            "SELECT iclear.version(), extversion FROM pg_extension WHERE extname = 'iclear'",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// A product `payday_us` with a DNPL on email and a few rules, for tests.
pub const FIXTURE: &str = r#"
INSERT INTO iclear.product (name) VALUES ('payday_us');
INSERT INTO iclear.list (name, kind, field) VALUES ('bad emails', 'dnpl', 'email');
INSERT INTO iclear.list_product SELECT l.id, p.id FROM iclear.list l, iclear.product p;
INSERT INTO iclear.list_entry (list_id, value) SELECT id, 'fraud@example.com' FROM iclear.list;
WITH r AS (INSERT INTO iclear.rule (product_id, name, position)
           SELECT id, 'reject test emails', 1 FROM iclear.product RETURNING id)
INSERT INTO iclear.rule_condition (rule_id, category, parameter, operator, value)
SELECT id, 'lead_body', 'email', 'starts_with', '"test"' FROM r;
INSERT INTO iclear.rule_action (rule_id, action, config)
SELECT id, 'stop_processing', '{"message": "test lead"}' FROM iclear.rule WHERE name = 'reject test emails';
"#;
