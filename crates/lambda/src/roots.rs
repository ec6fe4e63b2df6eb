//! The system's root certificates, found where `rustls-native-certs` finds them, decoded fast.
//!
//! `rustls-native-certs` decodes PEM with `rustls-pki-types`' constant-time base64, written for private keys.
//! For the platform's bundle and its hashed directory (about 440 KB of PEM on Debian) that was three quarters
//! of a cold start's instructions (18.5 M of 24.7 M, docs/performance.md, "Cold start"). Root certificates
//! are public, so constant time buys nothing here: the `CERTIFICATE` blocks are decoded with the `base64`
//! crate.
//!
//! Which files, and fewer of them when nobody chose:
//! - `SSL_CERT_FILE` and `SSL_CERT_DIR`, when either is set: exactly those, read as `rustls-native-certs`
//!   reads them (symlinks followed, each file once, the result sorted and deduplicated). A test checks that
//!   the result is `rustls-native-certs`' own, root for root.
//! - Otherwise the platform's bundle file as `openssl-probe` finds it (`/etc/pki/tls/certs/ca-bundle.crt` on
//!   Amazon Linux 2023, `/etc/ssl/certs/ca-certificates.crt` on Debian), and **not** the certificate
//!   directories beside it, which `rustls-native-certs` reads as well. The distributions' tools
//!   (`update-ca-trust`, `update-ca-certificates`) write the bundle and the directory from the same sources,
//!   so the directory adds file reads (145 of them on Debian, three quarters of the time left) and, on
//!   Debian, one certificate that is no CA at all: `ssl-cert-snakeoil.pem`, the machine's own self-signed
//!   certificate, whose private key is on the machine. The directories are read only when there is no bundle.
//!
//! It can only ever yield fewer roots than the files hold, never another one: a block that does not decode
//! is skipped and reported, and every certificate is still parsed and checked by rustls when it becomes a
//! trust anchor.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

/// What was loaded, and what could not be.
#[derive(Debug, Default)]
pub struct Roots {
    pub certs: Vec<CertificateDer<'static>>,
    /// One line per unreadable file or directory and per undecodable block, for the log.
    pub errors: Vec<String>,
}

/// The system's roots (see the module's documentation for which files).
pub fn load_system_roots() -> Roots {
    let env_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let env_dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
        .map(|d| std::env::split_paths(&d).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    let (file, dirs) = sources(env_file, env_dirs, openssl_probe::probe);
    load_from(file.as_deref(), &dirs)
}

/// Which files to read: exactly `SSL_CERT_FILE` and `SSL_CERT_DIR` when either is set (as
/// `rustls-native-certs`), otherwise the platform's bundle file, and its certificate directories only when
/// it has no bundle file.
fn sources(
    env_file: Option<PathBuf>,
    env_dirs: Vec<PathBuf>,
    probe: impl FnOnce() -> openssl_probe::ProbeResult,
) -> (Option<PathBuf>, Vec<PathBuf>) {
    if env_file.is_some() || !env_dirs.is_empty() {
        return (env_file, env_dirs);
    }
    let probed = probe();
    match probed.cert_file {
        Some(file) => (Some(file), Vec::new()),
        None => (None, probed.cert_dir),
    }
}

/// The certificates of one bundle file and of every file in `dirs` (symlinks followed, each file read once).
pub fn load_from(file: Option<&Path>, dirs: &[PathBuf]) -> Roots {
    let mut out = Roots::default();
    let mut seen = HashSet::new();
    if let Some(file) = file {
        if let Ok(m) = std::fs::metadata(file) {
            seen.insert((m.dev(), m.ino()));
        }
        read_file(file, &mut out);
    }
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                out.errors.push(format!("{}: cannot open the directory: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    out.errors.push(format!("{}: cannot read the directory: {e}", dir.display()));
                    continue;
                }
            };
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && seen.insert((m.dev(), m.ino())) => read_file(&path, &mut out),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // a dangling symlink
                Err(e) => out.errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
    out.certs.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
    out.certs.dedup();
    out
}

fn read_file(path: &Path, out: &mut Roots) {
    match std::fs::read(path) {
        Ok(pem) => {
            let (certs, errors) = decode_pem_certificates(&pem);
            out.certs.extend(certs);
            out.errors.extend(errors.into_iter().map(|e| format!("{}: {e}", path.display())));
        }
        Err(e) => out.errors.push(format!("{}: {e}", path.display())),
    }
}

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

/// Every `CERTIFICATE` block of a PEM file, in order, as DER. Other block types (keys, `TRUSTED
/// CERTIFICATE`) and text between blocks are ignored, as `rustls-native-certs` ignores them. A block
/// without its end line, or whose base64 does not decode, is skipped and reported by its ordinal.
pub fn decode_pem_certificates(pem: &[u8]) -> (Vec<CertificateDer<'static>>, Vec<String>) {
    let (mut certs, mut errors) = (Vec::new(), Vec::new());
    let mut b64 = Vec::with_capacity(4096);
    let mut inside = false;
    let mut ordinal = 0usize;
    for line in pem.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if !inside {
            if line == BEGIN {
                inside = true;
                ordinal += 1;
                b64.clear();
            }
            continue;
        }
        if line == END {
            inside = false;
            match base64::engine::general_purpose::STANDARD.decode(&b64) {
                Ok(der) if !der.is_empty() => certs.push(CertificateDer::from(der)),
                Ok(_) => errors.push(format!("certificate block {ordinal} is empty")),
                Err(e) => errors.push(format!("certificate block {ordinal} is not base64: {e}")),
            }
        } else if line.starts_with(b"-----") {
            // Another armour line inside a block: the block is broken; start over at this line.
            errors.push(format!("certificate block {ordinal} has no end line"));
            inside = line == BEGIN;
            if inside {
                ordinal += 1;
                b64.clear();
            }
        } else {
            b64.extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        }
    }
    if inside {
        errors.push(format!("certificate block {ordinal} has no end line"));
    }
    (certs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn der_set(certs: &[CertificateDer<'static>]) -> BTreeSet<Vec<u8>> {
        certs.iter().map(|c| c.to_vec()).collect()
    }

    #[test]
    fn the_fast_decoder_reads_exactly_the_certificates_rustls_native_certs_reads_on_this_machine() {
        // As rustls-native-certs: the environment's files, or the platform's bundle and directories.
        let probe = openssl_probe::probe();
        let (file, dirs) = match (std::env::var_os("SSL_CERT_FILE"), std::env::var_os("SSL_CERT_DIR")) {
            (None, None) => (probe.cert_file, probe.cert_dir),
            (f, d) => (f.map(PathBuf::from), d.map(|d| std::env::split_paths(&d).collect()).unwrap_or_default()),
        };
        let ours = load_from(file.as_deref(), &dirs);
        assert!(ours.errors.is_empty(), "{:?}", ours.errors);
        let theirs = rustls_native_certs::load_native_certs();
        assert!(ours.certs.len() > 50, "{} roots", ours.certs.len());
        assert_eq!(ours.certs.len(), theirs.certs.len());
        assert_eq!(der_set(&ours.certs), der_set(&theirs.certs), "the same roots, no more and no fewer");
    }

    fn probed(file: Option<&str>, dirs: &[&str]) -> impl FnOnce() -> openssl_probe::ProbeResult {
        let (file, dirs) = (file.map(PathBuf::from), dirs.iter().map(PathBuf::from).collect());
        move || openssl_probe::ProbeResult { cert_file: file, cert_dir: dirs }
    }

    #[test]
    fn the_platform_bundle_is_read_without_its_directories_unless_the_environment_names_files() {
        let bundle = Some(PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt"));
        let unused = || -> openssl_probe::ProbeResult { panic!("the environment decides alone") };
        assert_eq!(
            sources(None, vec![], probed(Some("/etc/pki/tls/certs/ca-bundle.crt"), &["/etc/pki/tls/certs"])),
            (bundle, vec![])
        );
        assert_eq!(sources(None, vec![], probed(None, &["/etc/ssl/certs"])), (None, vec!["/etc/ssl/certs".into()]));
        assert_eq!(sources(Some("/x.pem".into()), vec![], unused), (Some("/x.pem".into()), vec![]));
        let unused = || -> openssl_probe::ProbeResult { panic!("the environment decides alone") };
        assert_eq!(sources(None, vec!["/d".into()], unused), (None, vec!["/d".into()]));
    }

    #[test]
    fn a_bundle_and_a_hashed_directory_of_symlinks_give_each_certificate_once() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        let pem = |der: &[u8]| format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64(der));
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", pem(b"one"), pem(b"two"))).unwrap();
        let hashed = dir.path().join("hashed");
        std::fs::create_dir(&hashed).unwrap();
        std::fs::write(hashed.join("three.pem"), pem(b"three")).unwrap();
        std::fs::write(hashed.join("one-again.pem"), pem(b"one")).unwrap();
        std::os::unix::fs::symlink(hashed.join("three.pem"), hashed.join("abcd1234.0")).unwrap();
        std::os::unix::fs::symlink(&bundle, hashed.join("bundle-link.pem")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), hashed.join("dangling.0")).unwrap();
        std::fs::create_dir(hashed.join("subdir")).unwrap();
        let ours = load_from(Some(&bundle), std::slice::from_ref(&hashed));
        assert!(ours.errors.is_empty(), "{:?}", ours.errors);
        let got: Vec<&[u8]> = ours.certs.iter().map(|c| c.as_ref()).collect();
        assert_eq!(got, vec![&b"one"[..], b"three", b"two"], "sorted, each once");
        let theirs = rustls_native_certs::load_certs_from_paths(Some(&bundle), Some(&hashed));
        assert_eq!(der_set(&ours.certs), der_set(&theirs.certs));
    }

    #[test]
    fn blocks_are_decoded_in_order_and_other_pem_types_and_text_are_ignored() {
        let one = base64::engine::general_purpose::STANDARD.encode(b"first certificate, DER stand-in");
        let two = base64::engine::general_purpose::STANDARD.encode([0x30u8; 100]);
        let (two_a, two_b) = two.split_at(64);
        let pem = format!(
            "# a comment\r\n-----BEGIN CERTIFICATE-----\r\n{one}\r\n-----END CERTIFICATE-----\r\n\
             -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
             -----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED CERTIFICATE-----\n\
             text\n  -----BEGIN CERTIFICATE-----\n{two_a}\n {two_b} \n-----END CERTIFICATE-----\n"
        );
        let (certs, errors) = decode_pem_certificates(pem.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), b"first certificate, DER stand-in");
        assert_eq!(certs[1].as_ref(), &[0x30u8; 100][..]);
    }

    #[test]
    fn a_broken_block_is_skipped_and_reported_and_never_becomes_a_root() {
        let good = base64::engine::general_purpose::STANDARD.encode(b"good");
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n%%%not base64%%%\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\n{good}\n\
             -----BEGIN CERTIFICATE-----\n{good}\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\n{good}\n"
        );
        let (certs, errors) = decode_pem_certificates(pem.as_bytes());
        assert_eq!(certs.len(), 1, "only the one complete, decodable block");
        assert_eq!(certs[0].as_ref(), b"good");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("block 1 is not base64"), "{errors:?}");
        assert!(errors[1].contains("block 2 has no end line"), "{errors:?}");
        assert!(errors[2].contains("block 4 is empty"), "{errors:?}");
        assert!(errors[3].contains("block 5 has no end line"), "{errors:?}");
    }
}
