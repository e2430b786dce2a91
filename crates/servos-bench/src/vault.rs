//! `vault`: encrypt+decrypt of 4 KiB values per second with `servos_core::Vault` against
//! the raw `aes-gcm` crate, in interleaved rounds of the same run, medians compared.
//!
//! The like-for-like comparison is `Vault::seal`/`open` (raw bytes) against `Aes256Gcm`
//! with a fresh `getrandom` nonce and associated data of the same length; that ratio is
//! held to the goal. `encrypt`/`decrypt` add the Base64 stored text and are reported too.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use anyhow::{Context as _, anyhow, ensure};
use servos_core::{Aad, MasterKey, Vault};
use zeroize::Zeroize as _;

use crate::report::{self, Goal, Table};
use crate::stats::median;

/// Issue 2: the vault keeps at least 90% of the raw cipher's throughput.
const GOAL: Goal = Goal::AtLeast(0.9);
/// Where the benchmark pretends the value lives: an environment variable's value.
const AAD_TABLE: &str = "env_vars";
const AAD_COLUMN: &str = "value";
const AAD_ROW: &str = "7f1c2b9e-3d4a-4f6b-8c1d-2e3f4a5b6c7d";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interleaved rounds; each runs every variant once.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Time each variant runs per round, in milliseconds.
    #[arg(long, default_value_t = 200)]
    round_ms: u64,
    /// Plaintext size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

/// One way of doing encrypt+decrypt of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Raw,
    SealOpen,
    Base64,
    /// Diagnostic: the raw cipher plus the zeroizing of the decrypted value that
    /// `Secret<Vec<u8>>` does on drop, to show how much of the gap that explains.
    RawZeroize,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Raw,
        Variant::SealOpen,
        Variant::Base64,
        Variant::RawZeroize,
    ];

    fn label(self) -> &'static str {
        match self {
            Variant::Raw => "raw aes-gcm (Aes256Gcm, getrandom nonce)",
            Variant::SealOpen => "Vault::seal + Vault::open (bytes)",
            Variant::Base64 => "Vault::encrypt + Vault::decrypt (Base64 text)",
            Variant::RawZeroize => "diagnostic: raw aes-gcm + zeroize the plaintext",
        }
    }
}

/// Everything the variants share: the plaintext, the vault and a raw cipher with the
/// same key, and associated data of the same length as the vault's.
struct Bench {
    plaintext: Vec<u8>,
    vault: Vault,
    raw: Aes256Gcm,
    raw_aad: Vec<u8>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let bench = Bench::new(args.size)?;
    bench.check_round_trips()?;
    println!(
        "vault: {} B values, {} interleaved rounds of {} ms per variant, single thread; \
         load average at start {}",
        args.size,
        args.rounds,
        args.round_ms,
        report::load_average()
    );
    println!(
        "one op = encrypt + decrypt of one value; associated data {} B in every variant",
        bench.raw_aad.len()
    );
    let budget = Duration::from_millis(args.round_ms);
    let mut rates: [Vec<f64>; 4] = Default::default();
    for round in 0..args.rounds {
        // Rotate the order so no variant always runs first (cold caches, turbo).
        for k in 0..Variant::ALL.len() {
            let i = (round + k) % Variant::ALL.len();
            rates[i].push(bench.ops_per_second(Variant::ALL[i], budget)?);
        }
    }
    print_results(&rates);
    Ok(())
}

impl Bench {
    fn new(size: usize) -> anyhow::Result<Self> {
        let key = MasterKey::generate().map_err(|e| anyhow!("master key: {e}"))?;
        // The raw cipher gets a key of its own: the vault keeps its key private, and the
        // key's value has no influence on AES speed.
        let mut raw_key = [0u8; 32];
        getrandom::fill(&mut raw_key).map_err(|e| anyhow!("getrandom: {e}"))?;
        let mut plaintext = vec![0u8; size];
        getrandom::fill(&mut plaintext).map_err(|e| anyhow!("getrandom: {e}"))?;
        Ok(Self {
            plaintext,
            vault: Vault::new(&key),
            raw: Aes256Gcm::new(&raw_key.into()),
            raw_aad: vec![0x5a; vault_aad_len()],
        })
    }

    fn aad(&self) -> Aad<'static> {
        Aad::new(AAD_TABLE, AAD_COLUMN, AAD_ROW)
    }

    /// Every variant gives the plaintext back before anything is timed.
    fn check_round_trips(&self) -> anyhow::Result<()> {
        let aad = self.aad();
        let sealed = self.vault.seal(&self.plaintext, &aad)?;
        ensure!(
            *self.vault.open(&sealed, &aad)?.expose() == self.plaintext,
            "Vault::open did not return the plaintext"
        );
        let stored = self.vault.encrypt(&self.plaintext, &aad)?;
        ensure!(
            *self.vault.decrypt(&stored, &aad)?.expose() == self.plaintext,
            "Vault::decrypt did not return the plaintext"
        );
        ensure!(
            self.raw_op()? == self.plaintext,
            "raw aes-gcm did not return the plaintext"
        );
        Ok(())
    }

    /// Runs `variant` for `budget` (in batches, so the clock is read rarely).
    fn ops_per_second(&self, variant: Variant, budget: Duration) -> anyhow::Result<f64> {
        const BATCH: u32 = 32;
        let start = Instant::now();
        let mut ops: u64 = 0;
        while start.elapsed() < budget {
            for _ in 0..BATCH {
                self.op(variant)?;
            }
            ops += u64::from(BATCH);
        }
        Ok(ops as f64 / start.elapsed().as_secs_f64())
    }

    fn op(&self, variant: Variant) -> anyhow::Result<()> {
        match variant {
            Variant::Raw => {
                black_box(self.raw_op()?);
            }
            Variant::SealOpen => {
                let aad = self.aad();
                let sealed = self.vault.seal(black_box(&self.plaintext), &aad)?;
                black_box(self.vault.open(&sealed, &aad)?);
            }
            Variant::Base64 => {
                let aad = self.aad();
                let stored = self.vault.encrypt(black_box(&self.plaintext), &aad)?;
                black_box(self.vault.decrypt(&stored, &aad)?);
            }
            Variant::RawZeroize => {
                let mut plain = self.raw_op()?;
                plain.zeroize();
                black_box(plain);
            }
        }
        Ok(())
    }

    /// What a caller of the raw crate writes: fresh nonce, encrypt, decrypt.
    fn raw_op(&self) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("getrandom: {e}"))?;
        let nonce = Nonce::from(nonce);
        let aad = &self.raw_aad;
        let ct = self
            .raw
            .encrypt(
                &nonce,
                Payload {
                    msg: black_box(&self.plaintext),
                    aad,
                },
            )
            .map_err(|_| anyhow!("raw aes-gcm encryption failed"))?;
        self.raw
            .decrypt(&nonce, Payload { msg: &ct, aad })
            .map_err(|_| anyhow!("raw aes-gcm decryption failed"))
            .context("raw round trip")
    }
}

/// The length of the associated data `Vault` builds for [`AAD_TABLE`]/[`AAD_COLUMN`]/
/// [`AAD_ROW`]: `"servos-v1"` then each part with a 4-byte length prefix.
fn vault_aad_len() -> usize {
    "servos-v1".len()
        + [AAD_TABLE, AAD_COLUMN, AAD_ROW]
            .iter()
            .map(|p| 4 + p.len())
            .sum::<usize>()
}

fn print_results(rates: &[Vec<f64>; 4]) {
    let raw = &rates[0];
    let mut table = Table::new([
        "variant",
        "median ops/s",
        "µs/op",
        "min..max ops/s",
        "ratio to raw",
        "goal",
    ]);
    let mut ratios = [0.0f64; 4];
    for (i, variant) in Variant::ALL.iter().enumerate() {
        let med = median(&rates[i]);
        // The median of per-round ratios: each compares runs made moments apart.
        let per_round: Vec<f64> = rates[i].iter().zip(raw).map(|(v, r)| v / r).collect();
        ratios[i] = median(&per_round);
        let (lo, hi) = min_max(&rates[i]);
        let goal = match variant {
            Variant::Raw => "baseline".to_owned(),
            Variant::SealOpen => format!("{} (like-for-like, held)", GOAL.verdict(ratios[i], "×")),
            Variant::Base64 => "reported only (adds Base64)".to_owned(),
            Variant::RawZeroize => "explains part of the gap".to_owned(),
        };
        table.row([
            variant.label().to_owned(),
            format!("{med:.0}"),
            format!("{:.2}", 1e6 / med),
            format!("{lo:.0}..{hi:.0}"),
            format!("{:.3}", ratios[i]),
            goal,
        ]);
    }
    table.print();
    println!("ratio = median over rounds of (variant ops/s ÷ raw ops/s in the same round)");
    report::summary(format!(
        "vault: raw {:.0} ops/s, seal/open {:.0} ops/s = {:.3}× raw [{}], \
         encrypt/decrypt+base64 {:.0} ops/s = {:.3}× raw [reported only]",
        median(&rates[0]),
        median(&rates[1]),
        ratios[1],
        GOAL.verdict(ratios[1], "×"),
        median(&rates[2]),
        ratios[2],
    ));
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    })
}
