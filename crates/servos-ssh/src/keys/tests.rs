//! Unit tests for key handling, checked against the real `ssh-keygen`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

fn secret(s: &str) -> Secret<String> {
    Secret::new(s.to_owned())
}

fn ssh_keygen(args: &[&str]) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen is installed");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes a key with ssh-keygen; returns (private key text, public line from the .pub file).
fn keygen(dir: &Path, name: &str, extra: &[&str], passphrase: &str) -> (String, String) {
    let path: PathBuf = dir.join(name);
    let p = path.to_str().unwrap();
    let mut args = vec!["-q", "-f", p, "-N", passphrase, "-C", "test@servos"];
    args.extend_from_slice(extra);
    ssh_keygen(&args);
    let private = std::fs::read_to_string(&path).unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (private, public.trim().to_owned())
}

/// The key part of a public line ("type base64"), without the comment.
fn key_part(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn generated_key_round_trips_through_public_line_of() {
    let pair = generate_ed25519("servos@web-1").unwrap();
    assert!(
        pair.public_line.starts_with("ssh-ed25519 AAAA"),
        "{}",
        pair.public_line
    );
    assert!(
        pair.public_line.ends_with(" servos@web-1"),
        "{}",
        pair.public_line
    );
    assert!(
        pair.private_openssh
            .expose()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    );
    assert_eq!(
        public_line_of(&pair.private_openssh, None).unwrap(),
        pair.public_line
    );
}

#[test]
fn generated_private_key_is_readable_by_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let pair = generate_ed25519("c").unwrap();
    let path = dir.path().join("id");
    std::fs::write(&path, pair.private_openssh.expose()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let derived = ssh_keygen(&["-y", "-f", path.to_str().unwrap()]);
    assert_eq!(key_part(&derived), key_part(&pair.public_line));
}

#[test]
fn two_generated_keys_differ() {
    let a = generate_ed25519("a").unwrap();
    let b = generate_ed25519("a").unwrap();
    assert_ne!(a.public_line, b.public_line);
}

#[test]
fn generate_refuses_a_comment_with_a_newline() {
    let err = generate_ed25519("x\nssh-ed25519 AAAA evil").unwrap_err();
    assert!(matches!(err, SshError::KeyGeneration { .. }), "{err}");
}

#[test]
fn unencrypted_ssh_keygen_keys_give_the_same_public_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("ed", &["-t", "ed25519"][..]),
        ("rsa", &["-t", "rsa", "-b", "2048"][..]),
        ("rsa_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"][..]),
        ("rsa_pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"][..]),
    ] {
        let (private, public) = keygen(dir.path(), name, extra, "");
        let line =
            public_line_of(&secret(&private), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key_part(&line), key_part(&public), "{name}");
    }
}

#[test]
fn passphrase_protected_keys_load_with_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let pass = secret("correct horse 'battery' $(staple)");
    for (name, extra) in [
        ("ed", &["-t", "ed25519"][..]),
        ("rsa", &["-t", "rsa", "-b", "2048"][..]),
        ("rsa_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"][..]),
        ("rsa_pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"][..]),
    ] {
        let (private, public) = keygen(dir.path(), name, extra, pass.expose());
        let line = public_line_of(&secret(&private), Some(&pass))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key_part(&line), key_part(&public), "{name}");
    }
}

#[test]
fn passphrase_protected_keys_refuse_a_wrong_or_missing_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("ed", &["-t", "ed25519"][..]),
        ("rsa", &["-t", "rsa", "-b", "2048"][..]),
        ("rsa_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"][..]),
        ("rsa_pkcs8", &["-t", "rsa", "-b", "2048", "-m", "PKCS8"][..]),
    ] {
        let (private, _) = keygen(dir.path(), name, extra, "right");
        let wrong = public_line_of(&secret(&private), Some(&secret("wrong"))).unwrap_err();
        assert!(
            matches!(wrong, SshError::WrongPassphrase),
            "{name}: {wrong}"
        );
        assert_eq!(
            wrong.to_string(),
            "wrong passphrase: it does not decrypt the private key"
        );
        let missing = public_line_of(&secret(&private), None).unwrap_err();
        assert!(
            matches!(missing, SshError::PassphraseRequired),
            "{name}: {missing}"
        );
        assert_eq!(
            missing.to_string(),
            "the private key is protected by a passphrase: provide its passphrase"
        );
    }
}

#[test]
fn ecdsa_keys_are_refused_as_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = keygen(dir.path(), "ec", &["-t", "ecdsa"], "");
    let err = public_line_of(&secret(&private), None).unwrap_err();
    assert!(matches!(err, SshError::UnsupportedKeyType { .. }), "{err}");
    assert!(err.to_string().contains("ecdsa-sha2-nistp256"), "{err}");
    assert!(
        err.to_string().ends_with("use an Ed25519 or RSA key"),
        "{err}"
    );
}

#[test]
fn garbage_is_not_a_key() {
    for garbage in [
        "",
        "hello",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA!!\n-----END OPENSSH PRIVATE KEY-----",
    ] {
        let err = public_line_of(&secret(garbage), None).unwrap_err();
        assert!(
            matches!(err, SshError::NotAKey { .. }),
            "{garbage:?}: {err}"
        );
        assert!(
            err.to_string().starts_with("not an SSH private key"),
            "{err}"
        );
    }
}

#[test]
fn a_public_key_pasted_as_private_key_says_so() {
    let pair = generate_ed25519("c").unwrap();
    let err = public_line_of(&secret(&pair.public_line), None).unwrap_err();
    assert!(err.to_string().contains("this is a public key"), "{err}");
}

#[test]
fn a_truncated_key_is_not_a_key() {
    let pair = generate_ed25519("c").unwrap();
    let text = pair.private_openssh.expose();
    let cut = format!(
        "{}\n-----END OPENSSH PRIVATE KEY-----\n",
        &text[..text.len() / 2]
    );
    let err = public_line_of(&secret(&cut), None).unwrap_err();
    assert!(matches!(err, SshError::NotAKey { .. }), "{err}");
}

#[test]
fn fingerprint_matches_ssh_keygen_lf() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("ed", &["-t", "ed25519"][..]),
        ("rsa", &["-t", "rsa", "-b", "2048"][..]),
    ] {
        let (_, public) = keygen(dir.path(), name, extra, "");
        let pub_path = dir.path().join(format!("{name}.pub"));
        let printed = ssh_keygen(&["-lf", pub_path.to_str().unwrap()]);
        // "256 SHA256:xxxx test@servos (ED25519)"
        let expected = printed.split_whitespace().nth(1).unwrap();
        assert_eq!(
            fingerprint_of_public_line(&public).unwrap(),
            expected,
            "{name}"
        );
    }
}

#[test]
fn fingerprint_of_an_invalid_line_names_the_line() {
    let err = fingerprint_of_public_line("ssh-ed25519 notbase64").unwrap_err();
    assert!(matches!(err, SshError::InvalidPublicKey { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid public key line \"ssh-ed25519 notbase64\""),
        "{err}"
    );
}
