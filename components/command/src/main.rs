//! A wasi:cli command component (no wasi:http export), for the containerd
//! shim's tests.
//!
//! Prints `hello from a wasi:cli command` and `args: <its arguments>` to
//! stdout and `a line on stderr` to stderr, then, by its first argument:
//! `trap` executes `unreachable`; `fail` exits with a failure (status 1:
//! WASI 0.2's `exit` carries only success or failure); `cat PATH` prints the
//! file at PATH; `env NAME` prints `NAME=<value>`; anything else ends with
//! success.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("hello from a wasi:cli command");
    println!("args: {}", args.get(1..).unwrap_or_default().join(" "));
    eprintln!("a line on stderr");
    match args.get(1).map(String::as_str) {
        Some("trap") => core::arch::wasm32::unreachable(),
        Some("fail") => std::process::exit(1),
        Some("cat") => {
            let path = args.get(2).map_or("/", String::as_str);
            match std::fs::read_to_string(path) {
                Ok(text) => print!("{text}"),
                Err(e) => {
                    eprintln!("cannot read {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("env") => {
            let name = args.get(2).map_or("", String::as_str);
            println!("{name}={}", std::env::var(name).unwrap_or_default());
        }
        _ => {}
    }
}
