//! The JavaScript client in a real browser: the demo page (clients/js/demo) served by its own
//! server, two headless Chromium pages driven by playwright-core, against the four services as
//! processes. Alice must see Bob come online, set a custom status and leave, each within its
//! limit (clients/js/test-browser/presence.browser.mjs says which).
//!
//! Needs `npm ci && npm run build` in clients/js and Debian's chromium: scripts/test.sh does
//! both. Missing, the test fails and says so; it never passes without a browser.

use std::{path::PathBuf, process::Stdio, time::Duration};

use testkit::{System, eventually_ok, free_port, inprocess::SECRET};

/// The whole browser run, with its waits, stays well under this.
const DEADLINE: Duration = Duration::from_secs(120);

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

#[tokio::test]
async fn two_browser_pages_see_each_other_live() {
    let js = client_dir();
    for needed in ["node_modules/playwright-core", "dist/presence-client.js"] {
        assert!(
            js.join(needed).exists(),
            "{} is missing: run `npm ci && npm run build` in clients/js (scripts/test.sh does)",
            js.join(needed).display()
        );
    }
    let system = System::start().await;

    let demo_addr = free_port();
    let _demo = tokio::process::Command::new("node")
        .arg("demo/serve.mjs")
        .current_dir(&js)
        .env("DEMO_LISTEN", demo_addr.to_string())
        .env("DEMO_GATEWAY_WS", format!("ws://{}/v1/connect", system.gateway_ws_addr))
        .env("DEMO_TOKEN_SECRET", SECRET)
        .env("DEMO_APP_ID", "default")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the demo server");
    let demo_url = format!("http://{demo_addr}/");
    eventually_ok("the demo server to answer", async || {
        reqwest::get(format!("{demo_url}config.json")).await.and_then(|r| r.error_for_status()).map(drop)
    })
    .await;

    let run = tokio::process::Command::new("node")
        .arg("test-browser/presence.browser.mjs")
        .current_dir(&js)
        .env("DEMO_URL", &demo_url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {DEADLINE:?}"))
        .expect("node runs the browser test");
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{report}");
    assert!(output.status.success(), "the browser test failed:\n{report}");
    assert!(report.contains("3 passed, 0 failed"), "not every timed check ran:\n{report}");
}
