//! Servers of a test's own (Redis, a Redis Cluster, Postgres), for tests
//! that stop, restart or flush them without disturbing the shared ones.

use std::time::Duration;

/// A Redis server of the test's own on a free loopback port, for tests that
/// flush, stop or restart it without disturbing the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        Self::start_on(port).await
    }

    pub async fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as SIGKILL would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real 3-master Redis Cluster on free loopback ports.
pub struct PrivateCluster {
    pub ports: Vec<u16>,
    nodes: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port())
            .collect();
        let mut nodes = Vec::new();
        for port in &ports {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            nodes.push(child);
        }
        for port in &ports {
            wait_for_port(*port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for _ in 0..100 {
            let ok = ports.iter().all(|p| {
                std::process::Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return Self { ports, nodes, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Redis Cluster did not become ready");
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A Postgres server of the test's own (initdb + pg_ctl on a free port),
/// for tests that stop and start it. Run as the `postgres` user when the
/// tests run as root (initdb refuses root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    extra_options: String,
}

impl PrivatePostgres {
    fn program(name: &str) -> String {
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut versions| versions.find_map(|v| v.ok()))
            .map(|v| v.path().join("bin").join(name))
            .filter(|p| p.exists());
        debian.map_or_else(|| name.to_owned(), |p| p.display().to_string())
    }

    fn run(args: &[&str]) -> std::process::Output {
        let as_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            std::process::Command::new(args[0])
        };
        if as_root {
            cmd.arg(args[0]);
        }
        cmd.args(&args[1..]).output().expect("run a postgres program")
    }

    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that also speaks TLS with this certificate and key (PEM).
    pub async fn start_tls(cert_pem: &std::path::Path, key_pem: &std::path::Path) -> Self {
        Self::start_with(Some((cert_pem, key_pem))).await
    }

    async fn start_with(tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = std::process::Command::new("chown").args(["postgres"]).arg(dir.path()).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let data = dir.path().join("data");
        let out = Self::run(&[
            &Self::program("initdb"),
            "-D",
            data.to_str().expect("utf8"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut extra_options = String::new();
        if let Some((cert, key)) = tls {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(from, &to).expect("copy certificate");
                let _ = std::process::Command::new("chown").arg("postgres").arg(&to).status();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
            extra_options = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned();
        }
        let pg = Self { port, dir, extra_options };
        pg.pg_ctl("start");
        pg
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.extra_options
        );
        let log = self.dir.path().join("log");
        let mut args = vec![
            Self::program("pg_ctl"),
            "-D".into(),
            data.display().to_string(),
            "-w".into(),
            "-m".into(),
            "fast".into(),
        ];
        if action == "start" {
            args.extend(["-o".into(), opts, "-l".into(), log.display().to_string()]);
        }
        args.push(action.into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Self::run(&refs);
        assert!(out.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn restart(&self) {
        self.pg_ctl("start");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ =
            Self::run(&[&Self::program("pg_ctl"), "-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
    }
}
