//! Real scanners on loopback for the filter tests: `rspamd` (Debian's package) without
//! Redis, from a configuration directory the test writes, and `clamd` (Debian's
//! clamav-daemon) with a one-line signature database for the EICAR test file, so that
//! nothing is downloaded. Both are installed by scripts/install-test-deps. Each is
//! stopped when its handle drops.
//!
//! Rspamd takes seconds to start (it compiles its rules): a test binary starts one and
//! shares it between its cases.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The GTUBE test string, which Rspamd rejects with "Gtube pattern".
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// The EICAR anti-virus test file (68 octets); its MD5 is 44d88612fea8a8f36de82e1278abb02f.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The name of the test signature in the database [`Clamd`] writes.
pub const EICAR_SIGNATURE: &str = "Sluice-Test-EICAR";
/// What clamd reports for it: custom signatures get `.UNOFFICIAL` appended.
pub const EICAR_FOUND: &str = "Sluice-Test-EICAR.UNOFFICIAL";

/// Rspamd compiles its rules at start; 10 s on a quiet two-core machine, more under load.
const RSPAMD_START_DEADLINE: Duration = Duration::from_secs(60);
const CLAMD_START_DEADLINE: Duration = Duration::from_secs(20);

/// Files a test adds to Rspamd's configuration: `local.d/settings.conf`,
/// `local.d/actions.conf` and `rspamd.local.lua` (empty: not written).
#[derive(Debug, Default, Clone, Copy)]
pub struct RspamdLocal<'a> {
    pub settings: &'a str,
    pub actions: &'a str,
    pub lua: &'a str,
}

/// An `rspamd -f` in a process group of its own (its workers are children), stopped
/// with SIGTERM to the group on drop. When the tests run as root, Rspamd drops to
/// `nobody`/`nogroup`. DNS points at a dead loopback port so that no test depends on
/// the network and lookups fail at once.
pub struct Rspamd {
    child: Child,
    pub port: u16,
    _dir: TempDir,
    /// From spawning to the first `/ping` answer.
    pub startup: Duration,
}

impl Rspamd {
    /// Rspamd with its stock rules and one normal worker.
    pub async fn start() -> Self {
        Self::start_with(RspamdLocal::default()).await
    }

    pub async fn start_with(local: RspamdLocal<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // The workers run as nobody and write their pid, log and caches here.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(dir.path(), mode).unwrap();
        let port = free_port();
        let dead_dns = free_port();
        let conf = dir.path().join("rspamd.conf");
        let text = format!(
            r#".include "$CONFDIR/common.conf"
options {{
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  dns {{ nameserver = ["127.0.0.1:{dead_dns}"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }}
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}}
"#
        );
        std::fs::write(&conf, text).unwrap();
        let local_d = dir.path().join("local.d");
        std::fs::create_dir(&local_d).unwrap();
        for (path, text) in [
            (local_d.join("settings.conf"), local.settings),
            (local_d.join("actions.conf"), local.actions),
            (dir.path().join("rspamd.local.lua"), local.lua),
        ] {
            if !text.is_empty() {
                std::fs::write(path, text).unwrap();
            }
        }
        let d = dir.path().display().to_string();
        let mut command = Command::new("rspamd");
        command.arg("-f").arg("-c").arg(&conf);
        command.arg("--var=CONFDIR=/etc/rspamd");
        for var in ["LOCAL_CONFDIR", "DBDIR", "RUNDIR", "LOGDIR"] {
            command.arg(format!("--var={var}={d}"));
        }
        if is_root() {
            command.args(["-u", "nobody", "-g", "nogroup"]);
        }
        let started = Instant::now();
        let mut child = command
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rspamd on PATH (scripts/install-test-deps installs it)");
        while !rspamd_pongs(port).await {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("rspamd.log"));
                panic!("rspamd exited at start ({status}): {log:?}");
            }
            if started.elapsed() > RSPAMD_START_DEADLINE {
                // Dropping the handle stops the group.
                let _ = Rspamd {
                    child,
                    port,
                    _dir: dir,
                    startup: started.elapsed(),
                };
                panic!("rspamd gave no /ping answer in {RSPAMD_START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Rspamd {
            child,
            port,
            _dir: dir,
            startup: started.elapsed(),
        }
    }

    /// `http://127.0.0.1:PORT`, as a policy's `rspamd.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM to the group (the main process and its workers), then up to 10 s for the
    /// main process to exit, then SIGKILL to the group.
    pub fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers left behind by a main process that did not exit in time.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `clamd` in the foreground on a free loopback port and a unix socket, killed on drop.
pub struct Clamd {
    child: Child,
    pub port: u16,
    pub socket: PathBuf,
    _dir: TempDir,
    /// From spawning to the first `PONG`.
    pub startup: Duration,
}

impl Clamd {
    pub fn start() -> Self {
        Self::start_with("100M")
    }

    /// A clamd whose StreamMaxLength is `stream_max` (clamd.conf syntax, `1M`).
    pub fn start_with(stream_max: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        let md5 = "44d88612fea8a8f36de82e1278abb02f";
        let hdb = format!("{md5}:{}:{EICAR_SIGNATURE}\n", EICAR.len());
        std::fs::write(db.join("sluice-test.hdb"), hdb).unwrap();
        let port = free_port();
        let socket = dir.path().join("clamd.sock");
        let conf = dir.path().join("clamd.conf");
        let text = format!(
            "Foreground yes\nTCPAddr 127.0.0.1\nTCPSocket {port}\nLocalSocket {}\n\
             DatabaseDirectory {}\nLogFile {}\nStreamMaxLength {stream_max}\n",
            socket.display(),
            db.display(),
            dir.path().join("clamd.log").display(),
        );
        std::fs::write(&conf, text).unwrap();
        let started = Instant::now();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd on PATH (scripts/install-test-deps installs clamav-daemon)");
        let mut clamd = Clamd {
            child,
            port,
            socket,
            _dir: dir,
            startup: Duration::ZERO,
        };
        while !clamd_pongs(port) {
            if let Some(status) = clamd.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(clamd._dir.path().join("clamd.log"));
                panic!("clamd exited at start ({status}): {log:?}");
            }
            assert!(
                started.elapsed() < CLAMD_START_DEADLINE,
                "clamd did not answer PING in {CLAMD_START_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        clamd.startup = started.elapsed();
        clamd
    }

    /// `127.0.0.1:PORT`, as a policy's `clamav.addresses` item.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

/// A port nothing listens on now (bound and released; the daemons cannot pick their own).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Whether Rspamd answers `GET /ping` with its `pong` within 2 s.
async fn rspamd_pongs(port: u16) -> bool {
    let addr = (Ipv4Addr::LOCALHOST, port).into();
    let answer = super::http::get(addr, "/ping", Duration::from_secs(2)).await;
    answer.is_some_and(|(_, body)| body.contains("pong"))
}

fn clamd_pongs(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 16];
    s.write_all(b"zPING\0").is_ok()
        && s.read(&mut answer)
            .is_ok_and(|n| answer[..n].starts_with(b"PONG"))
}
