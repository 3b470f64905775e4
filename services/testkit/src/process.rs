//! The service binaries as child processes: started with an environment, killed with SIGKILL or
//! stopped with SIGTERM, their output kept in a log file named in every failure.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::{WAIT, eventually_ok};

/// A loopback port that was free a moment ago (the OS picks it; a race is possible but rare).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// Where cargo put the binaries: beside the `deps/` folder holding this test executable.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// Runs `binary` with `env` to its end; panics with its output unless it succeeds.
pub fn run_to_end(binary: &str, env: &[(&str, String)]) {
    let path = binary_dir().join(binary);
    let output = Command::new(&path)
        .env("RUST_LOG", "info")
        // An error's message, not a backtrace, in the log's last lines (panics keep theirs).
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("starting {}: {err}", path.display()));
    assert!(
        output.status.success(),
        "{binary} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct ServiceProcess {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    /// Starts `binary` (e.g. `presence-registry`) with `env` on top of a quiet `RUST_LOG`.
    pub fn spawn(binary: &str, name: &str, env: &[(&str, String)]) -> Self {
        let path = binary_dir().join(binary);
        assert!(
            path.exists(),
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            path.display()
        );
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let log = std::env::temp_dir().join(format!("presence-{name}-{}.log", std::process::id()));
        let child = start(&path, &env, &log);
        Self { name: name.to_owned(), child, log, binary: path, env }
    }

    /// SIGKILL: the process gets no chance to say goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (as under a long GC pause or a hung host) with its sockets
    /// and database sessions open.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`ServiceProcess::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// SIGTERM, then the exit status once it has stopped (panics if it takes longer than WAIT).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM; log: {}", self.name, self.log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process exits by itself (panics after WAIT).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        eventually_ok(&what, async || self.child.try_wait().ok().flatten().ok_or_else(|| self.log_tail()))
            .await
    }

    /// Starts the same binary again with the same environment (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        self.child = start(&self.binary, &self.env, &self.log);
    }

    /// Resident memory of the process now, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `GET http://addr/healthz` answers 200.
    pub async fn wait_healthy(&mut self, admin_addr: SocketAddr) {
        presence_common::tls::install_crypto_provider();
        let client = reqwest::Client::new();
        let what = format!("{} to be healthy", self.name);
        eventually_ok(&what, async || {
            let answer = client.get(format!("http://{admin_addr}/healthz")).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before it was healthy:\n{}", self.name, self.log_tail());
            }
            Err(self.log_tail())
        })
        .await;
    }
}

fn start(path: &Path, env: &[(String, String)], log: &Path) -> Child {
    let out = File::options().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Command::new(path)
        .env("RUST_LOG", "info")
        // An error's message, not a backtrace, in the log's last lines (panics keep theirs).
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", path.display()))
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
