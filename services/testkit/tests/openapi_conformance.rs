//! `/openapi.json` is exact: Schemathesis, run with every check against the real system, finds
//! no request that the facade answers otherwise than the document says (schema-valid requests
//! accepted, invalid ones refused, only documented statuses, bodies and headers).
//!
//! Schemathesis comes from `scripts/api-conformance.sh`, which `scripts/test.sh` runs and whose
//! output it exports as `SCHEMATHESIS`. Without it this test fails: it never skips.

use std::{path::PathBuf, process::Stdio, time::Duration};

use testkit::System;

/// Fuzzed cases per operation, on top of the examples and the coverage phase (which probes every
/// constraint's edges by itself). Keeps the run well under 2 minutes on 2 cores.
const MAX_EXAMPLES: &str = "200";
/// Fixed, so that a failure reproduces; `CONFORMANCE_SEED=<n>` explores further.
const SEED: &str = "20261125";
/// A hung run fails instead of blocking the suite.
const DEADLINE: Duration = Duration::from_secs(300);

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "SCHEMATHESIS is not set: run `export SCHEMATHESIS=$(scripts/api-conformance.sh)` \
             (scripts/test.sh does) before this test"
        )
    });
    assert!(path.is_file(), "SCHEMATHESIS={} is not a file: run scripts/api-conformance.sh", path.display());
    path
}

#[tokio::test]
async fn openapi_document_holds_against_the_live_facade() {
    let schemathesis = schemathesis();
    presence_common::tls::install_crypto_provider();
    let system = System::start().await;

    let workdir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openapi-conformance");
    std::fs::create_dir_all(&workdir).expect("work directory");
    let seed = std::env::var("CONFORMANCE_SEED").unwrap_or_else(|_| SEED.to_owned());
    let schema = format!("{}/openapi.json", system.facade_url);
    let document: serde_json::Value = reqwest::get(&schema)
        .await
        .and_then(|r| r.error_for_status())
        .expect("the document")
        .json()
        .await
        .expect("JSON");
    // Schemathesis leaves out the document's own route.
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, item)| item.as_object().map_or(0, |methods| methods.len()))
        .sum();
    // The document and the run's JUnit report stay in `workdir` for reading a failure.
    std::fs::write(workdir.join("openapi.json"), document.to_string()).expect("write the document");
    let run = tokio::process::Command::new(&schemathesis)
        .args(["run", &schema, "--checks", "all", "--max-examples", MAX_EXAMPLES, "--seed", &seed])
        .args(["--header", "Authorization: Bearer key-default", "--request-timeout", "10"])
        // One worker: CPython 3.11's `ast.parse`, which Hypothesis calls, is not thread-safe.
        .args(["--workers", "1", "--suppress-health-check", "too_slow"])
        // ASCII only: JSON Schema's `maxLength` counts characters and the contract counts bytes
        // (user ids: 1 to 256 bytes), which no schema keyword can state; with ASCII the two agree.
        // rest-facade's tests cover multi-byte ids at the byte bound.
        .args(["--generation-codec", "ascii", "--generation-database", "none"])
        .args(["--report", "junit", "--report-junit-path", "junit.xml"])
        .current_dir(&workdir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {DEADLINE:?}"))
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", schemathesis.display()));
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found mismatches ({}):\n{report}", output.status);
    // A run that tested nothing would also exit 0.
    assert!(operations >= 5, "{document}");
    assert!(
        report.contains(&format!("Tested: {operations}\n")),
        "not all {operations} operations ran:\n{report}"
    );
    eprintln!("{report}");
}
