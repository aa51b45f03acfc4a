//! Load and measurement client for `scripts/bench` (not part of the
//! service), on the `latchkey-client` crate: a real OPAQUE client with the
//! product's suite.
//!
//! ```text
//! bench_client session   URL USERNAME PASSWORD          prints a session token
//! bench_client login-cpu URL PID COUNT                  server CPU per login
//! bench_client logins    URL CLIENTS SECONDS            logins/s and latency per step
//! bench_client soak      URL SERVICE_TOKEN SECONDS PID  mixed load, 5xx count, RSS
//! ```

use std::time::{Duration, Instant};

use latchkey_client::{Argon2idKsf, Client, DeviceInfo, Error, LoginOutcome, Session};
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Registers (a taken name is fine: the same password was used).
async fn register(client: &Client, username: &str, password: &str) -> Res<()> {
    match client.register(username, password).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("conflict") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn login(client: &Client, username: &str, password: &str, device_token: Option<String>) -> Res<Session> {
    let device = DeviceInfo { fingerprint: Some("bench".into()), device_token, ..DeviceInfo::default() };
    match client.login(username, password, &device).await? {
        LoginOutcome::Session(session) => Ok(session),
        LoginOutcome::MfaRequired(_) => Err("the bench user has TOTP on".into()),
    }
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
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("usage: bench_client session|login-cpu|logins|soak ...");
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let client = Client::with_http_client(arg(2)?, http.clone());
    match arg(1)? {
        "session" => {
            let (user, pass) = (arg(3)?, arg(4)?);
            register(&client, user, pass).await?;
            println!("{}", login(&client, user, pass, None).await?.session_token);
        }
        "login-cpu" => {
            let (pid, count): (u32, u32) = (arg(3)?.parse()?, arg(4)?.parse()?);
            register(&client, "cpu-bench", "cpu bench password").await?;
            // Warm up, and keep the device credential as a real client does.
            let first = login(&client, "cpu-bench", "cpu bench password", None).await?;
            let before = cpu_seconds(pid)?;
            for _ in 0..count {
                login(&client, "cpu-bench", "cpu bench password", first.device_token.clone()).await?;
            }
            let per_login_us = (cpu_seconds(pid)? - before) / f64::from(count) * 1e6;
            println!("{per_login_us:.0}");
        }
        "logins" => logins(client, arg(3)?.parse()?, arg(4)?.parse()?).await?,
        "soak" => soak(&client, &http, arg(3)?, arg(4)?.parse()?, arg(5)?.parse()?).await?,
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}

/// Mixed load for `seconds`: 16 workers doing whoami, refresh and
/// rate-limit checks, plus a steady trickle of full logins. Prints the
/// count of each status class and the RSS every 30 s; exits non-zero on
/// any 5xx or transport error.
async fn soak(client: &Client, http: &reqwest::Client, service_token: &str, seconds: u64, pid: u32) -> Res<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    // A user per worker, as distinct people: one account logged in from
    // sixteen places at once would meet its own lockout (logins in flight
    // count as attempts) and session cap.
    for worker in 0..16u32 {
        register(client, &format!("soak-{worker}"), "soak password").await?;
    }
    let base = client.base_url();
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
        let (client, http, base, token, counts) =
            (client.clone(), http.clone(), base.to_owned(), service_token.to_owned(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let username = format!("soak-{worker}");
            let mut session = login(&client, &username, "soak password", None).await.ok();
            let mut i = 0u64;
            while Instant::now() < stop {
                i += 1;
                let Some(s) = session.clone() else {
                    // A failed login is an error of the run.
                    session = login(&client, &username, "soak password", None).await.ok();
                    if session.is_none() {
                        record(&counts, None);
                    }
                    continue;
                };
                let status = if i.is_multiple_of(50) {
                    match client.refresh(&s.refresh_token).await {
                        Ok(rotated) => {
                            session = Some(rotated);
                            Some(200)
                        }
                        Err(Error::Problem(p)) => Some(p.status),
                        Err(_) => None,
                    }
                } else if i.is_multiple_of(2) {
                    http.post(format!("{base}/v1/ratelimit/check"))
                        .bearer_auth(&token)
                        .json(&json!({"namespace": "bench", "key": format!("k{}", (i + u64::from(worker)) % 1000)}))
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16())
                } else {
                    http.get(format!("{base}/v1/sessions/current"))
                        .bearer_auth(&s.session_token)
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16())
                };
                record(&counts, status);
                // A session refused (ended by the session cap, say): log in again, as a client would.
                if status == Some(401) {
                    session = None;
                }
                // A fresh login now and then (each costs the client an Argon2id run).
                if worker == 0 && i.is_multiple_of(500) {
                    session = login(&client, &username, "soak password", None).await.ok().or(session);
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

/// `clients` concurrent clients log in again and again for `seconds`, each
/// as its own user registered with a cheap key stretching setting (the
/// server never runs it, so its work per login is the same, and the load
/// generator does not spend the cores on Argon2id). Prints logins/s and the
/// p50/p99 of each step (login/start, login/finish) in ms.
async fn logins(client: Client, clients: usize, seconds: u64) -> Res<()> {
    let client = client.with_ksf(Argon2idKsf::cheap());
    let password = "bench password, cheap KSF";
    for i in 0..clients {
        register(&client, &format!("login-bench-{i}"), password).await?;
    }
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let username = format!("login-bench-{i}");
            // As a real client: the device credential from the first login
            // goes with every later one (a known device, no new row).
            let mut device = DeviceInfo { fingerprint: Some("bench".into()), ..DeviceInfo::default() };
            let (mut starts, mut finishes, mut errors) = (Vec::new(), Vec::new(), 0u64);
            while Instant::now() < stop {
                let t0 = Instant::now();
                let pending = match client.login_start(&username, password, &device).await {
                    Ok(pending) => pending,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let t1 = Instant::now();
                match pending.finish().await {
                    Ok(LoginOutcome::Session(session)) => {
                        if session.device_token.is_some() {
                            device.device_token = session.device_token.clone();
                        }
                        starts.push(t1 - t0);
                        finishes.push(t1.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (starts, finishes, errors)
        }));
    }
    let started = Instant::now();
    let (mut starts, mut finishes, mut errors) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        let (s, f, e) = task.await?;
        starts.extend(s);
        finishes.extend(f);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let quantile = |v: &mut Vec<Duration>, q: f64| {
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = finishes.len() as f64 / elapsed;
    println!(
        "{rate:.0} {:.2} {:.2} {:.2} {:.2} {errors}",
        quantile(&mut starts, 0.5),
        quantile(&mut starts, 0.99),
        quantile(&mut finishes, 0.5),
        quantile(&mut finishes, 0.99),
    );
    if errors > 0 {
        return Err(format!("{errors} logins failed").into());
    }
    Ok(())
}
