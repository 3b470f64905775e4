//! A throwaway Postgres cluster (initdb + pg_ctl) in a temp dir on a free loopback port, for tests
//! that stop and restart the database: the shared server on 5432 must never be restarted, since
//! other tests use it at the same time.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::free_port;

/// A private cluster; `Drop` stops it (immediate) and removes its directory.
pub struct ThrowawayPostgres {
    dir: PathBuf,
    addr: SocketAddr,
    pg_ctl: PathBuf,
    /// initdb and postgres refuse to run as root: run them as the `postgres` user then.
    run_as: Option<String>,
}

/// The newest `name` among `/usr/lib/postgresql/<version>/bin`, else on `PATH`.
pub fn postgres_binary(name: &str) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let path = entry.path().join("bin").join(name);
            path.exists().then_some((version, path))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.exists())
    })
}

/// [`postgres_binary`], or a panic that says what to install.
fn required_binary(name: &str) -> PathBuf {
    postgres_binary(name).unwrap_or_else(|| {
        panic!(
            "{name} not found in /usr/lib/postgresql/<version>/bin nor on PATH: this test runs its own \
             Postgres cluster and cannot run without the server programs (Debian/Ubuntu: \
             apt-get install postgresql)"
        )
    })
}

impl ThrowawayPostgres {
    /// Creates and starts a cluster with trust auth.
    ///
    /// # Panics
    /// When the PostgreSQL server programs are not installed, or initdb or the first start fails
    /// (tests only): a test that needs its own cluster must fail then, never pass unrun.
    pub fn start() -> Self {
        let initdb = required_binary("initdb");
        let pg_ctl = required_binary("pg_ctl");
        // SAFETY: geteuid has no preconditions.
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_owned());
        let dir =
            std::env::temp_dir().join(format!("presence-pg-{}-{}", std::process::id(), free_port().port()));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if let Some(user) = &run_as {
            let status = Command::new("chown").arg(user).arg(&dir).status().expect("run chown");
            assert!(status.success(), "chown {} to {user}", dir.display());
        }
        let data = dir.join("data");
        let pg = Self { dir, addr: free_port(), pg_ctl, run_as };
        let out = pg.command(&initdb).arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust"]).output();
        check("initdb", out);
        pg.start_again();
        pg
    }

    fn command(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::io::Result<Output> {
        self.command(&self.pg_ctl).arg("-D").arg(self.dir.join("data")).args(args).output()
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.addr.port(),
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_str().expect("UTF-8 temp path");
        check("pg_ctl start", self.pg_ctl(&["-l", log, "-w", "-t", "30", "-o", &options, "start"]));
    }

    /// `pg_ctl stop -m fast`: every session is disconnected at once, the way a restart does it.
    pub fn stop_fast(&self) {
        check("pg_ctl stop", self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"]));
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@{}/{database}", self.addr)
    }

    /// The server log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn check(what: &str, out: std::io::Result<Output>) {
    let out = out.unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
