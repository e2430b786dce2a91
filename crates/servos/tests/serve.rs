//! The real `servos` binary: start-up rules for the master key, the setup token, a full
//! CLI session, secrets kept out of logs and the database, and key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::{CANARY, Env, files_contain, keygen, stderr_line};

#[test]
fn keygen_prints_32_random_bytes_in_base64() {
    use base64::Engine as _;
    let a = keygen();
    let b = keygen();
    assert_ne!(a, b);
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(&a).unwrap().len(), 32);
}

#[tokio::test]
async fn bad_master_keys_stop_start_up_with_one_line_naming_the_variable() {
    let env = Env::new().await;
    let cases: [(Option<&str>, &str); 3] = [
        (None, "error: SERVOS_MASTER_KEY is not set"),
        (Some("not base64!!"), "error: SERVOS_MASTER_KEY is not valid base64"),
        (Some("c2hvcnQ="), "error: SERVOS_MASTER_KEY decodes to 5 bytes, expected exactly 32"),
    ];
    for (key, want) in cases {
        let out = env.run(key, &["serve"], "");
        assert_eq!(out.status.code(), Some(2), "{key:?}");
        let err = stderr_line(&out);
        assert!(err.starts_with(want), "{key:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err(), "nothing may be served");
    let key_file = env.dir.path().join("key");
    std::fs::write(&key_file, "short\n").unwrap();
    let out = env.cmd(None).arg("serve").env("SERVOS_MASTER_KEY_FILE", &key_file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains(&format!("SERVOS_MASTER_KEY_FILE ({})", key_file.display())), "{}", stderr_line(&out));
}

#[tokio::test]
async fn wrong_master_key_is_refused_before_anything_is_served() {
    let env = Env::new().await;
    let key = keygen();
    drop(env.serve(&key));
    let out = env.run(Some(&keygen()), &["serve"], "");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert!(err.contains("SERVOS_MASTER_KEY does not open this database"), "{err}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", env.port)).is_err());
}

#[tokio::test]
async fn a_cli_session_keeps_every_secret_out_of_logs_and_the_database() {
    let env = Env::new().await;
    let key = keygen();
    let server = env.serve(&key);
    let data = env.data_dir();
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let token_file = data.join("setup_token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(server.log_text().contains(token.trim()), "the setup token is printed to the log");

    env.ok(&["setup", "--username", "admin"], "correct horse battery staple\n");
    assert!(!token_file.exists(), "setup consumes the token file");
    let cfg = env.dir.path().join("config/servos/client.json");
    assert_eq!(std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777, 0o600);

    env.ok(&["login", "--username", "admin", "--password-stdin"], "correct horse battery staple\n");
    let added = env.ok(&["servers", "add", "web-1", "--host", "10.250.9.9"], "");
    assert!(added.contains("ssh-ed25519 AAAA"), "{added}");
    env.ok(&["services", "create", "app", "--image", "busybox:latest", "--server", "web-1", "--port", "8080"], "");
    env.ok(&["env", "set", "app"], &format!("API_KEY={CANARY}\nOTHER=x\n"));
    env.ok(&["registries", "add", "reg", "--at", "registry.example:5000", "--username", "u"], &format!("pw-{CANARY}\n"));
    env.ok(&["git-credentials", "add", "gh", "--at", "github.com"], &format!("ghp-{CANARY}\n"));
    assert_eq!(env.ok(&["env", "list", "app"], ""), "API_KEY\nOTHER\n");
    let listed = env.ok(&["--json", "services", "list"], "");
    assert!(listed.contains("\"app\""));
    assert!(env.ok(&["audit", "verify"], "").starts_with("audit chain intact: "));

    let out = env.run(None, &["servers", "add", "bad", "--host", "$(touch /tmp/pwned)"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("invalid_input: host: \"$(touch /tmp/pwned)\" is not a valid hostname"), "{}", stderr_line(&out));

    let log = server.log_text();
    drop(server);
    assert!(!log.contains(CANARY), "a secret reached the server log:\n{log}");
    assert_eq!(files_contain(&data, CANARY), Vec::<PathBuf>::new(), "plaintext secret in the data dir");
    if let Some(db_file) = env.db.url.strip_prefix("sqlite://") {
        let db_dir = Path::new(db_file).parent().unwrap();
        assert_eq!(files_contain(db_dir, CANARY), Vec::<PathBuf>::new(), "plaintext secret in the SQLite files");
        assert!(!files_contain(db_dir, "web-1").is_empty(), "sanity: the search sees stored data");
    }
}

#[tokio::test]
async fn rotate_key_moves_everything_to_the_new_key() {
    let env = Env::new().await;
    let old = keygen();
    let new = keygen();
    let server = env.serve(&old);
    env.ok(&["setup", "--username", "admin"], "correct horse battery staple\n");
    env.ok(&["servers", "add", "web-1", "--host", "10.0.0.1"], "");
    env.ok(&["services", "create", "app", "--image", "busybox", "--server", "web-1"], "");
    env.ok(&["env", "set", "app"], &format!("API_KEY={CANARY}\n"));
    drop(server);

    let out = env.cmd(Some(&old)).arg("rotate-key").env("SERVOS_NEW_MASTER_KEY", "bad").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_line(&out).contains("SERVOS_NEW_MASTER_KEY is not valid base64"), "{}", stderr_line(&out));

    let out = env.cmd(Some(&old)).arg("rotate-key").env("SERVOS_NEW_MASTER_KEY", &new).output().unwrap();
    assert!(out.status.success(), "{}", stderr_line(&out));
    assert!(stderr_line(&out).contains("re-encrypted"), "{}", stderr_line(&out));

    let refused = env.run(Some(&old), &["serve"], "");
    assert!(stderr_line(&refused).contains("does not open this database"));
    let _server = env.serve(&new);
    assert_eq!(env.ok(&["env", "list", "app"], ""), "API_KEY\n");
    assert!(env.ok(&["audit", "verify"], "").starts_with("audit chain intact"));
    let events = env.ok(&["--json", "audit", "list"], "");
    assert!(events.contains("master_key.rotated"), "{events}");
}
