//! Load and measurement client for `scripts/bench` (not part of the
//! service). A real OPAQUE client with the product's suite.
//!
//! ```text
//! bench_client session   URL USERNAME PASSWORD        prints a session token
//! bench_client login-cpu URL PID COUNT                server CPU per login
//! bench_client soak      URL SERVICE_TOKEN SECONDS PID mixed load, 5xx count, RSS
//! ```

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey::domain::opaque::Suite;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration, ClientRegistrationFinishParameters,
    CredentialResponse, RegistrationResponse,
};
use rand::rngs::OsRng;
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Res<(u16, Value)> {
    let res = client.post(url).json(&body).send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

async fn register(client: &reqwest::Client, base: &str, username: &str, password: &str) -> Res<()> {
    let start = ClientRegistration::<Suite>::start(&mut OsRng, password.as_bytes()).map_err(|e| e.to_string())?;
    let (_, body) = post(
        client,
        &format!("{base}/v1/registration/start"),
        json!({"username": username, "registration_request": B64.encode(start.message.serialize())}),
    )
    .await?;
    let response = body["registration_response"].as_str().ok_or("no registration_response")?;
    let response = RegistrationResponse::<Suite>::deserialize(&B64.decode(response)?).map_err(|e| e.to_string())?;
    let password = password.to_owned();
    let record = tokio::task::spawn_blocking(move || {
        start.state.finish(&mut OsRng, password.as_bytes(), response, ClientRegistrationFinishParameters::default())
    })
    .await?
    .map_err(|e| e.to_string())?;
    let (status, _) = post(
        client,
        &format!("{base}/v1/registration/finish"),
        json!({"username": username, "registration_record": B64.encode(record.message.serialize())}),
    )
    .await?;
    if status != 201 && status != 409 {
        return Err(format!("registration finished with {status}").into());
    }
    Ok(())
}

async fn login(client: &reqwest::Client, base: &str, username: &str, password: &str) -> Res<Value> {
    let start = ClientLogin::<Suite>::start(&mut OsRng, password.as_bytes()).map_err(|e| e.to_string())?;
    let (_, body) = post(
        client,
        &format!("{base}/v1/login/start"),
        json!({"username": username, "credential_request": B64.encode(start.message.serialize())}),
    )
    .await?;
    let login_id = body["login_id"].as_str().ok_or("no login_id")?.to_owned();
    let ke2 =
        CredentialResponse::<Suite>::deserialize(&B64.decode(body["credential_response"].as_str().ok_or("no KE2")?)?)
            .map_err(|e| e.to_string())?;
    let password = password.to_owned();
    let finish = tokio::task::spawn_blocking(move || {
        start.state.finish(&mut OsRng, password.as_bytes(), ke2, ClientLoginFinishParameters::default())
    })
    .await?
    .map_err(|e| e.to_string())?;
    let (status, body) = post(
        client,
        &format!("{base}/v1/login/finish"),
        json!({"login_id": login_id, "credential_finalization": B64.encode(finish.message.serialize()), "device": {"fingerprint": "bench"}}),
    )
    .await?;
    if status != 200 {
        return Err(format!("login finished with {status}: {body}").into());
    }
    Ok(body)
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or("bad stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_mib(pid: u32) -> Res<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    let kib: f64 = line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?;
    Ok(kib / 1024.0)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    match args.get(1).map(String::as_str) {
        Some("session") => {
            let (base, user, pass) = (&args[2], &args[3], &args[4]);
            register(&client, base, user, pass).await?;
            let session = login(&client, base, user, pass).await?;
            println!("{}", session["session_token"].as_str().ok_or("no token")?);
        }
        Some("login-cpu") => {
            let (base, pid, count): (&str, u32, u32) = (&args[2], args[3].parse()?, args[4].parse()?);
            register(&client, base, "cpu-bench", "cpu bench password").await?;
            login(&client, base, "cpu-bench", "cpu bench password").await?; // warm up
            let before = cpu_seconds(pid)?;
            for _ in 0..count {
                login(&client, base, "cpu-bench", "cpu bench password").await?;
            }
            let per_login_us = (cpu_seconds(pid)? - before) / f64::from(count) * 1e6;
            println!("{per_login_us:.0}");
        }
        Some("soak") => soak(&client, &args[2], &args[3], args[4].parse()?, args[5].parse()?).await?,
        _ => return Err("usage: bench_client session|login-cpu|soak ...".into()),
    }
    Ok(())
}

/// Mixed load for `seconds`: 16 workers doing whoami, refresh and
/// rate-limit checks, plus a steady trickle of full logins. Prints the
/// count of each status class and the RSS every 30 s; exits non-zero on
/// any 5xx or transport error.
async fn soak(client: &reqwest::Client, base: &str, service_token: &str, seconds: u64, pid: u32) -> Res<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    register(client, base, "soak", "soak password").await?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let record = |counts: &[AtomicU64; 6], status: Option<u16>| {
        let slot = match status {
            Some(s) => usize::from(s / 100).min(5),
            None => 0,
        };
        counts[slot].fetch_add(1, Relaxed);
    };
    let mut tasks = Vec::new();
    for worker in 0..16u32 {
        let (client, base, token, counts) = (client.clone(), base.to_owned(), service_token.to_owned(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let mut session = login(&client, &base, "soak", "soak password").await.ok();
            let mut i = 0u64;
            while Instant::now() < stop {
                i += 1;
                let Some(s) = session.clone() else {
                    session = login(&client, &base, "soak", "soak password").await.ok();
                    record(&counts, None);
                    continue;
                };
                let status = if i.is_multiple_of(50) {
                    let r = client
                        .post(format!("{base}/v1/sessions/refresh"))
                        .json(&json!({"refresh_token": s["refresh_token"]}))
                        .send()
                        .await;
                    let status = r.as_ref().ok().map(|r| r.status().as_u16());
                    if let Ok(r) = r
                        && r.status() == 200
                    {
                        session = r.json().await.ok();
                    }
                    status
                } else if i.is_multiple_of(2) {
                    client
                        .post(format!("{base}/v1/ratelimit/check"))
                        .bearer_auth(&token)
                        .json(&json!({"namespace": "bench", "key": format!("k{}", (i + u64::from(worker)) % 1000)}))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16())
                } else {
                    client
                        .get(format!("{base}/v1/sessions/current"))
                        .bearer_auth(s["session_token"].as_str().unwrap_or(""))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16())
                };
                record(&counts, status);
                // A fresh login now and then (each costs the client an Argon2id run).
                if worker == 0 && i.is_multiple_of(500) {
                    session = login(&client, &base, "soak", "soak password").await.ok().or(session);
                }
            }
        }));
    }
    let mut next_report = Instant::now();
    while Instant::now() < stop {
        if Instant::now() >= next_report {
            let c: Vec<u64> = counts.iter().map(|c| c.load(Relaxed)).collect();
            println!(
                "t+{:>3}s rss {:.1} MiB  2xx {} 4xx {} 5xx {} errors {}",
                seconds.saturating_sub(stop.saturating_duration_since(Instant::now()).as_secs()),
                rss_mib(pid)?,
                c[2],
                c[4],
                c[5],
                c[0]
            );
            next_report += Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for t in tasks {
        t.await?;
    }
    let c: Vec<u64> = counts.iter().map(|c| c.load(Relaxed)).collect();
    println!(
        "done: 2xx {} 3xx {} 4xx {} 5xx {} transport errors {}; final rss {:.1} MiB",
        c[2],
        c[3],
        c[4],
        c[5],
        c[0],
        rss_mib(pid)?
    );
    if c[5] > 0 || c[0] > 0 {
        return Err("server errors during the soak".into());
    }
    Ok(())
}
