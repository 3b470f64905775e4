//! Past one process's file-descriptor limit, a benchmark binary re-executes itself once per
//! shard (with `--shard i/n`) and merges what each shard prints.

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Re-executes this binary once per shard, with its own arguments and `--shard i/count`, and
/// collects each shard's report (JSON on its standard output).
pub fn run_shards<Report: DeserializeOwned>(count: usize) -> anyhow::Result<Vec<Report>> {
    let exe = std::env::current_exe()?;
    let passed: Vec<String> = std::env::args().skip(1).collect();
    let children: Vec<_> = (0..count)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(&passed)
                .arg("--shard")
                .arg(format!("{i}/{count}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output()?;
            serde_json::from_slice(&out.stdout).context("shard report")
        })
        .collect()
}
