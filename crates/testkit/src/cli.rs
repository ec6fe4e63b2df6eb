//! The one way tests run the real `countersign` binary: nothing of the developer's AWS setup reaches it
//! (no profile, config or credentials file, no instance metadata, no Countersign variables), stdin is closed,
//! output is captured, and a child that outlives its test is killed.

use std::process::Stdio;
use std::time::Duration;

/// How long one CLI run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a run printed and how it exited.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// stdout then stderr, for assertions that do not care which.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl From<std::process::Output> for Ran {
    fn from(out: std::process::Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `countersign`, isolated, as a blocking command.
pub fn std_command() -> std::process::Command {
    let mut c = std::process::Command::new(crate::workspace_binary("countersign"));
    for k in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "COUNTERSIGN_ENDPOINT",
        "COUNTERSIGN_TABLE_PREFIX",
        "COUNTERSIGN_DATA_DIR",
    ] {
        c.env_remove(k);
    }
    c.env("AWS_CONFIG_FILE", "/nonexistent/countersign-test/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/countersign-test/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `countersign`, isolated, for async tests (killed when dropped).
pub fn command() -> tokio::process::Command {
    let mut c = tokio::process::Command::from(std_command());
    c.kill_on_drop(true);
    c
}

/// Waits for a spawned run, at most [`RUN_TIMEOUT`].
pub async fn finish(child: tokio::process::Child) -> Ran {
    tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("countersign finished within 60 s")
        .expect("countersign ran")
        .into()
}

/// Runs `cmd` to the end, at most [`RUN_TIMEOUT`].
pub async fn run(mut cmd: tokio::process::Command) -> Ran {
    finish(cmd.spawn().expect("countersign starts")).await
}

/// `countersign dev --config CONFIG`, as the local-mode tests start it: logs at `warn`, stdout (its banner
/// names the address) and stderr written to the given files, killed when dropped.
pub fn spawn_dev(config: &std::path::Path, out: &std::path::Path, log: &std::path::Path) -> tokio::process::Child {
    let mut c = command();
    c.arg("dev")
        .arg("--config")
        .arg(config)
        .env("COUNTERSIGN_LOG_LEVEL", "warn")
        .stdout(std::fs::File::create(out).expect("create the stdout file"))
        .stderr(std::fs::File::create(log).expect("create the log file"));
    c.spawn().expect("countersign dev starts")
}
