//! The operator as a child process (`unified-connectors controller`), killed on drop. Its log
//! goes to a file and is printed when a test fails, so a failure shows what the operator did.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Path of the binary cargo built for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_unified-connectors");

pub struct Operator {
    child: Option<Child>,
    pub namespace: String,
    args: Vec<String>,
    pub log_path: PathBuf,
    /// Incremented on every (re)start, so restarts log to separate files.
    starts: u32,
}

impl Operator {
    /// Starts `unified-connectors controller --namespace NS --no-leader-election` plus `extra_args`
    /// (e.g. `--okta-url-template`), inheriting `KUBECONFIG`.
    pub fn start(namespace: &str, extra_args: &[&str]) -> Operator {
        let mut args: Vec<String> = vec![
            "controller".into(),
            "--namespace".into(),
            namespace.into(),
            "--no-leader-election".into(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--collector-image".into(),
            "unified-connectors:e2e".into(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut op = Operator {
            child: None,
            namespace: namespace.to_string(),
            args,
            log_path: PathBuf::new(),
            starts: 0,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.log_path = std::env::temp_dir().join(format!(
            "uc-e2e-operator-{}-{}.log",
            self.namespace, self.starts
        ));
        let log = File::create(&self.log_path).expect("cannot create the operator log file");
        let child = Command::new(BIN)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("UC_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the operator {BIN}: {e}"));
        self.child = Some(child);
    }

    /// SIGKILLs the operator (no graceful shutdown: the crash case).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process is still running (it did not crash or exit on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().map(|s| s.is_none()).unwrap_or(false))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The current run's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            super::print_log_tail("operator", &self.log_path, 80);
        }
    }
}
