//! A certificate authority of the test's own, made with the `openssl` command: a CA and one
//! server certificate it signs, valid for the name `localhost` only (not for `127.0.0.1`), so a
//! test can connect by the right name, by a wrong one, or trust another CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA and a server certificate for `localhost` (RSA 2048, a day of life).
    pub fn new() -> Self {
        let ca = Self { dir: tempfile::tempdir().unwrap() };
        let d = ca.dir.path();
        ca.openssl(
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=its test CA"],
            &[("-keyout", "ca.key"), ("-out", "ca.pem")],
        );
        ca.openssl(
            &["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"],
            &[("-keyout", "server.key"), ("-out", "server.csr")],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ca.openssl(
            &["x509", "-req", "-days", "1", "-CAcreateserial"],
            &[
                ("-in", "server.csr"),
                ("-CA", "ca.pem"),
                ("-CAkey", "ca.key"),
                ("-extfile", "server.ext"),
                ("-out", "server.pem"),
            ],
        );
        ca
    }

    fn openssl(&self, args: &[&str], files: &[(&str, &str)]) {
        let mut command = Command::new("openssl");
        command.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        for (flag, name) in files {
            command.arg(flag).arg(self.dir.path().join(name));
        }
        let status = command.status().expect("run openssl");
        assert!(status.success(), "openssl {args:?} failed");
    }

    /// The CA certificate (PEM), for the client's trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM, unencrypted).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Copies the server's certificate and key into `dir` as `server.pem` and `server.key`, the
    /// key readable by its owner only (PostgreSQL refuses a key others can read); returns both.
    pub fn install_server_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::copy(self.server_cert(), &cert).unwrap();
        std::fs::copy(self.server_key(), &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert, key)
    }
}
