//! Real Postgres servers for tests, started from the system's binaries.
//!
//! `PIMBRIDGE_TEST_DATABASE_URL` names a server to use (CI's script starts one); otherwise the
//! tests start a shared cluster in the temp directory and reuse it across runs. Tests that stop
//! the database start a private cluster of their own. As root, `initdb` must run as `postgres`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A server the tests can create databases on.
pub struct PgServer {
    /// How the tests connect to create databases.
    pub admin_url: String,
    /// `postgres://postgres@127.0.0.1:PORT`: the base of the URLs handed to apps.
    base_url: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    /// Flush to disk on commit, as production does (benchmarks); tests skip it for speed.
    durable: bool,
    /// Extra server settings (e.g. TLS).
    extra_options: String,
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn postgres_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop().expect(
        "no Postgres server binaries under /usr/lib/postgresql: install `postgresql` or set PG_BIN / PIMBRIDGE_TEST_DATABASE_URL",
    )
}

/// Runs a Postgres binary, as the `postgres` user when we are root.
fn run_pg(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(program);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {} failed", path.display());
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ports for test Postgres servers: 20000–31999, below the kernel's ephemeral range (from 32768
/// by default). A test that stops its server and starts it again needs its port still free then;
/// a port from the ephemeral range could meanwhile become the local port of any outgoing
/// connection or of a listener bound to port 0, and the restart failed with "Address already in
/// use". Never the same port twice in one process, and only ports free when chosen.
pub fn server_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    // Processes start at different places so that two test binaries rarely try the same ports.
    let mut offset = next.unwrap_or((std::process::id() * 7_919) % COUNT);
    for _ in 0..COUNT {
        let port = (FIRST + offset) as u16;
        offset = (offset + 1) % COUNT;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(offset);
            return port;
        }
    }
    panic!(
        "no free port for a test Postgres server in {FIRST}..{}",
        FIRST + COUNT
    );
}

impl Cluster {
    fn at(root: &Path, port: u16) -> Self {
        Self {
            durable: false,
            extra_options: String::new(),
            bin: postgres_bin(),
            data: root.join("data"),
            socket_dir: root.to_path_buf(),
            log: root.join("postgres.log"),
            port,
        }
    }

    fn init(&self) {
        std::fs::create_dir_all(&self.socket_dir).unwrap();
        chown_to_postgres(&self.socket_dir);
        let out = run_pg(
            &self.bin,
            "initdb",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn is_running(&self) -> bool {
        run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "status"],
        )
        .status
        .success()
    }

    pub fn start(&self) {
        // A durable server (the benchmarks') also keeps commit times, so that a benchmark can say
        // when the transaction that wrote a row committed.
        let speed = if self.durable {
            "-c track_commit_timestamp=on"
        } else {
            // Commits still wait for the log to be written (not flushed): pimbridge warns when
            // they do not.
            "-c fsync=off -c full_page_writes=off"
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=400 {speed} {}",
            self.port,
            self.socket_dir.display(),
            self.extra_options
        );
        let out = run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn stop(&self) {
        let out = run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop failed");
    }

    fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl PgServer {
    /// The server shared by all tests of this process.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(url) = std::env::var("PIMBRIDGE_TEST_DATABASE_URL") {
                let base_url = url
                    .rsplit_once('/')
                    .map(|(base, _)| base.to_owned())
                    .unwrap();
                return PgServer {
                    admin_url: url,
                    base_url,
                    cluster: None,
                };
            }
            let root = std::env::temp_dir().join("pimbridge-test-pg");
            // Several test binaries may race to set the shared cluster up.
            let lock = File::create(std::env::temp_dir().join("pimbridge-test-pg.lock")).unwrap();
            lock.lock().unwrap();
            let port_file = std::env::temp_dir().join("pimbridge-test-pg.port");
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(server_port);
            let cluster = Cluster::at(&root, port);
            if !cluster.data.join("PG_VERSION").exists() {
                let _ = std::fs::remove_dir_all(&root);
                cluster.init();
            }
            if !cluster.is_running() {
                cluster.start();
            }
            std::fs::write(&port_file, port.to_string()).unwrap();
            lock.unlock().unwrap();
            PgServer {
                admin_url: format!("{}/postgres", cluster.base_url()),
                base_url: cluster.base_url(),
                cluster: None,
            }
        })
    }

    /// A server of the test's own, which it may stop and start.
    pub fn private() -> PgServer {
        Self::private_with(false)
    }

    /// A private server that flushes every commit to disk, as production does (the benchmark's).
    #[allow(dead_code)]
    pub fn private_durable() -> PgServer {
        Self::private_with(true)
    }

    /// A private server that accepts only TLS connections over TCP, with this certificate and key.
    #[allow(dead_code)]
    pub fn private_tls(cert_pem: &str, key_pem: &str) -> PgServer {
        let root = std::env::temp_dir().join(format!("pimbridge-pg-{}", uuid::Uuid::new_v4()));
        let mut cluster = Cluster::at(&root, server_port());
        cluster.init();
        let cert = root.join("server.crt");
        let key = root.join("server.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let status = Command::new("chmod").arg("600").arg(&key).status().unwrap();
        assert!(status.success());
        // TCP clients must use TLS; the test's own admin connections use the Unix socket.
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        chown_to_postgres(&root);
        cluster.extra_options = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        cluster.start();
        PgServer {
            admin_url: format!(
                "host={} port={} user=postgres dbname=postgres",
                root.display(),
                cluster.port
            ),
            base_url: format!("postgres://postgres@127.0.0.1:{}", cluster.port),
            cluster: Some(cluster),
        }
    }

    fn private_with(durable: bool) -> PgServer {
        let root = std::env::temp_dir().join(format!("pimbridge-pg-{}", uuid::Uuid::new_v4()));
        let mut cluster = Cluster::at(&root, server_port());
        cluster.durable = durable;
        cluster.init();
        cluster.start();
        PgServer {
            admin_url: format!("{}/postgres", cluster.base_url()),
            base_url: cluster.base_url(),
            cluster: Some(cluster),
        }
    }

    /// Stops a private server.
    pub fn stop(&self) {
        self.cluster
            .as_ref()
            .expect("only private servers stop")
            .stop();
    }

    /// Starts a stopped private server again.
    pub fn start(&self) {
        self.cluster
            .as_ref()
            .expect("only private servers start")
            .start();
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test Postgres server");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        format!("{}/{name}", self.base_url)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            if cluster.is_running() {
                cluster.stop();
            }
            let _ = std::fs::remove_dir_all(&cluster.socket_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::server_port;

    #[test]
    fn server_ports_are_below_the_ephemeral_range_and_never_repeat() {
        let ephemeral_from: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let ports: Vec<u16> = (0..50).map(|_| server_port()).collect();
        assert!(ports.iter().all(|&p| p < ephemeral_from), "{ports:?}");
        let mut distinct = ports.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
