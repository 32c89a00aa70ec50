//! The real `berth serve` binary on free loopback ports, its stderr kept
//! for the test to read, stopped (SIGTERM, then SIGKILL) when dropped.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry::free_addr;

/// A running `berth serve`.
pub struct Served {
    /// The front door.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its container bridge (its own, see [`super::bridge_args`]).
    pub bridge: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// Starts `berth serve --data-dir DATA_DIR EXTRA…` and waits for its
    /// "serving" line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Starts `berth serve --data-dir DATA_DIR EXTRA…` without waiting; the
    /// receiver gets a message once it serves.
    pub fn launch(data_dir: &Path, extra: &[&str]) -> (Self, std::sync::mpsc::Receiver<()>) {
        Self::launch_with_env(data_dir, extra, &[])
    }

    /// [`Served::start`] with `env` added to its environment.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let (served, serving) = Self::launch_with_env(data_dir, extra, env);
        if serving.recv_timeout(Duration::from_secs(120)).is_err() {
            panic!("berth serve did not start:\n{}", served.stderr());
        }
        served
    }

    /// [`Served::launch`] with `env` added to its environment.
    pub fn launch_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (Self, std::sync::mpsc::Receiver<()>) {
        Self::launch_under(&[], env, data_dir, extra)
    }

    /// Starts `berth serve` with at most `files` open files (soft and hard
    /// limit, through `prlimit`), and waits for its "serving" line.
    pub fn start_with_open_files(files: u64, data_dir: &Path, extra: &[&str]) -> Self {
        let nofile = format!("--nofile={files}:{files}");
        let (served, serving) =
            Self::launch_under(&["prlimit", &nofile, "--"], &[], data_dir, extra);
        if serving.recv_timeout(Duration::from_secs(120)).is_err() {
            panic!("berth serve did not start:\n{}", served.stderr());
        }
        served
    }

    /// [`launch`](Self::launch) with `wrapper` (a program and its
    /// arguments) running `berth`, and `env` added to its environment.
    fn launch_under(
        wrapper: &[&str],
        env: &[(&str, &str)],
        data_dir: &Path,
        extra: &[&str],
    ) -> (Self, std::sync::mpsc::Receiver<()>) {
        let addr = free_addr();
        let admin = free_addr();
        let (bridge_args, bridge) = super::bridge_args();
        let berth = env!("CARGO_BIN_EXE_berth");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(berth);
                c
            }
            None => Command::new(berth),
        };
        let mut child = command
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(&bridge_args)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("BERTH_LOG", "berth=debug,warn")
            .env_remove("BERTH_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let serving = line.contains("berth: serving");
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                if serving {
                    let _ = tx.send(());
                }
            }
        });
        let served = Self {
            addr,
            admin,
            data_dir: data_dir.to_path_buf(),
            bridge,
            child,
            stderr,
            reader: Some(reader),
        };
        (served, rx)
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit on its own and returns how, with all it wrote
    /// to stderr; panics (after a SIGKILL) when it still runs after `limit`.
    pub fn exit_within(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        if let Some((status, _)) = self.exited_within(limit) {
            // The pipe is closed: the reader ends once it read it all.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
            return (status, self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "berth serve did not exit within {limit:?}:\n{}",
            self.stderr()
        );
    }

    /// Runs the `berth` CLI against it (same machine: the token comes from
    /// the data dir), feeding `stdin`; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .args(["--admin", &format!("http://{}", self.admin)])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("BERTH_ADMIN_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Stops it with SIGTERM and waits (SIGKILL after 20 s).
    pub fn stop(mut self) {
        self.terminate();
    }

    /// Sends SIGTERM and returns how it exited and how long that took;
    /// panics (after a SIGKILL) when it is still running after `limit`.
    pub fn terminate_within(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Some(exited) = self.exited_within(limit) {
            return exited;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "berth serve did not exit within {limit:?} of SIGTERM:\n{}",
            self.stderr()
        );
    }

    /// SIGKILL: nothing of its own clean-up runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if self.exited_within(Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Polls (every 20 ms, up to `limit`) until the process has exited:
    /// how, and how long that took.
    fn exited_within(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Some((status, t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}
