//! The CLI's HTTP client: base URL and bearer token from `servos login` (a 0600 file
//! under the user's config directory) or SERVOS_URL / SERVOS_TOKEN.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    pub url: Option<String>,
    pub token: Option<String>,
}

pub fn config_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set; set XDG_CONFIG_HOME")?).join(".config"),
    };
    Ok(base.join("servos").join("client.json"))
}

impl ClientConfig {
    pub fn load() -> anyhow::Result<Self> {
        let path = config_path()?;
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClientConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if let Ok(url) = std::env::var("SERVOS_URL")
            && !url.is_empty()
        {
            cfg.url = Some(url);
        }
        if let Ok(token) = std::env::var("SERVOS_TOKEN")
            && !token.is_empty()
        {
            cfg.token = Some(token);
        }
        Ok(cfg)
    }

    /// Saves with mode 0600 (the token is a credential).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = config_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        servos_api::setup::write_private(&path, &serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("servos-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10));
        // A control plane whose certificate comes from a private CA: trust that CA too.
        if let Some(path) = std::env::var_os("SERVOS_CA_FILE").filter(|p| !p.is_empty()) {
            let shown = std::path::Path::new(&path).display().to_string();
            let pem = std::fs::read(&path).with_context(|| format!("SERVOS_CA_FILE={shown}: cannot read"))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("SERVOS_CA_FILE={shown}: not a PEM certificate"))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build()?;
        Ok(Self { http, base: url.trim_end_matches('/').to_owned(), token })
    }

    pub fn from_config() -> anyhow::Result<Self> {
        let cfg = ClientConfig::load()?;
        let url = cfg.url.context("no control plane configured: run `servos login --url URL` (or set SERVOS_URL)")?;
        if cfg.token.is_none() {
            bail!("not logged in: run `servos login` (or set SERVOS_TOKEN)");
        }
        Self::new(&url, cfg.token)
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let code = value.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
            let msg = value.pointer("/error/message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("{method} {path}: {status} {code}: {msg}");
        }
        Ok(value)
    }

    /// Reads a server-sent event stream, calling `on_event(event, data)` for each event
    /// until the server closes it.
    pub async fn sse(&self, path: &str, mut on_event: impl FnMut(&str, &str)) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let code = value.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
            let msg = value.pointer("/error/message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("GET {path}: {status} {code}: {msg}");
        }
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        let (mut event, mut data) = (String::from("message"), String::new());
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.context("the log stream broke")?));
            while let Some(pos) = buf.find('\n') {
                let line: String = buf.drain(..=pos).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !data.is_empty() {
                        on_event(&event, &data);
                    }
                    event = "message".into();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
        Ok(())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// Percent-encodes one path segment (names are validated server-side; this keeps a
/// hostile name from changing the path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
