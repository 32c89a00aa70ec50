//! A tiny HTTP server for a container image, honouring the contract berth
//! (like Cloud Run) gives containers: listen on `$PORT`, read `K_SERVICE`,
//! stop cleanly on SIGTERM.
//!
//! Run with, from the repository root (a registry on 127.0.0.1:5000):
//!
//! ```sh
//! examples/container-hello/build-and-push.sh 127.0.0.1:5000/container-hello:v1
//! # then, in a berth.toml:
//! #   [apps.container-hello]
//! #   image = "127.0.0.1:5000/container-hello:v1"
//! curl http://container-hello.localhost:8080/
//! # hello from container-hello (a container)
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let host = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "0.0.0.0".into());
    let service = std::env::var("K_SERVICE").unwrap_or_else(|_| "unknown".into());
    let listener = TcpListener::bind((host.as_str(), port))?;
    let addr = listener.local_addr()?;
    eprintln!("container-hello: listening on {addr}");

    // SIGTERM: finish the request in hand, then exit 0. The signal thread
    // wakes the blocked accept with a connection of its own.
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            flag.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(addr);
        }
    });

    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                // A thread per connection: an idle keep-alive connection
                // must not hold up the others (or the shutdown).
                let service = service.clone();
                let busy = busy.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &service, &busy) {
                        eprintln!("container-hello: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("container-hello: accept error: {e}"),
        }
    }
    eprintln!("container-hello: SIGTERM received, finishing requests in flight");
    for _ in 0..500 {
        if busy.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("container-hello: exiting");
    Ok(())
}

/// Answers every request on one keep-alive connection.
fn serve(stream: TcpStream, service: &str, busy: &AtomicUsize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        busy.fetch_add(1, Ordering::SeqCst);
        // Discard any request body.
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/" => ("200 OK", format!("hello from {service} (a container)\n")),
            "/healthz" => ("200 OK", "ok\n".to_string()),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
        busy.fetch_sub(1, Ordering::SeqCst);
        if close {
            return Ok(());
        }
    }
}
