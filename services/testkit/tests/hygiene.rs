//! Input that could hurt other users or the operator, against the real processes: a device whose
//! ids carry control bytes beside other users' logins, and a user id that tries to forge a log line.

use std::time::Duration;

use presence_client::{Client, ClientError, LoginParams, mint_token};
use presence_proto::v1::Platform;
use testkit::{
    System, WAIT,
    system::{Options, SECRET},
};

#[tokio::test]
async fn a_nul_byte_poisoner_fails_nobody_else() {
    let system = System::start().await;
    let gateway = system.gateway_addr;

    // One client logs in, again and again, with a NUL byte in its device id (a valid token).
    let poisoner = tokio::spawn(async move {
        let token = mint_token(SECRET, "mallory", None, Duration::from_secs(600)).unwrap();
        let mut refusals = Vec::new();
        for _ in 0..100 {
            let mut client = Client::connect(gateway).await.unwrap();
            let params = LoginParams::new("mallory", "evil\0device", Platform::Ios, token.clone());
            refusals.push(client.login(params).await.err());
        }
        refusals
    });
    // Meanwhile 200 other users log in at once.
    let logins: Vec<_> = (0..200)
        .map(|i| {
            let user = format!("user{i}");
            tokio::spawn(async move {
                let token = mint_token(SECRET, &user, None, Duration::from_secs(600)).unwrap();
                let mut client = Client::connect(gateway).await.unwrap();
                let result = client.login(LoginParams::new(&user, "phone", Platform::Android, token)).await;
                (client, result)
            })
        })
        .collect();
    let mut results = Vec::new();
    for login in logins {
        results.push(login.await.unwrap());
    }
    let failed: Vec<String> =
        results.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(failed.is_empty(), "{} of 200 logins failed: {failed:?}", failed.len());

    for refusal in poisoner.await.unwrap() {
        match refusal {
            Some(ClientError::Login { code, message }) => {
                assert_eq!(code, "bad_request");
                assert!(
                    !message.to_lowercase().contains("postgres") && !message.contains("0x00"),
                    "{message}"
                );
            }
            other => panic!("the poisoner must be refused with bad_request, got {other:?}"),
        }
    }
    let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    assert!(system.statuses(&users).await.iter().all(|s| s == "online"));
    assert_eq!(system.statuses(&["mallory"]).await, ["offline"]);
}

#[tokio::test]
async fn a_user_id_cannot_forge_a_log_line() {
    let system = System::start().await;
    let forged = "/v1/users/x%0AFORGED%20admin%20kick%20of%20everyone/kick";
    let (status, body) = system.rest(reqwest::Method::POST, forged, Some(serde_json::json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_user_id")), "{body}");
    // A user id with a quote and backslash (valid) is logged escaped, inside one line.
    let (status, _) =
        system.rest(reqwest::Method::POST, "/v1/users/a%22b%5Cc/kick", Some(serde_json::json!({}))).await;
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(&system.facade.process.log).unwrap();
    assert!(log.lines().all(|line| !line.trim_start().starts_with("FORGED")), "{log}");
    // (Field names may carry colour codes; the value is what matters.)
    assert!(log.contains(r#""a\"b\\c""#), "the kick is logged with the id escaped:\n{log}");
}

#[tokio::test]
async fn slow_and_oversized_http_clients_are_cut_off_in_bounded_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options =
        Options { facade_env: vec![("FACADE_HEADER_READ_TIMEOUT_MS", "1000".into())], ..Options::default() };
    let system = System::start_with(options).await;
    let addr = system.facade_url.trim_start_matches("http://").to_owned();

    // 200 clients send half a request head, then nothing (a slowloris).
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"POST /v1/presence/query HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(tcp);
    }
    // Normal requests are served meanwhile.
    assert_eq!(system.statuses(&["alice"]).await, ["offline"]);
    // The facade closes every one of them once the header timeout has passed.
    for tcp in &mut slow {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a slow client was still connected after {WAIT:?}");
    }

    // 300 clients each send a ~390 KB header without ever finishing it: each is refused at the
    // head limit (16 KiB), so the facade's memory does not grow with what they send.
    let before_kib = system.facade.process.rss_kib();
    let big = format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Pad: {}", "a".repeat(390 * 1024));
    let sends: Vec<_> = (0..300)
        .map(|_| {
            let (addr, big) = (addr.clone(), big.clone());
            tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                // The facade may close before it has read everything: a failed write is expected.
                let _ = tcp.write_all(big.as_bytes()).await;
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
                answer
            })
        })
        .collect();
    for send in sends {
        let answer = send.await.unwrap();
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    }
    let after_kib = system.facade.process.rss_kib();
    eprintln!("facade RSS before {before_kib} KiB, after 300 unfinished 390 KB heads {after_kib} KiB");
    assert!(before_kib > 0 && after_kib > 0, "RSS readable");
    assert!(
        after_kib < before_kib + 64 * 1024,
        "the facade grew from {before_kib} KiB to {after_kib} KiB for unfinished headers"
    );
    assert_eq!(system.statuses(&["alice"]).await, ["offline"], "and it still answers");
}
