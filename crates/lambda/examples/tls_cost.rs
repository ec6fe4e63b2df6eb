//! Profiling aid (not shipped): what one TLS trust-store set-up costs, step by step.
//! `cargo run --release -p countersign-lambda --example tls_cost -- STEP` (STEP: reqwest, load, fast, bundle, parse, shared;
//! `bundle` reads Debian's bundle path).

use std::time::Instant;

fn main() {
    let step = std::env::args().nth(1).unwrap_or_default();
    let t = Instant::now();
    match step.as_str() {
        // What Slack's client did before: reqwest's platform verifier reads and parses the system roots.
        "reqwest" => drop(countersign_slack::client::SlackClient::http_client()),
        // Reading the files and decoding their PEM only.
        "load" => println!("{} certs", rustls_native_certs::load_native_certs().certs.len()),
        "fast" => println!("{} certs", countersign_lambda::roots::load_system_roots().certs.len()),
        "bundle" => println!(
            "{} certs",
            countersign_lambda::roots::load_from(Some(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt")), &[])
                .certs
                .len()
        ),
        // Reading, decoding, and parsing each into a trust anchor.
        "parse" => {
            let mut roots = rustls::RootCertStore::empty();
            println!("{:?}", roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs));
        }
        // The whole shared set-up: one parse, then Slack's client and the SDK's from it.
        "shared" => {
            if let Ok(tls) = countersign_lambda::transport::system_tls() {
                let tls = std::sync::Arc::new(tls);
                drop(countersign_slack::client::SlackClient::http_client_with_tls(rustls::ClientConfig::clone(&tls)));
                drop(countersign_lambda::transport::SdkHttpClient::new(tls));
            }
        }
        _ => {}
    }
    eprintln!("{step}: {:?}", t.elapsed());
}
