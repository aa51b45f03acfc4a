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

/// A Postgres server of the test's own on a free port, for tests that stop
/// and start it: `scripts/private-postgres`, which scripts/test also uses
/// (it runs the server as the user `postgres` when the tests run as root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    options: Vec<String>,
}

impl PrivatePostgres {
    fn script(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/private-postgres"))
            .args(args)
            .env("PGUSER", "postgres")
            .output()
            .expect("run scripts/private-postgres")
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
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let mut options = Vec::new();
        if let Some((cert, key)) = tls {
            for (from, name, setting) in [(cert, "server.crt", "ssl_cert_file"), (key, "server.key", "ssl_key_file")] {
                let to = dir.path().join(name);
                std::fs::copy(from, &to).expect("copy certificate");
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
                options.extend(["-c".to_owned(), format!("{setting}={}", to.display())]);
            }
            options.extend(["-c".to_owned(), "ssl=on".to_owned()]);
        }
        let pg = Self { port, dir, options };
        pg.restart();
        pg
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().expect("utf8")
    }

    pub fn stop(&self) {
        let out = self.script(&["stop", self.dir(), "fast"]);
        assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server (again), on the same port and data.
    pub fn restart(&self) {
        let port = self.port.to_string();
        let mut args = vec!["start", self.dir(), &port];
        args.extend(self.options.iter().map(String::as_str));
        let out = self.script(&args);
        assert!(out.status.success(), "start: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.script(&["stop", self.dir(), "immediate"]);
    }
}
