//! Input that could hurt other users or the operator, against the real processes: a device whose
//! ids carry control bytes beside other users' logins, and a user id that tries to forge a log line.

use std::time::Duration;

use presence_client::{Client, ClientError, LoginParams, mint_token};
use presence_proto::v1::Platform;
use testkit::{System, system::SECRET};

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
