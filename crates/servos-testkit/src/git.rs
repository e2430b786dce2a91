//! A real git server over HTTP for tests: `git http-backend` (the CGI program that ships
//! with git) behind a small HTTP/1.1 server that demands an exact `Authorization` header
//! (401 with `WWW-Authenticate` without it), plus a helper that makes a repository.
//!
//! The server runs in the test process on a plain thread per connection; bind it to
//! [`crate::TestNet::gateway`] so that test hosts reach it. Every request it answers is
//! recorded (method, path with query, status, whether it carried an `Authorization`
//! header), so a test can assert what clients sent, for instance that no URL carried a
//! token.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::TestkitError;
use crate::cmd::run;

/// Requests bodies above this are refused (a test repository is small).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub status: u16,
    pub had_authorization: bool,
}

/// A running git HTTP server; stopped when dropped.
#[derive(Debug)]
pub struct GitHttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

struct Config {
    root: PathBuf,
    authorization: Option<String>,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` on `bind`, port chosen by the kernel.
    /// With `authorization`, every request must carry exactly that `Authorization` header
    /// value (e.g. `Basic …`); others get 401.
    pub fn start(
        bind: Ipv4Addr,
        root: &Path,
        authorization: Option<&str>,
    ) -> Result<Self, TestkitError> {
        let listener = TcpListener::bind((bind, 0))
            .map_err(TestkitError::io(format!("bind the git server to {bind}")))?;
        let addr = listener
            .local_addr()
            .map_err(TestkitError::io("read the git server address"))?;
        listener
            .set_nonblocking(true)
            .map_err(TestkitError::io("make the git server non-blocking"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Config {
            root: root.to_path_buf(),
            authorization: authorization.map(str::to_owned),
            requests: Arc::clone(&requests),
        });
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || accept_loop(&listener, &flag, &config));
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
            requests,
        })
    }

    /// `http://addr:port/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<GitRequest> {
        lock(&self.requests).clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, config: &Arc<Config>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let config = Arc::clone(config);
                std::thread::spawn(move || {
                    let _ = serve(stream, &config);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Answers one request, then closes the connection.
fn serve(stream: TcpStream, config: &Config) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let target = words.next().unwrap_or("").to_owned();
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let had_authorization = headers.contains_key("authorization");
    let mut out = stream;
    let record = |status| {
        lock(&config.requests).push(GitRequest {
            method: method.clone(),
            target: target.clone(),
            status,
            had_authorization,
        });
    };
    if let Some(expected) = &config.authorization
        && headers.get("authorization") != Some(expected)
    {
        record(401);
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"servos-test\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let body = read_body(&mut reader, &headers)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = headers.get("content-type") {
        cgi.env("CONTENT_TYPE", t);
    }
    if let Some(p) = headers.get("git-protocol") {
        cgi.env("GIT_PROTOCOL", p);
    }
    if let Some(e) = headers.get("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", e);
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&body);
        }
    });
    let mut output = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut output)?;
    }
    let _ = writer.join();
    let _ = child.wait();
    let (status, head, payload) = parse_cgi(&output);
    record(status);
    let mut response = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in head {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    ));
    out.write_all(response.as_bytes())?;
    out.write_all(payload)?;
    out.flush()
}

fn read_body(
    reader: &mut BufReader<TcpStream>,
    headers: &HashMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let too_big = || std::io::Error::other("request body too large");
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            if body.len() + n > MAX_BODY {
                return Err(too_big());
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                return Ok(body);
            }
        }
    }
    let n: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if n > MAX_BODY {
        return Err(too_big());
    }
    let mut body = vec![0; n];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Splits CGI output into status, headers (without `Status`) and body.
fn parse_cgi(output: &[u8]) -> (u16, Vec<(String, String)>, &[u8]) {
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
        .or_else(|| {
            output
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| (p, p + 2))
        });
    let Some((head_end, body_start)) = split else {
        return (502, Vec::new(), b"");
    };
    let head = String::from_utf8_lossy(&output[..head_end]);
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v
                    .trim()
                    .split(' ')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
            } else {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    (status, headers, &output[body_start..])
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    }
}

/// Makes a bare repository `root/<name>.git` whose branch `main` has one commit holding
/// `files` (path, content); returns the commit SHA.
pub fn create_repository(
    root: &Path,
    name: &str,
    files: &[(&str, &str)],
) -> Result<String, TestkitError> {
    let work = root.join(format!("{name}.work"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(TestkitError::io(format!("create {}", work.display())))?;
    for (path, content) in files {
        let file = work.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .map_err(TestkitError::io(format!("create {}", parent.display())))?;
        }
        fs::write(&file, content).map_err(TestkitError::io(format!("write {}", file.display())))?;
    }
    let w = work.display().to_string();
    let git = |args: &[&str]| {
        let mut all = vec![
            "-C",
            &w,
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@servos.invalid",
        ];
        all.extend_from_slice(args);
        run("git", &all)
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "test commit"])?;
    let sha = String::from_utf8_lossy(&git(&["rev-parse", "HEAD"])?.stdout)
        .trim()
        .to_owned();
    let bare = root.join(format!("{name}.git"));
    let _ = fs::remove_dir_all(&bare);
    run(
        "git",
        &["clone", "-q", "--bare", &w, &bare.display().to_string()],
    )?;
    let _ = fs::remove_dir_all(&work);
    Ok(sha)
}
