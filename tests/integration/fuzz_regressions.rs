//! The fuzz targets (fuzz/targets.rs, the same functions the cargo-fuzz binaries run) inside the normal
//! `cargo test`, on stable, without building anything more:
//!
//! - replay: every input kept in fuzz/regressions/<target>/ (crashes the fuzzers found) and fuzz/seeds/<target>/,
//!   so a fixed crash stays fixed;
//! - smoke: a few seconds per target of random mutations of those inputs (libFuzzer's kinds of mutation: erase,
//!   insert, flip, overwrite, copy, splice, dictionary tokens, integers). It is NOT coverage-guided: it finds
//!   what lies a few mutations from a seed, and proves each target still runs and holds its assertions. The
//!   coverage-guided runs are `scripts/fuzz SECONDS` (nightly), recorded in docs/security.md.
//!
//! A failing smoke input is written to fuzz/artifacts/smoke/<target>/ (git-ignored): copy it into
//! fuzz/regressions/<target>/ once fixed. `COUNTERSIGN_FUZZ_SMOKE_SECONDS` (default 3) and
//! `COUNTERSIGN_FUZZ_SMOKE_SEED` (default fixed, so a CI failure replays locally) tune it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use countersign_testkit::app::Rng;

#[path = "../../fuzz/targets.rs"]
mod targets;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The kept inputs of a target: regressions first, then seeds.
fn kept_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in [fuzz_dir().join("regressions").join(target), fuzz_dir().join("seeds").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            out.push((path, data));
        }
    }
    out
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let inputs = kept_inputs(target);
    for (path, data) in &inputs {
        if std::panic::catch_unwind(|| run(data)).is_err() {
            panic!("{target}: {} panics", path.display());
        }
    }
    inputs.len()
}

#[test]
fn slack_signature_regressions_replay_without_panic() {
    assert!(replay("slack_signature", targets::slack_signature) > 0);
}

#[test]
fn slack_interaction_regressions_replay_without_panic() {
    assert!(replay("slack_interaction", targets::slack_interaction) > 0);
}

#[test]
fn policy_yaml_regressions_replay_without_panic() {
    assert!(replay("policy_yaml", targets::policy_yaml) > 0);
}

#[test]
fn api_body_regressions_replay_without_panic() {
    assert!(replay("api_body", targets::api_body) > 0);
}

#[test]
fn sigv4_regressions_replay_without_panic() {
    assert!(replay("sigv4", targets::sigv4) > 0);
}

/// The sigv4 seeds signed by aws-sigv4 and by curl verify as they stand at the target's clock, so the fuzzer
/// starts from accepted requests, not only from refusals.
#[test]
fn sigv4_seeds_signed_by_aws_sigv4_and_curl_are_accepted_at_the_target_clock() {
    for seed in ["aws_sigv4.http", "curl.http"] {
        let data = std::fs::read(fuzz_dir().join("seeds/sigv4").join(seed)).unwrap();
        assert_eq!(targets::sigv4_verify_raw(&data), Ok(()), "{seed}");
        let mut tampered = data.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(targets::sigv4_verify_raw(&tampered).is_err(), "{seed} with its body changed");
    }
}

// ---- smoke: uninstrumented random mutation of the kept inputs ----

/// Tokens that matter to the parsers under test (libFuzzer's `-dict` in spirit).
const TOKENS: &[&[u8]] = &[
    b"v0=",
    b"payload=",
    b"%",
    b"%25",
    b"%7B",
    b"%2F",
    b"+",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"&",
    b"=",
    b"\r\n",
    b"\n",
    b"\n\n",
    b" ",
    b"\t",
    b"..",
    b"/",
    b"//",
    b"?",
    b"null",
    b"true",
    b"{}",
    b"[]",
    b"\\u0000",
    b"\\ud800",
    b"\xff",
    b"\xc3",
    b"\xe2\x80",
    b"AWS4-HMAC-SHA256 ",
    b"Credential=",
    b"SignedHeaders=",
    b"Signature=",
    b"x-amz-date:",
    b"authorization:",
    b"host:",
    b"x-amz-content-sha256:",
    b"/execute-api/",
    b"aws4_request",
    b"---\n",
    b"- ",
    b"*a",
    b"&a ",
    b"!!binary ",
    b"<<: ",
    b"~",
    b"\"type\":",
    b"\"actions\":",
    b"\"value\":",
    b"\"user\":",
    b"block_actions",
    b"view_submission",
];

const NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"255",
    b"256",
    b"65536",
    b"2147483648",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"1e999",
    b"1.5",
    b"99999999999999999999999999",
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        let at = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => {
                let start = at.min(len - 1);
                let n = 1 + rng.below((len - start).min(16));
                data.drain(start..start + n);
            }
            1 => data.insert(at, rng.next_u64() as u8),
            2 => {
                let b = if rng.below(2) == 0 { rng.next_u64() as u8 } else { b"\0 a{%"[rng.below(5)] };
                let n = 1 + rng.below(64);
                data.splice(at..at, std::iter::repeat_n(b, n));
            }
            3 if len > 0 => data[at.min(len - 1)] = rng.next_u64() as u8,
            4 if len > 0 => data[at.min(len - 1)] ^= 1 << rng.below(8),
            5 => {
                // Copy a slice of this input or of another kept input (crossover) to a random place.
                let other = &pool[rng.below(pool.len())];
                let src: &[u8] = if rng.below(2) == 0 { other } else { &data.clone() };
                if !src.is_empty() {
                    let from = rng.below(src.len());
                    let n = 1 + rng.below((src.len() - from).min(64));
                    let piece = src[from..from + n].to_vec();
                    data.splice(at..at, piece);
                }
            }
            6 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, t.iter().copied());
            }
            7 => {
                // Replace a run of ASCII digits with an interesting number.
                let digits: Vec<usize> = (0..len).filter(|&i| data[i].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                    data.splice(start..end, NUMBERS[rng.below(NUMBERS.len())].iter().copied());
                }
            }
            _ => {
                if len > 1 {
                    let (a, b) = (rng.below(len), rng.below(len));
                    data.swap(a, b);
                }
            }
        }
    }
    data.truncate(max_len);
}

fn smoke(target: &str, run: fn(&[u8])) {
    let seconds: u64 = std::env::var("COUNTERSIGN_FUZZ_SMOKE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 =
        std::env::var("COUNTERSIGN_FUZZ_SMOKE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x00c0_ffee_5eed);
    let mut pool: Vec<Vec<u8>> = kept_inputs(target).into_iter().map(|(_, d)| d).collect();
    assert!(!pool.is_empty(), "{target}: no seeds");
    let kept = pool.len();
    let mut rng =
        Rng(seed ^ target.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut execs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let mut input = pool[rng.below(pool.len())].clone();
            mutate(&mut rng, &mut input, &pool, 64 * 1024);
            if std::panic::catch_unwind(|| run(&input)).is_err() {
                let dir = fuzz_dir().join("artifacts/smoke").join(target);
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("crash-seed{seed}-exec{execs}"));
                std::fs::write(&path, &input).unwrap();
                panic!("{target}: a mutated input panics; kept in {} (seed {seed}, exec {execs})", path.display());
            }
            execs += 1;
            // A random walk rather than only one step from a seed: keep some mutants as bases, bounded.
            if execs.is_multiple_of(64) && pool.len() < kept + 1024 {
                pool.push(input);
            }
        }
    }
    eprintln!("fuzz smoke {target}: {execs} execs in {seconds}s from {kept} kept inputs (seed {seed})");
    assert!(execs > 0);
}

#[test]
fn slack_signature_fuzz_smoke() {
    smoke("slack_signature", targets::slack_signature);
}

#[test]
fn slack_interaction_fuzz_smoke() {
    smoke("slack_interaction", targets::slack_interaction);
}

#[test]
fn policy_yaml_fuzz_smoke() {
    smoke("policy_yaml", targets::policy_yaml);
}

#[test]
fn api_body_fuzz_smoke() {
    smoke("api_body", targets::api_body);
}

#[test]
fn sigv4_fuzz_smoke() {
    smoke("sigv4", targets::sigv4);
}
