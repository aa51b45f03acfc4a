//! The Rust client library (`latchkey-client`), every operation, against a
//! running service on both stacks.

use latchkey_client::{Client, DeviceInfo, Error, LoginOutcome, SecondFactor};

use crate::client::totp_code;
use crate::each_stack;
use crate::helpers::{CacheKind, DbKind, TestApp};

const PASSWORD: &str = "correct horse battery staple";

fn session_of(outcome: LoginOutcome) -> latchkey_client::Session {
    match outcome {
        LoginOutcome::Session(session) => session,
        LoginOutcome::MfaRequired(_) => panic!("a session was expected"),
    }
}

async fn every_operation(db: DbKind, cache: CacheKind) {
    let app = TestApp::spawn(db, cache).await;
    let client = Client::new(app.address.clone()).expect("a loopback URL is allowed");
    let device = DeviceInfo { name: Some("ci runner".into()), ..DeviceInfo::default() };

    let user_id = client.register("rusty", PASSWORD).await.expect("register");
    let taken = client.register("RUSTY", PASSWORD).await.expect_err("the name is taken");
    assert_eq!(taken.code(), Some("conflict"));
    assert!(matches!(client.login("rusty", "wrong", &device).await, Err(Error::InvalidCredentials)));
    assert!(matches!(client.login("nobody", PASSWORD, &device).await, Err(Error::InvalidCredentials)));

    // Two steps, as a caller measuring them would run it.
    let first = session_of(
        client.login_start("rusty", PASSWORD, &device).await.expect("start").finish().await.expect("finish"),
    );
    assert_eq!(first.user_id, user_id);
    assert!(first.new_device);
    let device_token = first.device_token.clone().expect("a new device gets a credential");
    let known = DeviceInfo { device_token: Some(device_token), ..device.clone() };
    let second = session_of(client.login("rusty", PASSWORD, &known).await.expect("login"));
    assert!(!second.new_device, "the device credential makes it a known device");

    let me = client.whoami(&second.session_token).await.expect("whoami");
    assert_eq!((me.username.as_str(), me.aal.as_str()), ("rusty", "aal1"));
    let sessions = client.sessions(&second.session_token).await.expect("sessions");
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().any(|s| s.current && s.session_id == second.session_id));
    let devices = client.devices(&second.session_token).await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name.as_deref(), Some("ci runner"));

    let jwt = client.jwt(&second.session_token).await.expect("jwt");
    assert_eq!(jwt.token.split('.').count(), 3, "a compact JWS");

    let rotated = client.refresh(&second.refresh_token).await.expect("refresh");
    assert_ne!(rotated.session_token, second.session_token);
    assert_eq!(rotated.session_id, second.session_id);
    let reuse = client.refresh(&second.refresh_token).await.expect_err("a spent refresh token");
    assert_eq!(reuse.code(), Some("unauthorized"));
    // The reuse ended that session; the first one lives.
    assert_eq!(client.whoami(&rotated.session_token).await.expect_err("revoked").code(), Some("unauthorized"));

    client.revoke(&first.session_token, first.session_id).await.expect("revoke own session");
    assert!(client.whoami(&first.session_token).await.is_err());

    let a = session_of(client.login("rusty", PASSWORD, &known).await.expect("login"));
    let b = session_of(client.login("rusty", PASSWORD, &known).await.expect("login"));
    assert_eq!(client.revoke_others(&b.session_token).await.expect("revoke others"), 1);
    assert!(client.whoami(&a.session_token).await.is_err());

    // Password change (a fresh login is the step-up), then the old password
    // is refused by the client itself.
    client.change_password(&b.session_token, "a new password 2").await.expect("change");
    assert!(matches!(client.login("rusty", PASSWORD, &known).await, Err(Error::InvalidCredentials)));
    let c = session_of(client.login("rusty", "a new password 2", &known).await.expect("login"));

    // TOTP: the second step with a code, then with a recovery code.
    let secret = app.enable_totp(&c.session_token).await;
    let LoginOutcome::MfaRequired(step) = client.login("rusty", "a new password 2", &known).await.expect("login")
    else {
        panic!("TOTP is on")
    };
    let wrong = client.login_totp(&step.mfa_token, SecondFactor::Code("000000".into())).await;
    assert_eq!(wrong.expect_err("a wrong code").code(), Some("invalid_credentials"));
    let next_step = u64::try_from(chrono::Utc::now().timestamp()).expect("time") / 30 + 1;
    let mfa = client.login_totp(&step.mfa_token, SecondFactor::Code(totp_code(&secret, next_step))).await;
    let mfa = mfa.expect("the right code");
    assert_eq!(mfa.aal, "aal2");
    client.logout(&mfa.session_token).await.expect("logout");
    assert_eq!(client.whoami(&mfa.session_token).await.expect_err("logged out").code(), Some("unauthorized"));

    // Reset with an admin-issued token: every session ends, the token is
    // single-use, and the second factor stays.
    let (reset_token, _) = app.core.issue_reset_for("rusty", chrono::Utc::now()).await.expect("reset token");
    client.reset_password(&reset_token, "a third password 3").await.expect("reset");
    assert!(client.whoami(&c.session_token).await.is_err());
    let spent = client.reset_password(&reset_token, "again and again").await.expect_err("spent");
    assert_eq!(spent.code(), Some("invalid_credentials"));
    let after = client.login("rusty", "a third password 3", &known).await.expect("login");
    assert!(matches!(after, LoginOutcome::MfaRequired(_)), "TOTP stays on after a reset");
}
each_stack!(every_operation_on, every_operation);
