//! Shared helpers for the binary's tests: a data dir, a database, a port, and the real
//! `servos` binary run as a subprocess.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use servos_store::testing::TestDb;

pub const BIN: &str = env!("CARGO_BIN_EXE_servos");
pub const CANARY: &str = "canary-4b1d-must-not-leak";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
    pub port: u16,
}

impl Env {
    pub async fn new() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { dir: tempfile::tempdir().unwrap(), db: TestDb::new().await, port }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cmd(&self, key: Option<&str>) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("SERVOS_DATA_DIR", self.data_dir())
            .env("SERVOS_DATABASE_URL", &self.db.url)
            .env("SERVOS_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("SERVOS_URL", self.url())
            .env("NO_COLOR", "1");
        if let Some(k) = key {
            c.env("SERVOS_MASTER_KEY", k);
        }
        c
    }

    pub fn run(&self, key: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut child = self.cmd(key).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(None, args, stdin);
        assert!(out.status.success(), "servos {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `servos serve`, logging to a file, and waits until /healthz answers.
    pub fn serve(&self, key: &str) -> Server {
        self.serve_with(key, &[])
    }

    /// [`Env::serve`] with extra environment variables.
    pub fn serve_with(&self, key: &str, extra: &[(&str, &str)]) -> Server {
        let log = self.dir.path().join(format!("serve-{}.log", rand_suffix()));
        let child = self
            .cmd(Some(key))
            .envs(extra.iter().copied())
            .arg("serve")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("serve exited with {status}: {}", server.log_text());
            }
            assert!(Instant::now() < deadline, "serve did not start: {}", server.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

fn rand_suffix() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    servos_core::random::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Server {
    pub child: Child,
    pub log: PathBuf,
}

impl Server {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen() -> String {
    let out = Command::new(BIN).arg("keygen").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

pub fn files_contain(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p);
            }
        }
    }
    hits
}


impl Env {
    /// Creates the first admin through `servos setup` (the CLI saves its token).
    pub fn setup_admin(&self) {
        self.ok(&["setup", "--username", "admin"], "correct horse battery staple\n");
    }

    /// Adds `host` as server `name`, installs ServOS's generated key on it and checks it
    /// (commissioning pins its host key).
    pub fn commission(&self, name: &str, host: &servos_testkit::TestHost) {
        let added: serde_json::Value =
            serde_json::from_str(&self.ok(&["--json", "servers", "add", name, "--host", &host.addr().to_string()], "")).unwrap();
        host.authorize(added["public_key"].as_str().unwrap()).unwrap();
        self.ok(&["servers", "check", name], "");
    }
}
