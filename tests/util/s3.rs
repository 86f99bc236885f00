//! A real S3-compatible server for the object-storage tests: `s3s-fs` 0.14.1 (crates.io,
//! Apache-2.0; SigV4 checked, conditional create enforced), installed by `.ci/s3s-fs.sh` under
//! `target/s3s` (or named by `S3S_FS_BIN`), started on a free 127.0.0.1 port per test and
//! killed when the handle drops. Objects land as plain files under [`S3Server::bucket_dir`].

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key the server checks (SigV4).
pub const ACCESS_KEY: &str = "AKTESTENGATIETL";
/// Secret key the server checks.
pub const SECRET_KEY: &str = "SKtest-engati-etl-0123456789";
/// The bucket every test writes to.
pub const BUCKET: &str = "lake";

/// A running s3s-fs; killed on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    dir: tempfile::TempDir,
}

/// The s3s-fs binary: `S3S_FS_BIN`, else `target/s3s/bin/s3s-fs` (what `.ci/s3s-fs.sh` installs).
pub fn s3s_fs_bin() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/s3s/bin/s3s-fs")
}

impl S3Server {
    /// Starts s3s-fs with an empty bucket [`BUCKET`] and waits until it accepts connections.
    pub fn start() -> S3Server {
        let bin = s3s_fs_bin();
        assert!(
            bin.exists(),
            "{} is missing: install it with `bash .ci/s3s-fs.sh` (or set S3S_FS_BIN)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        // Readiness, not timing: poll until the port accepts (it is up in well under 1 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The directory holding the bucket's objects as files.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }

    /// The environment a client needs: the standard AWS variables plus allow-HTTP.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Data files (not `_delta_log`, not s3s-fs's metadata sidecars) under `prefix`.
    pub fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        crate::util::files_under(&self.bucket_dir().join(prefix))
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                !name.starts_with(".bucket-") && !name.ends_with(".metadata.json")
            })
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python with `deltalake` 1.6.6 and pyarrow (`.ci/pydelta.sh` makes `target/pyvenv`), or
/// `PY_DELTALAKE`.
pub fn py_deltalake() -> PathBuf {
    if let Ok(p) = std::env::var("PY_DELTALAKE") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python")
}
