//! `countersign dev`: local mode. Loads (or, on the first run, writes) the dev config, starts the server
//! (see [`countersign_local`]) and prints what to do next.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use countersign_local::config::{self, DevConfig};
use countersign_local::{default_config_path, shutdown_signal, LocalServer, StartSummary};

use super::{exit, CliError};

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// The dev config (TOML; docs/local-mode.md). Without it, DATA_DIR/dev.toml is used, and written with
    /// fresh random dev secrets on the first run.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`; default 127.0.0.1:8787).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store and the simulator's messages (overrides `data_dir`; default
    /// .countersign).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Writes a new config without ever replacing an existing file; owner-only on Unix (it holds secrets).
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn load_config(args: &DevArgs) -> Result<(DevConfig, PathBuf, bool), CliError> {
    let (path, created) = match &args.config {
        Some(p) => (p.clone(), false),
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR));
            let path = default_config_path(&dir);
            if path.exists() {
                (path, false)
            } else {
                let text = config::generate(&dir).map_err(|e| CliError::new(exit::FAILED, e.to_string()))?;
                write_new(&path, &text)
                    .map_err(|e| CliError::failed(&format!("cannot write {}", path.display()), &e))?;
                (path, true)
            }
        }
    };
    let mut cfg =
        DevConfig::load(&path).map_err(|e| CliError::new(exit::FAILED, format!("{}: {e}", path.display())))?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir.clone_from(d);
    }
    Ok((cfg, path, created))
}

/// The copy-paste block: where things are and how to make a first request.
fn banner(cfg: &DevConfig, config_path: &Path, created: bool, s: &StartSummary) -> String {
    let mut out = String::new();
    let line = |out: &mut String, l: &str| {
        out.push_str(l);
        out.push('\n');
    };
    line(&mut out, "");
    line(&mut out, &format!("Countersign local mode is running on {}", s.origin));
    line(&mut out, "");
    match &s.simulator_url {
        Some(u) => line(&mut out, &format!("  Slack simulator  {u}   <- open in a browser")),
        None => line(&mut out, &format!("  Slack            {} (real Slack; simulator off)", s.slack_api_base_url)),
    }
    line(
        &mut out,
        &format!("  Request API      {}/v1/requests   (SigV4: region {}, service execute-api)", s.origin, cfg.region),
    );
    let note = if created { "   (just written, with random dev secrets)" } else { "" };
    line(&mut out, &format!("  Config           {}{note}", config_path.display()));
    line(&mut out, &format!("  Data             {}", cfg.data_dir.display()));
    let from = cfg.policies.as_ref().map_or_else(|| "the store".to_string(), |p| p.display().to_string());
    line(&mut out, &format!("  Policies         {} loaded from {from}", s.policies_loaded));
    if !s.policy_changes.is_empty() {
        for l in s.policy_changes.lines() {
            line(&mut out, &format!("                   {l}"));
        }
    }
    line(&mut out, "");
    match cfg.identities.first() {
        None => {
            line(&mut out, "No [[identities]] are configured: add one to the config to sign requests.");
        }
        Some(id) => {
            let body =
                r#"{"action":"deploy","environment":"production","resource":"service/payments","reason":"Release 42"}"#;
            line(&mut out, &format!("Make a request from a second terminal, signed as {}:", id.arn));
            line(&mut out, "");
            line(
                &mut out,
                &format!(
                    "  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY='{}' AWS_REGION={}",
                    id.access_key_id,
                    id.secret_access_key.expose(),
                    cfg.region
                ),
            );
            line(
                &mut out,
                &format!(
                    "  cargo run --release -- request --endpoint {} \\\n      --action deploy --env production \
                     --resource service/payments --reason \"Release 42\" --wait",
                    s.origin
                ),
            );
            line(&mut out, "");
            line(&mut out, "or with curl:");
            line(&mut out, "");
            line(
                &mut out,
                &format!(
                    "  curl --aws-sigv4 \"aws:amz:{}:execute-api\" --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" \\\n      \
                     -H 'content-type: application/json' -d '{body}' \\\n      {}/v1/requests",
                    cfg.region, s.origin
                ),
            );
            line(&mut out, "");
            if s.simulator_url.is_some() {
                line(&mut out, "Then, in the simulator, act as alice and as bob and click Approve on the message.");
            }
        }
    }
    line(&mut out, "Ctrl-C stops the server; requests, votes, the audit trail and messages are kept.");
    out
}

pub async fn run(args: &DevArgs) -> Result<u8, CliError> {
    countersign_lambda::telemetry::init(countersign_lambda::telemetry::LogFormat::Text);
    let (cfg, path, created) = load_config(args)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| {
        CliError::failed(
            &format!(
                "cannot listen on {} (is another `countersign dev` running? try --listen 127.0.0.1:8788)",
                cfg.listen
            ),
            &e,
        )
    })?;
    let addr = listener.local_addr().map_err(|e| CliError::failed("cannot read the listening address", &e))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "local mode is listening beyond the loopback: anyone who reaches it can act as any simulated Slack user");
    }
    let server = LocalServer::build(&cfg, addr).await.map_err(|e| CliError::failed("local mode cannot start", &e))?;
    print!("{}", banner(&cfg, &path, created, &server.summary));
    let _ = std::io::stdout().flush();
    server.run(listener, shutdown_signal()).await.map_err(|e| CliError::failed("local mode stopped", &e))?;
    println!("Stopped. Data kept in {}.", cfg.data_dir.display());
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn first_run_writes_a_private_config_once_and_later_runs_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let args = DevArgs { config: None, listen: None, data_dir: Some(data.clone()) };
        let (first, path, created) = load_config(&args).unwrap();
        assert!(created);
        assert_eq!(path, data.join("dev.toml"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, _, created) = load_config(&args).unwrap();
        assert!(!created, "an existing config is never replaced");
        assert_eq!(first.identities[0].access_key_id, again.identities[0].access_key_id);
        assert_eq!(again.data_dir, data);
    }

    #[test]
    fn an_explicit_config_that_does_not_exist_is_an_error_not_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let args = DevArgs { config: Some(missing.clone()), listen: None, data_dir: None };
        assert!(load_config(&args).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn banner_gives_copy_paste_commands_for_the_cli_and_curl() {
        let cfg = DevConfig::parse(&config::generate(Path::new(".countersign")).unwrap()).unwrap();
        let summary = StartSummary {
            origin: "http://127.0.0.1:8787".into(),
            slack_api_base_url: "http://127.0.0.1:8787/slack/api".into(),
            simulator_url: Some("http://127.0.0.1:8787/slack/".into()),
            policies_loaded: 4,
            policy_changes: String::new(),
        };
        let b = banner(&cfg, Path::new(".countersign/dev.toml"), true, &summary);
        assert!(b.contains("http://127.0.0.1:8787/slack/"));
        assert!(b.contains(&format!("export AWS_ACCESS_KEY_ID={}", cfg.identities[0].access_key_id)));
        assert!(b.contains("cargo run --release -- request --endpoint http://127.0.0.1:8787"));
        assert!(b.contains("curl --aws-sigv4 \"aws:amz:us-east-1:execute-api\""));
    }
}
